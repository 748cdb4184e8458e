"""Wire contract v1 (see ``docs/protocol.md``): the only part of :mod:`dataset_stream` a node uses.

- batches and eval sets: safetensors bytes, :func:`encode_batch` / :func:`decode_batch`,
  :func:`encode_eval` / :func:`decode_eval`, bounded by :class:`Limits`;
- node messages: typed :class:`Telemetry`, :class:`Status`, :class:`ErrorMessage` (JSON on the
  wire, validated against the schemas shipped in ``dataset_stream/schemas``); the end-of-run
  :class:`RunSummary`;
- topics: :func:`topic`, :func:`parse_topic`, :func:`fleet_ids`, device-id validation.

Every failure is a :class:`ProtocolError` with a stable ``code``.
"""

from dataset_stream.errors import ERROR_CODES, ForeignMessage, ProtocolError
from dataset_stream.protocol.codec import (
    EVAL_LIMITS,
    RESERVED_KEYS,
    WIRE_VERSION,
    Batch,
    EvalSet,
    Limits,
    decode_batch,
    decode_eval,
    encode_batch,
    encode_eval,
)
from dataset_stream.protocol.messages import (
    SCHEMA_NAMES,
    load_schema,
    validate_error,
    validate_message,
    validate_status,
    validate_telemetry,
)
from dataset_stream.protocol.node_messages import (
    NODE_ERROR_CODES,
    REPORT_KINDS,
    STATUS_STATES,
    TELEMETRY_STATES,
    BatteryState,
    ErrorMessage,
    NodeMessage,
    ReplayStats,
    Status,
    Telemetry,
    read_node_message,
)
from dataset_stream.protocol.summary import DeviceSummary, RunSummary, StreamSummary
from dataset_stream.protocol.topics import (
    DEFAULT_PREFIX,
    FLEET_PREFIX,
    KINDS,
    fleet_ids,
    is_device_id,
    parse_topic,
    topic,
    topic_filter,
    validate_device_id,
    validate_prefix,
)

__all__ = [
    "DEFAULT_PREFIX",
    "ERROR_CODES",
    "EVAL_LIMITS",
    "FLEET_PREFIX",
    "KINDS",
    "NODE_ERROR_CODES",
    "REPORT_KINDS",
    "RESERVED_KEYS",
    "SCHEMA_NAMES",
    "STATUS_STATES",
    "TELEMETRY_STATES",
    "WIRE_VERSION",
    "Batch",
    "BatteryState",
    "DeviceSummary",
    "ErrorMessage",
    "EvalSet",
    "ForeignMessage",
    "Limits",
    "NodeMessage",
    "ProtocolError",
    "ReplayStats",
    "RunSummary",
    "Status",
    "StreamSummary",
    "Telemetry",
    "decode_batch",
    "decode_eval",
    "encode_batch",
    "encode_eval",
    "fleet_ids",
    "is_device_id",
    "load_schema",
    "parse_topic",
    "read_node_message",
    "topic",
    "topic_filter",
    "validate_device_id",
    "validate_error",
    "validate_message",
    "validate_prefix",
    "validate_status",
    "validate_telemetry",
]
