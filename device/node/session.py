"""A node's connection to the broker: its own persistent MQTT session, or a shared one.

On its own (:meth:`NodeSession.run_own`) the node is a persistent session (client id = device
id, clean session off, :func:`broker.session.persistent_client`), so QoS 1 batches queued while
it was away arrive when it returns; its last will is a retained status ``offline``. A lost
connection is made again with backoff; a broker that keeps refusing it for good ends the loop
with :class:`~device.errors.NodeGaveUp` (:class:`broker.refusals.Refusals`), as does a refused
subscription (retrying cannot fix an ACL, and a deaf node is the worst kind).

On a :class:`~device.node.inbox.SharedConnection` (a fleet's gateway,
:meth:`NodeSession.run_shared`) the node has no session of its own: it reads its messages from
the connection's inbox, equally persistent, and acknowledges them there, with the same
guarantees (but no last will of its own); when the connection is lost it waits for the next.

Either way, each connection is served the same: the node's status first (``error`` with the
reason of the last failure, else ``idle``) and its reported state (the desired state in force,
so that a consumer that comes later reads it), then its messages, one at a time, to the
:class:`~device.node.dispatch.Dispatcher`, beside the watcher of held batches; a clean stop
publishes status ``offline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import aiomqtt

from broker.backoff import Backoff
from broker.errors import SubscriptionRefused
from broker.refusals import Refusals
from broker.session import Session, kept_cancel, persistent_client, subscribe
from broker.url import BrokerURL
from dataset_stream.protocol import Status, topic
from device.aio import cancel_and_wait
from device.errors import NodeGaveUp
from device.node.dispatch import Dispatcher, Follow
from device.node.inbox import INPUT_KINDS, Inbox, SharedConnection
from device.node.presence import Presence
from device.node.settings import NodeSettings

log = logging.getLogger(__name__)

NETWORK_TIMEOUT_S = 10.0

__all__ = ["NETWORK_TIMEOUT_S", "NodeSession"]


class NodeSession:
    """One node's connection loops and what they count; see the module docstring.

    ``broker`` is read at each connect, so a changed one is used from the next; ``backoff``
    spaces reconnects (reset once a connection is served). ``connected`` is set while a
    connection is served, ``connections`` counts them, and ``failure`` (set by the node's
    supervisor) is reported as status ``error`` on the next one, then cleared. Once
    ``stopping`` is set, a lost connection ends the loop instead of a reconnect. ``presence``
    (optional) takes the device off the network and back (:mod:`device.node.presence`); an
    event in hand (``lock``: the node's, held while one runs) finishes before the device drops.
    """

    def __init__(
        self,
        settings: NodeSettings,
        broker: BrokerURL,
        backoff: Backoff,
        presence: Presence | None = None,
        lock: asyncio.Lock | None = None,
    ) -> None:
        self.device_id = settings.device_id
        self.presence = presence
        self._lock = lock or asyncio.Lock()  # the node's one-event-at-a-time lock
        self._prefix = settings.prefix
        self.broker = broker
        self.backoff = backoff
        self.connected = asyncio.Event()
        self.connections = 0
        self.failure: str | None = None
        self.stopping = False
        self.gateway: SharedConnection | None = None  # the shared connection served, if any
        self._refusals = Refusals(settings.device_id, settings.connect.give_up_s, NodeGaveUp)

    def _topic(self, kind: str) -> str:
        return topic(self._prefix, self.device_id, kind)

    async def run_own(self, dispatcher: Dispatcher) -> None:
        """Serve on the node's own persistent session; reconnect with backoff when it is lost."""
        will = aiomqtt.Will(
            self._topic("status"),
            Status.offline(self.device_id).to_json(),
            qos=1,
            retain=True,
        )
        while True:
            await self._until_online(forget=True)
            client = persistent_client(self.broker, self.device_id, will, NETWORK_TIMEOUT_S)
            try:
                async with client:
                    await self._serve(dispatcher, client)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                if self.stopping:
                    # leaving the client after a cancel can fail with MqttError, which would
                    # replace the CancelledError: the stop must still win over a reconnect
                    raise asyncio.CancelledError from exc
                if self._away():  # the device left the network: not the broker's doing
                    continue
                delay = self.backoff.next_delay()
                now = asyncio.get_running_loop().time()
                self._refusals.failed(self.broker, exc, delay, now)
                await asyncio.sleep(delay)

    async def run_shared(self, gateway: SharedConnection, dispatcher: Dispatcher) -> None:
        """Serve on the gateway's connection; when it is lost, wait for the next one (the
        gateway reconnects; :meth:`Gateway.attach` raises ``NodeGaveUp`` if it gave up)."""
        self.gateway = gateway
        while True:
            await self._until_online(forget=False)
            client, inbox = await gateway.attach(self.device_id)
            try:
                await self._serve(dispatcher, client, inbox)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                if self.stopping:
                    raise asyncio.CancelledError from exc
                log.debug("%s: %s; waiting for the gateway", self.device_id, exc)

    def _away(self) -> bool:
        return self.presence is not None and not self.presence.is_online

    async def _until_online(self, *, forget: bool) -> None:
        """While the device is off the network, wait; back with ``miss`` on its own session,
        first end what the broker kept for it (one clean-session connect), so the batches
        queued meanwhile are lost, as for a device that was really gone."""
        presence = self.presence
        if presence is None:
            return
        await presence.online.wait()
        if presence.take_forget() and forget:
            try:
                await Session(self.broker, self.device_id, timeout_s=NETWORK_TIMEOUT_S).end()
            except (aiomqtt.MqttError, TimeoutError) as exc:  # the connect below meets it too
                log.debug("%s: could not end the session: %s", self.device_id, exc)

    async def _serve(
        self, dispatcher: Dispatcher, client: aiomqtt.Client, inbox: Inbox | None = None
    ) -> None:
        """Serve one connection: the node's own client, or a gateway's with ``inbox``."""
        self._refusals.clear()
        dispatcher.new_connection(
            self._follower(client, inbox is not None), self._unfollower(client, inbox is not None)
        )
        if inbox is None:  # a gateway subscribes for its nodes
            filters = [(self._topic(kind), 1) for kind in INPUT_KINDS]
            try:
                await subscribe(client, filters, within_s=NETWORK_TIMEOUT_S, broker=self.broker)
            except SubscriptionRefused as exc:  # its ACL: retrying cannot help, and a deaf
                raise NodeGaveUp(f"{self.device_id}: {exc}") from exc  # node is the worst kind
        self.backoff.reset()
        self.connections += 1
        reason, self.failure = self.failure, None
        await dispatcher.publish_status(client, "error" if reason else "idle", reason)
        await dispatcher.publish_reported(client)
        self.connected.set()
        reader = asyncio.create_task(
            _read(dispatcher, client, inbox), name=f"{self.device_id} reader"
        )
        watcher = asyncio.create_task(
            dispatcher.watch_holds(client), name=f"{self.device_id} holds"
        )
        tasks = {reader, watcher}
        outage = None
        if self.presence is not None:
            outage = asyncio.create_task(
                self._outage(dispatcher, client, inbox is not None, reader, watcher),
                name=f"{self.device_id} presence",
            )
            tasks.add(outage)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if outage is not None and (reader.cancelled() or watcher.cancelled()):
                await asyncio.wait({outage})  # it went offline and stopped them: let it finish
        except asyncio.CancelledError:  # a clean stop: say so (the will is for crashes)
            await _cancel_all(*tasks)
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(2):
                    await dispatcher.publish_status(client, "offline")
            raise
        finally:
            self.connected.clear()
        await _cancel_all(*tasks)  # raises what ended the first one, if it failed
        raise aiomqtt.MqttError("message stream ended")

    def _follower(self, client: aiomqtt.Client, shared: bool) -> Follow:
        """How this connection subscribes the node to one more topic (a pushed head's)."""
        if shared:
            gateway = self.gateway
            assert gateway is not None

            async def on_gateway(where: str) -> None:
                await gateway.follow(self.device_id, where)

            return on_gateway

        async def on_own(where: str) -> None:
            await subscribe(client, [(where, 1)], within_s=NETWORK_TIMEOUT_S, broker=self.broker)

        return on_own

    def _unfollower(self, client: aiomqtt.Client, shared: bool) -> Follow:
        """How this connection ends the node's subscription to a topic it followed."""
        if shared:
            gateway = self.gateway
            assert gateway is not None

            async def on_gateway(where: str) -> None:
                await gateway.unfollow(self.device_id, where)

            return on_gateway

        async def on_own(where: str) -> None:
            try:
                async with asyncio.timeout(NETWORK_TIMEOUT_S):
                    await kept_cancel(client.unsubscribe(where))
            except TimeoutError:  # still subscribed: what comes on it is ignored
                log.warning("%s: no UNSUBACK for %s", self.device_id, where)

        return on_own

    async def _outage(
        self,
        dispatcher: Dispatcher,
        client: aiomqtt.Client,
        shared: bool,
        *serving: asyncio.Task[None],
    ) -> None:
        """When the device goes offline, end this connection as a real outage would: on its own
        session the socket drops without a DISCONNECT (the broker fires the will); on a shared
        one the node stops reading and publishes the will's ``offline`` status itself. The event
        in hand finishes first (its commit and seq book stay in step), and no other starts:
        ``serving`` (the reader and the holds watcher) are cancelled while the lock is held."""
        assert self.presence is not None
        await self.presence.offline.wait()
        async with self._lock:
            self.connected.clear()
            await _cancel_all(*serving)
            if shared:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(2):
                        await dispatcher.publish_status(client, "offline")
            else:
                await _drop(client)
        log.info("%s: offline", self.device_id)
        raise aiomqtt.MqttError("offline")


async def _drop(client: aiomqtt.Client) -> None:
    """Close ``client``'s socket with no MQTT DISCONNECT: to the broker, a lost device. Returns
    once the client has seen the loss (so leaving it sends no DISCONNECT either)."""
    # aiomqtt has no public unclean close: shut paho's socket down and wait for the client's
    # "disconnected" future, whose exception is then retrieved, not left to the garbage collector
    sock = client._client.socket()
    if isinstance(sock, socket.socket):  # a TLS socket too
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
        async with asyncio.timeout(NETWORK_TIMEOUT_S):
            await client._disconnected


async def _read(dispatcher: Dispatcher, client: aiomqtt.Client, inbox: Inbox | None) -> None:
    async for message in client.messages if inbox is None else inbox:
        await dispatcher.handle(client, message)
        # An idle node must not keep its last batch alive (~150 KB each in a big fleet).
        del message


async def _cancel_all(*tasks: asyncio.Task[None]) -> None:
    """Cancel and await ``tasks``; then raise the first exception one of them ended with."""
    for task in tasks:
        if not task.done():
            await cancel_and_wait(task)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
