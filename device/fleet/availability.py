"""When each device of a fleet is offline: a trace file or a seeded model, in simulated time.

Two sources, both giving a device's offline windows ``[start_s, end_s)`` in simulated seconds
from the start of the run:

- a **trace**, a CSV file with the header ``device,start_s,end_s`` and one row per offline window
  (:func:`read_trace`; docs/fleet.md shows how FedScale's and Plato's traces convert to it);
- a **model** per device class (:class:`AvailabilityModel`): up and down durations drawn from
  an exponential (``mean_s``) or a Weibull (``shape``, ``scale_s``) distribution, alternating
  from ``up``; the draws come from the spec's seed and the device id only
  (:func:`device.fleet.distributions.device_rng`), so a device's windows are the same in every
  run with that seed, whatever shard it runs in.

:class:`Follower` turns a device's windows into its :class:`~device.node.presence.Presence`
switches at wall times: simulated seconds are divided by the run's speed (simulated seconds per
wall second, as :class:`dataset_stream.pacing.Pacing` has it) from the moment the fleet is up.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from device.fleet.distributions import device_rng
from device.fleet.errors import FleetSpecError
from device.node.presence import Presence

#: What a class does with the batches sent while a device is offline.
OFFLINE_BATCHES: Final = ("wait", "miss")
#: Windows of a model are drawn up to this simulated time unless told otherwise (30 days).
HORIZON_S: Final = 30 * 86400.0


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """One offline stretch, ``[start_s, end_s)`` simulated seconds from the start of the run."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s)):
            raise ValueError(f"offline window must be finite, got {self.start_s}..{self.end_s}")
        if not 0 <= self.start_s < self.end_s:
            raise ValueError(
                f"offline window needs 0 <= start_s < end_s, got {self.start_s}..{self.end_s}"
            )


@dataclass(frozen=True, slots=True)
class Durations:
    """Exponential (``mean_s``) or Weibull (``shape``, ``scale_s``) durations, in seconds."""

    dist: str
    mean_s: float = 0.0
    shape: float = 0.0
    scale_s: float = 0.0

    def __post_init__(self) -> None:
        if self.dist == "exponential":
            if not (math.isfinite(self.mean_s) and self.mean_s > 0):
                raise ValueError(f"exponential needs mean_s > 0, got {self.mean_s}")
        elif self.dist == "weibull":
            for name in ("shape", "scale_s"):
                value = getattr(self, name)
                if not (math.isfinite(value) and value > 0):
                    raise ValueError(f"weibull needs {name} > 0, got {value}")
        else:
            raise ValueError(f"dist must be exponential or weibull, not {self.dist!r}")

    def draw(self, rng: Any) -> float:
        if self.dist == "exponential":
            return float(rng.exponential(self.mean_s))
        return float(self.scale_s * rng.weibull(self.shape))

    @classmethod
    def from_table(cls, table: object) -> Durations:
        if not isinstance(table, Mapping):
            raise ValueError('must be a table like {dist = "weibull", shape = .., scale_s = ..}')
        keys = {"exponential": {"dist", "mean_s"}, "weibull": {"dist", "shape", "scale_s"}}
        dist = table.get("dist")
        if dist not in keys:
            raise ValueError(f"dist must be exponential or weibull, not {dist!r}")
        unknown = sorted(set(table) - keys[dist])
        missing = sorted(keys[dist] - set(table))
        if unknown or missing:
            raise ValueError(
                f"{dist} takes {', '.join(sorted(keys[dist] - {'dist'}))}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
        values = {k: v for k, v in table.items() if k != "dist"}
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()):
            raise ValueError(f"{dist}: every value must be a number")
        return cls(dist, **{k: float(v) for k, v in values.items()})

    def to_table(self) -> dict[str, Any]:
        if self.dist == "exponential":
            return {"dist": self.dist, "mean_s": self.mean_s}
        return {"dist": self.dist, "shape": self.shape, "scale_s": self.scale_s}


@dataclass(frozen=True, slots=True)
class AvailabilityModel:
    """A class's devices alternate up and down stretches, starting up; a class table's
    ``availability = {up = {...}, down = {...}}``."""

    up: Durations
    down: Durations

    def windows(
        self, seed: int, device_id: str, horizon_s: float = HORIZON_S
    ) -> tuple[Window, ...]:
        """``device_id``'s offline windows that start before ``horizon_s``: the same for the
        same seed and id, and a longer horizon only adds windows after these."""
        return tuple(self._iter(seed, device_id, horizon_s))

    def _iter(self, seed: int, device_id: str, horizon_s: float) -> Iterator[Window]:
        rng = device_rng(seed, device_id, "availability")
        t = 0.0
        while True:
            t += self.up.draw(rng)
            down_s = self.down.draw(rng)
            if t >= horizon_s:
                return
            if down_s > 0:
                yield Window(t, t + down_s)
            t += down_s

    @classmethod
    def from_table(cls, table: object) -> AvailabilityModel:
        """From ``{up = {...}, down = {...}}``; ``ValueError`` names the part that is wrong."""
        if not isinstance(table, Mapping) or set(table) != {"up", "down"}:
            raise ValueError("availability must be a table {up = {...}, down = {...}}")
        parts = {}
        for key in ("up", "down"):
            try:
                parts[key] = Durations.from_table(table[key])
            except ValueError as exc:
                raise ValueError(f"availability.{key}: {exc}") from None
        return cls(**parts)

    def to_table(self) -> dict[str, Any]:
        return {"up": self.up.to_table(), "down": self.down.to_table()}


def read_trace(path: Path) -> dict[str, tuple[Window, ...]]:
    """Device -> its offline windows, from a CSV with the header ``device,start_s,end_s``
    (simulated seconds). :class:`FleetSpecError` names the file and the row of a bad line:
    a bad number, an empty window, or windows of one device that overlap."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetSpecError(f"cannot read the availability trace {path}: {exc}") from exc
    rows = csv.reader(text.splitlines())
    header = [h.strip() for h in next(rows, [])]
    if header != ["device", "start_s", "end_s"]:
        raise FleetSpecError(
            f"availability trace {path}: the header must be device,start_s,end_s, not "
            f"{','.join(header)!r}"
        )
    out: dict[str, list[Window]] = {}
    for line, row in enumerate(rows, 2):
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            device, start, end = (cell.strip() for cell in row)
            window = Window(float(start), float(end))
        except ValueError as exc:
            raise FleetSpecError(f"availability trace {path}, line {line}: {exc}") from None
        out.setdefault(device, []).append(window)
    for device, windows in out.items():
        windows.sort()
        for before, after in itertools.pairwise(windows):
            if after.start_s < before.end_s:
                raise FleetSpecError(
                    f"availability trace {path}: {device}'s windows {before.start_s:g}.."
                    f"{before.end_s:g} and {after.start_s:g}..{after.end_s:g} overlap"
                )
    return {device: tuple(windows) for device, windows in out.items()}


@dataclass(frozen=True, slots=True)
class AvailabilitySettings:
    """A spec's ``[availability]`` table: offline windows of named devices from a ``trace``
    CSV (they win over their class's model), ``speed`` (simulated seconds per wall second: the
    stream's ``--speed``; ``vega-emu up`` uses its own when paced) and ``horizon_s`` (models
    draw windows up to this simulated time)."""

    trace: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)
    trace_file: str | None = None
    speed: float = 1.0
    horizon_s: float = HORIZON_S

    def __post_init__(self) -> None:
        for name in ("speed", "horizon_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, not {value!r}")


def parse_availability_table(table: object, base: Path) -> tuple[object, list[str]]:
    """A spec's ``[availability]`` table (``base``: the spec's directory, for ``trace``): the
    :class:`AvailabilitySettings` and the problems, each naming the table."""
    if not isinstance(table, Mapping):
        return None, ["[availability] must be a table"]
    unknown = sorted(set(table) - {"trace", "speed", "horizon_s"})
    if unknown:
        return None, [f"[availability]: unknown key(s) {', '.join(unknown)}"]
    trace: dict[str, tuple[Window, ...]] = {}
    trace_file = table.get("trace")
    if trace_file is not None:
        if not isinstance(trace_file, str):
            return None, ["[availability] trace must be the path of a CSV file"]
        path = Path(trace_file)
        try:
            trace = read_trace(path if path.is_absolute() else base / path)
        except FleetSpecError as exc:
            return None, [str(exc)]
    try:
        speed, horizon_s = table.get("speed", 1.0), table.get("horizon_s", HORIZON_S)
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (speed, horizon_s)
        ):
            raise ValueError("speed and horizon_s must be numbers")
        value = AvailabilitySettings(trace, trace_file, float(speed), float(horizon_s))
    except ValueError as exc:
        return None, [f"[availability]: {exc}"]
    return value, []


class Follower:
    """Switches each device's :class:`Presence` at the wall times of its offline windows.

    ``speed``: simulated seconds per wall second; the windows count from :meth:`run`'s start.
    """

    def __init__(self, windows: Mapping[str, Sequence[Window]], speed: float) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, got {speed}")
        self.windows = {d: tuple(sorted(w)) for d, w in windows.items() if w}
        self.speed = speed

    async def run(self, presences: Mapping[str, Presence]) -> None:
        """Follow every device's windows to their end (cancel to stop earlier)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.TaskGroup() as group:
            for device, windows in self.windows.items():
                presence = presences.get(device)
                if presence is not None:
                    group.create_task(self._follow(presence, windows, start))

    async def _follow(self, presence: Presence, windows: Sequence[Window], start: float) -> None:
        loop = asyncio.get_running_loop()
        for window in windows:
            await asyncio.sleep(max(0.0, start + window.start_s / self.speed - loop.time()))
            presence.go_offline()
            await asyncio.sleep(max(0.0, start + window.end_s / self.speed - loop.time()))
            presence.go_online()


__all__ = [
    "HORIZON_S",
    "OFFLINE_BATCHES",
    "AvailabilityModel",
    "AvailabilitySettings",
    "Durations",
    "Follower",
    "Window",
    "parse_availability_table",
    "read_trace",
]
