"""What the bridge did per device: sent (batches, inference requests, samples), dropped by
reason, and what the nodes answered; counters while it runs, a frozen :class:`BridgeReport` at
the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dataset_stream.bridge.samples import REASONS
from dataset_stream.outcome import Delivery

if TYPE_CHECKING:
    from dataset_stream.answers import AnswerLedger


@dataclass(slots=True)
class DeviceCount:
    """One device's counters (mutable; the bridge's own)."""

    batches: int = 0
    learn_samples: int = 0
    infers: int = 0
    infer_samples: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    dropped: Counter[str] = field(default_factory=Counter)

    def snapshot(self, delivery: Delivery | None = None) -> DeviceReport:
        return DeviceReport(
            batches=self.batches,
            learn_samples=self.learn_samples,
            infers=self.infers,
            infer_samples=self.infer_samples,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            dropped={r: self.dropped[r] for r in REASONS if self.dropped[r]},
            delivery=delivery,
        )


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What the bridge sent one device, what it dropped, by reason, and (``delivery``) what its
    node answered."""

    batches: int
    learn_samples: int
    infers: int
    infer_samples: int
    first_seq: int | None
    last_seq: int | None
    dropped: Mapping[str, int]
    delivery: Delivery | None = None

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "batches": self.batches,
            "learn_samples": self.learn_samples,
            "infers": self.infers,
            "infer_samples": self.infer_samples,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "dropped": dict(self.dropped),
        }
        if self.delivery is not None:
            d = self.delivery
            out["answers"] = {
                "learned": d.learned,
                "duplicates": d.duplicates,
                "refused": d.refused,
                "lost": d.lost,
                "unanswered": [s for seqs in d.unanswered.values() for s in seqs],
            }
        return out


@dataclass(frozen=True, slots=True)
class BridgeReport:
    """The whole run: ``devices`` by id (``(none)``: records that named no usable device),
    ``records`` read, ``elapsed_s`` of wall time; ``delivery``: every batch and what its node
    answered (see :mod:`dataset_stream.outcome`); ``resent``: batches published again because
    no answer came in time, ``republished``: after a reconnect or a device's return;
    ``drain_s``: seconds spent at the end waiting for answers; ``stopped``: the bridge was
    stopped (it did not wait for the last answers)."""

    devices: Mapping[str, DeviceReport]
    records: int
    elapsed_s: float
    delivery: Delivery = field(default_factory=lambda: Delivery(planned=0, sent=0))
    resent: int = 0
    republished: int = 0
    drain_s: float = 0.0
    stopped: bool = False

    @property
    def dropped(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for device in self.devices.values():
            total.update(device.dropped)
        return {r: total[r] for r in REASONS if total[r]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "elapsed_s": round(self.elapsed_s, 3),
            "dropped": self.dropped,
            "delivery": self.delivery.to_dict(),
            "resent": self.resent,
            "republished": self.republished,
            "drain_s": round(self.drain_s, 3),
            "stopped": self.stopped,
            "devices": {d: r.to_dict() for d, r in sorted(self.devices.items())},
        }


class BridgeTally:
    """Counters of every device, and a since-last-look delta for periodic log lines."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceCount] = {}
        self.records = 0
        self._seen: dict[str, DeviceReport] = {}

    def of(self, device: str) -> DeviceCount:
        count = self.devices.get(device)
        if count is None:
            count = self.devices[device] = DeviceCount()
        return count

    def drop(self, device: str, reason: str, n: int = 1) -> None:
        self.of(device).dropped[reason] += n

    def report(
        self,
        elapsed_s: float,
        answers: AnswerLedger | None = None,
        *,
        resent: int = 0,
        republished: int = 0,
        drain_s: float = 0.0,
        stopped: bool = False,
    ) -> BridgeReport:
        """The run so far; ``answers``: what the nodes answered to its batches."""
        ledgers = answers.devices if answers is not None else {}
        devices = {
            d: c.snapshot(ledgers[d].delivery() if d in ledgers else None)
            for d, c in self.devices.items()
        }
        return BridgeReport(
            devices=devices,
            records=self.records,
            elapsed_s=elapsed_s,
            delivery=answers.delivery() if answers is not None else Delivery(0, 0),
            resent=resent,
            republished=republished,
            drain_s=drain_s,
            stopped=stopped,
        )

    def progress_lines(self) -> list[str]:
        """One line per device with something new since the last call."""
        lines = []
        for device, count in sorted(self.devices.items()):
            now = count.snapshot()
            before = self._seen.get(device)
            if before == now:
                continue
            self._seen[device] = now
            b = before or DeviceReport(0, 0, 0, 0, None, None, {})
            dropped = {r: n - b.dropped.get(r, 0) for r, n in now.dropped.items()}
            dropped = {r: n for r, n in dropped.items() if n}
            text = (
                f"{device}: +{now.batches - b.batches} batches "
                f"({now.learn_samples - b.learn_samples} samples"
                + (f", last seq {now.last_seq}" if now.last_seq is not None else "")
                + f"), +{now.infers - b.infers} inference requests "
                f"({now.infer_samples - b.infer_samples} samples)"
            )
            if dropped:
                text += ", dropped " + ", ".join(f"{n} {r}" for r, n in dropped.items())
            lines.append(text)
        return lines


__all__ = ["BridgeReport", "BridgeTally", "DeviceCount", "DeviceReport"]
