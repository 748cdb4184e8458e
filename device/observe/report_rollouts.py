"""The report's rollout timeline: every step of the rollouts recorded in the run
(:attr:`device.observe.recorder.RunData.rollouts`), as a table in arrival order.

A rollout (``vega-emu rollout``, docs/downlink.md) publishes a step when it stages a percent
of the fleet, starts soaking, halts, rolls back or is done; the table shows each with the wall
time after the first step of the run, the stage's percent, the devices moved so far and why it
halted. A run without rollouts gets one sentence.
"""

from __future__ import annotations

import html
from typing import Final

from device.observe.recorder import RolloutRow, RunData
from device.observe.report_tables import section

TITLE: Final = "Rollouts"


def rollouts_section(data: RunData) -> str:
    """The section "Rollouts" (see the module docstring)."""
    if not data.rollouts:
        return section(TITLE, "<p>No rollouts in this run.</p>")
    names = list(dict.fromkeys(r.name for r in data.rollouts))
    ends = {r.name: r for r in data.rollouts}  # the last step of each
    said = "; ".join(f"{html.escape(n)}: {_ending(ends[n])}" for n in names)
    lead = f"<p>{len(names)} rollout(s): {said}.</p>"
    return section(TITLE, lead + _table(data.rollouts))


def _ending(last: RolloutRow) -> str:
    text = f"{last.state} at stage {last.stage + 1} ({last.percent:g} %)"
    if last.reason:
        text += f", {last.reason}"
    return text


def _table(rows: tuple[RolloutRow, ...]) -> str:
    start = rows[0].received
    body = "".join(
        f"<tr><td>{_after(r.received - start)}</td><td>{html.escape(r.name)}</td>"
        f"<td>{html.escape(r.head)}</td><td>{r.stage + 1}</td><td>{r.percent:g} %</td>"
        f"<td>{r.devices:,}</td><td>{html.escape(r.state)}</td>"
        f"<td>{html.escape(r.reason)}</td></tr>"
        for r in rows
    )
    head = (
        "<tr><th>after</th><th>rollout</th><th>head</th><th>stage</th><th>percent</th>"
        "<th>devices</th><th>state</th><th>reason</th></tr>"
    )
    return f"<table id='rollouts'>{head}{body}</table>"


def _after(seconds: float) -> str:
    """Wall time after the run's first rollout step: ``12.3 s``, ``4 min 05 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


__all__ = ["rollouts_section"]
