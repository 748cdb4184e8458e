"""Per-device windows: labelled samples -> one learning batch per window, unlabelled samples ->
one inference group per device per second. Pure: no I/O, no clock of its own.

Each device has its own grid of windows, started by its first sample: window ``k`` covers the
clock interval ``[start + k * W, start + (k + 1) * W)``. The caller says what the clock is
(:meth:`Windower.add` takes each sample's clock time, :meth:`Windower.advance` moves the clock
on): the wall clock for a live source, the samples' own ``t`` for a recorded file. A window is
closed once the clock reaches its end, or by :meth:`Windower.flush`; a sample whose clock time is
before the open window's start (a clock that went back) joins the open window. A window holds at
most ``capacity`` samples (what one payload may carry); :meth:`Windower.add` returns False for a
sample that does not fit, and the caller counts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True, eq=False)
class LearnBatch:
    """A closed learning window: ``x`` ``[N, *shape]``, ``y`` int64 ``[N]``; ``t``: the latest
    capture time of its samples."""

    device: str
    x: np.ndarray
    y: np.ndarray
    t: float


@dataclass(frozen=True, slots=True, eq=False)
class InferGroup:
    """A closed inference group: ``x`` ``[N, *shape]`` unlabelled; ``t`` as in a batch."""

    device: str
    x: np.ndarray
    t: float


Outgoing = LearnBatch | InferGroup


@dataclass(slots=True)
class _Open:
    start: float
    end: float
    xs: list[np.ndarray] = field(default_factory=list)
    ys: list[int] = field(default_factory=list)
    t: float = -math.inf


@dataclass(frozen=True, slots=True)
class WindowSettings:
    """``window_s``: seconds per learning window; ``infer_s``: seconds per inference group;
    ``capacity`` / ``infer_capacity``: samples one learning / inference payload may hold."""

    window_s: float = 60.0
    infer_s: float = 1.0
    capacity: int = 4096
    infer_capacity: int = 4096

    def __post_init__(self) -> None:
        for name in ("window_s", "infer_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        for name in ("capacity", "infer_capacity"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")


class Windower:
    """Open windows of every device; see the module docstring."""

    def __init__(self, settings: WindowSettings) -> None:
        self.settings = settings
        self._learn: dict[str, _Open] = {}
        self._infer: dict[str, _Open] = {}
        self._grid: dict[tuple[str, bool], float] = {}  # (device, labelled) -> first start
        self._now = -math.inf  # the latest clock seen: the clock never goes back

    @property
    def open_windows(self) -> int:
        return len(self._learn) + len(self._infer)

    def add(
        self, device: str, x: np.ndarray, y: int | None, *, clock: float, t: float
    ) -> tuple[bool, list[Outgoing]]:
        """Put one sample in its device's window; return (it fit, the windows it closed).

        ``clock``: the sample's time on the windowing clock; ``t``: its capture time.
        """
        closed = self.advance(clock)
        clock = self._now
        labelled = y is not None
        table = self._learn if labelled else self._infer
        capacity = self.settings.capacity if labelled else self.settings.infer_capacity
        window = table.get(device)
        if window is None:
            window = table[device] = self._open(device, labelled, clock)
        if len(window.xs) >= capacity:
            return False, closed
        window.xs.append(x)
        if y is not None:
            window.ys.append(y)
        window.t = max(window.t, t)
        return True, closed

    def advance(self, clock: float) -> list[Outgoing]:
        """Close every window that ends at or before ``clock``, oldest first."""
        self._now = max(self._now, clock)
        clock = self._now
        due = [
            (w.end, device, labelled)
            for labelled, table in ((True, self._learn), (False, self._infer))
            for device, w in table.items()
            if w.end <= clock
        ]
        return [self._close(device, labelled) for _, device, labelled in sorted(due)]

    def flush(self) -> list[Outgoing]:
        """Close every open window (the end of a finite input)."""
        now = self._now
        closed = self.advance(math.inf)
        self._now = now
        return closed

    def _open(self, device: str, labelled: bool, clock: float) -> _Open:
        width = self.settings.window_s if labelled else self.settings.infer_s
        first = self._grid.setdefault((device, labelled), clock)
        k = max(0, math.floor((clock - first) / width))
        start = first + k * width
        return _Open(start=start, end=start + width)

    def _close(self, device: str, labelled: bool) -> Outgoing:
        if labelled:
            w = self._learn.pop(device)
            return LearnBatch(device, np.stack(w.xs), np.asarray(w.ys, dtype=np.int64), w.t)
        w = self._infer.pop(device)
        return InferGroup(device, np.stack(w.xs), w.t)


__all__ = ["InferGroup", "LearnBatch", "Outgoing", "WindowSettings", "Windower"]
