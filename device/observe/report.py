"""A static HTML report of a recorded run (:mod:`device.observe.recorder`): plots and tables, no
server.

:func:`render_report` writes ``index.html`` and its PNG plots into one directory (image paths
are relative: the directory can be copied or served as it is). The page is titled with the run's
name and date and shows fleet totals, accuracy over learning events (from event 0, the factory
model), per-class accuracy and forgetting (:mod:`device.observe.report_classes`), state of
charge (%) and projected lifetime (days) over simulated time, the fleet's energy by phase, the
first nodes to die, each device's drawn values and its offline stretches for a run of a fleet
spec (:mod:`device.observe.report_fleet`), the lag of telemetry behind the stream's schedule
(paced runs only: in a closed loop it means nothing), the errors by code (duplicates, seqs
sent again, counted apart), the injected faults over simulated time
(:mod:`device.observe.report_faults`), the steps of the rollouts of the run
(:mod:`device.observe.report_rollouts`) and the run's configuration as a table. Plots are drawn by
:mod:`device.observe.report_plots` (numbers in full, integer ticks for counts); words and units
come from :mod:`device.observe.report_text`.
What a recording lacks (no telemetry, no accuracy, no errors) is said on the page instead of a
plot.

A run's report tells how its fleet learnt and what it cost: the directory is created 0700 and
every file 0600, like the recording it is made from (:mod:`device.private`); an existing
directory keeps its mode. To publish a report, copy it or loosen the modes on purpose.
"""

from __future__ import annotations

import html
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from device.observe import report_tables as tables
from device.observe import report_text as text
from device.observe.recorder import RunData, load_run
from device.observe.report_classes import accuracy_points, classes_section
from device.observe.report_faults import faults_section
from device.observe.report_fleet import availability_section, drawn_section
from device.observe.report_rollouts import rollouts_section
from device.observe.report_tables import (
    last_rows,
    nanmedian,
    policy_answers,
    section,
    split_errors,
)
from device.private import private_dir, write_private

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Node lines drawn per plot at most; the others are in the fleet percentiles.
MAX_NODE_LINES: Final = 50
PHASES: Final = ("frozen", "adaptive", "memory", "idle")
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
    if not out_dir.is_dir():
        private_dir(out_dir)
    canvas = _Canvas(out_dir, on_figure)
    sections = [tables.totals(data)]
    tel = data.telemetry
    if len(tel) == 0:
        sections.append(
            section(
                "Telemetry",
                "<p>No telemetry was recorded: no accuracy, battery, energy, "
                "lifetime or lag to show.</p>",
            )
        )
    else:
        sections += [
            _accuracy(data, canvas),
            classes_section(data, canvas),
            _battery(data, canvas),
            _energy(data, canvas),
            tables.first_to_die(data),
            _lag(data, canvas),
        ]
    sections += [s for s in (drawn_section(data), availability_section(data)) if s is not None]
    sections += [_errors(data, canvas), faults_section(data, canvas), rollouts_section(data)]
    sections.append(tables.run_table(data))
    title = text.title(data.path, data.meta)
    body = f"<p class='lead'>{tables.lead(data)}</p>" + "\n".join(sections)
    page = _PAGE.format(title=html.escape(title), body=body)
    index = out_dir / "index.html"
    write_private(index, page.encode("utf-8"))
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


def _accuracy(data: RunData, canvas: _Canvas) -> str:
    from device.observe.report_plots import count_axis, figure, fleet_band, node_lines

    device, events, accuracy = accuracy_points(data)
    if np.all(np.isnan(accuracy)):
        return section(
            "Accuracy", "<p>No accuracy in the telemetry (the nodes had no eval set).</p>"
        )
    fig, ax = figure()
    node_lines(ax, device, events, accuracy, max_lines=MAX_NODE_LINES)
    fleet_band(ax, events, accuracy, exact=True)
    ax.set(xlabel="learning events", ylabel="accuracy", title="Accuracy over learning events")
    count_axis(ax.xaxis)
    ax.legend(loc="lower right")
    factory = len(data.classes.factory)
    note = (
        f"<p>Event 0 is the factory model: {factory:,} of {len(data.devices):,} nodes measured "
        "it when their eval set arrived, before their first learning event.</p>"
        if factory
        else ""
    )
    return section("Accuracy", note + canvas.save(fig, "accuracy.png", "accuracy over events"))


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
        final = life_d[last_rows(data)]
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
    return section("Battery and lifetime", lines + "".join(parts))


def _soc_caption(data: RunData) -> str:
    """How much of a battery the run used, said in words when the plot has to zoom in on it."""
    tel = data.telemetry
    soc = tel.soc[np.isfinite(tel.soc)]
    if soc.size == 0:
        return ""
    spread_pct = 100 * float(soc.max() - soc.min())
    used = f"The median node ended at {text.percent(nanmedian(tel.soc[last_rows(data)]))}"
    if spread_pct < 1:
        return (
            f"<p>{used}: the whole run spans {text.num(spread_pct)} percentage points of charge, "
            "so the axis is zoomed in on them.</p>"
        )
    return f"<p>{used}.</p>"


def _energy(data: RunData, canvas: _Canvas) -> str:
    from device.observe.report_plots import figure

    tel = data.telemetry
    phases = PHASES if data.radio_j is None else (*PHASES, "radio")
    sums = [float(tel.energy_j[p].sum()) for p in PHASES]
    if data.radio_j is not None:  # the radio's share, for nodes that charge one
        sums.append(data.radio_j)
    fig, ax = figure()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:gray", "tab:purple"]
    bars = ax.bar(phases, sums, color=colors[: len(phases)])
    ax.bar_label(bars, labels=[f"{text.num(v)} J" for v in sums])
    ax.set(ylabel="energy (J), fleet total", title="Energy by phase")
    total = sum(sums)
    body = "".join(
        f"<tr><td>{p}</td><td>{text.num(v)}</td>"
        f"<td>{text.num(100 * v / total) if total else '-'}</td></tr>"
        for p, v in zip(phases, sums, strict=True)
    )
    table = f"<table><tr><th>phase</th><th>J</th><th>%</th></tr>{body}</table>"
    if data.harvest_j is not None:  # brought in, not spent: beside the phases, not among them
        table += (
            f"<p id='harvest'>The nodes' harvesters brought in {text.num(data.harvest_j)} J "
            "in all (not a phase: it charged the cells, capped at their capacity).</p>"
        )
    return section("Energy by phase", canvas.save(fig, "energy.png", "energy by phase") + table)


def _lag(data: RunData, canvas: _Canvas) -> str:
    from device.observe.report_plots import count_axis, figure

    pace = text.pace_of(data.meta)
    if pace.closed_loop:
        return section(
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
    return section("Event lag", note + canvas.save(fig, "lag.png", "event lag histogram"))


def _errors(data: RunData, canvas: _Canvas) -> str:
    from device.observe.report_plots import count_axis, figure

    errors, duplicates = split_errors(data.errors)
    dup = ""
    if duplicates:
        devices = len({e.device for e in duplicates})
        dup = (
            f"<p id='duplicates'>{len(duplicates):,} duplicates from {devices:,} devices, not "
            "counted as errors: seqs a node had learned before were sent again (a re-run or a "
            "redelivery); the node acknowledged them and applied nothing twice.</p>"
        )
    policy = Counter(e.code for e in policy_answers(data.errors))
    if policy:
        dup += (
            f"<p id='energy-policy'>{policy['energy_policy']:,} events skipped by the nodes' "
            f"energy policy and {policy['deferred']:,} answers of events held for the sun "
            "(deferred), not counted as errors: the nodes chose so.</p>"
        )
    if not errors:
        return section("Errors", "<p>No errors were recorded.</p>" + dup)
    counts = Counter(e.code for e in errors).most_common()
    fig, ax = figure(height_in=1.5 + 0.4 * len(counts))  # a bar per code, not a wall of red
    ax.barh([c for c, _ in counts][::-1], [n for _, n in counts][::-1], color="tab:red")
    ax.set(xlabel="errors", title="Errors by code")
    count_axis(ax.xaxis)
    body = "".join(
        f"<tr><td>{html.escape(code)}</td><td>{n:,}</td><td>"
        f"{len({e.device for e in errors if e.code == code}):,}</td></tr>"
        for code, n in counts
    )
    table = f"<table><tr><th>code</th><th>errors</th><th>devices</th></tr>{body}</table>"
    return section("Errors", canvas.save(fig, "errors.png", "errors by code") + table + dup)


# -- helpers ---------------------------------------------------------------------------------


def _simulated_axis(t: np.ndarray) -> tuple[np.ndarray, str]:
    """Simulated time since the first telemetry, in hours, or in days for long runs."""
    hours = (t - t.min()) / 3600
    if float(hours.max()) > DAYS_AXIS_AFTER_H:
        return hours / 24, "simulated days"
    return hours, "simulated hours"


def _save(fig: Figure, out_dir: Path, name: str, alt: str) -> str:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    write_private(out_dir / name, png.getvalue())
    return f"<img src='{name}' alt='{html.escape(alt)}'>"


_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
h1 {{ font-size: 1.6rem; }}
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


__all__ = ["MAX_NODE_LINES", "OnFigure", "render_report"]
