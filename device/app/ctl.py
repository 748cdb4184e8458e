"""``vega-emu ctl``: read and change the desired state of running devices (docs/downlink.md).

The pieces, each usable alone:

- :func:`parse_changes`: ``lr_bits=6 learning=false head=`` as typed, into setting changes
  (``None``: remove the setting, the device goes back to its own), each value parsed by the
  type :data:`~dataset_stream.protocol.DESIRED_SETTINGS` gives it and checked with
  :func:`~dataset_stream.protocol.check_settings` -- before anything is published;
- :class:`StateBook`: the desired state, reported state and status of every device, fed the
  messages a subscription brings (sans I/O, so that it is tested without a broker);
- :class:`FleetLink`: one MQTT session of the operator: subscribes to the devices' retained
  ``desired``, ``reported`` and ``status`` (and, when asked, their telemetry and errors), keeps
  a :class:`StateBook`, publishes desired states, heads and rollout states (retained, QoS 1),
  and waits for devices to converge (:class:`Convergence`); a lost connection is made again.

A device *converges* to desired version ``v`` when its reported version reaches ``v`` and does
not name ``v`` as refused; it *refuses* ``v`` when its reported state or a ``bad_desired`` error
names ``v``; else, when the wait is over, it *did not answer*.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import aiomqtt

from broker.backoff import Backoff
from broker.errors import OutageTooLong, SubscriptionRefused
from broker.reconnect import Reconnect
from broker.session import Session, close, new_client_id
from broker.url import BrokerURL
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
    RolloutState,
    Status,
    Telemetry,
    check_settings,
    head_topic,
    parse_topic,
    read_desired,
    read_node_message,
    read_reported,
    rollout_topic,
    topic,
    topic_filter,
    validate_prefix,
)
from device.app.errors import LinkError, SettingError

__all__ = [
    "Convergence",
    "DeviceView",
    "FleetLink",
    "StateBook",
    "next_desired",
    "parse_changes",
    "parse_value",
]

log = logging.getLogger(__name__)

#: Seconds to collect retained messages after subscribing, at most (less once every device
#: asked for has its desired and reported state).
SETTLE_S: Final = 1.5
#: A settle ends early once nothing arrived for this long (retained messages come at once).
QUIET_S: Final = 0.3
#: Seconds the broker may be away (after the first connection) before the link gives up.
MAX_OUTAGE_S: Final = 300.0
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


@dataclass(frozen=True, slots=True)
class Convergence:
    """How a wait for desired versions ended: who converged, who refused (with the refusal),
    who did not answer."""

    converged: tuple[str, ...]
    refused: Mapping[str, Refusal]
    silent: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.refused and not self.silent

    def line(self) -> str:
        """One line: ``4 converged, 1 refused (node-0002: settings.lr_bits), 0 did not answer``."""
        text = f"{len(self.converged)} converged, {len(self.refused)} refused"
        if self.refused:
            shown = [f"{d}: {r.field}" for d, r in list(self.refused.items())[:5]]
            more = ", ..." if len(self.refused) > 5 else ""
            text += f" ({', '.join(shown)}{more})"
        text += f", {len(self.silent)} did not answer"
        if self.silent:
            text += f" ({', '.join(self.silent[:5])}{', ...' if len(self.silent) > 5 else ''})"
        return text


class FleetLink:
    """``async with FleetLink(url) as link``: the operator's session; see the module docstring.

    ``telemetry``: subscribe to the devices' telemetry and errors too (``on_report`` gets them).
    The session is clean (nothing kept at the broker) under a client id of its own. The first
    connection must work (:class:`LinkError` otherwise); a connection lost later is made again
    with backoff (:class:`broker.reconnect.Reconnect`), subscribing again (the retained states
    come back with it; telemetry sent meanwhile is missed), and a publish waits for it. A broker
    away longer than ``max_outage_s`` ends the link: what waits raises :class:`LinkError`.
    """

    def __init__(
        self,
        broker: BrokerURL,
        *,
        prefix: str = "vega",
        timeout_s: float = 10.0,
        telemetry: bool = False,
        on_report: OnReport | None = None,
        max_outage_s: float = MAX_OUTAGE_S,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self.prefix = validate_prefix(prefix)
        self.book = StateBook(self.prefix, on_report=on_report)
        self.changed = asyncio.Event()  # set after each message, reconnection or loss
        self.connected = asyncio.Event()
        self.max_outage_s = max_outage_s
        self._clock = clock
        client_id = new_client_id("ctl")
        self._session = Session(broker, client_id, timeout_s=timeout_s, persistent=False)
        self._reconnect = Reconnect(
            backoff or Backoff(initial_s=0.2, cap_s=5.0),
            broker=broker,
            who="ctl",
            client_id=client_id,
            max_outage_s=max_outage_s,
        )
        kinds = ["desired", "reported", "status"] + (["telemetry", "error"] if telemetry else [])
        self._filters = [(topic_filter(self.prefix, kind), 1) for kind in kinds]
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost: BaseException | None = None
        self._last_s = 0.0

    @property
    def reconnects(self) -> int:
        """Connections made after the first."""
        return self._reconnect.reconnects

    async def __aenter__(self) -> Self:
        try:
            client = await self._connect()
        except (aiomqtt.MqttError, OSError) as exc:
            raise LinkError(f"cannot connect to the broker at {self.broker}: {exc}") from exc
        self._reconnect.connected()
        self._last_s = time.monotonic()
        self._task = asyncio.create_task(self._run(client), name="ctl link")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await close(self._client, within_s=self._session.timeout_s)

    async def _connect(self) -> aiomqtt.Client:
        try:
            client = await self._session.open(self._filters)
        except SubscriptionRefused as exc:
            raise LinkError(str(exc)) from exc
        self._client = client
        self.connected.set()
        self.changed.set()
        return client

    async def _run(self, client: aiomqtt.Client) -> None:
        """Read messages; when the connection drops, connect again (with backoff)."""
        try:
            while True:
                cause: BaseException = aiomqtt.MqttError("the message stream ended")
                try:
                    async for message in client.messages:
                        self.book.handle(message.topic.value, message.payload)
                        self._last_s = time.monotonic()
                        self.changed.set()
                except aiomqtt.MqttError as exc:
                    cause = exc
                finally:
                    self.connected.clear()
                    self._client = None
                    await close(client, within_s=self._session.timeout_s)
                client = await self._reconnect.again(self._connect, cause)
        except (OutageTooLong, LinkError) as exc:
            self._lost = exc
            self.changed.set()

    def _check(self) -> None:
        if self._lost is not None:
            raise LinkError(f"lost the broker at {self.broker}: {self._lost}")

    async def changes(self, timeout_s: float) -> bool:
        """Until the next message (True) or ``timeout_s`` (False)."""
        self._check()
        self.changed.clear()
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await self.changed.wait()
        except TimeoutError:
            return False
        self._check()
        return True

    async def settle(
        self, devices: Sequence[str] | None = None, *, max_s: float = SETTLE_S
    ) -> None:
        """Collect retained messages (the broker sends them right after the subscription): at
        most ``max_s``, ending once ``QUIET_S`` passed without one, or once every device of
        ``devices`` has its desired and reported state."""
        deadline_s = time.monotonic() + max_s
        while (now_s := time.monotonic()) < deadline_s:
            if devices is not None and all(
                d in self.book.desired and d in self.book.reported for d in devices
            ):
                return
            if now_s - self._last_s >= QUIET_S:
                return
            await self.changes(min(QUIET_S, deadline_s - now_s))

    async def publish(self, where: str, payload: bytes) -> None:
        """Publish ``payload`` retained, QoS 1, on ``where``; while the broker is away, wait
        for the connection to come back (at most ``max_outage_s``) and publish then (a retained
        state published twice is the same state)."""
        deadline_s = time.monotonic() + self.max_outage_s
        cause: BaseException = aiomqtt.MqttError("not connected")
        while True:
            self._check()
            client = self._client
            if client is not None and self.connected.is_set():
                try:
                    async with asyncio.timeout(self._session.timeout_s):
                        await client.publish(where, payload, qos=1, retain=True)
                    return
                except (aiomqtt.MqttError, TimeoutError) as exc:
                    cause = exc
            left_s = deadline_s - time.monotonic()
            if left_s <= 0:
                raise LinkError(f"could not publish on {where}: {cause}")
            await self.changes(min(1.0, left_s))

    async def set_desired(
        self, devices: Sequence[str], changes: Mapping[str, Any], *, by: str
    ) -> dict[str, DesiredState]:
        """Publish the next desired state of each device; all are built (and checked) before
        the first is published. Returns them by device."""
        now = self._clock()
        book = self.book
        states = {
            d: next_desired(d, book.desired.get(d), book.reported.get(d), changes, by=by, ts=now)
            for d in devices
        }
        for device, state in states.items():
            await self.publish(topic(self.prefix, device, "desired"), state.to_json())
            book.desired[device] = state
        return states

    async def publish_head(self, name: str, weights: bytes) -> None:
        await self.publish(head_topic(self.prefix, name), weights)

    async def publish_rollout(self, state: RolloutState) -> None:
        await self.publish(rollout_topic(self.prefix, state.name), state.to_json())

    async def wait_converged(self, targets: Mapping[str, int], timeout_s: float) -> Convergence:
        """Until every device of ``targets`` (device -> desired version) converged or refused,
        or ``timeout_s`` passed."""
        deadline_s = time.monotonic() + timeout_s
        while True:
            result = self.convergence(targets)
            left_s = deadline_s - time.monotonic()
            if not result.silent or left_s <= 0:
                return result
            await self.changes(left_s)

    def convergence(self, targets: Mapping[str, int]) -> Convergence:
        converged, silent = [], []
        refused: dict[str, Refusal] = {}
        for device, version in targets.items():
            view = self.book.view(device)
            refusal = view.refusal_of(version)
            if refusal is not None:
                refused[device] = refusal
            elif view.reported is not None and view.reported.version >= version:
                converged.append(device)
            else:
                silent.append(device)
        return Convergence(tuple(converged), refused, tuple(silent))
