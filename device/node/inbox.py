"""How a node reads its messages when it has no MQTT session of its own.

A node normally owns its session. On a shared connection (a fleet's gateway,
:class:`device.fleet.gateway.Gateway`) it instead :meth:`~SharedConnection.attach`\\ es to the
connection's current client and reads an :class:`Inbox` the connection fills with the node's
messages. The node layer defines both so that it depends on no fleet code: the fleet implements
:class:`SharedConnection`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final, Protocol

import aiomqtt

#: The topic kinds a node reads (``{prefix}/{id}/{kind}``).
INPUT_KINDS: Final = ("batch", "eval", "infer", "desired")


class Inbox:
    """One node's messages on one shared connection; iterating ends with ``MqttError`` when
    the connection is lost (so a node's reader behaves as on a client of its own)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[aiomqtt.Message | None] = asyncio.Queue()
        self._lost: str | None = None

    def put(self, message: aiomqtt.Message) -> None:
        self._queue.put_nowait(message)

    def close(self, why: str) -> None:
        self._lost = why
        self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[aiomqtt.Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[aiomqtt.Message]:
        while True:
            message = await self._queue.get()
            if message is None:
                raise aiomqtt.MqttError(self._lost or "shared connection lost")
            yield message


class SharedConnection(Protocol):
    """A connection that serves many nodes (implemented by the fleet's gateway)."""

    async def attach(self, device_id: str) -> tuple[aiomqtt.Client, Inbox]:
        """The current client and ``device_id``'s inbox on it; waits while there is none.

        Raises :class:`~device.errors.NodeGaveUp` when the connection gave up for good and
        :class:`~device.errors.NodeError` when it is not running."""
        ...

    async def follow(self, device_id: str, where: str) -> None:
        """Hand ``device_id`` the messages on topic ``where`` too (a pushed head's), from now
        on and on every later connection."""
        ...

    async def unfollow(self, device_id: str, where: str) -> None:
        """No more messages on ``where`` for ``device_id`` (a shared eval set it has now)."""
        ...


__all__ = ["INPUT_KINDS", "Inbox", "SharedConnection"]
