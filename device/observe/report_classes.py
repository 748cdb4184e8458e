"""The report's long-horizon view: accuracy from event 0, per class over events, and forgetting.

- :func:`accuracy_points`: each node's accuracy over learning events, its factory point (event
  0, from its status: the factory model measured when the eval set arrived) first;
- :func:`classes_section`: the fleet's mean accuracy of each class over learning events, the mean
  forgetting over events (node lines, fleet median and band), and a table of each class at the
  end of the run: accuracy, best accuracy, forgetting (mean and worst node), events since it was
  last trained.

Per-class figures come from the telemetry's per-class maps, which a node sends for a model of at
most 64 classes; a run without them gets a sentence instead.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

from device.observe import report_text as text
from device.observe.recorder import ClassMap, RunData
from device.observe.report_tables import last_rows, section

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Classes drawn with a legend entry each at most (more: lines only).
LEGEND_CLASSES: Final = 20


class Canvas(Protocol):
    """Where a plot is saved: returns the ``<img>`` tag of the saved figure."""

    def save(self, fig: Figure, name: str, alt: str) -> str: ...


def accuracy_points(data: RunData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(device, events, accuracy)`` of every telemetry measured at its own event (not one
    carrying an older measurement) and of each node's factory point (events 0), sorted by
    device then events (what :func:`node_lines` needs)."""
    tel = data.telemetry
    index = {d: i for i, d in enumerate(data.devices)}
    factory = [p for p in data.classes.factory if p.device in index]
    mine = tel.measured
    device = np.concatenate([[index[p.device] for p in factory], tel.device[mine]])
    device = device.astype(np.int64)
    events = np.concatenate([np.zeros(len(factory)), tel.events[mine].astype(np.float64)])
    accuracy = np.concatenate([[p.accuracy for p in factory], tel.accuracy[mine]])
    accuracy = accuracy.astype(np.float64)
    order = np.lexsort((events, device))
    return device[order], events[order], accuracy[order]


def forgetting_points(data: RunData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(device, events, mean forgetting)`` of every telemetry measured at its own event (one
    carrying an older measurement carries its forgetting too: not a point), in telemetry order
    (sorted by device, then time)."""
    tel = data.telemetry
    mine = tel.measured
    forgetting = np.asarray(data.classes.forgetting, np.float64)
    return tel.device[mine], tel.events[mine].astype(np.float64), forgetting[mine]


def classes_section(data: RunData, canvas: Canvas) -> str:
    """The section "Per-class accuracy and forgetting" (see the module docstring)."""
    classes = data.classes
    accuracy = classes.maps["accuracy"]
    if not classes.any:
        return section(
            "Per-class accuracy and forgetting",
            "<p>No per-class figures in the telemetry (the nodes had no eval set, or a model of "
            "more than 64 classes, for which they send aggregates only).</p>",
        )
    parts = [
        "<p>Forgetting of a class is its best accuracy at an earlier evaluation minus its "
        "accuracy now (Chaudhry et al., 2018), for the classes a node had seen (learned on the "
        "device, or in the factory) before the evaluation; negative when it is better than ever. "
        "Event 0 is the factory model, measured by each node when its eval set arrived.</p>"
    ]
    if len(accuracy):
        parts.append(_per_class_plot(data, accuracy, canvas))
    if np.isfinite(classes.forgetting).any():
        parts.append(_forgetting_plot(data, canvas))
    if len(accuracy):
        parts.append(_table(data))
    return section("Per-class accuracy and forgetting", "".join(parts))


def _class_events(data: RunData, values: ClassMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(label, events, value)`` of a per-class map, with the factory points for accuracy
    (of the rows measured at their own event only: a carried measurement is not a point)."""
    mine = data.telemetry.measured[values.row]
    events = data.telemetry.events[values.row[mine]].astype(np.float64)
    labels, xs, ys = [values.label[mine]], [events], [values.value[mine]]
    if values is data.classes.maps["accuracy"]:
        for point in data.classes.factory:
            if point.by_class:
                labels.append(np.array(list(point.by_class), dtype=np.int64))
                xs.append(np.zeros(len(point.by_class)))
                ys.append(np.array(list(point.by_class.values()), dtype=np.float64))
    return np.concatenate(labels), np.concatenate(xs), np.concatenate(ys)


def _per_class_plot(data: RunData, accuracy: ClassMap, canvas: Canvas) -> str:
    from matplotlib import colormaps

    from device.observe.report_plots import count_axis, figure

    labels, events, values = _class_events(data, accuracy)
    classes = np.unique(labels)
    fig, ax = figure(height_in=5.0)
    cmap = colormaps["tab20" if classes.size > 10 else "tab10"]
    for k, label in enumerate(classes):
        mine = labels == label
        xs, inverse = np.unique(events[mine], return_inverse=True)
        means = np.bincount(inverse, weights=values[mine]) / np.bincount(inverse)
        ax.plot(
            xs,
            means,
            linewidth=1.4,
            color=cmap(k % cmap.N),
            label=f"class {label}" if classes.size <= LEGEND_CLASSES else None,
        )
    ax.set(
        xlabel="learning events",
        ylabel="accuracy (fleet mean)",
        title="Accuracy of each class over learning events",
        ylim=(-0.02, 1.02),
    )
    count_axis(ax.xaxis)
    if classes.size <= LEGEND_CLASSES:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    return canvas.save(fig, "class_accuracy.png", "accuracy of each class over learning events")


def _forgetting_plot(data: RunData, canvas: Canvas) -> str:
    from device.observe.report_plots import count_axis, figure, fleet_band, node_lines

    device, events, forgetting = forgetting_points(data)
    fig, ax = figure()
    node_lines(ax, device, events, forgetting, max_lines=50)
    fleet_band(ax, events, forgetting, exact=True)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set(
        xlabel="learning events",
        ylabel="mean forgetting",
        title="Mean forgetting of the classes seen, over learning events",
    )
    count_axis(ax.xaxis)
    ax.legend(loc="upper left")
    return canvas.save(fig, "forgetting.png", "mean forgetting over learning events")


def _last_of_each_device(data: RunData, values: ClassMap) -> ClassMap:
    """The entries of each device's last telemetry."""
    keep = np.isin(values.row, last_rows(data))
    return ClassMap(values.row[keep], values.label[keep], values.value[keep])


def _table(data: RunData) -> str:
    maps = data.classes.maps
    final = _last_of_each_device(data, maps["accuracy"])
    forgotten = _last_of_each_device(data, maps["forgetting"])
    since = _last_of_each_device(data, maps["events_since"])
    best = _best(data)
    rows = []
    for label in np.unique(final.label):
        cells = (
            str(int(label)),
            text.num(_mean(final.value[final.label == label])),
            text.num(_mean(best.get(int(label), []))),
            text.num(_mean(forgotten.value[forgotten.label == label])),
            text.num(_max(forgotten.value[forgotten.label == label])),
            text.num(_median(since.value[since.label == label])),
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "class",
            "final accuracy",
            "best accuracy",
            "forgetting",
            "worst node's forgetting",
            "events since last trained",
        )
    )
    note = (
        "<p>Each class at each node's last telemetry, averaged over the fleet (events since "
        "last trained: the median node; the factory counts as event 0; <code>-</code>: the "
        "class was never trained). Best accuracy: each node's best at any evaluation, event 0 "
        "included.</p>"
    )
    return f"{note}<table id='forgetting-table'><tr>{head}</tr>{''.join(rows)}</table>"


def _best(data: RunData) -> dict[int, list[float]]:
    """Each node's best accuracy of each class over the run (its factory point included)."""
    accuracy = data.classes.maps["accuracy"]
    device = data.telemetry.device[accuracy.row]
    best: dict[tuple[int, int], float] = {}
    for d, label, value in zip(device, accuracy.label, accuracy.value, strict=True):
        key = (int(d), int(label))
        best[key] = max(best.get(key, -math.inf), float(value))
    index = {name: i for i, name in enumerate(data.devices)}
    for point in data.classes.factory:
        for label, value in point.by_class.items():
            key = (index[point.device], label)
            best[key] = max(best.get(key, -math.inf), value)
    out: dict[int, list[float]] = {}
    for (_, label), value in best.items():
        out.setdefault(label, []).append(value)
    return out


def _mean(values: np.ndarray | list[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()) if array.size else math.nan


def _max(values: np.ndarray) -> float:
    return float(values.max()) if values.size else math.nan


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else math.nan


__all__ = ["LEGEND_CLASSES", "accuracy_points", "classes_section"]
