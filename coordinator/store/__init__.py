"""Event-log stores behind one interface (`base.Store`): `memory` and the embedded `sqlite`."""

from __future__ import annotations

import os
from pathlib import Path

from .base import SCHEMA_VERSION, Store, StoreError
from .memory import MemoryStore
from .sqlite import SqliteStore
from .sqlite import backup as backup_sqlite


def default_store_url() -> str:
    home = os.environ.get("HIVEGRID_HOME") or str(Path.home() / ".hivegrid")
    return f"sqlite:///{Path(home) / 'hivegrid.db'}"


def open_store(url: str, *, holder: str = "") -> Store:
    """`memory` or `sqlite:///path/to/file.db`. `holder` (e.g. "listening on 127.0.0.1:50051")
    is what a second coordinator opening the same SQLite store is told about this one."""
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite://"):
        # sqlite:///abs/path and sqlite:////abs/path both mean /abs/path; sqlite://rel/path is
        # relative to the working directory.
        path = url[len("sqlite://") :]
        while path.startswith("//"):
            path = path[1:]
        if not path:
            raise StoreError("a sqlite store URL needs a path: sqlite:///path/to/hivegrid.db")
        return SqliteStore(path, holder=holder)
    raise StoreError(f"unknown store {url!r}: use 'memory' or 'sqlite:///path/to/file.db'")


__all__ = [
    "SCHEMA_VERSION",
    "MemoryStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "backup_sqlite",
    "default_store_url",
    "open_store",
]
