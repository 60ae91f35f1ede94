"""Thin gRPC servicers: proto plumbing only; every decision is the runtime's and the core's."""

from .run_service import RunServicer
from .worker_service import WorkerServicer

__all__ = ["RunServicer", "WorkerServicer"]
