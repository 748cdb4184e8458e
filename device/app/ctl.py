"""``vega-emu ctl``: read and change the desired state of running devices (docs/downlink.md).

The pieces, each usable alone:

- :func:`parse_changes`: ``lr_bits=6 learning=false head=`` as typed, into setting changes
  (``None``: remove the setting, the device goes back to its own), each value parsed by the
  type :data:`~dataset_stream.protocol.DESIRED_SETTINGS` gives it and checked with
  :func:`~dataset_stream.protocol.check_settings` -- before anything is published;
- :class:`StateBook`: the desired state, reported state and status of every device, fed the
  messages a subscription brings (sans I/O, so that it is tested without a broker);
- :func:`next_desired`: a device's next desired version with the changes merged in, checked
  whole;
- the MQTT session that reads and writes them is :class:`device.app.link.FleetLink`.

A device *converges* to desired version ``v`` when its reported version reaches ``v`` and does
not name ``v`` as refused; it *refuses* ``v`` when its reported state or a ``bad_desired`` error
names ``v``; else, when the wait is over, it *did not answer*.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from dataset_stream.protocol import (
    DESIRED_SETTINGS,
    OWN_HEAD,
    DesiredRefused,
    DesiredState,
    ErrorMessage,
    ForeignMessage,
    ProtocolError,
    Refusal,
    ReportedState,
    Status,
    Telemetry,
    check_settings,
    parse_topic,
    read_desired,
    read_node_message,
    read_reported,
)
from device.app.errors import SettingError

__all__ = ["DeviceView", "OnReport", "StateBook", "next_desired", "parse_changes", "parse_value"]

log = logging.getLogger(__name__)

_TRUE: Final = frozenset({"true", "on", "yes", "1"})
_FALSE: Final = frozenset({"false", "off", "no", "0"})
#: What a message hook receives: the device and its telemetry or error.
OnReport = Callable[[str, Telemetry | ErrorMessage], None]


def parse_value(name: str, text: str) -> Any:
    """``text`` as the value of desired setting ``name`` (int, float, true/false or a name);
    :class:`SettingError` naming the key for an unknown setting or a bad value."""
    rule = DESIRED_SETTINGS.get(name)
    if rule is None:
        raise SettingError(f"{name}: no such setting (known: {', '.join(DESIRED_SETTINGS)})")
    kind = rule[0]
    value: Any
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(f"{text!r} is not true or false")
            value = lowered in _TRUE
        elif kind is int:
            value = int(text.strip())
        elif kind is float:
            value = float(text.strip())
        else:
            value = text.strip()
        check_settings({name: value})
    except ValueError as exc:
        reason = exc.reason if isinstance(exc, DesiredRefused) else str(exc)
        raise SettingError(f"{name}={text}: {reason}") from None
    return value


def parse_changes(pairs: Iterable[str], unset: Iterable[str] = ()) -> dict[str, Any]:
    """``["lr_bits=6", "epochs="]`` -> ``{"lr_bits": 6, "epochs": None}``; ``unset`` names
    settings to remove too. Setting ``head`` to ``own`` (or removing it) removes
    ``head_sha256``. :class:`SettingError` for the first bad one, naming its key."""
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep:
            raise SettingError(f"{pair!r}: want key=value (key= removes the setting)")
        if name not in DESIRED_SETTINGS:
            raise SettingError(f"{name}: no such setting (known: {', '.join(DESIRED_SETTINGS)})")
        changes[name] = None if text.strip() == "" else parse_value(name, text)
    for name in unset:
        if name not in DESIRED_SETTINGS:
            raise SettingError(f"{name}: no such setting (known: {', '.join(DESIRED_SETTINGS)})")
        changes[name] = None
    if "head" in changes and changes["head"] in (None, OWN_HEAD):
        changes.setdefault("head_sha256", None)
        if changes["head_sha256"] is not None:
            raise SettingError("head_sha256: given with head own (a pushed head needs a name)")
    if not changes:
        raise SettingError("nothing to set: give key=value (or --unset key)")
    return changes


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the broker holds for one device: its desired and reported state, its status."""

    device: str
    desired: DesiredState | None = None
    reported: ReportedState | None = None
    status: Status | None = None
    refused: Refusal | None = None  # a bad_desired error seen for a desired version

    @property
    def converged(self) -> bool:
        """Its reported state runs its desired version (no desired state: nothing to do)."""
        if self.desired is None:
            return True
        return (
            self.reported is not None
            and self.reported.version >= self.desired.version
            and self.refusal_of(self.desired.version) is None
        )

    def refusal_of(self, version: int) -> Refusal | None:
        """The refusal of desired ``version``, if the device said so."""
        for refusal in (self.reported.refused if self.reported else None, self.refused):
            if refusal is not None and refusal.version == version:
                return refusal
        return None

    @property
    def state(self) -> str:
        """``converged`` (also: no desired state, nothing to apply), ``refused`` or ``pending``
        (a desired version not applied yet)."""
        if self.desired is not None and self.refusal_of(self.desired.version) is not None:
            return "refused"
        return "converged" if self.converged else "pending"

    @property
    def online(self) -> bool | None:
        return None if self.status is None else self.status.online


@dataclass
class StateBook:
    """The latest desired state, reported state and status of each device, as messages come.

    :meth:`handle` takes any message of the subscription; what is not a device's desired,
    reported, status, telemetry or error is counted (``foreign``, ``invalid``) and logged at
    debug level. ``on_report`` gets each telemetry and error (a rollout watches them).
    """

    prefix: str
    desired: dict[str, DesiredState] = field(default_factory=dict)
    reported: dict[str, ReportedState] = field(default_factory=dict)
    status: dict[str, Status] = field(default_factory=dict)
    refused: dict[str, Refusal] = field(default_factory=dict)
    on_report: OnReport | None = None
    foreign: int = 0
    invalid: int = 0
    handled: int = 0

    def devices(self) -> list[str]:
        """Every device with a retained status or reported state (``--all``), sorted."""
        return sorted(set(self.status) | set(self.reported))

    def view(self, device: str) -> DeviceView:
        return DeviceView(
            device,
            self.desired.get(device),
            self.reported.get(device),
            self.status.get(device),
            self.refused.get(device),
        )

    def handle(self, where: str, payload: object) -> str | None:
        """Account one message; the device it is about, or None when it was ignored."""
        self.handled += 1
        try:
            device, kind = parse_topic(self.prefix, where)
        except ProtocolError:
            self.foreign += 1
            return None
        try:
            if kind == "desired":
                self.desired[device] = read_desired(self.prefix, where, payload)
            elif kind == "reported":
                self.reported[device] = read_reported(self.prefix, where, payload)
            else:
                return self._node_message(where, payload)
        except ForeignMessage as exc:
            self.foreign += 1
            log.debug("ctl: ignoring %s: %s", where, exc)
            return None
        except ProtocolError as exc:  # DesiredRefused too: a desired state nobody can apply
            self.invalid += 1
            log.debug("ctl: ignoring %s: %s", where, exc)
            return None
        return device

    def _node_message(self, where: str, payload: object) -> str | None:
        device, message = read_node_message(self.prefix, where, payload)
        if isinstance(message, Status):
            self.status[device] = message
        elif isinstance(message, ErrorMessage):
            if message.code == "bad_desired":
                self.refused[device] = Refusal(
                    message.desired_version, _field_of(message.message), message.message
                )
            if self.on_report is not None:
                self.on_report(device, message)
        elif isinstance(message, Telemetry) and self.on_report is not None:
            self.on_report(device, message)
        return device


def _field_of(text: str) -> str:
    """The field a ``bad_desired`` message names (``settings.lr_bits``), else ``(message)``."""
    for word in text.replace(":", " ").split():
        if word.startswith("settings.") or word in ("version", "device"):
            return word
    return "(message)"


def next_desired(
    device: str,
    current: DesiredState | None,
    reported: ReportedState | None,
    changes: Mapping[str, Any],
    *,
    by: str,
    ts: float,
) -> DesiredState:
    """The desired state after ``changes`` (a None value removes the setting): version + 1 of
    the retained one (or past the reported version when there is none), checked whole --
    :class:`SettingError` naming the field when the result is not one a device could apply."""
    floor = max(current.version if current else 0, reported.version if reported else 0)
    merged = {**(current.settings if current else {}), **changes}
    settings = {k: v for k, v in merged.items() if v is not None}
    try:
        return DesiredState(device, floor + 1, settings, ts=ts, by=by)
    except DesiredRefused as exc:
        raise SettingError(f"{device}: {exc.field}: {exc.reason}") from None
