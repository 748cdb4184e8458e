"""The report's matplotlib figures: axes a reader takes in at a glance.

Every number axis is written out in full (:class:`PlainFormatter`: ``99.9986``, ``10,950``; never
an offset such as ``1e-6+9.9999e-1`` nor scientific notation), with as many decimals as its
ticks need to differ; an axis of counts (devices, messages, events) has integer ticks only
(:func:`count_axis`). :func:`node_lines` and :func:`fleet_band` draw a fleet: a thin line per
node for a sample of the nodes (evenly spread) and the fleet's median and
p10..p90 over the whole fleet. This module imports matplotlib: import it where a figure is
drawn, so that a command that never draws does not pay for it.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, MaxNLocator, ScalarFormatter

#: Bins of simulated time over which the fleet band is computed.
TIME_BINS: Final = 60
#: Decimals a tick label may take at most (beyond that the ticks are not told apart anyway).
MAX_DECIMALS: Final = 8


def figure(height_in: float = 4.5) -> tuple[Figure, Axes]:
    """A new figure (8 in wide, constrained layout) with one axes; not tied to pyplot."""
    fig = Figure(figsize=(8, height_in), layout="constrained")
    return fig, fig.add_subplot()


def tick_decimals(values: np.ndarray) -> int:
    """The fewest decimals (0..:data:`MAX_DECIMALS`) that write every tick value exactly enough
    to tell it from its neighbours: 0 for ``[0, 5, 10]``, 2 for ``[0.25, 0.5]``, 4 for
    ``[99.9986, 99.9988]``."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0
    steps = np.diff(np.sort(finite))
    steps = steps[steps > 0]
    tolerance = (float(steps.min()) if steps.size else max(1.0, float(np.abs(finite).max()))) * 1e-3
    for decimals in range(MAX_DECIMALS + 1):
        if np.all(np.abs(np.round(finite, decimals) - finite) <= tolerance):
            return decimals
    return MAX_DECIMALS


def plain_axes(fig: Figure) -> None:
    """Every number axis of ``fig`` written in full (:class:`PlainFormatter`); category axes (bar
    names) are left as they are."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), ScalarFormatter):
                axis.set_major_formatter(PlainFormatter())


def count_axis(axis: Axis) -> None:
    """Ticks on whole numbers only: an axis of devices, messages or events."""
    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(PlainFormatter())


def node_lines(
    ax: Axes, device: np.ndarray, x: np.ndarray, y: np.ndarray, *, max_lines: int
) -> int:
    """Thin grey lines of ``y`` over ``x`` for at most ``max_lines`` nodes, evenly
    sampled; ``device`` is each row's node index (rows of a node sorted by ``x``). Returns how
    many nodes were drawn."""
    present = np.unique(device)
    step = max(1, math.ceil(present.size / max_lines))
    segments = []
    for d in present[::step]:
        keep = (device == d) & np.isfinite(y)
        segments.append(np.column_stack([x[keep], y[keep]]))
    label = "nodes" if step == 1 else f"nodes (1 in {step})"
    ax.add_collection(
        LineCollection(segments, linewidths=0.6, alpha=0.35, color="gray", label=label)
    )
    ax.autoscale_view()
    return len(segments)


def fleet_band(ax: Axes, x: np.ndarray, y: np.ndarray, *, exact: bool = False) -> None:
    """Fleet median and p10..p90 of ``y`` over ``x``: per distinct x (``exact``), else per bin of
    :data:`TIME_BINS`."""
    ok = np.isfinite(y) & np.isfinite(x)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return
    if exact:
        keys, groups = np.unique(x, return_inverse=True)
        centres = keys
    else:
        edges = np.linspace(x.min(), x.max(), TIME_BINS + 1)
        groups = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, TIME_BINS - 1)
        used = np.unique(groups)
        centres = ((edges[:-1] + edges[1:]) / 2)[used]
        groups = np.searchsorted(used, groups)
    order = np.argsort(groups, kind="stable")
    splits = np.flatnonzero(np.diff(groups[order])) + 1
    stats = np.array([np.percentile(part, [10, 50, 90]) for part in np.split(y[order], splits)])
    ax.fill_between(
        centres, stats[:, 0], stats[:, 2], alpha=0.25, color="tab:blue", label="fleet p10..p90"
    )
    ax.plot(centres, stats[:, 1], color="tab:blue", linewidth=2, label="fleet median")


def histogram_range(values: np.ndarray, *, least_fraction: float = 0.05) -> tuple[float, float]:
    """The range of a histogram of ``values`` (finite, not empty): their own, widened around
    the middle to at least ``least_fraction`` of the median's size (and at least 1), so that
    nodes that differ by a hair share one bar instead of being spread over the whole axis."""
    lo, hi = float(values.min()), float(values.max())
    least = max(1.0, least_fraction * abs(float(np.median(values))))
    if hi - lo >= least:
        return lo, hi
    middle = (lo + hi) / 2
    return max(0.0, middle - least / 2) if lo >= 0 else middle - least / 2, middle + least / 2


class PlainFormatter(Formatter):
    """Tick values in full, with thousands separators and as many decimals as the ticks need
    (:func:`tick_decimals`); no offset, no scientific notation."""

    def __init__(self) -> None:
        super().__init__()
        self.decimals = 0

    def set_locs(self, locs: list[float]) -> None:
        super().set_locs(locs)
        self.decimals = tick_decimals(np.asarray(locs, dtype=np.float64))

    def __call__(self, x: float, pos: int | None = None) -> str:
        text = f"{x:,.{self.decimals}f}"
        return text[1:] if text.startswith("-") and not text.strip("-0.,") else text  # no "-0"

    def get_offset(self) -> str:
        return ""


__all__ = [
    "PlainFormatter",
    "count_axis",
    "figure",
    "fleet_band",
    "histogram_range",
    "node_lines",
    "plain_axes",
    "tick_decimals",
]
