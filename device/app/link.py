"""The operator's MQTT session: :class:`FleetLink` reads the devices' states and writes theirs.

It subscribes to the devices' retained ``desired``, ``reported`` and ``status`` (and, when
asked, their telemetry and errors), keeps a :class:`~device.app.ctl.StateBook`, publishes
desired states, heads and rollout states (retained, QoS 1), and waits for devices to converge
(:class:`Convergence`). A lost connection is made again.

A device *converges* to desired version ``v`` when its reported version reaches ``v`` and does
not name ``v`` as refused; it *refuses* ``v`` when its reported state or a ``bad_desired`` error
names ``v``; else, when the wait is over, it *did not answer*.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiomqtt

from broker.backoff import Backoff
from broker.errors import OutageTooLong, SubscriptionRefused
from broker.reconnect import Reconnect
from broker.session import Session, close, new_client_id, publish
from broker.url import BrokerURL
from dataset_stream.protocol import (
    DesiredState,
    Refusal,
    RolloutState,
    head_topic,
    rollout_topic,
    topic,
    topic_filter,
    validate_prefix,
)
from device.aio import cancel_and_wait
from device.app.ctl import OnReport, StateBook, next_desired
from device.app.errors import LinkError

__all__ = ["MAX_OUTAGE_S", "QUIET_S", "SETTLE_S", "Convergence", "FleetLink"]

#: Seconds to collect retained messages after subscribing, at most (less once every device
#: asked for has its desired and reported state).
SETTLE_S: Final = 1.5
#: A settle ends early once nothing arrived for this long (retained messages come at once).
QUIET_S: Final = 0.3
#: Seconds the broker may be away (after the first connection) before the link gives up.
MAX_OUTAGE_S: Final = 300.0


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
        if task is not None:  # repeated cancels: one can be swallowed (CPython gh-86296)
            await cancel_and_wait(task)
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
                        await publish(client, where, payload, retain=True)
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
