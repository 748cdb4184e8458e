"""A TCP relay in front of a real broker that can stop passing a client's packets on.

:class:`Relay` listens on a local port of its own and joins each connection to the broker
behind it, byte for byte. Its first ``deaf`` connections pass the client's CONNECT on (so
the client gets its CONNACK) and then nothing more from the client: the broker never sees its
SUBSCRIBE, PUBLISH or PINGREQ, as if it had stopped answering that client. What a broker
under load or a half-broken network does to a client; the broker itself stays real.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from broker.url import BrokerURL

__all__ = ["Relay"]


class Relay:
    """``async with Relay(broker_url, deaf=n) as relay``: clients connect to ``relay.url``."""

    def __init__(self, upstream: BrokerURL, *, deaf: int = 0) -> None:
        if deaf < 0:
            raise ValueError(f"deaf must be >= 0, got {deaf}")
        self.upstream = upstream
        self.deaf = deaf  # connections still to come whose packets after CONNECT are dropped
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> BrokerURL:
        if self._server is None:
            raise RuntimeError("the relay is not running")
        port = int(self._server.sockets[0].getsockname()[1])
        return BrokerURL(host="127.0.0.1", port=port)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._joined, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _joined(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        deaf, self.deaf = self.deaf > 0, max(0, self.deaf - 1)
        try:
            broker_r, broker_w = await asyncio.open_connection(
                self.upstream.host, self.upstream.port
            )
        except OSError:
            client_w.close()
            return
        up = asyncio.ensure_future(self._up(client_r, broker_w, deaf))
        down = asyncio.ensure_future(_pump(broker_r, client_w))
        self._pumps |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            self._pumps -= {up, down}
            for writer in (client_w, broker_w):
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()

    async def _up(
        self, client_r: asyncio.StreamReader, broker_w: asyncio.StreamWriter, deaf: bool
    ) -> None:
        """Client to broker: everything, or for a deaf connection its CONNECT only."""
        if not deaf:
            await _pump(client_r, broker_w)
            return
        broker_w.write(await _packet(client_r))  # CONNECT: the client gets its CONNACK
        await broker_w.drain()
        while await client_r.read(65536):  # the rest never reaches the broker
            pass


async def _packet(reader: asyncio.StreamReader) -> bytes:
    """One MQTT control packet: the type byte, the Remaining Length (1 to 4 bytes, 7 bits
    each, low first) and that many bytes."""
    head = await reader.readexactly(1)
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        head += bytes([byte])
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return head + await reader.readexactly(length)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
