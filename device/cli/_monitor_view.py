"""The live table of ``vega-emu monitor``: the devices first to die on top, fleet figures above."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Final

from rich.table import Table

if TYPE_CHECKING:
    from device.observe.accounting import DeviceRecord
    from device.observe.monitor import FleetMonitor

COLUMNS: Final = (
    "device",
    "state",
    "events",
    "acc",
    "SoC",
    "life h",
    "gaps",
    "dup",
    "rej",
    "lag s",
)
#: Lines of the screen the table needs besides its rows: title, caption, header, borders.
OVERHEAD_LINES: Final = 9


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _lifetime_key(rec: DeviceRecord) -> tuple[float, str]:
    """Sort key: the shortest projected lifetime first; devices without one last."""
    tel = rec.telemetry
    life = tel.lifetime_h if tel is not None and tel.lifetime_h is not None else math.inf
    return (life, rec.device)


def fleet_line(monitor: FleetMonitor) -> str:
    """One line of fleet figures: devices by state, events, lag percentiles."""
    records = list(monitor.devices.values())
    states = Counter(rec.state for rec in records)
    by_state = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none yet"
    events = sum(rec.events for rec in records)
    p50, p99 = monitor.lag.percentile(0.5), monitor.lag.percentile(0.99)
    lag = "-" if p50 is None else f"p50 {_seconds(p50)} s, p99 {_seconds(p99)} s"
    return f"{len(records)} devices ({by_state}), {events} events, event lag {lag}"


def monitor_table(monitor: FleetMonitor, max_rows: int) -> Table:
    """The devices sorted by projected lifetime, at most ``max_rows`` of them, and the rest
    counted in the caption."""
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
    if len(records) > len(shown):
        caption = f"{len(records) - len(shown)} more devices not shown; " + caption
    table = Table(
        title=f"vega-emu monitor on {monitor.broker}: {fleet_line(monitor)}",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    for name in COLUMNS:
        left = name in ("device", "state")
        table.add_column(
            name, justify="left" if left else "right", no_wrap=left, min_width=9 if left else None
        )
    for rec in shown:
        tel = rec.telemetry
        table.add_row(
            rec.device,
            rec.state,
            str(rec.events),
            _fmt(tel.accuracy if tel is not None else None, ".3f"),
            _fmt(tel.battery.soc if tel is not None else None, ".2%"),
            _fmt(tel.lifetime_h if tel is not None else None, ",.0f"),
            str(rec.gaps),
            str(rec.duplicates),
            str(sum(rec.rejected.values())),
            _seconds(rec.lag_s),
        )
    return table


__all__ = ["fleet_line", "monitor_table"]
