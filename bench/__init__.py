"""Benchmarks: `python -m bench` runs them all; `python -m bench.<area>` one area."""
