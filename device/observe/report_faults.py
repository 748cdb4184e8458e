"""The report's fault timeline: the faults injected into the fleet (docs/faults.md), as the
nodes reported them (:attr:`device.observe.recorder.RunData.faults`).

:func:`faults_section` draws each fault as a mark at the simulated time it was carried out, one
row per kind, with a bar over the span of a fault that lasts (``duration_s``: network,
storage full), and a table of counts by kind: faults, devices, the first and the last. A fleet
of thousands of devices is drawn with at most :data:`MAX_MARKS_PER_KIND` marks per kind (every
k-th in time order, so that the sample crowds where the faults do), lighter the more there are;
the table counts them all. A run without injected faults gets one sentence.

Times are those of the reports: simulated seconds after each device's first batch (the times
a fault schedule is written in), in hours, or in days for long runs.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

from dataset_stream.protocol import FAULT_KINDS
from device.observe import report_text as text
from device.observe.recorder import FaultRow, RunData
from device.observe.report_tables import section

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Marks drawn per kind at most; the others are counted in the table.
MAX_MARKS_PER_KIND: Final = 400
#: Spans longer than this are drawn in days rather than hours.
DAYS_AXIS_AFTER_H: Final = 72.0
#: Marks of a kind drawn solid up to this many; more are drawn lighter, so that where they
#: crowd (the sample keeps their spread in time) the row is darker.
SOLID_MARKS: Final = 60
TITLE: Final = "Injected faults"


class Canvas(Protocol):
    """Where a plot is saved: returns the ``<img>`` tag of the saved figure."""

    def save(self, fig: Figure, name: str, alt: str) -> str: ...


def faults_section(data: RunData, canvas: Canvas) -> str:
    """The section "Injected faults" (see the module docstring)."""
    if not data.faults:
        return section(TITLE, "<p>No faults were injected in this run.</p>")
    by_kind = _by_kind(data.faults)
    drawn = {kind: _sample(rows, MAX_MARKS_PER_KIND) for kind, rows in by_kind.items()}
    total = len(data.faults)
    devices = len({f.device for f in data.faults})
    lead = (
        f"<p>{total:,} fault{'' if total == 1 else 's'} injected into {devices:,} of "
        f"{len(data.devices):,} device{'' if len(data.devices) == 1 else 's'}, "
        "as the nodes reported them (docs/faults.md), at the simulated time each was carried "
        "out, after the device's first batch."
    )
    shown = sum(len(rows) for rows in drawn.values())
    if shown < total:
        lead += (
            f" {shown:,} of them drawn (at most {MAX_MARKS_PER_KIND} per kind, every k-th in "
            "time order); the table counts them all."
        )
    lead += "</p>"
    plot = canvas.save(_timeline(drawn), "faults.png", "injected faults over simulated time")
    return section(TITLE, lead + plot + _table(by_kind))


def _by_kind(faults: tuple[FaultRow, ...]) -> dict[str, list[FaultRow]]:
    """The faults of each kind sorted by fired time, kinds in :data:`FAULT_KINDS` order (a kind
    unknown to this version after them, by name)."""
    groups: dict[str, list[FaultRow]] = defaultdict(list)
    for fault in faults:
        groups[fault.kind].append(fault)
    order = [k for k in FAULT_KINDS if k in groups] + sorted(set(groups) - set(FAULT_KINDS))
    return {k: sorted(groups[k], key=lambda f: (f.fired_s, f.device)) for k in order}


def _sample(rows: list[FaultRow], limit: int) -> list[FaultRow]:
    """At most ``limit`` of ``rows`` (sorted by time), evenly spread over their order (so the
    sample is as dense in time as the rows are), first and last kept."""
    if len(rows) <= limit:
        return rows
    picks = np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(np.int64))
    return [rows[i] for i in picks]


def _timeline(drawn: dict[str, list[FaultRow]]) -> Figure:
    from matplotlib.collections import LineCollection

    from device.observe.report_plots import figure

    kinds = list(drawn)
    ends_h = [(f.fired_s + (f.duration_s or 0.0)) / 3600 for rows in drawn.values() for f in rows]
    in_days = max(ends_h) > DAYS_AXIS_AFTER_H
    scale = 1 / 86400 if in_days else 1 / 3600
    fig, ax = figure(height_in=1.6 + 0.45 * len(kinds))
    colours = [f"C{i % 10}" for i in range(len(kinds))]
    for row, rows in enumerate(drawn.values()):
        x = np.array([f.fired_s for f in rows]) * scale
        spans = [
            [(f.fired_s * scale, row), ((f.fired_s + f.duration_s) * scale, row)]
            for f in rows
            if f.duration_s is not None and f.duration_s > 0 and math.isfinite(f.duration_s)
        ]
        if spans:
            ax.add_collection(LineCollection(spans, linewidths=5, alpha=0.25, color=colours[row]))
        alpha = 1.0 if len(rows) <= SOLID_MARKS else max(0.25, SOLID_MARKS / len(rows))
        ax.scatter(x, np.full(x.shape, row), marker="|", s=120, color=colours[row], alpha=alpha)
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_ylim(-0.6, len(kinds) - 0.4)
    ax.invert_yaxis()  # the first kind on top, as in the table
    ax.set_xlim(left=0)
    ax.autoscale_view(scaley=False)
    unit = "days" if in_days else "hours"
    ax.set(xlabel=f"simulated {unit} after each device's first batch", title="Injected faults")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _table(by_kind: dict[str, list[FaultRow]]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(kind)}</td><td>{len(rows):,}</td>"
        f"<td>{len({f.device for f in rows}):,}</td>"
        f"<td>{_when(rows[0].fired_s)}</td><td>{_when(rows[-1].fired_s)}</td></tr>"
        for kind, rows in by_kind.items()
    )
    head = "<tr><th>kind</th><th>faults</th><th>devices</th><th>first</th><th>last</th></tr>"
    return f"<table id='faults'>{head}{body}</table>"


def _when(fired_s: float) -> str:
    """A simulated time after the first batch: ``42 s`` under a minute, then as a duration."""
    if not math.isfinite(fired_s):
        return "-"
    return f"{text.num(fired_s)} s" if fired_s < 60 else text.duration(fired_s / 3600)


__all__ = ["MAX_MARKS_PER_KIND", "faults_section"]
