"""``Node``: one emulated VEGA device on MQTT (async context manager).

The node keeps one MQTT session open in an explicit reconnect loop (backoff with jitter and a
cap). The session is persistent (client id = device id, clean session off) so QoS 1 batches
queued at the broker while the node was away arrive when it returns. Batches are acknowledged
only after their event is committed, so a crash loses nothing: the broker redelivers and the
node's ``seq`` check acknowledges the duplicate without applying it twice. Every rejected input
gets an ``error`` message and changes nothing. The numeric work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import aiomqtt

from broker.url import BrokerURL
from dataset_stream.protocol import ProtocolError, decode_batch, decode_eval, topic
from device.aio import cancel_and_wait
from device.energy import EnergyError
from device.engine import NodeEngine
from device.model.bundle import ModelBundle
from device.model.errors import ModelError
from device.model.frozen import FrozenStage
from device.mqtt import Backoff, ack, enable_manual_ack
from device.settings import NodeSettings
from device.store import StoreError

log = logging.getLogger(__name__)

NETWORK_TIMEOUT_S = 10.0
T = TypeVar("T")
TelemetryHook = Callable[[dict[str, Any]], None]


class Node:
    """An emulated device: receives batches, learns, reports (``async with Node(...)``)."""

    def __init__(
        self,
        settings: NodeSettings,
        bundle: ModelBundle,
        broker: BrokerURL,
        *,
        frozen: FrozenStage | None = None,
        backoff: Backoff | None = None,
        on_telemetry: TelemetryHook | None = None,
    ) -> None:
        self.settings = settings
        self.bundle = bundle
        self.broker = broker
        self.frozen = frozen or FrozenStage.shared(bundle)
        self.backoff = backoff or Backoff()
        self.on_telemetry = on_telemetry
        self.engine: NodeEngine | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one event at a time
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.engine = await asyncio.to_thread(NodeEngine, self.settings, self.bundle, self.frozen)
        self._task = asyncio.create_task(self._session_loop(), name=f"node {self.device_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            await cancel_and_wait(task)
        engine, self.engine = self.engine, None
        if engine is not None:
            async with self._lock:
                await asyncio.to_thread(engine.close)

    @property
    def device_id(self) -> str:
        return self.settings.device_id

    def _topic(self, kind: str) -> str:
        return topic(self.settings.prefix, self.device_id, kind)

    # -- MQTT session ------------------------------------------------------------------------

    async def _session_loop(self) -> None:
        will = aiomqtt.Will(
            self._topic("status"),
            json.dumps({"device": self.device_id, "state": "offline"}),
            qos=1,
            retain=True,
        )
        while True:
            try:
                async with aiomqtt.Client(
                    **self.broker.client_kwargs(),
                    identifier=self.device_id,
                    clean_session=False,
                    will=will,
                    timeout=NETWORK_TIMEOUT_S,
                ) as client:
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                if self._stopping:
                    # leaving the client after a cancel can fail with MqttError, which would
                    # replace the CancelledError: the stop must still win over a reconnect
                    raise asyncio.CancelledError from exc
                delay = self.backoff.next_delay()
                log.warning("%s: MQTT %s; reconnecting in %.1f s", self.device_id, exc, delay)
                await asyncio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        enable_manual_ack(client)
        await client.subscribe([(self._topic("batch"), 1), (self._topic("eval"), 1)])
        self.backoff.reset()
        self.connections += 1
        await self._publish_status(client, "idle")
        self.connected.set()
        try:
            async for message in client.messages:
                await self._handle(client, message)
        except asyncio.CancelledError:  # a clean stop: say so (the will is for crashes)
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(2):
                    await self._publish_status(client, "offline")
            raise
        finally:
            self.connected.clear()
        raise aiomqtt.MqttError("message stream ended")

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        assert self.engine is not None
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = b""
        kind = str(message.topic).rsplit("/", 1)[-1]
        async with self._lock:
            try:
                if kind == "batch":
                    await self._on_batch(client, bytes(payload))
                elif kind == "eval":
                    await self._on_eval(bytes(payload))
            except ProtocolError as exc:
                await self._publish_error(client, exc.to_message(self.device_id))
            except (StoreError, ModelError, EnergyError) as exc:
                # the event rolled back; report it and keep serving the next batches
                error = {"device": self.device_id, "code": "node_error", "message": str(exc)}
                await self._publish_error(client, error)
        ack(client, message)

    async def _on_batch(self, client: aiomqtt.Client, payload: bytes) -> None:
        engine = self.engine
        assert engine is not None
        model = self.bundle
        # a seq already applied raises stale_seq: it is acknowledged, reported, not applied again
        batch = decode_batch(
            payload,
            limits=self.settings.limits,
            sample_shape=model.input_shape,
            dtype=model.input_dtype,
            num_classes=model.num_classes,
            last_seq=engine.last_seq,
        )
        outcome = await _finish_in_thread(engine.apply, batch)
        telemetry = outcome.telemetry
        await client.publish(self._topic("telemetry"), json.dumps(telemetry), qos=1)
        if not outcome.learned:
            await self._publish_status(client, "depleted")
        if self.on_telemetry is not None:
            self.on_telemetry(telemetry)

    async def _on_eval(self, payload: bytes) -> None:
        engine = self.engine
        assert engine is not None
        model = self.bundle
        eval_set = decode_eval(
            payload,
            sample_shape=model.input_shape,
            dtype=model.input_dtype,
            num_classes=model.num_classes,
        )
        await _finish_in_thread(engine.set_eval, eval_set, payload)

    async def _publish_status(self, client: aiomqtt.Client, state: str) -> None:
        assert self.engine is not None
        status = self.engine.status(state)
        await client.publish(self._topic("status"), json.dumps(status), qos=1, retain=True)

    async def _publish_error(self, client: aiomqtt.Client, error: dict[str, Any]) -> None:
        log.warning("%s: rejected input: %s: %s", self.device_id, error["code"], error["message"])
        await client.publish(self._topic("error"), json.dumps(error), qos=1)


async def _finish_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a worker thread; if cancelled, wait for it before propagating.

    A thread cannot be interrupted: returning early would let the node close its state file
    while the event is still being written.
    """
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise


__all__ = ["Node", "TelemetryHook"]
