"""The service layer: the wire. Thin gRPC servicers (`run_service`, `worker_service`), the
conversions between hivegrid.v1 and the domain (`convert`, `graph_pb`), and the worker protocol's
framing, constants and the door's checks of results (`protocol`). Every decision is the core's
and the runtime's; this layer decodes, checks the operator's limits at the door, and encodes.

Nothing is imported here: the store's codec imports `graph_pb` without pulling the servicers
(and with them the runtime) in.
"""
