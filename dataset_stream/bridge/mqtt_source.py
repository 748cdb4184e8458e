"""Records from an MQTT topic filter of the user's own broker.

The reader subscribes at QoS 1 on a persistent session of its own and reconnects with backoff
(:class:`~dataset_stream.reconnect.ReconnectPolicy`) like the stream, so that messages published
while it is away wait at the broker; on exit it ends that session. A payload whose first
non-blank byte is ``{`` is JSON, any other is raw little-endian float32 (``fmt`` can force
either). The topic level under the filter's first ``+`` names the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from dataset_stream.bridge.samples import Record, RecordKind
from dataset_stream.bridge.sources import MAX_RECORD_BYTES, Format, MqttSource
from dataset_stream.errors import SourceError
from dataset_stream.reconnect import STABLE_AFTER_S, ReconnectPolicy, new_client_id

if TYPE_CHECKING:
    import aiomqtt

log = logging.getLogger(__name__)


async def mqtt_records(
    source: MqttSource,
    fmt: Format,
    *,
    policy: ReconnectPolicy,
    within_s: float = 10.0,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> AsyncGenerator[Record, None]:
    """The messages on ``source``'s topic filter, through outages (module docstring)."""
    import aiomqtt

    if fmt is Format.csv:
        raise SourceError("CSV comes from files; MQTT payloads are JSON or raw float32")
    client_id = new_client_id("bridge")
    loop = asyncio.get_running_loop()
    backoff = policy.backoff()
    down_since: float | None = None
    cause: BaseException | None = None
    try:
        while True:
            if down_since is not None:
                waited = loop.time() - down_since
                if waited >= policy.max_outage_s:
                    raise SourceError(
                        f"no source broker at {source.broker} for {waited:.0f} s: {cause}"
                    ) from cause
                await asyncio.sleep(min(backoff.next_delay(), policy.max_outage_s - waited))
            try:
                client = await _subscribe(source, client_id, within_s)
            except (aiomqtt.MqttError, OSError) as exc:
                if down_since is None:  # the first connection: fail at once, like the stream
                    raise SourceError(
                        f"cannot connect to the source broker at {source.broker}: {exc}"
                    ) from exc
                cause = exc
                continue
            connected_at = loop.time()
            if down_since is not None:
                log.warning("reconnected to the source broker at %s", source.broker)
            try:
                async for message in client.messages:
                    yield _mqtt_record(message, source, fmt, max_record_bytes)
            except aiomqtt.MqttError as exc:
                cause = exc
                log.warning("lost the source broker at %s (%s); reconnecting", source.broker, exc)
            finally:
                await _close(client, within_s)
            if down_since is None or loop.time() - connected_at >= STABLE_AFTER_S:
                down_since = loop.time()
                backoff.reset()
    finally:
        with contextlib.suppress(aiomqtt.MqttError, OSError):  # leave no session behind
            end = aiomqtt.Client(
                **source.broker.client_kwargs(), identifier=client_id, clean_session=True
            )
            async with asyncio.timeout(within_s), end:
                pass


async def _subscribe(source: MqttSource, client_id: str, within_s: float) -> aiomqtt.Client:
    import aiomqtt

    client = aiomqtt.Client(
        **source.broker.client_kwargs(), identifier=client_id, clean_session=False, timeout=within_s
    )
    async with asyncio.timeout(within_s):
        await client.__aenter__()
    try:
        async with asyncio.timeout(within_s):
            granted = await client.subscribe(source.topic_filter, qos=1)
    except BaseException:
        await _close(client, within_s)
        raise
    code = getattr(granted[0], "value", granted[0]) if granted else 0x80
    if isinstance(code, int) and code >= 0x80:
        await _close(client, within_s)
        raise SourceError(
            f"the source broker at {source.broker} refused the subscription to "
            f"{source.topic_filter!r}: does its ACL let this user read it?"
        )
    return client


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


async def _close(client: aiomqtt.Client, within_s: float) -> None:
    import aiomqtt

    with contextlib.suppress(aiomqtt.MqttError, OSError):
        async with asyncio.timeout(within_s):
            await client.__aexit__(None, None, None)


__all__ = ["mqtt_records"]
