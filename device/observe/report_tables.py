"""The report's tables, as HTML: the line under the title, fleet totals, the first nodes to die
and the run's metadata and configuration; and the row selections the plots share with them
(each device's last telemetry, errors apart from duplicates). Text is escaped here; words and
units come from :mod:`device.observe.report_text`.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from device.observe import report_text as text
from device.observe.recorder import ErrorRow, RunData

#: Rows of the first-to-die table.
FIRST_TO_DIE: Final = 10
#: The node's answer to a seq it had learned before: acknowledged, not applied again; not an error.
DUPLICATE: Final = "duplicate"
#: The node's energy-aware policy's answers (docs/protocol.md): a seq it chose not to learn
#: (``energy_policy``) or holds for the sun (``deferred``). Not errors: the node chose so.
POLICY_CODES: Final = frozenset({"energy_policy", "deferred"})


def lead(data: RunData) -> str:
    """One line under the title: what recorded the run, how big it was, how it was paced."""
    command = data.meta.get("command")
    parts = [
        f"Recorded by <code>{html.escape(_command(command))}</code>" if command else "Recorded"
    ]
    parts.append(f"{len(data.devices):,} devices")
    pace = text.pace_of(data.meta)
    if pace.closed_loop:
        parts.append("closed loop (<code>--speed max</code>)")
    elif pace.speed is not None:
        parts.append(f"paced at {html.escape(text.value_text('speed', pace.speed))}")
    return ", ".join(parts) + ". The configuration is at the end of the page."


def totals(data: RunData) -> str:
    tel = data.telemetry
    last = last_rows(data)
    errors, duplicates = split_errors(data.errors)
    policy = Counter(e.code for e in policy_answers(data.errors))
    rows: list[tuple[str, Any]] = [
        ("devices", f"{len(data.devices):,}"),
        ("telemetry messages", f"{len(tel):,}"),
        ("samples learned", f"{int(tel.samples.sum()):,}"),
        ("status changes", f"{len(data.statuses):,}"),
        ("errors", f"{len(errors):,}"),
        ("duplicates (seqs learned before, sent again)", f"{len(duplicates):,}"),
        ("injected faults", f"{len(data.faults):,}"),
    ]
    if policy:
        rows += [
            ("events skipped by the energy policy", f"{policy['energy_policy']:,}"),
            ("answers: held for the sun (deferred)", f"{policy['deferred']:,}"),
        ]
    if data.harvest_j is not None:
        rows.append(("energy harvested, fleet total", f"{text.num(data.harvest_j)} J"))
    if len(tel):
        span_h = float(tel.t.max() - tel.t.min()) / 3600
        final_h = tel.lifetime_h[last]
        rows += [
            ("energy, fleet total", f"{text.num(float(tel.energy_j['total'].sum()))} J"),
            ("simulated time covered", text.duration(span_h)),
            ("wall time covered", f"{text.num(float(tel.received.max() - tel.received.min()))} s"),
            ("emulator host time, total", f"{text.num(float(tel.host_s.sum()))} s"),
            ("median final accuracy", text.num(nanmedian(tel.accuracy[last]))),
            ("median final state of charge", text.percent(nanmedian(tel.soc[last]))),
            ("lowest final state of charge", text.percent(nanmin(tel.soc[last]))),
            ("median final projected lifetime", text.lifetime(nanmedian(final_h))),
            ("shortest final projected lifetime", text.lifetime(nanmin(final_h))),
            (
                "devices depleted at their last telemetry",
                f"{int(np.sum(tel.state[last] == 'depleted')):,}",
            ),
        ]
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return section("Fleet totals", f"<table id='totals'>{body}</table>")


def first_to_die(data: RunData) -> str:
    tel = data.telemetry
    last = last_rows(data)
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
            _state(data, i, depleted_at),
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
    which = (
        "Every node" if last.size <= FIRST_TO_DIE else f"The {FIRST_TO_DIE} of {last.size:,} nodes"
    )
    note = (
        f"<p>{which}, first to die first: those depleted during the run (in the order they ran "
        "out), then the lowest projected lifetimes at each node's last telemetry.</p>"
    )
    return section(
        "First nodes to die",
        f"{note}<table id='first-to-die'><tr>{head}</tr>{''.join(rows)}</table>",
    )


def run_table(data: RunData) -> str:
    meta = data.meta
    rows = [("recording", data.path.name)]
    if "command" in meta:
        rows.append(("recorded by", _command(meta["command"])))
    started = text.started_text(meta)
    if started is not None:
        rows.append(("started", started))
    # "devices": the fleet's per-device facts, shown by device.observe.report_fleet
    for key in sorted(set(meta) - {"command", "started", "config", "schema", "devices"}):
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
    return section("Run", body)


def _command(command: Any) -> str:
    """The recording command as a user types it: ``up`` is ``vega-emu up``."""
    words = str(command)
    return words if words.startswith("vega-emu") else f"vega-emu {words}"


def split_errors(rows: tuple[ErrorRow, ...]) -> tuple[list[ErrorRow], list[ErrorRow]]:
    """The errors proper and the duplicates (answers to seqs sent again), apart; the energy
    policy's answers are neither (:func:`policy_answers`)."""
    errors = [e for e in rows if e.code != DUPLICATE and e.code not in POLICY_CODES]
    return errors, [e for e in rows if e.code == DUPLICATE]


def policy_answers(rows: tuple[ErrorRow, ...]) -> list[ErrorRow]:
    """The answers of the nodes' energy-aware policies (:data:`POLICY_CODES`)."""
    return [e for e in rows if e.code in POLICY_CODES]


def last_rows(data: RunData) -> np.ndarray:
    """Row index of each device's last telemetry (rows are sorted by device, then ``t``)."""
    dev = data.telemetry.device
    if dev.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.append(dev[1:] != dev[:-1], True))


def _state(data: RunData, row: int, depleted_at: Mapping[int, float]) -> str:
    """A node's state at its last telemetry; for a depleted node, when it ran out."""
    tel = data.telemetry
    when = depleted_at.get(int(tel.device[row]))
    if when is None:
        return str(tel.state[row])
    return f"depleted after {text.duration((when - float(tel.t.min())) / 3600)}"


def _depleted_at(data: RunData) -> dict[int, float]:
    """Each depleted device's first simulated time in state ``depleted``, by device index."""
    tel = data.telemetry
    out: dict[int, float] = {}
    for i in np.flatnonzero(tel.state == "depleted"):
        device = int(tel.device[i])
        out[device] = min(out.get(device, math.inf), float(tel.t[i]))
    return out


def section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def nanmedian(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def nanmin(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else math.nan


__all__ = [
    "DUPLICATE",
    "FIRST_TO_DIE",
    "first_to_die",
    "last_rows",
    "lead",
    "nanmedian",
    "nanmin",
    "policy_answers",
    "run_table",
    "section",
    "split_errors",
    "totals",
]
