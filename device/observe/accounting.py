"""What the monitor keeps of each device, and of the fleet's event lag, in bounded memory.

A monitor watches thousands of devices for weeks, so nothing here grows with the number of
messages: a device's seqs are the highest one plus a bit mask of the :data:`SEQ_WINDOW` before
it (:class:`SeqWindow`), its errors are counts by code plus the last :data:`RECENT_ERRORS`, and
the fleet's event lag is a fixed-bucket histogram plus the last :data:`LAG_WINDOW` values for
percentiles (:class:`LagStats`). Pure accounting: no I/O, no asyncio.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from dataset_stream.protocol import (
    ERROR_CODES,
    NODE_ERROR_CODES,
    ErrorMessage,
    FaultReport,
    Status,
    Telemetry,
)

#: Seqs remembered behind a device's highest one; an older seq is taken for a redelivery.
SEQ_WINDOW: Final = 128
#: Error messages kept per device (the counts by code cover all of them).
RECENT_ERRORS: Final = 5
#: Event lags kept for the fleet's percentiles.
LAG_WINDOW: Final = 1000
#: Upper bounds (seconds) of the event lag histogram's buckets; +Inf follows.
LAG_BUCKETS_S: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Error codes counted by name; any other code a node sends is counted as ``other``.
KNOWN_ERROR_CODES: Final = ERROR_CODES | NODE_ERROR_CODES
OTHER_CODE: Final = "other"


@dataclass(slots=True)
class SeqWindow:
    """The seqs seen of one device: the highest, and which of the :data:`SEQ_WINDOW` below it.

    Bit ``i`` of ``mask`` stands for seq ``high - i``. A seq more than ``SEQ_WINDOW - 1`` below
    ``high`` counts as seen: nodes learn in seq order, so only a redelivery comes back that late.
    """

    high: int = -1
    mask: int = 0

    def add(self, seq: int) -> bool:
        """Mark ``seq`` seen; False if it was seen before (or is too old to tell)."""
        if seq > self.high:
            shift = seq - self.high
            self.mask = ((self.mask << shift) | 1) & ((1 << SEQ_WINDOW) - 1)
            self.high = seq
            return True
        back = self.high - seq
        if back >= SEQ_WINDOW or self.mask >> back & 1:
            return False
        self.mask |= 1 << back
        return True


@dataclass(slots=True)
class LagStats:
    """Event lag of the fleet: a cumulative histogram and the last :data:`LAG_WINDOW` values."""

    bounds: Sequence[float] = LAG_BUCKETS_S
    counts: list[int] = field(default_factory=list)  # per bucket, +Inf last; not cumulative
    total_s: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=LAG_WINDOW))

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"lag bucket bounds must increase strictly: {self.bounds}")
        self.counts = [0] * (len(self.bounds) + 1)

    def add(self, lag_s: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, lag_s)] += 1
        self.total_s += lag_s
        self.recent.append(lag_s)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as a Prometheus histogram has them, ``+Inf`` last."""
        out, running = [], 0
        for bound, n in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        return out

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1, nearest rank) of the recent lags; None before any."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} is not within 0..1")
        if not self.recent:
            return None
        ranked = sorted(self.recent)
        return ranked[min(len(ranked) - 1, max(0, math.ceil(q * len(ranked)) - 1))]


@dataclass(slots=True)
class DeviceRecord:
    """What the monitor knows of one device, in memory that does not grow with its messages.

    ``telemetry``: the one with the highest seq; ``first``: the one with the lowest; ``events``,
    ``energy_j`` (total and by phase) and ``host_s`` count each telemetry seq once. Delivery:
    ``gaps`` (seqs skipped, the larger of the node's own count in its telemetry and the ranges
    of its ``gap`` errors), ``duplicates`` (``duplicate`` errors), ``rejected`` (errors with a
    protocol error code, by code). ``lag_s``: event lag of the newest telemetry (see
    :meth:`add_telemetry`); ``received``: when a new telemetry seq last arrived.
    ``predictions``: prediction messages seen (counted, not decoded); ``prediction_received``:
    when the last one arrived. The downlink: ``desired_version`` (the retained desired state's),
    ``reported_version`` (the one the device runs) and ``refused_version`` (one it refused);
    :attr:`converged` says whether it runs what it was asked to.

    The node's last known state (:attr:`node_events`, :attr:`accuracy`, :attr:`forgetting`,
    :attr:`soc`, :attr:`lifetime_h`, :attr:`state`) is read from the newer of its last telemetry
    and its status (a node publishes its retained status after every event): a monitor that
    connects after a run knows every node's events, accuracy, battery and lifetime at once.
    """

    device: str
    telemetry: Telemetry | None = None
    first: Telemetry | None = None
    status: Status | None = None
    events: int = 0
    energy_j: float = 0.0  # summed over the telemetry seen
    energy_by_phase_j: dict[str, float] = field(default_factory=dict)
    host_s: float = 0.0  # wall time the emulator spent, summed over the telemetry seen
    seqs: SeqWindow = field(default_factory=SeqWindow)
    errors: int = 0  # error messages received
    errors_by_code: dict[str, int] = field(default_factory=dict)  # keys: known codes, "other"
    recent_errors: deque[ErrorMessage] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))
    gap_seqs_reported: int = 0  # seqs named by gap errors
    lag_s: float | None = None
    received: float | None = None  # wall time the newest telemetry seq was accepted
    predictions: int = 0
    prediction_received: float | None = None
    faults: dict[str, int] = field(default_factory=dict)  # injected faults reported, by kind
    # injected network faults: (from, until) simulated seconds after the first batch
    network_windows: list[tuple[float, float]] = field(default_factory=list)
    injected_gaps: int = 0  # seqs of gap errors during an injected network fault
    injected_duplicates: int = 0  # duplicate errors during an injected network fault
    desired_version: int | None = None  # retained desired state's version (None: none set)
    reported_version: int | None = None  # desired version in force, as the device reports it
    refused_version: int | None = None  # a desired version the device refused (reported)

    @property
    def converged(self) -> bool:
        """The device runs its desired state: none set, or its reported version reached it
        (a refused version is not converged)."""
        want = self.desired_version
        if want is None:
            return True
        if self.refused_version == want:
            return False
        return self.reported_version is not None and self.reported_version >= want

    @property
    def status_is_newer(self) -> bool:
        """Whether the status says more than the last telemetry: it names a last seq at or
        past that telemetry's (published after it), or no telemetry was seen."""
        status, tel = self.status, self.telemetry
        if status is None:
            return False
        if tel is None:
            return True
        return status.last_seq is not None and status.last_seq >= tel.seq

    @property
    def state(self) -> str:
        if self.status is not None and self.status.state in ("offline", "depleted", "error"):
            return self.status.state
        if self.status is not None and self.status_is_newer:
            return self.status.state
        if self.telemetry is not None:
            return self.telemetry.state
        return "unknown"

    @property
    def node_events(self) -> int:
        """Events the node learned by its own count (its newest telemetry or status), at least
        those seen here."""
        counts = [self.events]
        if self.telemetry is not None:
            counts.append(self.telemetry.events)
        if self.status is not None and self.status.events is not None:
            counts.append(self.status.events)
        return max(counts)

    @property
    def accuracy(self) -> float | None:
        """The node's last accuracy on its eval set (None: not measured, or not known)."""
        tel, status = self.telemetry, self.status
        if status is not None and status.accuracy is not None and self.status_is_newer:
            return status.accuracy
        return tel.accuracy if tel is not None else None

    @property
    def accuracy_age(self) -> int | None:
        """The event count :attr:`accuracy` was measured at, when that is before the node's
        current event (it measures every k events and carries the last measurement between);
        None when it was measured at the current event, or the node does not say."""
        tel = self.telemetry
        if tel is None or tel.accuracy_events is None or self.accuracy != tel.accuracy:
            return None
        return tel.accuracy_events if tel.accuracy_events < self.node_events else None

    @property
    def forgetting(self) -> float | None:
        """The node's last mean forgetting over the classes it has seen (None: not measured)."""
        tel, status = self.telemetry, self.status
        if status is not None and status.forgetting is not None and self.status_is_newer:
            return status.forgetting
        if tel is None or tel.classes is None:
            return None
        return tel.classes.forgetting

    @property
    def soc(self) -> float | None:
        """The node's last state of charge, 0..1 (None: not known)."""
        tel, status = self.telemetry, self.status
        if status is not None and status.battery is not None and self.status_is_newer:
            return status.battery.soc
        return tel.battery.soc if tel is not None else None

    @property
    def lifetime_h(self) -> float | None:
        """The node's last projected lifetime, hours (None: unbounded, or not known)."""
        tel, status = self.telemetry, self.status
        if status is not None and status.battery is not None and self.status_is_newer:
            return status.lifetime_h
        return tel.lifetime_h if tel is not None else None

    @property
    def gaps(self) -> int:
        counted = self.telemetry.gaps if self.telemetry is not None else 0
        return max(counted, self.gap_seqs_reported)

    @property
    def duplicates(self) -> int:
        return self.errors_by_code.get("duplicate", 0)

    @property
    def rejected(self) -> dict[str, int]:
        """Rejected inputs by protocol error code."""
        return {c: n for c, n in self.errors_by_code.items() if c in ERROR_CODES}

    def add_telemetry(self, msg: Telemetry, received: float | None = None) -> bool:
        """Account ``msg``; False if its seq was counted before.

        ``received``: wall time (unix seconds) it arrived; the event lag is ``received - msg.t``,
        ``t`` being the batch's scheduled simulated time (wall time only at stream speed 1).
        """
        if not self.seqs.add(msg.seq):
            return False
        self.events += 1
        self.energy_j += msg.energy_j["total"]
        for phase, joules in msg.energy_j.items():
            if phase != "total":
                self.energy_by_phase_j[phase] = self.energy_by_phase_j.get(phase, 0.0) + joules
        self.host_s += msg.host_s
        if received is not None:
            self.received = received
        if self.telemetry is None or msg.seq > self.telemetry.seq:
            self.telemetry = msg
            if received is not None:
                self.lag_s = received - msg.t
        if self.first is None or msg.seq < self.first.seq:
            self.first = msg
        return True

    @property
    def sim_s(self) -> float | None:
        """The device's simulated time, seconds after its first batch (its newest telemetry's
        ``t`` less its first one's): the clock of its injected faults."""
        if self.telemetry is None or self.first is None:
            return None
        return self.telemetry.t - self.first.t

    @property
    def in_injected_network_fault(self) -> bool:
        """Whether an injected network fault holds for the device now."""
        now = self.sim_s if self.sim_s is not None else 0.0
        return any(start <= now < until for start, until in self.network_windows)

    def add_fault(self, report: FaultReport) -> None:
        """Account an injected fault the device reported."""
        self.faults[report.kind] = self.faults.get(report.kind, 0) + 1
        if report.kind == "network":
            until = math.inf if report.duration_s is None else report.at_s + report.duration_s
            self.network_windows.append((report.fired_s, until))
            del self.network_windows[:-RECENT_ERRORS]  # bounded: the recent ones matter

    def add_error(self, msg: ErrorMessage) -> None:
        """Account ``msg``; gaps and duplicates while an injected network fault holds are
        counted apart too (``injected_gaps``, ``injected_duplicates``): trouble that was made,
        not found."""
        injected = self.in_injected_network_fault
        if injected and msg.code == "duplicate":
            self.injected_duplicates += 1
        if injected and msg.code == "gap":
            span = (msg.gap_last or 0) - (msg.gap_first or 0) + 1
            self.injected_gaps += max(1, span)
        code = msg.code if msg.code in KNOWN_ERROR_CODES else OTHER_CODE
        self.errors += 1
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1
        self.recent_errors.append(msg)
        if msg.code == "gap":
            if msg.gap_first is not None and msg.gap_last is not None:
                self.gap_seqs_reported += max(1, msg.gap_last - msg.gap_first + 1)
            else:
                self.gap_seqs_reported += 1


__all__ = [
    "KNOWN_ERROR_CODES",
    "LAG_BUCKETS_S",
    "LAG_WINDOW",
    "OTHER_CODE",
    "RECENT_ERRORS",
    "SEQ_WINDOW",
    "DeviceRecord",
    "LagStats",
    "SeqWindow",
]
