"""The downlink: a device's desired and reported state, and the heads an operator pushes.

An operator (``vega-emu ctl``, ``vega-emu rollout``) changes a running device by publishing its
**desired state**, retained, on ``{prefix}/{device}/desired`` (``schemas/desired.json``)::

    {"device": "node-0003", "version": 4, "settings": {"lr_bits": 6, "learning_rate": 0.005},
     "ts": 1700000000.0, "by": "ctl"}

``version`` grows with every change of that device's desired state (the operator reads the
retained one and writes version + 1). ``settings`` holds only what the operator sets
(:data:`DESIRED_SETTINGS`); a setting absent from it is the device's own, the one it was started
with. Retained, so a device that is offline when it is set gets it when it connects.

The device applies a new version at its next event boundary (never in the middle of an event),
keeps it with its state (a restart keeps it), and publishes its **reported state**, retained, on
``{prefix}/{device}/reported`` (``schemas/reported.json``)::

    {"device": "node-0003", "version": 4, "settings": {"lr_bits": 6, "lr_size": 1500, ...},
     "seq": 17, "t": 1020.0, "ts": 1700000000.0, "refused": null}

``version`` is the desired version in force (0: none ever applied), ``settings`` every setting
as the device runs it (:data:`DESIRED_SETTINGS`, all of them), ``seq`` the last batch learned
before the version took effect. A desired state the device cannot apply changes nothing: the
device answers it with an ``error`` (code ``bad_desired``, ``desired_version`` and the field in
its message) and names it in ``refused`` of its reported state until a later version applies.

A desired ``head`` other than ``"own"`` names a head an operator published, retained, as
safetensors bytes (the bundle's ``adaptive.safetensors`` format) on
``{prefix}/heads/{head}/weights`` (:func:`head_topic`), with its SHA-256 in ``head_sha256``. The
device fetches it, checks the digest, and from the next event learns on from that head; going
back to ``"own"`` restores the head the device had when it first left its own. Four topic
levels, like a gateway's status, so that ``{prefix}/+/{kind}`` never matches them.

A rollout (``vega-emu rollout``) records its progress, retained, on
``{prefix}/rollout/{name}/state`` (:func:`rollout_topic`; :class:`RolloutState`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from dataset_stream.errors import DesiredRefused, ForeignMessage, ProtocolError
from dataset_stream.protocol.messages import JsonMessage, extra_fields, validate_message
from dataset_stream.protocol.topics import parse_topic, validate_device_id, validate_prefix

#: A desired setting's JSON type and range: ``(type, low, high)`` for numbers, ``(bool,)`` for
#: switches, ``(str,)`` for names. The names are the node's (``--lr-bits`` is ``lr_bits``).
DESIRED_SETTINGS: Final[Mapping[str, tuple[Any, ...]]] = {
    "lr_bits": (int, 4, 32),  # bits per stored latent replay value: 32 (FP32), 8, 7, 6, 5 or 4
    "lr_size": (int, 0, 1_000_000),  # N_LR: the most latent replays the memory holds
    "learning_rate": (float, 1e-9, 10.0),  # the head's SGD learning rate
    "epochs": (int, 1, 1000),  # passes over an event's mini-batches
    "mb_size": (int, 1, 100_000),  # samples per training mini-batch (new + replays)
    "learning": (bool,),  # False: batches are acknowledged and answered, nothing is learned
    "inference": (bool,),  # False: inference requests are refused (code inference_off)
    "head": (str,),  # "own", or a pushed head's name (with head_sha256)
    "head_sha256": (str,),  # hex SHA-256 of the pushed head's safetensors bytes
}
#: The replay bit widths a device stores (``device.learning.replay.quant.SUPPORTED_BITS``).
LR_BITS: Final = (32, 8, 7, 6, 5, 4)
#: ``head`` of a device learning on from its own head.
OWN_HEAD: Final = "own"
#: A pushed head's name: one topic level.
_HEAD_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
#: ``RolloutState.state`` values.
ROLLOUT_STATES: Final = ("staging", "soaking", "halted", "rolled_back", "done")


def check_settings(settings: Mapping[str, Any], *, version: int | None = None) -> dict[str, Any]:
    """``settings`` checked against :data:`DESIRED_SETTINGS`, as a new dict.

    Raises :class:`DesiredRefused` naming the first field that is unknown, of the wrong type or
    out of range. A whole number is accepted for a ``float`` setting (JSON has one number type).
    """
    out: dict[str, Any] = {}
    for name, value in settings.items():
        where = f"settings.{name}"
        rule = DESIRED_SETTINGS.get(name)
        if rule is None:
            known = ", ".join(DESIRED_SETTINGS)
            raise DesiredRefused(version, where, f"unknown setting (known: {known})")
        kind = rule[0]
        if kind is bool or kind is str:
            if not isinstance(value, kind):
                raise DesiredRefused(version, where, f"{value!r} is not a {kind.__name__}")
            out[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DesiredRefused(version, where, f"{value!r} is not a number")
        if kind is int and not (isinstance(value, int) or float(value).is_integer()):
            raise DesiredRefused(version, where, f"{value!r} is not a whole number")
        number = int(value) if kind is int else float(value)
        low, high = rule[1], rule[2]
        if not (math.isfinite(number) and low <= number <= high):
            raise DesiredRefused(version, where, f"{value!r} is not within {low}..{high}")
        out[name] = number
    bits = out.get("lr_bits")
    if bits is not None and bits not in LR_BITS:
        raise DesiredRefused(
            version, "settings.lr_bits", f"{bits} is not one of {', '.join(map(str, LR_BITS))}"
        )
    head = out.get("head")
    if head is not None and head != OWN_HEAD:
        if not _HEAD_RE.fullmatch(head):
            raise DesiredRefused(
                version, "settings.head", f"{head!r} is not 'own' nor a name [A-Za-z0-9_.-]"
            )
        digest = out.get("head_sha256")
        if digest is None or not _SHA256_RE.fullmatch(digest):
            raise DesiredRefused(
                version, "settings.head_sha256", "a pushed head needs its lowercase hex SHA-256"
            )
    elif "head_sha256" in out and head is None:
        raise DesiredRefused(version, "settings.head_sha256", "given without a head")
    return out


@dataclass(frozen=True, slots=True)
class DesiredState(JsonMessage):
    """Version ``version`` of what an operator wants device ``device`` to run."""

    SCHEMA: ClassVar[str] = "desired"
    KNOWN: ClassVar[frozenset[str]] = frozenset(["device", "version", "settings", "ts", "by"])

    device: str
    version: int
    settings: Mapping[str, Any]
    ts: float = 0.0
    by: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_device_id(self.device)
        if isinstance(self.version, bool) or self.version < 1:
            raise DesiredRefused(None, "version", f"{self.version!r} is not an integer >= 1")
        check_settings(self.settings, version=self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "device": self.device,
            "version": self.version,
            "settings": dict(self.settings),
            "ts": self.ts,
            "by": self.by,
        }

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        version = int(obj["version"])
        return cls(
            device=obj["device"],
            version=version,
            settings=check_settings(obj["settings"], version=version),
            ts=float(obj.get("ts", 0.0)),
            by=str(obj.get("by", "")),
            extra=extra_fields(obj, cls.KNOWN),
        )

    def with_settings(self, changes: Mapping[str, Any], *, ts: float, by: str) -> DesiredState:
        """The next version: these settings changed (a value of None removes the setting, so
        the device goes back to its own)."""
        merged = {**self.settings, **changes}
        return DesiredState(
            self.device,
            self.version + 1,
            {k: v for k, v in merged.items() if v is not None},
            ts=ts,
            by=by,
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """The desired version a device refused, the field at fault and why."""

    version: int | None
    field: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "field": self.field, "message": self.message[:1024]}


@dataclass(frozen=True, slots=True)
class ReportedState(JsonMessage):
    """What device ``device`` runs: desired ``version`` in force and every setting's value."""

    SCHEMA: ClassVar[str] = "reported"
    KNOWN: ClassVar[frozenset[str]] = frozenset(
        ["device", "version", "settings", "seq", "t", "ts", "refused"]
    )

    device: str
    version: int
    settings: Mapping[str, Any]
    seq: int = 0
    t: float = 0.0
    ts: float = 0.0
    refused: Refusal | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_device_id(self.device)
        if self.version < 0 or self.seq < 0:
            raise ValueError(f"reported version and seq must be >= 0 ({self.version}, {self.seq})")

    def converged(self, desired: DesiredState | None) -> bool:
        """Whether this device runs ``desired`` (no desired state: nothing to converge to)."""
        return desired is None or self.version >= desired.version

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "device": self.device,
            "version": self.version,
            "settings": dict(self.settings),
            "seq": self.seq,
            "t": self.t,
            "ts": self.ts,
            "refused": None if self.refused is None else self.refused.to_dict(),
        }

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        refused = obj.get("refused")
        return cls(
            device=obj["device"],
            version=int(obj["version"]),
            settings=dict(obj["settings"]),
            seq=int(obj.get("seq", 0)),
            t=float(obj.get("t", 0.0)),
            ts=float(obj.get("ts", 0.0)),
            refused=None
            if refused is None
            else Refusal(refused.get("version"), str(refused["field"]), str(refused["message"])),
            extra=extra_fields(obj, cls.KNOWN),
        )


@dataclass(frozen=True, slots=True)
class RolloutState(JsonMessage):
    """A rollout's progress: ``stage`` (index into ``stages``, percent of the fleet), the
    devices it has moved to ``head``, and why it halted (``reason``)."""

    SCHEMA: ClassVar[str] = "rollout"
    KNOWN: ClassVar[frozenset[str]] = frozenset(
        ["name", "head", "state", "stage", "stages", "devices", "reason", "ts"]
    )

    name: str
    head: str
    state: str
    stage: int
    stages: Sequence[float]
    devices: Sequence[str] = ()
    reason: str = ""
    ts: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _HEAD_RE.fullmatch(self.name) or not _HEAD_RE.fullmatch(self.head):
            raise ValueError(f"rollout name {self.name!r} and head {self.head!r}: [A-Za-z0-9_.-]")
        if self.state not in ROLLOUT_STATES:
            raise ValueError(f"rollout state {self.state!r} is not one of {ROLLOUT_STATES}")
        if not 0 <= self.stage < max(1, len(self.stages)):
            raise ValueError(f"rollout stage {self.stage} outside its {len(self.stages)} stages")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "name": self.name,
            "head": self.head,
            "state": self.state,
            "stage": self.stage,
            "stages": list(self.stages),
            "devices": list(self.devices),
            "reason": self.reason,
            "ts": self.ts,
        }

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        return cls(
            name=obj["name"],
            head=obj["head"],
            state=obj["state"],
            stage=int(obj["stage"]),
            stages=[float(s) for s in obj["stages"]],
            devices=list(obj.get("devices", [])),
            reason=str(obj.get("reason", "")),
            ts=float(obj.get("ts", 0.0)),
            extra=extra_fields(obj, cls.KNOWN),
        )


def head_topic(prefix: str, head: str) -> str:
    """``head_topic("vega", "v2")`` -> ``"vega/heads/v2/weights"``."""
    if not _HEAD_RE.fullmatch(head):
        raise ProtocolError("bad_format", f"head name {head!r} is not [A-Za-z0-9_.-]{{1,64}}")
    return f"{validate_prefix(prefix)}/heads/{head}/weights"


def rollout_topic(prefix: str, name: str) -> str:
    """``rollout_topic("vega", "r1")`` -> ``"vega/rollout/r1/state"``."""
    if not _HEAD_RE.fullmatch(name):
        raise ProtocolError("bad_format", f"rollout name {name!r} is not [A-Za-z0-9_.-]{{1,64}}")
    return f"{validate_prefix(prefix)}/rollout/{name}/state"


def read_desired(prefix: str, where: str, payload: object) -> DesiredState:
    """The desired state published on topic ``where``.

    Raises :class:`ForeignMessage` for a topic that is not a device's ``desired`` under
    ``prefix``; :class:`DesiredRefused` (with the version when it could be read) for a payload
    that is not a desired state the device could apply: not JSON, another device's, an unknown
    setting, a value out of range.
    """
    device = _device_of(prefix, where, "desired")
    if not isinstance(payload, bytes | bytearray):
        raise DesiredRefused(None, "(message)", "payload is not bytes")
    try:
        obj = validate_message("desired", bytes(payload))
    except DesiredRefused:
        raise
    except ProtocolError as exc:
        raise DesiredRefused(None, "(message)", exc.message) from None
    version = obj["version"]
    if obj["device"] != device:
        raise DesiredRefused(version, "device", f"{obj['device']!r} on the topic of {device}")
    try:
        return DesiredState.from_valid(obj)
    except DesiredRefused:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise DesiredRefused(version, "(message)", str(exc)) from None


def read_reported(prefix: str, where: str, payload: object) -> ReportedState:
    """The reported state published on topic ``where`` (:class:`ForeignMessage` for another
    topic or device, ``ProtocolError("bad_format")`` for a payload that is not one)."""
    device = _device_of(prefix, where, "reported")
    if not isinstance(payload, bytes | bytearray):
        raise ProtocolError("bad_format", f"{where}: payload is not bytes")
    state = ReportedState.from_json(bytes(payload))
    if state.device != device:
        raise ForeignMessage(f"reported state of {state.device!r} on the topic of {device}")
    return state


def _device_of(prefix: str, where: str, kind: str) -> str:
    try:
        device, found = parse_topic(prefix, where)
    except ProtocolError as exc:
        raise ForeignMessage(f"a message on {where[:200]!r}: {exc.message}") from None
    if found != kind:
        raise ForeignMessage(f"a message on {where[:200]}, not a device's {kind} state")
    return device


__all__ = [
    "DESIRED_SETTINGS",
    "LR_BITS",
    "OWN_HEAD",
    "ROLLOUT_STATES",
    "DesiredRefused",
    "DesiredState",
    "Refusal",
    "ReportedState",
    "RolloutState",
    "check_settings",
    "head_topic",
    "read_desired",
    "read_reported",
    "rollout_topic",
]
