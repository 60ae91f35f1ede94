"""The Hivegrid client: submit graphs, follow runs, and steer them from application code.

```python
from hivegrid.client import Client, Graph

g = Graph(name="demo")
a = g.node("value", {"value": 2})
b = g.node("value", {"value": 3})
g.node("sum", after=[a, b])
with Client() as c:                     # $HIVEGRID_COORDINATOR, else 127.0.0.1:50051
    run_id = c.submit(g)                # or a dict shaped like a graph file, or a file's path
    for ev in c.events(run_id):         # live, until the run ends; resumes across restarts
        print(ev.seq, ev.kind, ev.node_id or "", ev.state or "")
    print(c.get_run(run_id).results)
```

`AsyncClient` has the same methods as coroutines (`events` is an async iterator). Everything
returned is a plain value of this package (Run, Node, Event, Worker, RunState, NodeState), never
a generated protobuf class. Failures raise HivegridError subclasses that keep the coordinator's
message: RunNotFound, InvalidGraph (GraphFileError when found before sending), LimitExceeded,
Conflict, Unavailable.
"""

from ._async import ADDRESS_ENV, DEFAULT_ADDRESS, AsyncClient
from ._errors import (
    Conflict,
    GraphFileError,
    HivegridError,
    InvalidGraph,
    LimitExceeded,
    NotFound,
    RunNotFound,
    Unavailable,
    WorkerNotFound,
)
from ._graph import Graph, GraphLike, NodeRef
from ._sync import Client
from ._types import Event, Node, NodeState, Run, RunState, RunSummary, Transition, Worker

__all__ = [
    "ADDRESS_ENV",
    "DEFAULT_ADDRESS",
    "AsyncClient",
    "Client",
    "Conflict",
    "Event",
    "Graph",
    "GraphFileError",
    "GraphLike",
    "HivegridError",
    "InvalidGraph",
    "LimitExceeded",
    "Node",
    "NodeRef",
    "NodeState",
    "NotFound",
    "Run",
    "RunNotFound",
    "RunState",
    "RunSummary",
    "Transition",
    "Unavailable",
    "Worker",
    "WorkerNotFound",
]
