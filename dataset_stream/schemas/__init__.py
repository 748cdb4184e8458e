"""JSON Schemas (draft 2020-12) of the node's JSON messages: telemetry, status, error and
prediction."""
