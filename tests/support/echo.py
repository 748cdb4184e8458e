"""A device for producer tests: a real MQTT client that answers batches the way a node does,
without a model, so a test controls when it is there and what it says.

:class:`EchoDevice` survives broker restarts (persistent session, its own reconnect loop),
answers each batch with telemetry the first time it learns a seq and with an ``error``
``duplicate`` when a learned seq comes again. With ``in_order`` it follows a node's delivery
rules: it learns the next seq only, holds a later one silently until the missing ones arrive
(a node acknowledges a held batch and answers it once learned). With ``announce`` off it never
publishes a status, so a producer cannot tell it came back: only a timeout brings it what it
missed.
"""

from __future__ import annotations

import asyncio

import aiomqtt

from broker.url import BrokerURL
from dataset_stream.protocol import ErrorMessage, Status, decode_batch
from tests.support.messages import telemetry

__all__ = ["EchoDevice"]


class EchoDevice:
    """See the module docstring. ``delay_s``: how long it takes to learn a batch; ``gate``:
    it connects only while the gate is set (a test keeps it away by clearing it)."""

    def __init__(
        self,
        url: BrokerURL,
        device: str,
        *,
        delay_s: float = 0.0,
        gate: asyncio.Event | None = None,
        in_order: bool = False,
        announce: bool = True,
    ) -> None:
        self.url = url
        self.device = device
        self.delay_s = delay_s
        self.gate = gate
        self.in_order = in_order
        self.announce = announce
        self.learned: list[int] = []
        self.deliveries: list[int] = []
        self.held: set[int] = set()
        self.connections = 0
        self.ready = asyncio.Event()
        self.answered = asyncio.Event()  # set at every answer it publishes

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)  # a device's reconnect backoff

    async def _session(self) -> None:
        if self.gate is not None:
            await self.gate.wait()
        client = aiomqtt.Client(
            **self.url.client_kwargs(), identifier=self.device, clean_session=False, timeout=2
        )
        try:
            await self._serve(client)
        finally:
            _read_why_it_ended(client)

    async def _serve(self, client: aiomqtt.Client) -> None:
        async with client:
            self.connections += 1
            await client.subscribe(f"vega/{self.device}/batch", qos=1)
            if self.announce:
                status = Status(state="idle", device=self.device).to_json()
                await client.publish(f"vega/{self.device}/status", status, qos=1, retain=True)
            self.ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seq = decode_batch(message.payload).seq
                self.deliveries.append(seq)
                await asyncio.sleep(self.delay_s)  # a device takes a while to learn (pacing)
                for answered, learned in self._decide(seq):
                    if learned:
                        where, payload = "telemetry", telemetry(self.device, answered)
                    else:
                        error = ErrorMessage(self.device, "duplicate", "seen", seq=answered)
                        where, payload = "error", error.to_json()
                    await client.publish(f"vega/{self.device}/{where}", payload, qos=1)
                    self.answered.set()

    def _decide(self, seq: int) -> list[tuple[int, bool]]:
        """The answers to a delivery of ``seq``: ``(seq, learned now)``; a learned seq is
        answered ``duplicate``."""
        if seq in self.learned:
            return [(seq, False)]
        if self.in_order and seq > len(self.learned) + 1:
            self.held.add(seq)  # acknowledged, answered once the missing ones arrive
            return []
        self.learned.append(seq)
        out = [(seq, True)]
        while self.in_order and (following := seq + 1) in self.held:
            self.held.discard(following)
            self.learned.append(following)
            out.append((following, True))
            seq = following
        return out


def _read_why_it_ended(client: aiomqtt.Client) -> None:
    """aiomqtt keeps why a connection ended in a future only its message iterator reads: a
    device that was publishing when the broker went away never reads it, and asyncio logs
    "Future exception was never retrieved" when the client is collected. Read it here."""
    ended = getattr(client, "_disconnected", None)
    if isinstance(ended, asyncio.Future) and ended.done() and not ended.cancelled():
        ended.exception()
