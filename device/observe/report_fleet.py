"""The report's fleet sections: what each device drew from its class, and when devices were away.

A run of a fleet spec records, under the ``devices`` key of its metadata, each device's class,
its drawn values (:meth:`device.fleet.spec.FleetSpec.drawn`) and its planned offline windows.
:func:`drawn_section` shows the drawn values per class and setting (quantiles and a histogram in
text); :func:`availability_section` sets each device's planned windows beside the offline
stretches its statuses show (a status ``offline``, from the will or the node, until the next
other state), in wall seconds. A recording without that key gets neither section.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from device.observe.recorder import RunData
from device.observe.report_tables import section

#: Bars of the text histograms, lowest to highest.
BARS: Final = " ▁▂▃▄▅▆▇█"
BINS: Final = 12
#: Devices listed in the availability table at most (those away longest first).
MAX_ROWS: Final = 30

__all__ = ["availability_section", "drawn_section", "histogram", "offline_stretches"]


def _devices(data: RunData) -> Mapping[str, Any] | None:
    devices = data.meta.get("devices")
    return devices if isinstance(devices, Mapping) else None


def histogram(values: np.ndarray, bins: int = BINS) -> str:
    """``values`` as one line of bars, ``bins`` wide (one bar when they are all equal)."""
    if len(values) == 0:
        return ""
    if float(values.min()) == float(values.max()):
        return BARS[-1]
    counts, _ = np.histogram(values, bins=bins)
    top = counts.max()
    return "".join(BARS[round(c / top * (len(BARS) - 1))] for c in counts)


def drawn_section(data: RunData) -> str | None:
    """Per class and setting: min, quartiles, max and a histogram of the devices' values."""
    devices = _devices(data)
    if devices is None or not isinstance(devices.get("drawn"), Mapping):
        return None
    drawn: Mapping[str, Mapping[str, float]] = devices["drawn"]
    class_of: Mapping[str, str] = devices.get("class", {})
    by_class: dict[str, list[Mapping[str, float]]] = {}
    for device, mine in drawn.items():
        by_class.setdefault(str(class_of.get(device, "?")), []).append(mine)
    head = "".join(
        f"<th>{h}</th>"
        for h in ("class", "setting", "devices", "min", "25 %", "median", "75 %", "max", "spread")
    )
    rows = []
    for name, members in by_class.items():
        for key in members[0]:
            values = np.array([float(m[key]) for m in members])
            cells = [name, key, str(len(values))]
            cells += [f"{q:.4g}" for q in np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])]
            cells.append(histogram(values))
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    seed = devices.get("seed")
    note = (
        f"<p>Each device's values, drawn from the spec's seed ({html.escape(str(seed))}) and its "
        "id: the same in every run with that seed. Spread: a histogram from min to max.</p>"
    )
    table = f"<table id='drawn'><tr>{head}</tr>{''.join(rows)}</table>"
    return section("Device values", note + table)


def offline_stretches(data: RunData) -> dict[str, list[tuple[float, float | None]]]:
    """Each device's offline stretches as its statuses show them, in wall seconds from the
    first status of the run (``None``: still offline at the end of the recording)."""
    if not data.statuses:
        return {}
    start = min(s.received for s in data.statuses)
    out: dict[str, list[tuple[float, float | None]]] = {}
    down: dict[str, float] = {}
    for s in data.statuses:
        if s.state == "offline":
            down.setdefault(s.device, s.received - start)
        elif s.device in down:
            out.setdefault(s.device, []).append((down.pop(s.device), s.received - start))
    for device, at in down.items():
        out.setdefault(device, []).append((at, None))
    return out


def availability_section(data: RunData) -> str | None:
    """Planned offline windows beside the offline stretches the statuses show."""
    devices = _devices(data)
    if devices is None or not isinstance(devices.get("offline"), Mapping):
        return None
    planned: Mapping[str, list[list[float]]] = devices["offline"]
    class_of: Mapping[str, str] = devices.get("class", {})
    seen = offline_stretches(data)
    # a stretch still open at the end is the fleet's clean stop, not an outage
    closed = {d: [(a, b) for a, b in s if b is not None] for d, s in seen.items()}
    away = {d: sum(b - a for a, b in s) for d, s in closed.items() if s}
    if not planned and not away:
        return section("Availability", "<p>No device was planned to go offline.</p>")
    order = sorted(set(planned) | set(away), key=lambda d: (-away.get(d, 0.0), d))
    rows = []
    for device in order[:MAX_ROWS]:
        windows = planned.get(device, [])
        first = f"{windows[0][0]:g}..{windows[0][1]:g}" if windows else "-"
        cells = [
            device,
            str(class_of.get(device, "?")),
            str(len(windows)),
            first,
            str(len(closed.get(device, []))),
            f"{away.get(device, 0.0):.1f}",
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "device",
            "class",
            "planned windows",
            "first (simulated s)",
            "seen offline",
            "offline (wall s)",
        )
    )
    more = f" ({MAX_ROWS} of {len(order)} shown)" if len(order) > MAX_ROWS else ""
    note = (
        f"<p>{len(planned)} device(s) planned to go offline (windows drawn to the spec's horizon; "
        f"those after the run's end never came), {len(away)} seen offline during the run{more}. "
        "Offline: the node's last will (its own connection) or its offline status (behind a "
        "gateway), until it was back.</p>"
    )
    table = f"<table id='availability'><tr>{head}</tr>{''.join(rows)}</table>"
    return section("Availability", note + table)
