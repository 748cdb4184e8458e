"""The bridge: raw records -> checked samples -> per-device windows -> batches and inference
requests on the fleet's broker.

:class:`Bridge` connects on ``__aenter__`` and disconnects on ``__aexit__``; :meth:`Bridge.run`
reads a source until it ends (a finite input) or ``stop`` is set, then closes the open windows,
publishes them and returns a :class:`~dataset_stream.bridge.tally.BridgeReport`. Its loops (the
reader, the sender, the window clock, the periodic report, the re-senders and the link's reader)
run in a task group it owns.

Delivery is end to end, as the stream's (``docs/protocol.md``, "End-to-end delivery"): each
batch stays outstanding (:class:`~dataset_stream.outstanding.Outstanding`), its payload kept,
until its node's telemetry or error for its seq arrives; it is published again after every
reconnect, when its device announces itself online again, and when no answer comes in time
(backoff, bounded: :class:`~dataset_stream.outstanding.ResendPolicy`); its payload waits in
:class:`~dataset_stream.bridge.kept.KeptBatches` (``keep_bytes`` at most: past that the oldest
unanswered batch is no longer published again, and stays unanswered). When its input ends
the bridge drains: it waits up to ``drain_timeout_s`` (time without a broker not counted) for
the answers still outstanding. A stopped bridge does not wait. Inference requests are at most
once.

Windows (``docs/live-data.md``): with ``replay=False`` (a live source: MQTT, standard input, a
followed file) the clock is the wall clock, and a window closes when its time is up even if no
sample comes; with ``replay=True`` (a file read once) the clock is each sample's own ``t``
(the arrival time for a sample without one), so a recorded day becomes a day of windows at once.
Every message is encoded with the wire codec and decoded back with the model's shape, dtype and
class count under the codec's :class:`~dataset_stream.protocol.Limits`, exactly as a node
decodes it, before it is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from dataset_stream.answers import AnswerLedger
from dataset_stream.bridge.kept import KeptBatches
from dataset_stream.bridge.link import NextSeqs, TargetLink
from dataset_stream.bridge.samples import Fields, Record, Rejected, SampleSpec, parse_record
from dataset_stream.bridge.tally import BridgeReport, BridgeTally
from dataset_stream.bridge.windows import (
    InferGroup,
    LearnBatch,
    Outgoing,
    Windower,
    WindowSettings,
)
from dataset_stream.errors import ProtocolError
from dataset_stream.outcome import default_drain_s, finite_drain
from dataset_stream.outstanding import Outstanding, ResendPolicy
from dataset_stream.protocol import (
    DEFAULT_PREFIX,
    Limits,
    decode_batch,
    decode_infer,
    encode_batch,
    encode_infer,
    topic,
    validate_prefix,
)
from dataset_stream.reconnect import ReconnectPolicy
from dataset_stream.redelivery import drain, resend_when_due

if TYPE_CHECKING:
    from broker.url import BrokerURL

log = logging.getLogger(__name__)

#: Warnings per rejection reason before the rest are only counted.
WARNINGS_PER_REASON: Final = 5
#: Bytes a payload needs beyond its samples (header, labels); kept free below the size limit.
PAYLOAD_OVERHEAD: Final = 64 * 1024
#: Bytes of unanswered batch payloads the bridge keeps, to publish them again.
KEEP_BYTES: Final = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """How the bridge runs: topic ``prefix``, ``window_s`` per learning batch, ``infer_s`` per
    inference request, ``status_wait_s`` for the retained statuses, a progress log line per
    device every ``report_every_s``, the codec ``limits``, broker ``timeout_s`` and reconnects;
    ``source`` is the payloads' ``source`` metadata. ``drain_timeout_s``: how long the bridge
    waits, once its input ended, for the answers still outstanding (None:
    :func:`~dataset_stream.outcome.default_drain_s` of ``window_s``); ``resend``: when a batch
    without an answer goes again; ``keep_bytes``: payload bytes kept for that, at most;
    ``from_seq``: every device's first batch seq (None: after the ``last_seq`` of its status)."""

    prefix: str = DEFAULT_PREFIX
    window_s: float = 60.0
    infer_s: float = 1.0
    status_wait_s: float = 2.0
    report_every_s: float = 60.0
    limits: Limits = field(default_factory=Limits)
    timeout_s: float = 10.0
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    source: str = "bridge"
    drain_timeout_s: float | None = None
    resend: ResendPolicy = field(default_factory=ResendPolicy)
    keep_bytes: int = KEEP_BYTES
    from_seq: int | None = None

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        for name in ("window_s", "infer_s", "report_every_s", "timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if not (math.isfinite(self.status_wait_s) and self.status_wait_s >= 0):
            raise ValueError(f"status_wait_s must be >= 0, not {self.status_wait_s!r}")
        if not self.source:
            raise ValueError("source must not be empty")
        if self.drain_timeout_s is not None and not finite_drain(self.drain_timeout_s):
            raise ValueError(f"drain_timeout_s must be >= 0, not {self.drain_timeout_s!r}")
        if self.from_seq is not None and self.from_seq < 1:
            raise ValueError(f"from_seq must be >= 1, not {self.from_seq!r}")
        if self.keep_bytes < 1:
            raise ValueError(f"keep_bytes must be >= 1, not {self.keep_bytes!r}")

    @property
    def drain_s(self) -> float:
        """The drain timeout in effect."""
        if self.drain_timeout_s is None:
            return default_drain_s(self.window_s)
        return self.drain_timeout_s

    def windows(self, spec: SampleSpec) -> WindowSettings:
        """Window sizes, and the samples one payload may hold under ``limits``."""
        room = (self.limits.max_payload_bytes - PAYLOAD_OVERHEAD) // (spec.nbytes + 16)
        capacity = max(1, min(self.limits.max_samples, room))
        return WindowSettings(self.window_s, self.infer_s, capacity, capacity)


class Bridge:
    """Forward samples read by a source to the devices on ``broker``; see the module docstring."""

    def __init__(
        self,
        broker: BrokerURL,
        spec: SampleSpec,
        fields: Fields,
        settings: BridgeSettings | None = None,
    ) -> None:
        self.spec = spec
        self.fields = fields
        self.settings = settings or BridgeSettings()
        self.tally = BridgeTally()
        self.seqs = NextSeqs(self.settings.status_wait_s, self.settings.from_seq)
        self.book = Outstanding(self.settings.resend)
        self._answered = asyncio.Event()
        self._again: asyncio.Queue[str | None] = asyncio.Queue()  # a device, None: every one
        self.answers = AnswerLedger(
            self.settings.prefix,
            None,
            book=self.book,
            on_answer=self._answered.set,
            on_back=self._again.put_nowait,
        )
        devices = [fields.device] if fields.device is not None else None
        self.link = TargetLink(
            broker,
            self.seqs,
            prefix=self.settings.prefix,
            devices=devices,
            reconnect=self.settings.reconnect,
            timeout_s=self.settings.timeout_s,
            answers=self.answers,
            on_reconnect=lambda: self._again.put_nowait(None),
        )
        self.kept = KeptBatches(
            self.book,
            self.link.publish,
            prefix=self.settings.prefix,
            limit_bytes=self.settings.keep_bytes,
        )
        self._windows = Windower(self.settings.windows(spec))
        self._warned: dict[str, int] = {}

    async def __aenter__(self) -> Self:
        await self.link.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.link.__aexit__(exc_type, exc, tb)

    async def run(
        self,
        records: AsyncGenerator[Record, None],
        *,
        replay: bool,
        stop: asyncio.Event | None = None,
    ) -> BridgeReport:
        """Forward ``records`` until they end or ``stop`` is set; then flush and report."""
        started = time.monotonic()
        stop = stop or asyncio.Event()
        outbox: asyncio.Queue[Outgoing | None] = asyncio.Queue(maxsize=256)
        try:
            async with asyncio.TaskGroup() as group:
                helpers = [
                    group.create_task(self.link.maintain()),
                    group.create_task(self._report_every()),
                    group.create_task(
                        resend_when_due(
                            self.book, lambda due: self.kept.publish_again(due, timed_out=True)
                        )
                    ),
                    group.create_task(self._publish_again_on_request()),
                ]
                if self.fields.device is not None:  # refused before reading, if it must be
                    await self.seqs.batch_seq(self.fields.device)
                if not replay:
                    helpers.append(group.create_task(self._tick(outbox)))
                sender = group.create_task(self._send(outbox))
                reader = group.create_task(self._read(records, outbox, replay=replay))
                stopping = group.create_task(stop.wait())
                await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not reader.done():  # stopped: the source is live and still open
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
                for out in self._windows.flush():
                    await outbox.put(out)
                await outbox.put(None)
                await sender
                drain_s = 0.0 if stop.is_set() else await self._drain(stop)
                for task in helpers:
                    task.cancel()
        except BaseExceptionGroup as group:
            raise _essential(group) from None
        for line in self.tally.progress_lines():
            log.info("%s", line)
        return self.tally.report(
            time.monotonic() - started,
            self.answers,
            resent=self.kept.resent,
            republished=self.kept.republished,
            drain_s=drain_s,
            stopped=stop.is_set(),
        )

    # -- reading ---------------------------------------------------------------------------------

    async def _read(
        self,
        records: AsyncGenerator[Record, None],
        outbox: asyncio.Queue[Outgoing | None],
        *,
        replay: bool,
    ) -> None:
        async with contextlib.aclosing(records):
            async for record in records:
                self.tally.records += 1
                sample = parse_record(record, self.spec, self.fields)
                if isinstance(sample, Rejected):
                    self._reject(sample.device, sample.reason, sample.detail)
                    continue
                t = sample.t if sample.t is not None else record.arrival
                clock = t if replay else record.arrival
                fits, closed = self._windows.add(
                    sample.device, sample.x, sample.y, clock=clock, t=t
                )
                if not fits:
                    kind = "learning" if sample.y is not None else "inference"
                    self._reject(sample.device, "window_full", f"{record.where}: {kind} window")
                for out in closed:
                    await outbox.put(out)

    def _reject(self, device: str, reason: str, detail: str, n: int = 1) -> None:
        self.tally.drop(device, reason, n)
        seen = self._warned[reason] = self._warned.get(reason, 0) + 1
        if seen <= WARNINGS_PER_REASON:
            log.warning("dropped (%s) %s: %s", reason, device, detail)
        if seen == WARNINGS_PER_REASON:
            log.warning("further %s samples are counted, not logged", reason)

    async def _tick(self, outbox: asyncio.Queue[Outgoing | None]) -> None:
        """The wall clock of a live source: close windows whose time is up."""
        period_s = min(self.settings.infer_s, self.settings.window_s) / 4
        while True:
            await asyncio.sleep(period_s)
            for out in self._windows.advance(time.time()):
                await outbox.put(out)

    async def _report_every(self) -> None:
        while True:
            await asyncio.sleep(self.settings.report_every_s)
            for line in self.tally.progress_lines():
                log.info("%s", line)

    # -- sending ---------------------------------------------------------------------------------

    async def _send(self, outbox: asyncio.Queue[Outgoing | None]) -> None:
        while (out := await outbox.get()) is not None:
            if isinstance(out, LearnBatch):
                await self._send_batch(out)
            else:
                await self._send_infer(out)

    async def _send_batch(self, batch: LearnBatch) -> None:
        device, n = batch.device, len(batch.y)
        seq = await self.seqs.batch_seq(device)
        try:
            payload = encode_batch(
                batch.x, batch.y, seq=seq, t=batch.t, source=self.settings.source
            )
            decode_batch(
                payload,
                limits=self.settings.limits,
                sample_shape=self.spec.shape,
                dtype=self.spec.dtype,
                num_classes=self.spec.num_classes,
            )
        except ProtocolError as exc:
            self._reject(device, "refused", f"a batch of {n} samples: {exc}", n)
            return
        # before publishing: answers (and the node's status naming this seq) are quick
        self.seqs.used(device, seq)
        if self.answers.handing_over(device, seq):
            self.kept.keep(device, seq, payload)
        await self.link.publish(topic(self.settings.prefix, device, "batch"), payload)
        count = self.tally.of(device)
        count.batches += 1
        count.learn_samples += n
        count.first_seq = seq if count.first_seq is None else count.first_seq
        count.last_seq = seq
        log.debug("%s: batch seq %d, %d samples", device, seq, n)

    async def _send_infer(self, group: InferGroup) -> None:
        device, n = group.device, len(group.x)
        seq = await self.seqs.infer_seq(device)
        try:
            payload = encode_infer(group.x, seq=seq, t=group.t, source=self.settings.source)
            decode_infer(
                payload,
                limits=self.settings.limits,
                sample_shape=self.spec.shape,
                dtype=self.spec.dtype,
            )
        except ProtocolError as exc:
            self._reject(device, "refused", f"an inference request of {n} samples: {exc}", n)
            return
        await self.link.publish(topic(self.settings.prefix, device, "infer"), payload)
        self.seqs.infer_used(device, seq)
        count = self.tally.of(device)
        count.infers += 1
        count.infer_samples += n

    # -- end-to-end delivery -----------------------------------------------------------------

    async def _publish_again_on_request(self) -> None:
        """After a reconnect (every device) or a device's return: its unanswered batches."""
        while True:
            which = await self._again.get()
            devices = self.kept.devices() if which is None else [which]
            pending = {d: seqs for d in devices if (seqs := self.book.resendable(d))}
            if pending:
                count = sum(map(len, pending.values()))
                log.info("publishing %d unanswered batch(es) again", count)
                await self.kept.publish_again(pending, timed_out=False)

    async def _drain(self, stop: asyncio.Event) -> float:
        """Wait for the answers still outstanding: up to ``drain_s`` with a broker, or a stop."""
        waited_s = await drain(
            self.book,
            self._answered,
            self.settings.drain_s,
            counting=lambda: self.link.connected,
            stop=stop,
        )
        if self.book.count and not stop.is_set():
            log.warning("%d batch(es) still unanswered after %.1f s", self.book.count, waited_s)
        return waited_s


def _essential(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error behind a task group's failure (the first, if several)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        else:
            leaves.append(exc)
    return leaves[0]


__all__ = ["Bridge", "BridgeSettings"]
