"""The fuzzing tier (issue 9, item 9): random programs of client calls and worker messages,
valid and not, against a real coordinator on a SQLite file, with kills and restarts at random
points. See tests/fuzz/README.md; `driver.py` says what is checked."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from . import ops
from .driver import Driver

EXAMPLES = int(os.environ.get("HIVEGRID_FUZZ_EXAMPLES", "15"))

settings.register_profile(
    "hivegrid-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    print_blob=True,
    # No explain phase: it reruns a failing program hundreds of times.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("hivegrid-fuzz")
# A generous bound: an example takes about a second, shrinking a failure many more.
TIMEOUT = 120 + 10 * EXAMPLES


def run_program(program: list[Any], workers: int, snapshot_every: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hivegrid-fuzz-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'hg.db'}"
        asyncio.run(Driver(url, workers, snapshot_every).run(program))


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(
    program=ops.programs,
    workers=st.integers(2, 3),
    snapshot_every=st.sampled_from((3, 10, 100_000)),
)
def test_random_programs_with_crashes(
    program: list[Any], workers: int, snapshot_every: int
) -> None:
    run_program(program, workers, snapshot_every)


@pytest.mark.timeout(60)
def test_a_fixed_program_runs() -> None:
    """One hand-written program through every kind of operation: the driver itself works."""
    n = ops.N(0, (), 1, True, False, 0, False)
    spawn = ops.M("add_node", 1, 0, 0, True)
    program = [
        ops.Submit((n, ops.N(0, (0,), 0, False, False, 0, False)), "none", 1, 0),
        ops.Submit((n,), "cycle", None, 0),
        ops.Resubmit(0),
        ops.Answer(0, (ops.A(0, "ok", 1, (spawn,), False, "none"),), again=True),
        ops.Progress(1, 0, True, False),
        ops.BadAnswer(1, "other", 0),
        ops.Crash(("own", "other", "junk")),
        ops.Answer(1, (ops.A(0, "fail", 1, (), True, "long"),)),
        ops.Duplicate(0, 0),
        ops.Mutate(0, (ops.M("add_edge", 0, 1, 0, False), ops.M("empty", 0, 0, 0, False))),
        ops.Disconnect(0, True),
        ops.Connect(0, "own"),
        ops.Cancel(0),
        ops.Delete(0),
        ops.Retain(),
        ops.Inspect(0, 1),
    ]
    run_program(program, 3, 3)
