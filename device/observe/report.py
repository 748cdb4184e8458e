"""A static HTML report of a recorded run (:mod:`device.observe.recorder`): plots and tables, no
server.

:func:`render_report` writes ``index.html`` and its PNG plots into one directory (image paths
are relative: the directory can be copied or served as it is). The page is titled with the run's
name and date and shows fleet totals, accuracy over learning events, state of charge (%) and
projected lifetime (days) over simulated time, the fleet's energy by phase, the first nodes to
die, the lag of telemetry behind the stream's schedule (paced runs only: in a closed loop it
means nothing), the errors by code (duplicates, seqs sent again, counted apart) and the run's
configuration as a table. Plots are drawn by :mod:`device.observe.report_plots` (numbers in
full, integer ticks for counts); words and units come from :mod:`device.observe.report_text`.
What a recording lacks (no telemetry, no accuracy, no errors) is said on the page instead of a
plot.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from device.observe import report_text as text
from device.observe.recorder import ErrorRow, RunData, load_run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Node lines drawn per plot at most; the others are in the fleet percentiles.
MAX_NODE_LINES: Final = 50
#: Rows of the first-to-die table.
FIRST_TO_DIE: Final = 10
PHASES: Final = ("frozen", "adaptive", "memory", "idle")
#: The node's answer to a seq it had learned before: acknowledged, not applied again; not an error.
DUPLICATE: Final = "duplicate"
#: Simulated spans longer than this are drawn in days rather than hours.
DAYS_AXIS_AFTER_H: Final = 72.0

#: Called with each plot's file name and figure once it is saved (its ticks are drawn then).
OnFigure = Callable[[str, "Figure"], None]


def render_report(run: Path, out_dir: Path, *, on_figure: OnFigure | None = None) -> Path:
    """Write the report of the recording ``run`` into ``out_dir`` (created if missing); return
    the path of its ``index.html``. Raises :class:`device.observe.recorder.RecordError` for a file
    that is not a readable recording. ``on_figure`` sees every plot after it is saved."""
    import matplotlib

    matplotlib.use("Agg")
    data = load_run(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    canvas = _Canvas(out_dir, on_figure)
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
            _accuracy(data, canvas),
            _battery(data, canvas),
            _energy(data, canvas),
            _first_to_die(data),
            _lag(data, canvas),
        ]
    sections += [_errors(data, canvas), _meta(data)]
    title = text.title(data.path, data.meta)
    body = f"<p class='lead'>{_lead(data)}</p>" + "\n".join(sections)
    page = _PAGE.format(title=html.escape(title), body=body)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


@dataclass(frozen=True, slots=True)
class _Canvas:
    """Where plots go: ``out_dir``, and who sees each figure once it is saved."""

    out_dir: Path
    on_figure: OnFigure | None

    def save(self, fig: Figure, name: str, alt: str) -> str:
        from device.observe.report_plots import plain_axes

        plain_axes(fig)
        tag = _save(fig, self.out_dir, name, alt)
        if self.on_figure is not None:
            self.on_figure(name, fig)
        return tag


# -- sections ------------------------------------------------------------------------------------


def _lead(data: RunData) -> str:
    """One line under the title: what recorded the run, how big it was, how it was paced."""
    command = data.meta.get("command")
    parts = [f"Recorded by <code>{html.escape(str(command))}</code>" if command else "Recorded"]
    parts.append(f"{len(data.devices):,} devices")
    pace = text.pace_of(data.meta)
    if pace.closed_loop:
        parts.append("closed loop (<code>--speed max</code>)")
    elif pace.speed is not None:
        parts.append(f"paced at {html.escape(text.value_text('speed', pace.speed))}")
    return ", ".join(parts) + ". The configuration is at the end of the page."


def _totals(data: RunData) -> str:
    tel = data.telemetry
    last = _last_rows(data)
    errors, duplicates = _split_errors(data.errors)
    rows: list[tuple[str, Any]] = [
        ("devices", f"{len(data.devices):,}"),
        ("telemetry messages", f"{len(tel):,}"),
        ("samples learned", f"{int(tel.samples.sum()):,}"),
        ("status changes", f"{len(data.statuses):,}"),
        ("errors", f"{len(errors):,}"),
        ("duplicates (seqs learned before, sent again)", f"{len(duplicates):,}"),
    ]
    if len(tel):
        span_h = float(tel.t.max() - tel.t.min()) / 3600
        final_h = tel.lifetime_h[last]
        rows += [
            ("energy, fleet total", f"{text.num(float(tel.energy_j['total'].sum()))} J"),
            ("simulated time covered", text.hours(span_h)),
            ("wall time covered", f"{text.num(float(tel.received.max() - tel.received.min()))} s"),
            ("emulator host time, total", f"{text.num(float(tel.host_s.sum()))} s"),
            ("median final accuracy", text.num(_nanmedian(tel.accuracy[last]))),
            ("median final state of charge", text.percent(_nanmedian(tel.soc[last]))),
            ("lowest final state of charge", text.percent(_nanmin(tel.soc[last]))),
            ("median final projected lifetime", text.lifetime(_nanmedian(final_h))),
            ("shortest final projected lifetime", text.lifetime(_nanmin(final_h))),
            (
                "devices depleted at their last telemetry",
                f"{int(np.sum(tel.state[last] == 'depleted')):,}",
            ),
        ]
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return _section("Fleet totals", f"<table id='totals'>{body}</table>")


def _accuracy(data: RunData, canvas: _Canvas) -> str:
    from device.observe.report_plots import count_axis, figure, fleet_band, node_lines

    tel = data.telemetry
    if np.all(np.isnan(tel.accuracy)):
        return _section(
            "Accuracy", "<p>No accuracy in the telemetry (the nodes had no eval set).</p>"
        )
    events = tel.events.astype(np.float64)
    fig, ax = figure()
    node_lines(ax, tel.device, events, tel.accuracy, max_lines=MAX_NODE_LINES)
    fleet_band(ax, events, tel.accuracy, exact=True)
    ax.set(xlabel="learning events", ylabel="accuracy", title="Accuracy over learning events")
    count_axis(ax.xaxis)
    ax.legend(loc="lower right")
    return _section("Accuracy", canvas.save(fig, "accuracy.png", "accuracy over events"))


def _battery(data: RunData, canvas: _Canvas) -> str:
    from device.observe.report_plots import (
        count_axis,
        figure,
        fleet_band,
        histogram_range,
        node_lines,
    )

    tel = data.telemetry
    x, x_label = _simulated_axis(tel.t)
    soc_pct = 100 * tel.soc
    fig, ax = figure()
    node_lines(ax, tel.device, x, soc_pct, max_lines=MAX_NODE_LINES)
    fleet_band(ax, x, soc_pct)
    ax.set(xlabel=x_label, ylabel="state of charge (%)", title="State of charge")
    low, high = ax.get_ylim()
    if low < 100 < high:  # a battery is never more than full
        ax.set_ylim(low, 100)
    ax.legend(loc="lower left")
    parts = [_soc_caption(data), canvas.save(fig, "soc.png", "state of charge over simulated time")]
    if np.all(np.isnan(tel.lifetime_h)):
        parts.append("<p>No projected lifetime in the telemetry.</p>")
    else:
        life_d = tel.lifetime_h / 24
        fig, ax = figure()
        node_lines(ax, tel.device, x, life_d, max_lines=MAX_NODE_LINES)
        fleet_band(ax, x, life_d)
        ax.set(xlabel=x_label, ylabel="projected lifetime (days)", title="Projected lifetime")
        ax.legend(loc="upper right")
        parts.append(canvas.save(fig, "lifetime.png", "projected lifetime over simulated time"))
        final = life_d[_last_rows(data)]
        final = final[np.isfinite(final)]
        if final.size:
            fig, ax = figure()
            bins = min(50, max(5, final.size // 4))
            ax.hist(final, bins=bins, range=histogram_range(final), color="tab:blue")
            ax.set(
                xlabel="projected lifetime at the last telemetry (days)",
                ylabel="devices",
                title="Final projected lifetime",
            )
            count_axis(ax.yaxis)
            parts.append(canvas.save(fig, "lifetime_final.png", "histogram of final lifetime"))
    lines = (
        ""
        if len(data.devices) <= MAX_NODE_LINES
        else (
            f"<p>{MAX_NODE_LINES} of {len(data.devices)} nodes drawn (evenly sampled); the band "
            "is the whole fleet.</p>"
        )
    )
    return _section("Battery and lifetime", lines + "".join(parts))


def _soc_caption(data: RunData) -> str:
    """How much of a battery the run used, said in words when the plot has to zoom in on it."""
    tel = data.telemetry
    soc = tel.soc[np.isfinite(tel.soc)]
    if soc.size == 0:
        return ""
    spread_pct = 100 * float(soc.max() - soc.min())
    used = f"The median node ended at {text.percent(_nanmedian(tel.soc[_last_rows(data)]))}"
    if spread_pct < 1:
        return (
            f"<p>{used}: the whole run spans {text.num(spread_pct)} percentage points of charge, "
            "so the axis is zoomed in on them.</p>"
        )
    return f"<p>{used}.</p>"


def _energy(data: RunData, canvas: _Canvas) -> str:
    from device.observe.report_plots import figure

    tel = data.telemetry
    sums = [float(tel.energy_j[p].sum()) for p in PHASES]
    fig, ax = figure()
    bars = ax.bar(PHASES, sums, color=["tab:blue", "tab:orange", "tab:green", "tab:gray"])
    ax.bar_label(bars, labels=[f"{text.num(v)} J" for v in sums])
    ax.set(ylabel="energy (J), fleet total", title="Energy by phase")
    total = sum(sums)
    body = "".join(
        f"<tr><td>{p}</td><td>{text.num(v)}</td>"
        f"<td>{text.num(100 * v / total) if total else '-'}</td></tr>"
        for p, v in zip(PHASES, sums, strict=True)
    )
    table = f"<table><tr><th>phase</th><th>J</th><th>%</th></tr>{body}</table>"
    return _section("Energy by phase", canvas.save(fig, "energy.png", "energy by phase") + table)


def _first_to_die(data: RunData) -> str:
    tel = data.telemetry
    last = _last_rows(data)
    depleted_at = _depleted_at(data)
    lifetime = tel.lifetime_h[last]

    def rank(k: int) -> tuple[int, float]:
        device = int(tel.device[last[k]])
        if device in depleted_at:
            return (0, depleted_at[device])
        return (1, math.inf if math.isnan(lifetime[k]) else float(lifetime[k]))

    order = sorted(range(last.size), key=rank)
    rows = []
    for i in last[order[:FIRST_TO_DIE]]:
        cells = (
            data.devices[tel.device[i]],
            str(tel.state[i]),
            text.days(float(tel.lifetime_h[i])),
            text.hours(float(tel.lifetime_h[i])),
            text.percent(float(tel.soc[i])),
            text.num(float(tel.accuracy[i])),
            str(int(tel.seq[i])),
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "device",
            "state",
            "projected lifetime",
            "in hours",
            "state of charge",
            "accuracy",
            "last seq",
        )
    )
    shown = min(FIRST_TO_DIE, last.size)
    note = (
        f"<p>The {shown} of {last.size:,} nodes that die first: those depleted during the run "
        "(in the order they ran out), then the lowest projected lifetimes at each node's last "
        "telemetry.</p>"
    )
    return _section(
        "First nodes to die",
        f"{note}<table id='first-to-die'><tr>{head}</tr>{''.join(rows)}</table>",
    )


def _lag(data: RunData, canvas: _Canvas) -> str:
    from device.observe.report_plots import count_axis, figure

    pace = text.pace_of(data.meta)
    if pace.closed_loop:
        return _section(
            "Event lag",
            "<p>Not shown: this run was a closed loop (<code>--speed max</code>), where each "
            "event is sent as soon as the previous one is answered, so there is no schedule for "
            "telemetry to lag behind.</p>",
        )
    tel = data.telemetry
    if pace.speed is not None:
        t0 = float(tel.t.min())
        lag = tel.received - (t0 + (tel.t - t0) / pace.speed)
        note = (
            "<p>How long after its batch was due on the stream's schedule each telemetry "
            f"arrived (the stream ran at {html.escape(text.value_text('speed', pace.speed))}): "
            "the node's learning time plus any queueing; a lag that grows means the fleet "
            "cannot keep up with the pace."
        )
        label = "lag behind the schedule (s)"
    else:
        lag = tel.received - tel.t
        note = (
            "<p>Wall time of arrival minus the simulated time of the batch. The recording does "
            "not say how the stream was paced: this is a lag only for a stream at "
            "<code>--speed 1</code> (real time); at other speeds simulated and wall time "
            "drift apart by design."
        )
        label = "received - t (s)"
    note += (
        f" Median {text.num(float(np.median(lag)))} s, "
        f"p99 {text.num(float(np.percentile(lag, 99)))} s.</p>"
    )
    fig, ax = figure()
    ax.hist(lag, bins=50, color="tab:purple")
    ax.set(xlabel=label, ylabel="telemetry messages", title="Event lag")
    count_axis(ax.yaxis)
    return _section("Event lag", note + canvas.save(fig, "lag.png", "event lag histogram"))


def _errors(data: RunData, canvas: _Canvas) -> str:
    from device.observe.report_plots import count_axis, figure

    errors, duplicates = _split_errors(data.errors)
    dup = ""
    if duplicates:
        devices = len({e.device for e in duplicates})
        dup = (
            f"<p id='duplicates'>{len(duplicates):,} duplicates from {devices:,} devices, not "
            "counted as errors: seqs a node had learned before were sent again (a re-run or a "
            "redelivery); the node acknowledged them and applied nothing twice.</p>"
        )
    if not errors:
        return _section("Errors", "<p>No errors were recorded.</p>" + dup)
    counts = Counter(e.code for e in errors).most_common()
    fig, ax = figure()
    ax.barh([c for c, _ in counts][::-1], [n for _, n in counts][::-1], color="tab:red")
    ax.set(xlabel="errors", title="Errors by code")
    count_axis(ax.xaxis)
    body = "".join(
        f"<tr><td>{html.escape(code)}</td><td>{n:,}</td><td>"
        f"{len({e.device for e in errors if e.code == code}):,}</td></tr>"
        for code, n in counts
    )
    table = f"<table><tr><th>code</th><th>errors</th><th>devices</th></tr>{body}</table>"
    return _section("Errors", canvas.save(fig, "errors.png", "errors by code") + table + dup)


def _meta(data: RunData) -> str:
    meta = data.meta
    rows = [("recording", data.path.name)]
    if "command" in meta:
        rows.append(("recorded by", text.value_text("command", meta["command"])))
    started = text.started_text(meta)
    if started is not None:
        rows.append(("started", started))
    for key in sorted(set(meta) - {"command", "started", "config", "schema"}):
        rows.append((key, text.value_text(key, meta[key])))
    if "schema" in meta:
        rows.append(("recording format", text.value_text("schema", meta["schema"])))
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    body = f"<table id='run'>{table}</table>"
    config = meta.get("config")
    if isinstance(config, Mapping) and config:
        cfg = "".join(
            f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td>"
            f"<td><code>{html.escape(key)}</code></td></tr>"
            for label, key, value in text.config_rows(config)
        )
        body += (
            "<h3>Configuration</h3><table id='config'><tr><th>setting</th><th>value</th>"
            f"<th>key</th></tr>{cfg}</table>"
        )
    elif config is not None:
        body += f"<h3>Configuration</h3><p>{html.escape(text.value_text('config', config))}</p>"
    return _section("Run", body)


# -- helpers ---------------------------------------------------------------------------------


def _split_errors(rows: tuple[ErrorRow, ...]) -> tuple[list[ErrorRow], list[ErrorRow]]:
    """The errors proper and the duplicates (answers to seqs sent again), apart."""
    errors = [e for e in rows if e.code != DUPLICATE]
    return errors, [e for e in rows if e.code == DUPLICATE]


def _last_rows(data: RunData) -> np.ndarray:
    """Row index of each device's last telemetry (rows are sorted by device, then ``t``)."""
    dev = data.telemetry.device
    if dev.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.append(dev[1:] != dev[:-1], True))


def _depleted_at(data: RunData) -> dict[int, float]:
    """Each depleted device's first simulated time in state ``depleted``, by device index."""
    tel = data.telemetry
    out: dict[int, float] = {}
    for i in np.flatnonzero(tel.state == "depleted"):
        device = int(tel.device[i])
        out[device] = min(out.get(device, math.inf), float(tel.t[i]))
    return out


def _simulated_axis(t: np.ndarray) -> tuple[np.ndarray, str]:
    """Simulated time since the first telemetry, in hours, or in days for long runs."""
    hours = (t - t.min()) / 3600
    if float(hours.max()) > DAYS_AXIS_AFTER_H:
        return hours / 24, "simulated days"
    return hours, "simulated hours"


def _save(fig: Figure, out_dir: Path, name: str, alt: str) -> str:
    fig.savefig(out_dir / name, dpi=100)
    return f"<img src='{name}' alt='{html.escape(alt)}'>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _nanmedian(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def _nanmin(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else math.nan


_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
.lead {{ color: #444; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; }}
th {{ font-weight: 600; background: #f6f6f6; }}
img {{ max-width: 100%; display: block; margin: 0.5rem 0; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""


__all__ = ["DUPLICATE", "FIRST_TO_DIE", "MAX_NODE_LINES", "OnFigure", "render_report"]
