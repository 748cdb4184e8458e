"""One MQTT connection for many nodes of a process (``vega-emu fleet --connection shared``).

By default every node has its own MQTT session (client id = device id), which is what gives each
device its own last will. A :class:`Gateway` trades that for one connection per worker process,
as a real gateway in front of many sensors would: one socket, one keep-alive and one session at
the broker instead of thousands (see docs/fleet.md, "Shared connection").

- The session is persistent (clean session off) under a stable client id of its own, and QoS 1
  messages are acknowledged manually, by each node after its commit, exactly as on a node's own
  session: a worker killed at any moment gets every unacknowledged batch again after it returns,
  and the nodes' ``seq`` check keeps each batch learned once. PUBACKs then go out in the order
  the nodes finish, not the order the broker sent (MQTT asks for the latter; Mosquitto, EMQX
  and amqtt match an acknowledgement by its packet id).
- The gateway subscribes to the ``batch``, ``eval``, ``infer`` and ``desired`` topics of its
  devices (never a wildcard: a shard sees only its own devices) and hands each message to its
  node's :class:`Inbox`. A node that waits for a pushed head or a shared eval set asks the
  gateway to :meth:`~Gateway.follow` its topic: the gateway subscribes to it (again on each
  connection, and for each node that joins, so that the broker sends the retained message once
  more) and hands each node that follows it a copy (QoS 0: the gateway acknowledges the
  message); :meth:`~Gateway.unfollow` ends that, and the last follower gone, the subscription.
  A node reads its inbox as it would read its own client's messages; each node still
  publishes its own ``status``, ``telemetry``, ``error`` and ``prediction``.
- MQTT has one last will per connection, so a device cannot have its own. The gateway announces
  itself on ``{prefix}/gateway/{id}/status`` (a retained
  :class:`~dataset_stream.protocol.GatewayStatus`, ``online``) and its will is that message
  with ``offline``: a consumer that sees a gateway go offline takes its devices as offline
  (:class:`device.observe.monitor.FleetMonitor` does). A clean stop still publishes every
  node's own ``offline`` status.
- A lost connection closes every inbox (its reader gets ``MqttError``, as from a lost client);
  the gateway reconnects with backoff and the nodes attach to the new connection. Each
  connection subscribes again, whether or not the broker kept the session (one restarted
  without persistence, or before its first save, comes back with none); a broker that does
  not acknowledge the subscription within ``timeout_s`` is a lost connection too (it may be
  busy sending a resumed session's backlog first), never the end of the gateway. A refusal
  that retrying cannot fix (wrong password, unknown host) is retried for ``give_up_s``, then
  every node waiting to attach gets :class:`~device.errors.NodeGaveUp`. A subscription the
  broker refuses (its ACL) ends the gateway (:attr:`Gateway.failed`): its nodes would never
  hear a thing.

The broker must let one client hold its devices' backlog: a burst of one batch per device is
queued for this one client (Mosquitto's ``max_queued_messages``, 1000 by default; the config
that ``vega-emu broker`` writes allows 100,000).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Self

import aiomqtt

from broker.backoff import Backoff
from broker.refusals import Refusals
from broker.session import Session, ack, kept_cancel, publish, subscribe
from broker.url import BrokerURL
from dataset_stream.protocol import (
    GatewayStatus,
    ProtocolError,
    gateway_topic,
    parse_topic,
    topic,
    validate_device_id,
    validate_prefix,
)
from device.aio import cancel_and_wait
from device.errors import NodeError, NodeGaveUp
from device.node.inbox import INPUT_KINDS, Inbox
from device.node.presence import Presence

log = logging.getLogger(__name__)

NETWORK_TIMEOUT_S: Final = 10.0


class Gateway:
    """``async with Gateway(broker, id, prefix, devices)``; nodes then :meth:`attach`."""

    def __init__(
        self,
        broker: BrokerURL,
        gateway_id: str,
        prefix: str,
        device_ids: Sequence[str],
        *,
        give_up_s: float = 180.0,
        backoff: Backoff | None = None,
        timeout_s: float = NETWORK_TIMEOUT_S,
    ) -> None:
        if not device_ids:
            raise ValueError("a gateway needs at least one device")
        self.broker = broker
        self.gateway_id = validate_device_id(gateway_id)
        self.prefix = validate_prefix(prefix)
        self.device_ids = [validate_device_id(d) for d in device_ids]
        self.backoff = backoff or Backoff()
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s  # every network wait: connect, subscribe, publish
        self.connections = 0
        self.gave_up: NodeGaveUp | None = None
        self.failure: str | None = None  # why the connection loop died (a bug): see ``failed``
        self.failed = asyncio.Event()  # the owner stops the process: its nodes cannot be served
        self._link: tuple[aiomqtt.Client, dict[str, Inbox]] | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refusals = Refusals(self.gateway_id, give_up_s, NodeGaveUp)
        #: device -> its presence, for devices that go offline (availability): while one with
        #: ``miss`` is offline, its messages are acknowledged and dropped, never delivered
        self.presences: dict[str, Presence] = {}
        #: topic outside the devices' own (a pushed head) -> the devices that follow it
        self._follows: dict[str, set[str]] = {}

    @property
    def status_topic(self) -> str:
        return gateway_topic(self.prefix, self.gateway_id)

    def _status(self, state: str) -> bytes:
        return GatewayStatus(self.gateway_id, state, self.device_ids).to_json()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"gateway {self.gateway_id}")
        self._task.add_done_callback(self._ended)
        return self

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The loop ends only when cancelled or after giving up; anything else is a failure,
        logged at once and flagged, so that nodes do not wait on a connection that is gone."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.failure = f"{type(exc).__name__}: {exc}"[:1000]
        log.error("%s: the connection loop failed: %s", self.gateway_id, self.failure, exc_info=exc)
        self.failed.set()
        self._changed.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        link = self._link
        if link is not None:  # a clean stop: say so (the will is for crashes)
            try:
                async with asyncio.timeout(2):
                    await publish(link[0], self.status_topic, self._status("offline"), retain=True)
            except (aiomqtt.MqttError, TimeoutError) as err:
                log.warning("%s: could not announce a clean stop: %s", self.gateway_id, err)
        if task is not None and not self.failed.is_set():  # a failure was reported already
            await cancel_and_wait(task)

    async def attach(self, device_id: str) -> tuple[aiomqtt.Client, Inbox]:
        """The current connection and ``device_id``'s inbox on it (waits for one)."""
        while True:
            if self.gave_up is not None:
                raise self.gave_up
            if self._task is None or self._task.done():
                raise NodeError(f"gateway {self.gateway_id} is not running: {self.failure}")
            link = self._link
            if link is not None:
                return link[0], link[1][device_id]
            self._changed.clear()
            await self._changed.wait()

    async def follow(self, device_id: str, where: str) -> None:
        """Hand ``device_id`` the messages on ``where`` (a pushed head's or a shared eval set's
        topic) from now on, subscribing to it on this connection and the next ones. A device
        that joins a topic followed already subscribes it again: the broker then sends the
        retained message once more, which the earlier followers had and this one has not."""
        followers = self._follows.setdefault(where, set())
        joined = device_id not in followers
        followers.add(device_id)
        link = self._link
        if joined and link is not None:
            try:
                await subscribe(link[0], [(where, 1)], within_s=self.timeout_s, broker=self.broker)
            except TimeoutError as exc:
                text = f"no SUBACK for {where} within {self.timeout_s:g} s"
                raise aiomqtt.MqttError(text) from exc

    async def unfollow(self, device_id: str, where: str) -> None:
        """Stop handing ``device_id`` the messages on ``where``; the last follower gone, the
        gateway unsubscribes (a shared eval set published again is not sent for nothing)."""
        followers = self._follows.get(where)
        if followers is None or device_id not in followers:
            return
        followers.discard(device_id)
        if followers:
            return
        del self._follows[where]
        link = self._link
        if link is not None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await kept_cancel(link[0].unsubscribe(where))
            except TimeoutError:  # still subscribed: what comes on it is acknowledged, dropped
                log.warning("%s: no UNSUBACK for %s", self.gateway_id, where)

    # -- the connection ---------------------------------------------------------------------

    async def _run(self) -> None:
        will = aiomqtt.Will(self.status_topic, self._status("offline"), qos=1, retain=True)
        session = Session(self.broker, self.gateway_id, timeout_s=self.timeout_s, will=will)
        try:
            while True:
                # every node's reports share this connection's window of unacknowledged QoS 1
                # publishes (paho's default of 20 would queue them behind each other)
                client = session.client(manual_ack=True, max_inflight_messages=65535)
                # inboxes exist before CONNACK: a resumed session's backlog follows it at once
                inboxes = {d: Inbox() for d in self.device_ids}
                try:
                    async with client:
                        await self._serve(client, inboxes)
                except aiomqtt.MqttError as exc:
                    self._lost(inboxes, f"gateway connection lost: {exc}")
                    delay_s = self.backoff.next_delay()
                    now = asyncio.get_running_loop().time()
                    self._refusals.failed(self.broker, exc, delay_s, now)
                    await asyncio.sleep(delay_s)
                except BaseException:
                    self._lost(inboxes, "gateway stopped")
                    raise
        except NodeGaveUp as exc:
            log.error("%s", exc)
            self.gave_up = exc
            self._changed.set()

    def _lost(self, inboxes: dict[str, Inbox], why: str) -> None:
        self._link = None
        for inbox in inboxes.values():
            inbox.close(why)
        self._changed.set()

    async def _serve(self, client: aiomqtt.Client, inboxes: dict[str, Inbox]) -> None:
        self._refusals.clear()
        filters = [
            (topic(self.prefix, d, kind), 1) for d in self.device_ids for kind in INPUT_KINDS
        ] + [(where, 1) for where in self._follows]
        reader = asyncio.create_task(
            self._dispatch(client, inboxes), name=f"{self.gateway_id} reader"
        )
        try:
            try:
                await subscribe(client, filters, within_s=self.timeout_s, broker=self.broker)
            except TimeoutError as exc:  # no SUBACK: this connection is of no use, try another
                raise aiomqtt.MqttError(
                    f"the broker did not acknowledge the subscription within {self.timeout_s:g} s"
                ) from exc
            await publish(client, self.status_topic, self._status("online"), retain=True)
            self.backoff.reset()
            self.connections += 1
            self._link = (client, inboxes)
            self._changed.set()
            await reader  # returns only when the connection's message stream ends
        finally:
            await cancel_and_wait(reader)
        raise aiomqtt.MqttError("message stream ended")

    async def _dispatch(self, client: aiomqtt.Client, inboxes: dict[str, Inbox]) -> None:
        async for message in client.messages:
            where = str(message.topic)
            followers = self._follows.get(where)
            if followers:  # a pushed head: a copy to each node that follows it
                for device in followers:
                    inboxes[device].put(_copy(message))
                ack(client, message)
                continue
            try:
                device, _ = parse_topic(self.prefix, where)
                inbox = inboxes[device]
            except (ProtocolError, KeyError):  # not subscribed by us: acknowledge and drop it
                log.warning("%s: dropping a message on %r", self.gateway_id, where[:200])
                ack(client, message)
                continue
            presence = self.presences.get(device)
            if presence is not None and presence.miss and not presence.is_online:
                ack(client, message)  # the device is away and misses it, as in the field
                continue
            inbox.put(message)
            del message  # an idle gateway keeps no batch alive


def _copy(message: aiomqtt.Message) -> aiomqtt.Message:
    """A copy of ``message`` for one of several nodes, never acknowledged by it: QoS 0."""
    return aiomqtt.Message(
        message.topic, message.payload, 0, message.retain, message.mid, message.properties
    )


__all__ = ["Gateway"]
