"""The test kit every tier shares (and the bench's raw worker builds on).

- `rawworker`: one worker that speaks hivegrid.v1 WorkerService by hand, an async core
  (`RawWorker`, and `Stream` beneath it for workers that keep their own loop) with a sync face
  (`SyncRawWorker`), for tests that must misbehave or read the wire;
- `processes`: the coordinator launcher (`CoordinatorProcess`: a subprocess on loopback, a
  SQLite file, restartable on the same port and store, kill -9) and conformance worker
  processes (`WorkerProcess`), their output copied to log files and shown on failure;
- `runs`: reading runs over RunService: the sync `RunClient` (watches that survive coordinator
  restarts) and `Log`, the questions tests ask of an event log;
- `inprocess`: the async RunService client for tests that run a `Coordinator` in their own
  event loop, and store helpers for them;
- `names`, `values`, `wait`: enum names, graph values (nodes, mutations, JSON), free ports and
  waiting on a condition with a deadline;
- `fixtures`: the pytest fixtures the tiers share (tests/conftest.py imports them).

Only `fixtures` imports pytest: the bench imports `rawworker` without it.
"""
