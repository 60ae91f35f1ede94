"""Percentiles and the environment record."""

from __future__ import annotations

import datetime
import math
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max by nearest rank (no interpolation: these are observed values)."""
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    s = sorted(values)

    def rank(q: float) -> float:
        return s[min(len(s), max(1, math.ceil(q * len(s)))) - 1]

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": s[-1]}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def environment() -> dict[str, object]:
    from google.protobuf.internal import api_implementation

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "protobuf_backend": api_implementation.Type(),
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": _mem_total_gb(),
        "platform": platform.platform(),
        "ray": _version("ray"),
        "dask": _version("dask"),
        "distributed": _version("distributed"),
        "psutil": _version("psutil"),
    }
