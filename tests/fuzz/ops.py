"""What the fuzzer draws: operations as plain data, each interpreted against what has happened
so far (an index picks among what exists, modulo its count; an operation with nothing to act
on is a no-op). Every drawn list is therefore a valid program, and hypothesis shrinks freely.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

# Agents a node may name; no worker runs "ghost".
AGENTS = ("echo", "spawn", "ghost")
# (name, agents, slots) of the workers, the first `workers` of them in an example.
WORKERS = (("w0", ("echo", "spawn"), 2), ("w1", ("echo",), 3), ("w2", ("spawn",), 2))

# What makes a submission invalid ("none": valid). Weighted towards valid graphs.
DEFECTS = (
    *("none",) * 8,
    "cycle",
    "duplicate_id",
    "empty_id_collision",
    "unknown_dep",
    "self_dep",
    "twice_dep",
    "no_agent",
    "bad_jitter",
    "negative_timeout",
    "empty_graph",
    "small_run_limit",
    "long_id",
    "long_agent",
    "long_name",
    "too_many_nodes",
    "run_limit_over",
    "taken_run_id",
)

MUTATION_KINDS = (
    *("add_node",) * 4,
    "add_edge",
    "add_edge",
    "remove_edge",
    "remove_node",
    "modify_node",
    "split_node",
    "inject_before",
    "prune",
    "mark_speculative",
    "confirm_speculative",
    "discard_speculative",
    "duplicate_id",
    "unknown_dep",
    "empty",
    "unknown_kind",
    "too_many",
    "long_id",
)

# Retry policies: 0 none; 1, 3 retry after a millisecond or so; 2 retry after 1000 s (never
# within an example).
RETRIES = 4

HELD = ("own", "own", "none", "other", "both", "junk")
BAD = (
    "stale",
    "other",
    "wrong_node",
    "wrong_attempt",
    "wrong_run",
    "made_up",
    "no_outcome",
    "no_lease",
    "no_run",
    "long_ref",
)


@dataclass(frozen=True)
class N:
    """A node of a drawn graph; `deps` index earlier nodes (modulo their count)."""

    agent: int
    deps: tuple[int, ...]
    retry: int
    can_mutate: bool
    run_on_failure: bool
    priority: int
    empty_id: bool


@dataclass(frozen=True)
class M:
    """A mutation; `a` and `b` pick nodes of the run (or of the batch so far)."""

    kind: str
    a: int
    b: int
    agent: int
    flag: bool


@dataclass(frozen=True)
class A:
    """One answer: to held assignment `k`; outcome ok/fail/cancel; `size` 3 = over the limit."""

    k: int
    outcome: str
    size: int
    mutations: tuple[M, ...]
    retryable: bool
    error: str


# --- operations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    nodes: tuple[N, ...]
    defect: str
    request: int | None
    limits: int


@dataclass(frozen=True)
class Resubmit:
    """SubmitRun again with a request id used before (and another graph)."""

    k: int


@dataclass(frozen=True)
class Cancel:
    k: int


@dataclass(frozen=True)
class Mutate:
    k: int
    mutations: tuple[M, ...]


@dataclass(frozen=True)
class Delete:
    k: int


@dataclass(frozen=True)
class Retain:
    pass


@dataclass(frozen=True)
class Inspect:
    k: int
    page_size: int


@dataclass(frozen=True)
class Connect:
    w: int
    held: str


@dataclass(frozen=True)
class Disconnect:
    w: int
    drop: bool


@dataclass(frozen=True)
class Answer:
    """Answers sent in one Results message; `again`: the first one once more at its end."""

    w: int
    answers: tuple[A, ...]
    again: bool = False


@dataclass(frozen=True)
class BadAnswer:
    w: int
    kind: str
    k: int


@dataclass(frozen=True)
class Duplicate:
    w: int
    k: int


@dataclass(frozen=True)
class Progress:
    w: int
    k: int
    big: bool
    stale: bool


@dataclass(frozen=True)
class Heartbeat:
    w: int


@dataclass(frozen=True)
class Drain:
    w: int


@dataclass(frozen=True)
class HelloTwice:
    w: int


@dataclass(frozen=True)
class Crash:
    held: tuple[str, ...]


# --- strategies -------------------------------------------------------------------------

_index = st.integers(0, 15)

nodes = st.builds(
    N,
    agent=st.sampled_from((0, 0, 1, 1, 2)),
    deps=st.lists(st.integers(0, 7), max_size=3).map(tuple),
    retry=st.integers(0, RETRIES - 1),
    can_mutate=st.booleans(),
    run_on_failure=st.sampled_from((False, False, False, True)),
    priority=st.integers(-1, 1),
    empty_id=st.sampled_from((False,) * 5 + (True,)),
)

mutations = st.builds(
    M,
    kind=st.sampled_from(MUTATION_KINDS),
    a=_index,
    b=_index,
    agent=st.sampled_from((0, 0, 1, 2)),
    flag=st.booleans(),
)

# What a worker sends with a result: mostly spawns that can be valid.
SPAWN_KINDS = (*("add_node",) * 6, "add_edge", "prune", "modify_node", "inject_before")
spawns = st.one_of(
    st.builds(
        M,
        kind=st.sampled_from(SPAWN_KINDS),
        a=_index,
        b=_index,
        agent=st.sampled_from((0, 0, 1, 2)),
        flag=st.booleans(),
    ),
    mutations,
)

answers = st.builds(
    A,
    k=_index,
    outcome=st.sampled_from(("ok", "ok", "ok", "fail", "fail", "cancel")),
    size=st.sampled_from((0, 1, 1, 2, 2, 3)),
    mutations=st.one_of(st.just(()), st.lists(spawns, min_size=1, max_size=3).map(tuple)),
    retryable=st.booleans(),
    error=st.sampled_from(("short", "short", "long", "no_kind", "long_kind", "forged", "none")),
)

_worker = st.integers(0, 2)

submit = st.builds(
    Submit,
    nodes=st.lists(nodes, min_size=1, max_size=8).map(tuple),
    defect=st.sampled_from(DEFECTS),
    request=st.one_of(st.none(), st.integers(0, 3)),
    limits=st.integers(0, 3),
)
answer = st.builds(
    Answer,
    w=_worker,
    answers=st.lists(answers, min_size=1, max_size=3).map(tuple),
    again=st.sampled_from((False,) * 7 + (True,)),
)
crash = st.builds(Crash, held=st.lists(st.sampled_from(HELD), min_size=3, max_size=3).map(tuple))

# (weight, strategy). The kind is drawn as an index into the repetitions (st.one_of would drop
# repeated branches), so it shrinks towards answers.
WEIGHTS = (
    (10, answer),
    (4, submit),
    (2, crash),
    (2, st.builds(Connect, w=_worker, held=st.sampled_from(HELD))),
    (1, st.builds(Disconnect, w=_worker, drop=st.booleans())),
    (2, st.builds(BadAnswer, w=_worker, kind=st.sampled_from(BAD), k=_index)),
    (2, st.builds(Duplicate, w=_worker, k=_index)),
    (2, st.builds(Mutate, k=_index, mutations=st.lists(mutations, max_size=4).map(tuple))),
    (1, st.builds(Resubmit, k=_index)),
    (1, st.builds(Cancel, k=_index)),
    (1, st.builds(Delete, k=_index)),
    (1, st.builds(Inspect, k=_index, page_size=st.integers(0, 3))),
    (1, st.builds(Progress, w=_worker, k=_index, big=st.booleans(), stale=st.booleans())),
    (1, st.one_of(st.builds(Heartbeat, w=_worker), st.builds(Drain, w=_worker))),
    (1, st.builds(HelloTwice, w=_worker)),
    (1, st.builds(Retain)),
)
_KINDS = [s for weight, s in WEIGHTS for _ in range(weight)]
operation = st.integers(0, len(_KINDS) - 1).flatmap(lambda i: _KINDS[i])

# Every program starts with a valid submission, so that its workers have something to do.
first = st.builds(
    Submit,
    nodes=st.lists(nodes, min_size=1, max_size=8).map(tuple),
    defect=st.just("none"),
    request=st.one_of(st.none(), st.integers(0, 3)),
    limits=st.integers(0, 3),
)
# The length is drawn first (st.lists alone averages about 8 operations), and shrinks too.
programs = st.tuples(
    first, st.integers(2, 50).flatmap(lambda n: st.lists(operation, min_size=n, max_size=n))
).map(lambda t: [t[0], *t[1]])
