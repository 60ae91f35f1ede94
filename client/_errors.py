"""The client's errors: one class per thing a caller may want to handle, all HivegridErrors.

A coordinator's refusal keeps the message the coordinator sent (`details`, also `str(exc)`);
`code` is the gRPC status in lower case ("not_found"), or None for errors found before any
call was made.
"""

from __future__ import annotations

import grpc

__all__ = [
    "Conflict",
    "GraphFileError",
    "HivegridError",
    "InvalidGraph",
    "LimitExceeded",
    "NotFound",
    "RunNotFound",
    "Unavailable",
    "WorkerNotFound",
]


class HivegridError(Exception):
    """Anything the client could not do."""

    def __init__(self, message: str, *, code: str | None = None, details: str | None = None):
        super().__init__(message)
        self.code = code
        self.details = message if details is None else details


class NotFound(HivegridError, LookupError):
    """The coordinator has no such run or worker (NOT_FOUND)."""


class RunNotFound(NotFound):
    """No run with that id: it never existed, or it was deleted."""


class WorkerNotFound(NotFound):
    """No connected worker session has that name or session id."""


class InvalidGraph(HivegridError, ValueError):
    """The coordinator refused a graph or a mutation batch (INVALID_ARGUMENT), or the client
    found it malformed before sending it (then a GraphFileError)."""


class GraphFileError(InvalidGraph):
    """A graph document (a file, a dict, a builder's node, a mutation) that cannot be sent; the
    message says where and why. `detail` is the message without `source` (the file name)."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.detail = message
        self.source = source


class LimitExceeded(HivegridError):
    """The request is over one of the coordinator's limits (RESOURCE_EXHAUSTED)."""


class Conflict(HivegridError):
    """The request does not fit the run's state: deleting a running run (FAILED_PRECONDITION),
    or a run id that is taken (ALREADY_EXISTS)."""


class Unavailable(HivegridError, ConnectionError):
    """The coordinator could not be reached (UNAVAILABLE, also once a watch gave up resuming),
    or did not answer in time (DEADLINE_EXCEEDED). `address` is where the client looked."""

    def __init__(self, message: str, *, code: str, details: str, address: str) -> None:
        super().__init__(message, code=code, details=details)
        self.address = address


_BY_CODE: dict[grpc.StatusCode, type[HivegridError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidGraph,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitExceeded,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
}


def from_rpc_error(
    exc: grpc.RpcError, *, address: str, not_found: type[NotFound] = RunNotFound
) -> HivegridError:
    """The HivegridError for a failed call; `not_found` is what NOT_FOUND means for it."""
    if isinstance(exc, grpc.Call | grpc.aio.AioRpcError):
        code = exc.code()
        details = exc.details() or ""
    else:
        code, details = grpc.StatusCode.UNKNOWN, str(exc)
    name = code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach the coordinator at {address}: {details}"
        return Unavailable(message, code=name, details=details, address=address)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"the coordinator at {address} did not answer in time: {details}"
        return Unavailable(message, code=name, details=details, address=address)
    if code == grpc.StatusCode.NOT_FOUND:
        return not_found(details, code=name)
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(details, code=name)
    return HivegridError(f"{name}: {details}", code=name, details=details)
