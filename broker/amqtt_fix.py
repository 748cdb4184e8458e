"""amqtt's ``Broker`` with retained messages on connect scoped to the client's own subscriptions.

Why: from amqtt 0.11.2 on (still in 0.12.1), ``Broker._handle_client_session`` ends every
CONNECT with::

    for topic in self._subscriptions:          # every filter of every client
        await self._publish_retained_messages_for_subscription((topic, QOS_0), client_session)

so a connecting client is sent each retained message that matches *any* client's subscription:
a device subscribed to ``vega/node-0001/batch`` is handed ``vega/node-0000/status`` (or another
device's ``eval`` set) as soon as some other client holds ``vega/+/+``. MQTT 3.1.1 sends retained
messages when a client subscribes [MQTT-3.3.1-6]; a resumed session may at most get the ones
matching the subscriptions it holds. The upstream bug report is in ``docs/operations.md``.

The fix: every retained message amqtt sends for a subscription goes through the hook
``_publish_retained_messages_for_subscription(subscription, session)``. ``ScopedRetainBroker``
passes the call on only if ``session`` holds ``subscription``'s filter. A SUBSCRIBE is stored
before that hook runs, so retained messages on subscribe are unchanged; on CONNECT only the
session's own filters remain.

A second fix: amqtt does not close every client connection it accepted. A connection whose
client vanished, or that was still connecting when the broker shut down, kept its socket open
until the garbage collector found it (a ``ResourceWarning``, after the broker's event loop had
closed), so a long run with devices that drop off leaked sockets. ``ScopedRetainBroker`` keeps
the connections it accepted, closes each one when amqtt's handler of it returns, and closes the
remaining ones when the broker shuts down.

Tested with amqtt 0.11.1 (no loop on connect; the fix changes nothing there), 0.11.4 and 0.12.1.
On another version the subclass checks the internals it relies on and raises
:class:`~broker.errors.BrokerStartError` naming the version if they are gone.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import amqtt
from amqtt.broker import Broker
from amqtt.session import Session

from broker.errors import BrokerStartError

log = logging.getLogger(__name__)
TESTED_AMQTT_VERSIONS = ("0.11.1", "0.11.4", "0.12.1")
HOOK = "_publish_retained_messages_for_subscription"


def check_amqtt_internals(broker_class: type = Broker) -> None:
    """Raise ``BrokerStartError`` unless ``broker_class`` has the hook :class:`ScopedRetainBroker`
    overrides, with amqtt's signature, and sends retained messages on SUBSCRIBE through it."""
    version = getattr(amqtt, "__version__", "unknown")
    problem = _internals_problem(broker_class)
    if problem is not None:
        raise BrokerStartError(
            f"amqtt {version} does not fit broker/amqtt_fix.py: {problem} "
            f"(tested on amqtt {', '.join(TESTED_AMQTT_VERSIONS)})"
        )
    if version not in TESTED_AMQTT_VERSIONS:
        log.warning("amqtt %s: the retained-message fix was tested on other versions", version)


def _internals_problem(broker_class: type) -> str | None:
    hook = getattr(broker_class, HOOK, None)
    if hook is None or not inspect.iscoroutinefunction(hook):
        return f"Broker.{HOOK} is missing or not a coroutine function"
    if list(inspect.signature(hook).parameters) != ["self", "subscription", "session"]:
        return f"Broker.{HOOK}{inspect.signature(hook)} has a new signature"
    on_subscribe = getattr(broker_class, "_handle_subscription", None)
    if on_subscribe is None or HOOK not in on_subscribe.__code__.co_names:
        return f"Broker._handle_subscription no longer calls {HOOK}"
    return None


class ScopedRetainBroker(Broker):
    """amqtt ``Broker`` that sends a client only the retained messages of its own subscriptions.

    Raises ``BrokerStartError`` when built on an amqtt whose internals do not fit (see above).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_amqtt_internals()
        super().__init__(*args, **kwargs)
        if not isinstance(getattr(self, "_subscriptions", None), dict):
            version = getattr(amqtt, "__version__", "unknown")
            raise BrokerStartError(f"amqtt {version}: Broker._subscriptions is not a dict")
        self._connections: set[asyncio.StreamWriter] = set()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        """One accepted TCP connection, served by amqtt, then closed whatever amqtt left."""
        self._connections.add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name=listener_name)
        finally:
            self._connections.discard(writer)
            writer.close()  # idempotent; amqtt's handler of this connection has returned

    async def shutdown(self) -> None:
        """amqtt's shutdown, then every accepted connection still open is closed."""
        try:
            await super().shutdown()
        finally:
            for writer in list(self._connections):
                writer.close()

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter = subscription[0]
        holders = self._subscriptions.get(topic_filter, ())
        if any(holder.client_id == session.client_id for holder, _qos in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)
