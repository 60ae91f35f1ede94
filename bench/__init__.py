"""Hivegrid's benchmark suite (BENCHMARKS.md): `python -m bench [--quick]`."""
