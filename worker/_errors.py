"""The SDK's public exceptions."""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raise from an agent to fail the attempt for good: the node's retry policy is not consulted.

    Any other exception fails the attempt as retryable.
    """


class CoordinatorRefusedError(RuntimeError):
    """The coordinator refused the worker's Hello (for example an unsupported protocol version).

    Reconnecting with the same Hello would be refused again, so the worker stops; fix the
    worker's configuration (its agents, slots or SDK version) and start it again.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"the coordinator refused this worker: {reason}")
        self.reason = reason
