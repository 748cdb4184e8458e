"""The payloads of the bridge's unanswered batches, kept to publish them again.

A stream can build any batch again from its scenario; the bridge's batches are live windows, so
it keeps each payload from its first publish until its node answers it
(:class:`~dataset_stream.outstanding.Outstanding` decides when that is, and when a batch is due
again). :class:`KeptBatches` holds them in the order they were sent, at most ``limit_bytes`` in
all: past that, the oldest unanswered batch is abandoned (never published again; it stays
unanswered until an answer comes). Answered payloads are let go when a batch is kept or
published again.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence

from dataset_stream.outstanding import Outstanding
from dataset_stream.protocol import topic

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]


class KeptBatches:
    """Unanswered batch payloads by ``(device, seq)``; see the module docstring. ``publish``
    publishes one payload on a topic (at QoS 1, until the broker has it)."""

    def __init__(
        self, book: Outstanding, publish: Publish, *, prefix: str, limit_bytes: int
    ) -> None:
        if limit_bytes < 1:
            raise ValueError(f"limit_bytes must be >= 1, not {limit_bytes!r}")
        self.book = book
        self.publish = publish
        self.prefix = prefix
        self.limit_bytes = limit_bytes
        self.kept_bytes = 0
        self.resent = self.republished = self.abandoned = 0
        self._payloads: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def keep(self, device: str, seq: int, payload: bytes) -> None:
        """Keep ``payload`` of ``device``'s ``seq`` until it is answered."""
        self._payloads[device, seq] = payload
        self.kept_bytes += len(payload)
        if self.kept_bytes > self.limit_bytes:
            self.forget_answered()
        while self.kept_bytes > self.limit_bytes and len(self._payloads) > 1:
            (old_device, old_seq), old = self._payloads.popitem(last=False)
            self.kept_bytes -= len(old)
            self.book.abandon(old_device, old_seq)
            self.abandoned += 1
            log.warning(
                "%s: seq %d unanswered and %d bytes of unanswered batches kept: it will not be "
                "sent again",
                old_device,
                old_seq,
                self.limit_bytes,
            )

    def forget_answered(self) -> None:
        """Let the payloads of answered batches go."""
        for key in [k for k in self._payloads if k[1] not in self.book.book(k[0]).batches]:
            self.kept_bytes -= len(self._payloads.pop(key))

    def devices(self) -> list[str]:
        """The devices with a kept payload."""
        return sorted({device for device, _ in self._payloads})

    async def publish_again(self, pending: Mapping[str, Sequence[int]], *, timed_out: bool) -> None:
        """Publish ``pending`` seqs again (each device's in order), those still unanswered;
        ``timed_out``: no answer came in time (else: a reconnect, a device's return)."""
        self.forget_answered()
        for device, seqs in pending.items():
            where = topic(self.prefix, device, "batch")
            for seq in seqs:
                payload = self._payloads.get((device, seq))
                now_s = time.monotonic()
                if payload is None or not self.book.resent(device, seq, now_s, timed_out=timed_out):
                    continue
                await self.publish(where, payload)
                if timed_out:
                    self.resent += 1
                else:
                    self.republished += 1


__all__ = ["KeptBatches", "Publish"]
