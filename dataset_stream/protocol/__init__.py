"""Wire contract v1 (see ``docs/protocol.md``): the only part of :mod:`dataset_stream` a node uses.

- batches, eval sets and inference requests: safetensors bytes, :func:`encode_batch` /
  :func:`decode_batch`, :func:`encode_eval` / :func:`decode_eval`, :func:`encode_infer` /
  :func:`decode_infer` (:class:`InferRequest`), bounded by :class:`Limits`;
- node messages: typed :class:`Telemetry` (with its long-horizon :class:`ClassMetrics`),
  :class:`Status` (its last will:
  :meth:`Status.offline`), :class:`ErrorMessage`, :class:`Prediction`; a gateway's
  :class:`GatewayStatus` (JSON on the wire, validated against the schemas shipped in
  ``dataset_stream/schemas``); the end-of-run :class:`RunSummary`;
- the downlink: a device's :class:`DesiredState` (set by an operator) and
  :class:`ReportedState`, pushed heads (:func:`head_topic`), a rollout's :class:`RolloutState`;
- eval sets shared by reference: :class:`EvalRef`, :func:`evalset_topic`, :func:`is_eval_ref`;
- topics: :func:`topic`, :func:`parse_topic`, :func:`gateway_topic`, :func:`fleet_ids`,
  device-id validation.

Every failure is a :class:`ProtocolError` with a stable ``code``.
"""

from dataset_stream.errors import ERROR_CODES, ForeignMessage, ProtocolError
from dataset_stream.protocol.class_metrics import CLASS_METRIC_FIELDS, PER_CLASS_CAP, ClassMetrics
from dataset_stream.protocol.codec import (
    EVAL_LIMITS,
    RESERVED_KEYS,
    WIRE_VERSION,
    Batch,
    EvalSet,
    InferRequest,
    Limits,
    decode_batch,
    decode_eval,
    decode_infer,
    encode_batch,
    encode_eval,
    encode_infer,
)
from dataset_stream.protocol.desired import (
    DESIRED_SETTINGS,
    LR_BITS,
    OWN_HEAD,
    ROLLOUT_STATES,
    DesiredRefused,
    DesiredState,
    Refusal,
    ReportedState,
    RolloutState,
    check_settings,
    head_topic,
    read_desired,
    read_reported,
    rollout_topic,
)
from dataset_stream.protocol.evalref import (
    EvalRef,
    evalset_filter,
    evalset_topic,
    is_eval_ref,
    parse_evalset_topic,
    payload_sha256,
)
from dataset_stream.protocol.fault import FAULT_KINDS, FaultReport, read_fault
from dataset_stream.protocol.gateway_status import (
    GATEWAY_STATES,
    GatewayStatus,
    read_gateway_status,
)
from dataset_stream.protocol.messages import (
    SCHEMA_NAMES,
    JsonMessage,
    load_schema,
    validate_error,
    validate_message,
    validate_prediction,
    validate_status,
    validate_telemetry,
)
from dataset_stream.protocol.node_messages import (
    NODE_ERROR_CODES,
    NODE_MESSAGE_KINDS,
    REPORT_KINDS,
    STATUS_STATES,
    TELEMETRY_STATES,
    BatteryState,
    ErrorMessage,
    NodeMessage,
    Prediction,
    ReplayStats,
    Status,
    Telemetry,
    read_node_message,
)
from dataset_stream.protocol.prediction import INFERENCE_PARTS
from dataset_stream.protocol.summary import DeviceSummary, RunSummary, StreamSummary
from dataset_stream.protocol.topics import (
    DEFAULT_PREFIX,
    FLEET_PREFIX,
    KINDS,
    fleet_ids,
    gateway_filter,
    gateway_topic,
    is_device_id,
    parse_gateway_topic,
    parse_topic,
    topic,
    topic_filter,
    validate_device_id,
    validate_prefix,
)

__all__ = [
    "CLASS_METRIC_FIELDS",
    "DEFAULT_PREFIX",
    "DESIRED_SETTINGS",
    "ERROR_CODES",
    "EVAL_LIMITS",
    "FAULT_KINDS",
    "FLEET_PREFIX",
    "GATEWAY_STATES",
    "INFERENCE_PARTS",
    "KINDS",
    "LR_BITS",
    "NODE_ERROR_CODES",
    "NODE_MESSAGE_KINDS",
    "OWN_HEAD",
    "PER_CLASS_CAP",
    "REPORT_KINDS",
    "RESERVED_KEYS",
    "ROLLOUT_STATES",
    "SCHEMA_NAMES",
    "STATUS_STATES",
    "TELEMETRY_STATES",
    "WIRE_VERSION",
    "Batch",
    "BatteryState",
    "ClassMetrics",
    "DesiredRefused",
    "DesiredState",
    "DeviceSummary",
    "ErrorMessage",
    "EvalRef",
    "EvalSet",
    "FaultReport",
    "ForeignMessage",
    "GatewayStatus",
    "InferRequest",
    "JsonMessage",
    "Limits",
    "NodeMessage",
    "Prediction",
    "ProtocolError",
    "Refusal",
    "ReplayStats",
    "ReportedState",
    "RolloutState",
    "RunSummary",
    "Status",
    "StreamSummary",
    "Telemetry",
    "check_settings",
    "decode_batch",
    "decode_eval",
    "decode_infer",
    "encode_batch",
    "encode_eval",
    "encode_infer",
    "evalset_filter",
    "evalset_topic",
    "fleet_ids",
    "gateway_filter",
    "gateway_topic",
    "head_topic",
    "is_device_id",
    "is_eval_ref",
    "load_schema",
    "parse_evalset_topic",
    "parse_gateway_topic",
    "parse_topic",
    "payload_sha256",
    "read_desired",
    "read_fault",
    "read_gateway_status",
    "read_node_message",
    "read_reported",
    "rollout_topic",
    "topic",
    "topic_filter",
    "validate_device_id",
    "validate_error",
    "validate_message",
    "validate_prediction",
    "validate_prefix",
    "validate_status",
    "validate_telemetry",
]
