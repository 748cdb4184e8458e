"""A live node for hostile input: an embedded broker, a real ``Node`` and a peer client on an
event loop in a background thread, started once per test (:class:`NodeHarness`).

A hypothesis test is a plain function, so it talks to that loop through
``asyncio.run_coroutine_threadsafe``: broker and node start once, not once per example, keep
running (and pinging) while hypothesis generates and shrinks, and each example finds the node
as the examples before it left it, as a device in the field would be. The node runs with
``max_seq_ahead=1``, so an early seq is refused at once instead of held.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiomqtt

from broker import EmbeddedBroker
from dataset_stream import Scenario
from dataset_stream.protocol import (
    ErrorMessage,
    ProtocolError,
    Telemetry,
    decode_batch,
    encode_batch,
)
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.settings import DeliverySettings, NodeSettings
from tests.support.times import T0

__all__ = [
    "ANSWER_TIMEOUT_S",
    "DEVICE",
    "FENCE_SAMPLES",
    "Answer",
    "NodeHarness",
    "NodeView",
]

DEVICE: Final = "node-0099"  # the node under test
Answer = Telemetry | ErrorMessage
#: the longest the node may take to answer one input, even on a busy CI
ANSWER_TIMEOUT_S: Final = 30.0
#: samples in the valid batch that follows each input (NodeHarness.learn_next)
FENCE_SAMPLES: Final = 16


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the test may see of the node, read on the node's loop."""

    last_seq: int
    events: int
    connections: int
    failures: int
    connected: bool


class NodeHarness:
    """Broker, node and peer client on an event loop in a background thread (a context manager).

    ``send`` publishes one payload to the node's batch topic and returns the next answer the
    peer receives on the node's ``telemetry`` or ``error`` topic.
    """

    def __init__(self, bundle: ModelBundle, scenario: Scenario, state_dir: Path) -> None:
        self.bundle = bundle
        self.events = scenario.events(DEVICE)
        self.state_dir = state_dir
        self.settings = NodeSettings(DEVICE, state_dir, delivery=DeliverySettings(max_seq_ahead=1))
        self._thread = threading.Thread(target=self._run, name="hostile-input node", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: aiomqtt.Client | None = None
        self._node: Node | None = None

    def __enter__(self) -> NodeHarness:
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("broker and node did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the node's loop did not stop"
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the test thread by __enter__ / __exit__
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with (
            EmbeddedBroker(port=0) as broker,
            aiomqtt.Client(**broker.url.client_kwargs()) as client,
        ):
            await client.subscribe(f"vega/{DEVICE}/telemetry", qos=1)
            await client.subscribe(f"vega/{DEVICE}/error", qos=1)
            async with Node(self.settings, self.bundle, broker.url) as node:
                async with asyncio.timeout(10):
                    await node.connected.wait()
                self._client, self._node = client, node
                self._ready.set()
                await self._stop.wait()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(ANSWER_TIMEOUT_S + 5)

    def send(self, payload: bytes) -> Answer:
        return self._call(self._send(payload))  # type: ignore[no-any-return]

    async def _send(self, payload: bytes) -> Answer:
        assert self._client is not None
        await self._client.publish(f"vega/{DEVICE}/batch", payload, qos=1)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            message = await anext(self._client.messages)
        assert isinstance(message.payload, bytes)
        if message.topic.value.endswith("/telemetry"):
            return Telemetry.from_json(message.payload)
        return ErrorMessage.from_json(message.payload)

    def view(self) -> NodeView:
        return self._call(self._view())  # type: ignore[no-any-return]

    async def _view(self) -> NodeView:
        node = self._node
        assert node is not None and node.engine is not None
        last = node.engine.last_seq
        return NodeView(
            last_seq=0 if last is None else last,
            events=node.engine.state.events_applied,
            connections=node.connections,
            failures=node.failures,
            connected=node.connected.is_set(),
        )

    def learn_next(self) -> Telemetry:
        """Send a valid batch with the next seq; it must be the next answer, and be learned."""
        before = self.view()
        seq = before.last_seq + 1
        event = self.events[seq % len(self.events)]
        x, y = event.x[:FENCE_SAMPLES], event.y[:FENCE_SAMPLES]
        answer = self.send(encode_batch(x, y, seq=seq, t=T0 + 60 * seq, source="fence"))
        assert isinstance(answer, Telemetry) and answer.seq == seq, answer
        learned = answer.state != "depleted"  # an empty battery is not the input's fault
        assert answer.events == before.events + learned and answer.device == DEVICE
        after = self.view()
        assert after.connected and after.connections == 1 and after.failures == 0, after
        return answer

    def expected(self, payload: bytes, last_seq: int) -> tuple[str, int | None]:
        """The answer the node owes ``payload``: ``telemetry`` or an error code, and the seq."""
        try:
            batch = decode_batch(
                payload,
                limits=self.settings.limits,
                sample_shape=self.bundle.input_shape,
                dtype=self.bundle.input_dtype,
                num_classes=self.bundle.num_classes,
            )
        except ProtocolError as exc:
            return exc.code, exc.seq
        if batch.seq == 0:  # below the first seq: never handled, so not a duplicate
            return "stale_seq", 0
        if batch.seq <= last_seq:  # every seq up to last_seq was learned: no gaps here
            return "duplicate", batch.seq
        if batch.seq > last_seq + 1:  # max_seq_ahead=1
            return "bad_metadata", batch.seq
        return "telemetry", batch.seq
