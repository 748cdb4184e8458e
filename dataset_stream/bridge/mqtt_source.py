"""Records from an MQTT topic filter of the user's own broker.

The reader subscribes at QoS 1 on a persistent session of its own and reconnects with backoff
(:class:`~dataset_stream.reconnect.ReconnectPolicy`) like the stream, so that messages published
while it is away wait at the broker; on exit it ends that session. A payload whose first
non-blank byte is ``{`` is JSON, any other is raw little-endian float32 (``fmt`` can force
either). The topic level under the filter's first ``+`` names the device.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator

import aiomqtt

from broker.errors import OutageTooLong, SubscriptionRefused
from broker.session import Session, close, new_client_id
from dataset_stream.bridge.samples import Record, RecordKind
from dataset_stream.bridge.sources import MAX_RECORD_BYTES, Format, MqttSource
from dataset_stream.errors import SourceError
from dataset_stream.reconnect import ReconnectPolicy


async def mqtt_records(
    source: MqttSource,
    fmt: Format,
    *,
    policy: ReconnectPolicy,
    within_s: float = 10.0,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> AsyncGenerator[Record, None]:
    """The messages on ``source``'s topic filter, through outages (module docstring)."""
    if fmt is Format.csv:
        raise SourceError("CSV comes from files; MQTT payloads are JSON or raw float32")
    session = Session(source.broker, new_client_id("bridge"), timeout_s=within_s)
    reconnect = policy.reconnect(
        broker=source.broker, who="bridge source", client_id=session.client_id
    )

    async def connect() -> aiomqtt.Client:
        try:
            return await session.open([(source.topic_filter, 1)])
        except SubscriptionRefused as exc:
            raise SourceError(f"MQTT source: {exc}") from exc

    try:
        try:
            client = await connect()
        except (aiomqtt.MqttError, OSError) as exc:  # the first connection: fail at once
            raise SourceError(
                f"cannot connect to the source broker at {source.broker}: {exc}"
            ) from exc
        reconnect.connected()
        while True:
            cause: BaseException = SourceError("the message stream ended")
            try:
                async for message in client.messages:
                    yield _mqtt_record(message, source, fmt, max_record_bytes)
            except aiomqtt.MqttError as exc:
                cause = exc
            finally:
                await close(client, within_s=within_s)
            try:
                client = await reconnect.again(connect, cause)
            except OutageTooLong as exc:
                last = exc.__cause__ or cause
                raise SourceError(f"MQTT source: {exc}: {last}") from last
    finally:
        with contextlib.suppress(aiomqtt.MqttError, OSError):  # leave no session behind
            await session.end()


def _mqtt_record(message: aiomqtt.Message, source: MqttSource, fmt: Format, limit: int) -> Record:
    where = f"topic {message.topic.value[:200]}"
    level = source.device_level
    levels = message.topic.value.split("/")
    device = levels[level] if level is not None and level < len(levels) else None
    payload = message.payload
    body = payload if isinstance(payload, bytes) else str(payload).encode()
    if len(body) > limit:
        return Record(RecordKind.JSON, b"", where, time.time(), device, defect="too_large")
    raw = fmt is Format.raw or (fmt is Format.auto and not body.lstrip().startswith(b"{"))
    return Record(RecordKind.RAW if raw else RecordKind.JSON, body, where, time.time(), device)


__all__ = ["mqtt_records"]
