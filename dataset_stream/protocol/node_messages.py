"""The node's JSON messages as types: :class:`Telemetry`, :class:`Status`, :class:`ErrorMessage`
(and :class:`~dataset_stream.protocol.prediction.Prediction`, in its own module).

They are serialised only at the MQTT edge: a producer builds the dataclass and calls
``to_json()``; a consumer calls ``from_json(payload)``, which validates the JSON against the
shipped schema (``ProtocolError("bad_format")`` naming the field) and returns the dataclass.
Fields a producer adds beyond these are kept in ``extra`` and written back unchanged, so the
contract's "add fields freely, never rename these" holds through a round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from dataset_stream.errors import ForeignMessage, ProtocolError
from dataset_stream.protocol.class_metrics import CLASS_METRIC_FIELDS, PER_CLASS_CAP, ClassMetrics
from dataset_stream.protocol.messages import JsonMessage
from dataset_stream.protocol.messages import extra_fields as _extra
from dataset_stream.protocol.prediction import Prediction
from dataset_stream.protocol.topics import parse_topic, validate_device_id
from dataset_stream.protocol.values import BatteryState

#: Telemetry ``state`` values.
TELEMETRY_STATES: Final = ("learning", "idle", "depleted")
#: Status ``state`` values; ``error``: the node is up but its loop failed (``reason`` says why).
STATUS_STATES: Final = ("idle", "learning", "depleted", "offline", "error")

#: ``code`` of an ``error`` message that is not a :class:`ProtocolError` code (the node's own).
NODE_ERROR_CODES: Final = frozenset(
    {
        "duplicate",  # seq already learned: acknowledged, answered, not applied again
        "gap",  # seqs that never arrived within the hold time were skipped (no seq: see gap_*)
        "store_failed",  # the event could not be committed; not acknowledged, retried
        "internal",  # an unexpected failure while handling the input; the node goes on
        "foreign_topic",  # a message on a topic that is not this node's
        "depleted",  # an inference request the battery cannot pay for: nothing classified
        "bad_desired",  # a desired state the node cannot apply (desired_version; nothing changed)
        "inference_off",  # an inference request while the desired state turns inference off
        "eval_mismatch",  # a shared eval set whose SHA-256 or size is not its reference's: unused
        "energy_policy",  # a batch the node's energy-aware policy did not learn (seq consumed)
        "deferred",  # held for the sun (interim): its telemetry or an energy_policy drop follows
    }
)

PHASES: Final = ("frozen", "adaptive", "memory", "idle", "total")
LATENCY_PARTS: Final = ("frozen", "adaptive", "total")


@dataclass(frozen=True, slots=True)
class ReplayStats:
    """The LR memory as the telemetry's ``replay`` object (field names are the wire contract):

    ``size``: the LRs held now (occupancy); ``capacity``: N_LR, the most it holds (the node's
    ``--lr-size``, ``lr_size`` in the node's code); ``bits`` per stored value; ``bytes`` stored.
    """

    size: int
    capacity: int
    bits: int
    bytes: int

    def to_dict(self) -> dict[str, int]:
        return {
            "size": self.size,
            "capacity": self.capacity,
            "bits": self.bits,
            "bytes": self.bytes,
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Self:
        return cls(
            size=int(obj["size"]),
            capacity=int(obj["capacity"]),
            bits=int(obj["bits"]),
            bytes=int(obj["bytes"]),
        )


@dataclass(frozen=True, slots=True)
class Telemetry(JsonMessage):
    """One learning event, on ``{prefix}/{device}/telemetry`` (``schemas/telemetry.json``).

    ``latency_s`` (seconds on the emulated hardware) maps ``frozen``, ``adaptive``, ``total``;
    ``energy_j`` maps ``frozen``, ``adaptive``, ``memory``, ``idle``, ``total`` (more phases may
    follow). ``events``: events learned so far; ``gaps``: seqs skipped so far.

    Optional (absent from the JSON when None): ``inferences`` and ``inference_energy_j``, the
    inference requests answered and their energy since the previous telemetry;
    ``prequential_accuracy`` over the ``prequential_n`` predictions scored so far
    (test-then-train: a prediction scored when its sample's label arrives in a batch);
    ``classes``: the long-horizon metrics (forgetting, backward transfer, recency per class;
    :class:`~dataset_stream.protocol.class_metrics.ClassMetrics`), flat fields on the wire.
    ``accuracy_by_class`` is sent by a node only for a model of at most
    :data:`~dataset_stream.protocol.class_metrics.PER_CLASS_CAP` classes.
    ``accuracy_events``: the ``events`` count at which ``accuracy`` (and the per-class
    figures) were measured, sent by a node that measures every k > 1 learned events: a
    value below ``events`` means the figures are carried from that older measurement.
    """

    SCHEMA: ClassVar[str] = "telemetry"
    KNOWN: ClassVar[frozenset[str]] = frozenset(
        [
            "device",
            "seq",
            "t",
            "state",
            "samples",
            "accuracy",
            "latency_s",
            "energy_j",
            "battery",
            "lifetime_h",
            "replay",
            "host_s",
            "events",
            "gaps",
            "accuracy_by_class",
            "inferences",
            "inference_energy_j",
            "prequential_accuracy",
            "prequential_n",
            "accuracy_events",
            *CLASS_METRIC_FIELDS,
        ]
    )

    device: str
    seq: int
    t: float
    state: str
    samples: int
    accuracy: float | None
    latency_s: Mapping[str, float]
    energy_j: Mapping[str, float]
    battery: BatteryState
    lifetime_h: float | None
    replay: ReplayStats
    host_s: float
    events: int = 0
    gaps: int = 0
    accuracy_by_class: Mapping[int, float] | None = None
    inferences: int | None = None
    inference_energy_j: float | None = None
    prequential_accuracy: float | None = None
    prequential_n: int | None = None
    classes: ClassMetrics | None = None
    accuracy_events: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_device_id(self.device)
        if self.state not in TELEMETRY_STATES:
            raise ValueError(f"telemetry state {self.state!r} is not one of {TELEMETRY_STATES}")
        if self.seq < 0 or self.samples < 0 or self.events < 0 or self.gaps < 0:
            raise ValueError(f"telemetry counts must be >= 0 (seq={self.seq})")
        if self.accuracy_events is not None and not 0 <= self.accuracy_events <= self.events:
            raise ValueError(
                f"accuracy_events must be within 0..events ({self.events}), "
                f"not {self.accuracy_events}"
            )
        missing = [p for p in PHASES if p not in self.energy_j]
        missing += [p for p in LATENCY_PARTS if p not in self.latency_s]
        if missing:
            raise ValueError(f"telemetry misses energy/latency parts {missing}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "device": self.device,
            "seq": self.seq,
            "t": self.t,
            "state": self.state,
            "samples": self.samples,
            "accuracy": self.accuracy,
            "latency_s": dict(self.latency_s),
            "energy_j": dict(self.energy_j),
            "battery": self.battery.to_dict(),
            "lifetime_h": self.lifetime_h,
            "replay": self.replay.to_dict(),
            "host_s": self.host_s,
            "events": self.events,
            "gaps": self.gaps,
        }
        if self.accuracy_by_class is not None:
            out["accuracy_by_class"] = {str(k): v for k, v in self.accuracy_by_class.items()}
        for name in (
            "inferences",
            "inference_energy_j",
            "prequential_accuracy",
            "prequential_n",
            "accuracy_events",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.classes is not None:
            out.update(self.classes.to_dict())
        return out

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        by_class = obj.get("accuracy_by_class")
        classes = ClassMetrics.from_fields(obj)
        return cls(
            device=obj["device"],
            seq=obj["seq"],
            t=float(obj["t"]),
            state=obj["state"],
            samples=obj["samples"],
            accuracy=obj["accuracy"],
            latency_s={k: float(v) for k, v in obj["latency_s"].items()},
            energy_j={k: float(v) for k, v in obj["energy_j"].items()},
            battery=BatteryState.from_dict(obj["battery"]),
            lifetime_h=obj["lifetime_h"],
            replay=ReplayStats.from_dict(obj["replay"]),
            host_s=float(obj["host_s"]),
            events=int(obj.get("events", 0)),
            gaps=int(obj.get("gaps", 0)),
            accuracy_by_class=None
            if by_class is None
            else {int(k): float(v) for k, v in by_class.items()},
            inferences=obj.get("inferences"),
            inference_energy_j=_optional_float(obj.get("inference_energy_j")),
            prequential_accuracy=_optional_float(obj.get("prequential_accuracy")),
            prequential_n=obj.get("prequential_n"),
            classes=classes,
            accuracy_events=obj.get("accuracy_events"),
            # without classes_seen, fields that look like its metrics are a producer's own
            extra=_extra(obj, cls.KNOWN if classes is not None else _KNOWN_WITHOUT_CLASSES),
        )


_KNOWN_WITHOUT_CLASSES: Final = Telemetry.KNOWN - frozenset(CLASS_METRIC_FIELDS)


@dataclass(frozen=True, slots=True)
class Status(JsonMessage):
    """The retained ``{prefix}/{device}/status`` (``schemas/status.json``).

    The last will is ``{"state": "offline"}`` alone, so everything but ``state`` is optional.
    ``reason`` says why a node is in state ``error``. A node publishes it when it connects,
    after every event it commits (``last_seq``, ``events``, ``battery``, ``lifetime_h`` and
    ``accuracy`` as that event left them) and when it stops cleanly, so a producer knows where
    each device's seqs continue and a monitor its last state, from the moment they subscribe.
    ``accuracy``: on the node's eval set after its last learning event (None: not measured).
    ``online_since``: the wall time (unix s) the node's current connection was made, the same
    in every status of that connection: a consumer that sees it change knows the node
    connected again (and may have missed what was published while it had no subscription),
    while a status after an event keeps it. ``forgetting``: the mean forgetting its last
    telemetry reported (see :class:`ClassMetrics`). ``accuracy_by_class``: only in the status a
    node publishes when it measured its factory model on a new eval set before its first learning
    event (``events`` 0: the start of its accuracy curve), for a model of at most
    :data:`PER_CLASS_CAP` classes.
    """

    SCHEMA: ClassVar[str] = "status"
    KNOWN: ClassVar[frozenset[str]] = frozenset(
        [
            "device",
            "state",
            "t",
            "last_seq",
            "events",
            "gaps",
            "battery",
            "lifetime_h",
            "replay",
            "model",
            "reason",
            "accuracy",
            "online_since",
            "accuracy_by_class",
            "forgetting",
        ]
    )

    state: str
    device: str | None = None
    t: float | None = None
    last_seq: int | None = None
    events: int | None = None
    gaps: int | None = None
    battery: BatteryState | None = None
    lifetime_h: float | None = None
    replay: ReplayStats | None = None
    model: str | None = None
    reason: str | None = None
    accuracy: float | None = None
    online_since: float | None = None
    accuracy_by_class: Mapping[int, float] | None = None
    forgetting: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in STATUS_STATES:
            raise ValueError(f"status state {self.state!r} is not one of {STATUS_STATES}")
        if self.device is not None:
            validate_device_id(self.device)
        by_class = self.accuracy_by_class
        if by_class is not None and len(by_class) > PER_CLASS_CAP:
            raise ValueError(
                f"status accuracy_by_class holds {len(by_class)} classes, more than {PER_CLASS_CAP}"
            )

    @classmethod
    def offline(cls, device: str | None = None) -> Self:
        """A device that is gone: a node's last will (``{"state": "offline", "device": ...}``),
        and what a consumer takes for each device of a gateway that went offline."""
        return cls(state="offline", device=device)

    @property
    def online(self) -> bool:
        return self.state != "offline"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "state": self.state}
        names = ("device", "t", "last_seq", "events", "gaps", "lifetime_h", "model", "reason")
        for name in (*names, "accuracy", "online_since", "forgetting"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.accuracy_by_class is not None:
            out["accuracy_by_class"] = {str(k): v for k, v in self.accuracy_by_class.items()}
        if self.battery is not None:
            out["battery"] = self.battery.to_dict()
        if self.replay is not None:
            out["replay"] = self.replay.to_dict()
        return out

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        status_by_class = obj.get("accuracy_by_class")
        return cls(
            state=obj["state"],
            device=obj.get("device"),
            t=None if obj.get("t") is None else float(obj["t"]),
            last_seq=obj.get("last_seq"),
            events=obj.get("events"),
            gaps=obj.get("gaps"),
            battery=None if "battery" not in obj else BatteryState.from_dict(obj["battery"]),
            lifetime_h=obj.get("lifetime_h"),
            replay=None if "replay" not in obj else ReplayStats.from_dict(obj["replay"]),
            model=obj.get("model"),
            reason=obj.get("reason"),
            accuracy=_optional_float(obj.get("accuracy")),
            online_since=_optional_float(obj.get("online_since")),
            accuracy_by_class=None
            if status_by_class is None
            else {int(k): float(v) for k, v in status_by_class.items()},
            forgetting=_optional_float(obj.get("forgetting")),
            extra=_extra(obj, cls.KNOWN),
        )


@dataclass(frozen=True, slots=True)
class ErrorMessage(JsonMessage):
    """An input a node refused or could not handle, on ``{prefix}/{device}/error``.

    ``code`` is a :class:`ProtocolError` code or one of :data:`NODE_ERROR_CODES`. ``seq`` is the
    batch the message answers (absent only when the input had no readable seq). A ``gap`` names
    the skipped range ``gap_first..gap_last`` and the seq learned next (``next_seq``). An error
    that answers an inference request carries its seq as ``infer_seq``, never as ``seq`` (the two
    sequences are independent). A ``duplicate`` or ``stale_seq`` also carries the node's
    ``last_seq`` (the last seq it committed), so a producer that started without the node's
    status learns where the device's seqs continue. A ``bad_desired`` carries the refused
    ``desired_version`` (absent when it could not be read) and names the field in its message.
    """

    SCHEMA: ClassVar[str] = "error"
    KNOWN: ClassVar[frozenset[str]] = frozenset(
        [
            "device",
            "seq",
            "code",
            "message",
            "gap_first",
            "gap_last",
            "next_seq",
            "infer_seq",
            "last_seq",
            "desired_version",
        ]
    )

    device: str
    code: str
    message: str
    seq: int | None = None
    gap_first: int | None = None
    gap_last: int | None = None
    next_seq: int | None = None
    infer_seq: int | None = None
    last_seq: int | None = None
    desired_version: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_device_id(self.device)
        if self.last_seq is not None and self.last_seq < 0:
            raise ValueError(f"error last_seq must be >= 0, not {self.last_seq}")
        if self.seq is not None and self.seq < 0:
            raise ValueError(f"error seq must be >= 0, not {self.seq}")
        if self.infer_seq is not None and (self.infer_seq < 0 or self.seq is not None):
            raise ValueError(f"error infer_seq {self.infer_seq}: >= 0, and never with a seq")

    @property
    def answers_infer(self) -> bool:
        """Whether this error answers an inference request rather than a batch."""
        return self.infer_seq is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "device": self.device, "code": self.code}
        out["message"] = self.message[:4096]
        for name in (
            "seq",
            "gap_first",
            "gap_last",
            "next_seq",
            "infer_seq",
            "last_seq",
            "desired_version",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        return cls(
            device=obj["device"],
            code=obj["code"],
            message=obj["message"],
            seq=obj.get("seq"),
            gap_first=obj.get("gap_first"),
            gap_last=obj.get("gap_last"),
            next_seq=obj.get("next_seq"),
            infer_seq=obj.get("infer_seq"),
            last_seq=obj.get("last_seq"),
            desired_version=obj.get("desired_version"),
            extra=_extra(obj, cls.KNOWN),
        )


#: A node's report (what :data:`REPORT_KINDS` carry).
NodeMessage = Telemetry | Status | ErrorMessage
#: What a node reports about its learning and health (the stream and the monitor subscribe to
#: these). Predictions (one per inference request, a fleet at 1 Hz sends thousands a second)
#: are not among them: a consumer subscribes to ``prediction`` on purpose.
REPORT_KINDS: Final = ("telemetry", "status", "error")
#: Every kind :func:`read_node_message` reads.
NODE_MESSAGE_KINDS: Final = (*REPORT_KINDS, "prediction")


def read_node_message(
    prefix: str, where: str, payload: object
) -> tuple[str, NodeMessage | Prediction]:
    """``(device, message)`` of a message a node published on topic ``where``.

    Raises :class:`ForeignMessage` for a topic that is not a node's telemetry, status, error or
    prediction under ``prefix``, or a message that names another device than its topic (a status
    without a ``device``, such as the last will, belongs to its topic);
    ``ProtocolError("bad_format")`` for a payload that is not a valid message. Stream and monitor
    read their messages here.
    """
    try:
        device, kind = parse_topic(prefix, where)
    except ProtocolError as exc:
        raise ForeignMessage(f"a message on {where[:200]!r}: {exc.message}") from None
    if kind not in NODE_MESSAGE_KINDS:
        raise ForeignMessage(f"a message on {where}, not a node's report")
    if not isinstance(payload, bytes | bytearray):
        raise ProtocolError("bad_format", f"{where}: payload is not bytes")
    message: NodeMessage | Prediction
    if kind == "telemetry":
        message = Telemetry.from_json(bytes(payload))
    elif kind == "status":
        message = Status.from_json(bytes(payload))
    elif kind == "prediction":
        message = Prediction.from_json(bytes(payload))
    else:
        message = ErrorMessage.from_json(bytes(payload))
    if message.device is not None and message.device != device:
        raise ForeignMessage(f"{kind} of device {message.device!r} on the topic of {device}")
    return device, message


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


__all__ = [
    "LATENCY_PARTS",
    "NODE_ERROR_CODES",
    "NODE_MESSAGE_KINDS",
    "PER_CLASS_CAP",
    "PHASES",
    "REPORT_KINDS",
    "STATUS_STATES",
    "TELEMETRY_STATES",
    "BatteryState",
    "ClassMetrics",
    "ErrorMessage",
    "NodeMessage",
    "Prediction",
    "ReplayStats",
    "Status",
    "Telemetry",
    "read_node_message",
]
