"""Submit a graph built in code, follow its events, print the results. Needs a coordinator and
a worker with the conformance agents, e.g.:

    hivegrid coordinator --store memory &
    python -m hivegrid.worker.conformance --coordinator 127.0.0.1:50051 &
    HIVEGRID_COORDINATOR=127.0.0.1:50051 python examples/client_demo.py
"""

from hivegrid.client import Client, Graph

g = Graph(name="client-demo")
a, b = g.node("value", {"value": 2}), g.node("value", {"value": 3})
g.node("sum", after=[a, b], id="total")
with Client() as client:  # $HIVEGRID_COORDINATOR, else 127.0.0.1:50051
    run_id = client.submit(g)
    for ev in client.events(run_id):  # live, until the run ends
        print(f"#{ev.seq:<3} {ev.kind:<17} {ev.node_id or '-':<8} {ev.state or ''}")
    for node in client.get_run(run_id).nodes:
        print(f"{node.id}: {node.state} {node.result}")
