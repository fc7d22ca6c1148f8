"""Benchmarks: `python -m bench.latency`, `bench.quality`, `bench.cost`. Figures and the
commands that produced them go to bench/RESULTS.md."""
