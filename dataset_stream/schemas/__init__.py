"""JSON Schemas (draft 2020-12) of the JSON messages on the wire: a node's telemetry, status,
error and prediction, and a gateway's status."""

__all__: list[str] = []
