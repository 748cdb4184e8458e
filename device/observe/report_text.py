"""The report's words and numbers: the run's name and date, its configuration as table rows,
how its stream was paced, and numbers in the units a reader thinks in (state of charge in %,
lifetimes in days and hours). Pure functions over a recording's metadata; no HTML, no plots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

#: File name ``vega-emu up`` gives its recording (in a directory named after the run).
DEFAULT_RECORDING_NAME: Final = "run.sqlite"

#: What the configuration keys of a recording (``vega-emu up``) mean, in the report's words.
CONFIG_LABELS: Final = {
    "devices": "devices",
    "dataset": "data source",
    "scenario": "scenario",
    "events": "learning events per device",
    "speed": "stream speed",
    "cadence": "simulated seconds between events",
    "infer_rate": "inference samples per simulated second",
    "model": "model",
    "lr_size": "latent replays held (lr_size)",
    "lr_bits": "bits per stored replay value",
    "class_balanced": "class-balanced replay",
    "epochs": "epochs per event",
    "mb_size": "minibatch size",
    "new_per_mb": "new samples per minibatch",
    "learning_rate": "learning rate",
    "momentum": "momentum",
    "weight_decay": "weight decay",
    "profile": "energy profile",
    "seed": "seed",
}
#: What a ``None`` means for the keys where it is not simply "not set".
_NONE_MEANS: Final = {"events": "all of the scenario"}


@dataclass(frozen=True, slots=True)
class Pace:
    """How the recorded stream was paced: ``speed`` simulated seconds per wall second (1 is real
    time), or ``None`` with ``closed_loop`` (``--speed max``: each event sent once the previous
    one was answered), or neither when the recording does not say (a monitor's recording)."""

    speed: float | None
    closed_loop: bool

    def __post_init__(self) -> None:
        if self.closed_loop and self.speed is not None:
            raise ValueError(f"a closed loop has no speed, not {self.speed!r}")
        if self.speed is not None and not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be a positive number, not {self.speed!r}")

    @property
    def known(self) -> bool:
        return self.closed_loop or self.speed is not None


def pace_of(meta: Mapping[str, Any]) -> Pace:
    """The pace written in a recording's ``config`` (``speed``: ``"max"`` or a number)."""
    config = meta.get("config")
    speed = config.get("speed") if isinstance(config, Mapping) else None
    if isinstance(speed, str) and speed.strip().lower() == "max":
        return Pace(speed=None, closed_loop=True)
    try:
        value = float(speed) if isinstance(speed, str | int | float) else math.nan
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value > 0:
        return Pace(speed=value, closed_loop=False)
    return Pace(speed=None, closed_loop=False)


def run_name(path: Path) -> str:
    """The run's name: the directory of a recording with the default name (``vega-emu up``
    writes ``vega-emu-runs/<date-time>/run.sqlite``), else the file name without its suffix."""
    if path.name == DEFAULT_RECORDING_NAME:
        parent = path.resolve().parent.name
        if parent:
            return parent
    return path.stem


def started_text(meta: Mapping[str, Any]) -> str | None:
    """When the recording started, ``2026-12-07 04:11 UTC``; ``None`` if it does not say."""
    started = meta.get("started")
    if not isinstance(started, int | float) or not math.isfinite(started):
        return None
    return datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC")


def title(path: Path, meta: Mapping[str, Any]) -> str:
    """The page's title: ``vega-emu run <name>, <date>``."""
    started = started_text(meta)
    name = f"vega-emu run {run_name(path)}"
    return name if started is None else f"{name}, {started}"


def config_rows(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(label, key, value)`` for each configuration entry, known keys first in
    :data:`CONFIG_LABELS` order: values written for reading (``yes``/``no``, ``None`` as what it
    means there or ``-``, lists and maps as compact JSON)."""
    order = {key: i for i, key in enumerate(CONFIG_LABELS)}
    keys = sorted(config, key=lambda k: (order.get(k, len(order)), k))
    return [(CONFIG_LABELS.get(k, k), k, value_text(k, config[k])) for k in keys]


def value_text(key: str, value: Any) -> str:
    """One configuration value for reading (see :func:`config_rows`)."""
    if value is None:
        return _NONE_MEANS.get(key, "-")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "speed":
        return _speed_text(value)
    if isinstance(value, float):
        return num(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "), sort_keys=True)


def _speed_text(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() == "max":
        return "max (closed loop: each event once the previous one is answered)"
    try:
        speed = float(value)
    except (TypeError, ValueError):
        return str(value)
    if speed == 1:
        return "1 (real time)"
    return f"{num(speed)} times real time"


def num(value: float) -> str:
    """A number for a table: thousands separators, at most 3 decimals, ``-`` for NaN."""
    if not math.isfinite(value):
        return "-"
    if value != 0 and (abs(value) >= 1e9 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def percent(fraction: float) -> str:
    """A state of charge (0..1) in %: ``99.9985 %``, ``45.2 %``, ``100 %``; ``-`` for NaN. Four
    decimals at most: a run that used a hair of a battery still reads below 100."""
    if not math.isfinite(fraction):
        return "-"
    value = 100 * fraction
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    if text == "100" and fraction < 1:
        text = "99.9999"
    return f"{text} %"


def days(hours: float) -> str:
    """A lifetime in days: ``456.6 d``, ``12.35 d``, ``0.42 d``; ``-`` for NaN."""
    if not math.isfinite(hours):
        return "-"
    d = hours / 24
    if d == 0:
        return "0 d"
    return f"{d:,.0f} d" if d >= 1000 else f"{d:,.{1 if d >= 100 else 2}f} d"


def hours(value: float) -> str:
    """A lifetime in hours: ``10,959 h``, ``20.5 h``; ``-`` for NaN."""
    if not math.isfinite(value):
        return "-"
    if value == 0:
        return "0 h"
    return f"{value:,.0f} h" if value >= 100 else f"{value:,.1f} h"


def duration(value_h: float) -> str:
    """A span of simulated time: ``9 min`` under an hour, ``20.5 h`` under two days, then
    ``12.35 d (296 h)``; ``-`` for NaN."""
    if not math.isfinite(value_h):
        return "-"
    if value_h < 1:
        return f"{num(60 * value_h)} min"
    return hours(value_h) if value_h < 48 else lifetime(value_h)


def lifetime(value_h: float) -> str:
    """A lifetime in days and hours: ``456.6 d (10,959 h)``; ``-`` for NaN."""
    if not math.isfinite(value_h):
        return "-"
    return f"{days(value_h)} ({hours(value_h)})"


__all__ = [
    "CONFIG_LABELS",
    "DEFAULT_RECORDING_NAME",
    "Pace",
    "config_rows",
    "days",
    "duration",
    "hours",
    "lifetime",
    "num",
    "pace_of",
    "percent",
    "run_name",
    "started_text",
    "title",
    "value_text",
]
