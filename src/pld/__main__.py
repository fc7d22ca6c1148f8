"""``python -m pld``."""

from pld.cli import main

main()
