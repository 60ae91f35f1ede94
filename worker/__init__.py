"""Hivegrid's Python worker SDK: run agents for a Hivegrid coordinator.

```python
from hivegrid.worker import Context, Worker

w = Worker(name="my-worker", slots=4)

@w.agent("summarize")
async def summarize(ctx: Context) -> object:
    ctx.progress({"pct": 50})
    return {"summary": ctx.input["text"][:10]}

w.run(coordinator="127.0.0.1:50051")  # or set HIVEGRID_COORDINATOR; SIGTERM drains and returns
```

Agents are async functions (run as tasks) or plain functions (run in a pool of `slots` threads).
An exception fails the attempt (retryable); `NonRetryableError` fails it for good. `Context`
also builds graph mutations (`ctx.add_node(...)`, `ctx.add_edge(...)`, ...) that commit with the
agent's result. The wire protocol is docs/protocol.md.
"""

from ._context import Context
from ._errors import CoordinatorRefusedError, NonRetryableError
from ._mutations import MutationBuilder, mutations_from_json, node_spec
from ._runner import PROTOCOL_VERSION, SDK_VERSION
from ._worker import Worker

__all__ = [
    "PROTOCOL_VERSION",
    "SDK_VERSION",
    "Context",
    "CoordinatorRefusedError",
    "MutationBuilder",
    "NonRetryableError",
    "Worker",
    "mutations_from_json",
    "node_spec",
]
