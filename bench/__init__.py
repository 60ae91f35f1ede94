"""Hivegrid's benchmark suite (docs/benchmarks.md): `python -m bench [--quick]`."""
