"""The live table of ``vega-emu monitor``: the devices first to die on top, fleet figures above,
delivery trouble and injected faults (docs/faults.md) in the caption."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Final

from rich.markup import escape

from device.cli._tables import Col, fit_table
from device.cli._units import DASH, compact, count, hours, optional

if TYPE_CHECKING:
    from rich.table import Table

    from device.observe.accounting import DeviceRecord
    from device.observe.monitor import FleetMonitor

#: The columns, the least important with the highest ``hide`` (hidden first when narrow).
COLUMNS: Final = (
    Col("device", "name"),
    Col("state", "name", hide=5),
    Col("events"),
    Col("acc", hide=3),
    Col("forg", hide=4, legend="forg: mean forgetting of the classes seen"),
    Col("SoC"),
    Col("life h"),
    Col("gaps", hide=6),
    Col("dup", hide=7),
    Col("rej", hide=8),
    Col("lag s", hide=2),
)
#: Lines of the screen the table needs besides its rows: title and caption (wrapped at 80
#: columns; two more lines once faults are injected), header, borders.
OVERHEAD_LINES: Final = 14


def _seconds(value: float | None) -> str:
    return DASH if value is None else compact(value)


def _lifetime_key(rec: DeviceRecord) -> tuple[float, str]:
    """Sort key: the shortest projected lifetime first; devices without one last."""
    life = rec.lifetime_h
    return (math.inf if life is None else life, rec.device)


def fleet_line(monitor: FleetMonitor) -> str:
    """One line of fleet figures: devices by state, events, lag percentiles, and the radio's
    share of the energy, the harvest and the events skipped by an energy policy when nodes
    report them."""
    records = list(monitor.devices.values())
    states = Counter(rec.state for rec in records)
    by_state = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none yet"
    events = sum(rec.node_events for rec in records)
    p50, p99 = monitor.lag.percentile(0.5), monitor.lag.percentile(0.99)
    lag = "-" if p50 is None else f"p50 {_seconds(p50)} s, p99 {_seconds(p99)} s"
    line = f"{len(records)} devices ({by_state}), {events} events, event lag {lag}"
    radio = monitor.radio_share
    if radio is not None:
        line += f", radio {radio:.1%} of the energy"
    harvest = monitor.harvest_j
    if harvest is not None:
        line += f", {harvest:.3g} J harvested"
    skipped = monitor.policy_skipped
    if skipped:
        line += f", {skipped} events skipped by the energy policy"
    return line


def _injected(monitor: FleetMonitor, records: list[DeviceRecord]) -> str:
    """The injected faults in words for the caption (no column: the table is full at 80
    columns), with the gaps and duplicates seen during them; empty when there were none."""
    if not monitor.faults:
        return ""
    total = sum(monitor.faults.values())
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(monitor.faults.items()))
    gaps = sum(rec.injected_gaps for rec in records)
    duplicates = sum(rec.injected_duplicates for rec in records)
    return (
        f"{total} fault{'' if total == 1 else 's'} injected ({kinds}), {gaps} of the seqs "
        f"skipped and {duplicates} of the duplicates during them"
    )


def monitor_table(monitor: FleetMonitor, max_rows: int, width: int) -> Table:
    """The devices sorted by projected lifetime, at most ``max_rows`` of them (the rest counted
    in the caption), fitted to ``width`` columns."""
    records = sorted(monitor.devices.values(), key=_lifetime_key)
    shown = records[: max(0, max_rows)]
    gaps = sum(rec.gaps for rec in records)
    duplicates = sum(rec.duplicates for rec in records)
    rejected = sum(sum(rec.rejected.values()) for rec in records)
    caption = (
        f"{gaps} seqs skipped, {duplicates} duplicates, {rejected} inputs rejected; "
        f"ignored: {monitor.invalid} invalid, {monitor.foreign} foreign; "
        f"{monitor.reconnects} reconnects"
    )
    injected = _injected(monitor, records)
    if injected:
        caption += "; " + injected
    if len(records) > len(shown):
        caption = f"{len(records) - len(shown)} more devices not shown; " + caption
    rows = []
    for rec in shown:
        rows.append(
            (
                escape(rec.device),
                rec.state,
                count(rec.node_events),
                _accuracy(rec),
                optional(rec.forgetting, ".2f"),
                optional(rec.soc, ".2%"),
                hours(rec.lifetime_h),
                count(rec.gaps),
                count(rec.duplicates),
                count(sum(rec.rejected.values())),
                _seconds(rec.lag_s),
            )
        )
    title = f"vega-emu monitor on {monitor.broker}: {fleet_line(monitor)}"
    return fit_table(COLUMNS, rows, width, title=escape(title), caption=caption)


__all__ = ["COLUMNS", "fleet_line", "monitor_table"]


def _accuracy(rec: DeviceRecord) -> str:
    """The node's accuracy, with the event it was measured at when that is not the current
    one (``0.910@12``: measured at event 12, carried since)."""
    text = optional(rec.accuracy, ".3f")
    age = rec.accuracy_age
    return text if age is None else f"{text}@{age}"
