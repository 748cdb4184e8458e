"""JSON Schemas (draft 2020-12) of the node's JSON messages: telemetry, status, error and
prediction; read them with :func:`dataset_stream.protocol.load_schema`."""

__all__: list[str] = []
