"""A static HTML report of a recorded run (:mod:`device.observe.recorder`): plots and tables, no
server.

:func:`render_report` writes ``index.html`` and its PNG plots into one directory (image paths
are relative: the directory can be copied or served as it is). The page shows fleet totals,
accuracy over learning events, state of charge and projected lifetime over simulated time, the
fleet's energy by phase, the first nodes to die, the lag of telemetry behind simulated time and
the errors by code. A fleet of thousands draws at most :data:`MAX_NODE_LINES` node lines (evenly
sampled) under fleet percentiles. What a recording lacks (no telemetry, no accuracy, no errors)
is said on the page instead of a plot.

A run's report tells how its fleet learnt and what it cost: the directory is created 0700 and
every file 0600, like the recording it is made from (:mod:`device.private`); an existing
directory keeps its mode. To publish a report, copy it or loosen the modes on purpose.
"""

from __future__ import annotations

import html
import io
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from device.observe.recorder import RunData, load_run
from device.private import private_dir, write_private

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Node lines drawn per plot at most; the others are in the fleet percentiles.
MAX_NODE_LINES: Final = 50
#: Rows of the first-to-die table.
FIRST_TO_DIE: Final = 10
TIME_BINS: Final = 60
PHASES: Final = ("frozen", "adaptive", "memory", "idle")


def render_report(run: Path, out_dir: Path) -> Path:
    """Write the report of the recording ``run`` into ``out_dir`` (created if missing); return
    the path of its ``index.html``. Raises :class:`device.observe.recorder.RecordError` for a file
    that is
    not a readable recording."""
    import matplotlib

    matplotlib.use("Agg")
    data = load_run(run)
    if not out_dir.is_dir():
        private_dir(out_dir)
    sections = [_totals(data)]
    tel = data.telemetry
    if len(tel) == 0:
        sections.append(
            _section(
                "Telemetry",
                "<p>No telemetry was recorded: no accuracy, battery, energy, "
                "lifetime or lag to show.</p>",
            )
        )
    else:
        sections += [
            _accuracy(data, out_dir),
            _battery(data, out_dir),
            _energy(data, out_dir),
            _first_to_die(data),
            _lag(data, out_dir),
        ]
    sections += [_errors(data, out_dir), _meta(data)]
    title = f"vega-emu run: {data.path.name}"
    page = _PAGE.format(title=html.escape(title), body="\n".join(sections))
    index = out_dir / "index.html"
    write_private(index, page.encode("utf-8"))
    return index


# -- sections ------------------------------------------------------------------------------------


def _totals(data: RunData) -> str:
    tel = data.telemetry
    last = _last_rows(data)
    rows: list[tuple[str, Any]] = [
        ("devices", len(data.devices)),
        ("telemetry messages", len(tel)),
        ("samples learned", int(tel.samples.sum())),
        ("status changes", len(data.statuses)),
        ("errors", len(data.errors)),
    ]
    if len(tel):
        span_h = (tel.t.max() - tel.t.min()) / 3600
        rows += [
            ("energy, fleet total (J)", _num(float(tel.energy_j["total"].sum()))),
            ("simulated time covered (h)", _num(span_h)),
            ("wall time covered (s)", _num(float(tel.received.max() - tel.received.min()))),
            ("emulator host time, total (s)", _num(float(tel.host_s.sum()))),
            ("median final accuracy", _num(_nanmedian(tel.accuracy[last]))),
            ("median final state of charge", _num(_nanmedian(tel.soc[last]))),
            ("median final projected lifetime (h)", _num(_nanmedian(tel.lifetime_h[last]))),
            (
                "devices depleted at their last telemetry",
                int(np.sum(tel.state[last] == "depleted")),
            ),
        ]
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return _section("Fleet totals", f"<table>{body}</table>")


def _accuracy(data: RunData, out_dir: Path) -> str:
    from matplotlib.ticker import MaxNLocator

    tel = data.telemetry
    if np.all(np.isnan(tel.accuracy)):
        return _section(
            "Accuracy", "<p>No accuracy in the telemetry (the nodes had no eval set).</p>"
        )
    fig, ax = _figure()
    _node_lines(ax, data, tel.events.astype(np.float64), tel.accuracy)
    _fleet_band(ax, tel.events.astype(np.float64), tel.accuracy, exact=True)
    ax.set(xlabel="learning events", ylabel="accuracy", title="Accuracy over learning events")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right")
    return _section("Accuracy", _save(fig, out_dir, "accuracy.png", "accuracy over events"))


def _battery(data: RunData, out_dir: Path) -> str:
    tel = data.telemetry
    hours = (tel.t - tel.t.min()) / 3600
    parts = []
    fig, ax = _figure()
    _node_lines(ax, data, hours, tel.soc)
    _fleet_band(ax, hours, tel.soc)
    ax.set(xlabel="simulated hours", ylabel="state of charge", title="State of charge")
    ax.legend(loc="lower left")
    parts.append(_save(fig, out_dir, "soc.png", "state of charge over simulated time"))
    if np.all(np.isnan(tel.lifetime_h)):
        parts.append("<p>No projected lifetime in the telemetry.</p>")
    else:
        fig, ax = _figure()
        _node_lines(ax, data, hours, tel.lifetime_h)
        _fleet_band(ax, hours, tel.lifetime_h)
        ax.set(
            xlabel="simulated hours", ylabel="projected lifetime (h)", title="Projected lifetime"
        )
        ax.legend(loc="upper right")
        parts.append(_save(fig, out_dir, "lifetime.png", "projected lifetime over simulated time"))
        final = tel.lifetime_h[_last_rows(data)]
        final = final[np.isfinite(final)]
        fig, ax = _figure()
        ax.hist(final, bins=min(50, max(5, final.size // 4)), color="tab:blue")
        ax.set(
            xlabel="projected lifetime at the last telemetry (h)",
            ylabel="devices",
            title="Final projected lifetime",
        )
        parts.append(_save(fig, out_dir, "lifetime_final.png", "histogram of final lifetime"))
    lines = (
        ""
        if len(data.devices) <= MAX_NODE_LINES
        else (
            f"<p>{MAX_NODE_LINES} of {len(data.devices)} nodes drawn (evenly sampled); the band "
            "is the whole fleet.</p>"
        )
    )
    return _section("Battery and lifetime", lines + "".join(parts))


def _energy(data: RunData, out_dir: Path) -> str:
    tel = data.telemetry
    sums = [float(tel.energy_j[p].sum()) for p in PHASES]
    fig, ax = _figure()
    bars = ax.bar(PHASES, sums, color=["tab:blue", "tab:orange", "tab:green", "tab:gray"])
    ax.bar_label(bars, labels=[_num(v) for v in sums])
    ax.set(ylabel="energy (J), fleet total", title="Energy by phase")
    total = sum(sums)
    body = "".join(
        f"<tr><td>{p}</td><td>{_num(v)}</td><td>{_num(100 * v / total) if total else '-'}</td></tr>"
        for p, v in zip(PHASES, sums, strict=True)
    )
    table = f"<table><tr><th>phase</th><th>J</th><th>%</th></tr>{body}</table>"
    return _section("Energy by phase", _save(fig, out_dir, "energy.png", "energy by phase") + table)


def _first_to_die(data: RunData) -> str:
    tel = data.telemetry
    last = _last_rows(data)
    lifetime = tel.lifetime_h[last]
    order = np.argsort(np.where(np.isnan(lifetime), np.inf, lifetime), kind="stable")
    rows = []
    for i in last[order[:FIRST_TO_DIE]]:
        cells = (
            data.devices[tel.device[i]],
            _num(float(tel.lifetime_h[i])),
            _num(float(tel.soc[i])),
            _num(float(tel.accuracy[i])),
            str(int(tel.seq[i])),
            str(tel.state[i]),
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("device", "projected lifetime (h)", "state of charge", "accuracy", "seq", "state")
    )
    return _section(
        "First nodes to die",
        "<p>The lowest projected lifetimes at each node's last telemetry.</p>"
        f"<table id='first-to-die'><tr>{head}</tr>{''.join(rows)}</table>",
    )


def _lag(data: RunData, out_dir: Path) -> str:
    tel = data.telemetry
    lag = tel.received - tel.t
    fig, ax = _figure()
    ax.hist(lag, bins=50, color="tab:purple")
    ax.set(xlabel="received - t (s)", ylabel="telemetry messages", title="Event lag")
    note = (
        "<p>Wall time of arrival minus the simulated time of the batch. Meaningful only for a "
        "stream at <code>--speed 1</code> (real time); at other speeds simulated and wall time "
        f"drift apart by design. Median {_num(float(np.median(lag)))} s, p99 "
        f"{_num(float(np.percentile(lag, 99)))} s.</p>"
    )
    return _section("Event lag", note + _save(fig, out_dir, "lag.png", "event lag histogram"))


def _errors(data: RunData, out_dir: Path) -> str:
    if not data.errors:
        return _section("Errors", "<p>No errors were recorded.</p>")
    counts = Counter(e.code for e in data.errors).most_common()
    fig, ax = _figure()
    ax.barh([c for c, _ in counts][::-1], [n for _, n in counts][::-1], color="tab:red")
    ax.set(xlabel="errors", title="Errors by code")
    body = "".join(
        f"<tr><td>{html.escape(code)}</td><td>{n}</td><td>"
        f"{len({e.device for e in data.errors if e.code == code})}</td></tr>"
        for code, n in counts
    )
    table = f"<table><tr><th>code</th><th>errors</th><th>devices</th></tr>{body}</table>"
    return _section("Errors", _save(fig, out_dir, "errors.png", "errors by code") + table)


def _meta(data: RunData) -> str:
    rows = []
    for key, value in sorted(data.meta.items()):
        text = str(value)
        if key == "started" and isinstance(value, int | float):
            text = datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(text)}</td></tr>")
    return _section("Run", f"<table>{''.join(rows)}</table>")


# -- helpers ---------------------------------------------------------------------------------


def _last_rows(data: RunData) -> np.ndarray:
    """Row index of each device's last telemetry (rows are sorted by device, then ``t``)."""
    dev = data.telemetry.device
    if dev.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.append(dev[1:] != dev[:-1], True))


def _node_lines(ax: Axes, data: RunData, x: np.ndarray, y: np.ndarray) -> None:
    """Thin lines for at most :data:`MAX_NODE_LINES` nodes, evenly sampled."""
    from matplotlib.collections import LineCollection

    dev = data.telemetry.device
    present = np.unique(dev)
    step = max(1, math.ceil(present.size / MAX_NODE_LINES))
    segments = []
    for d in present[::step]:
        rows = dev == d
        keep = rows & np.isfinite(y)
        segments.append(np.column_stack([x[keep], y[keep]]))
    label = "nodes" if step == 1 else f"nodes (1 in {step})"
    ax.add_collection(
        LineCollection(segments, linewidths=0.6, alpha=0.35, color="gray", label=label)
    )
    ax.autoscale_view()


def _fleet_band(ax: Axes, x: np.ndarray, y: np.ndarray, *, exact: bool = False) -> None:
    """Fleet median and p10..p90 of ``y`` over ``x``: per distinct x (``exact``), else per bin."""
    ok = np.isfinite(y)
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


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    return fig, fig.add_subplot()


def _save(fig: Figure, out_dir: Path, name: str, alt: str) -> str:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    write_private(out_dir / name, png.getvalue())
    return f"<img src='{name}' alt='{html.escape(alt)}'>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _nanmedian(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; }}
img {{ max-width: 100%; display: block; margin: 0.5rem 0; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""


__all__ = ["MAX_NODE_LINES", "render_report"]
