"""Benchmarks: ``python -m pyrt.bench --help``."""
