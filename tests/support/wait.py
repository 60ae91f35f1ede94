"""Ports and deadlines."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How long a test waits for something that should happen at once (a message, an ack, a line).
WAIT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for a process that must keep one across restarts,
    or an address that must refuse connections)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def wait_until(
    check: Callable[[], T],
    *,
    timeout: float = WAIT,
    what: str = "the condition",
    describe: Callable[[], str] | None = None,
) -> T:
    """Polls `check` until it returns something true; returns that. For state that nothing can
    be watched for (ListWorkers has no watch): the delay between looks doubles from 10 ms to
    250 ms. Fails with `what` (and `describe()`, if given) at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        got = check()
        if got:
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            detail = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"waited {timeout:g} s for {what}{detail}")
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.25)
