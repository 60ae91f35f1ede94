"""The service tier's kit, now in tests/support (one for every tier). These names stay here for
the tiers that still import them from this module (tests/fuzz, tests/golden)."""

from __future__ import annotations

from tests.support.inprocess import Client, fill_disk, history
from tests.support.names import states
from tests.support.rawworker import RawWorker
from tests.support.values import node
from tests.support.wait import WAIT

__all__ = ["WAIT", "Client", "RawWorker", "fill_disk", "history", "node", "states"]
