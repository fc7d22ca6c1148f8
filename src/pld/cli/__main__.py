"""``python -m pld.cli``."""

from pld.cli import main

main()
