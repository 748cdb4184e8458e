"""Energy harvesters: solar from an irradiance trace or a clear-sky model, and constant sources.

Every harvester gives its electrical power at simulated times (``power_w(t_s)``, vectorised).

- :class:`SolarTrace`: a trace CSV of global horizontal irradiance (``time_s`` or ``time``, and
  ``irradiance_w_m2``; :mod:`device.energy.traces`) on a panel: ``P = G x area x efficiency``.
- :class:`ClearSky`: a day/night model for when there is no trace. The sun's zenith angle from
  the latitude, the day of the year and the hour (solar time; Cooper's declination
  ``23.45 deg x sin(360/365 x (284 + n))``); the clear-sky direct irradiance
  ``1353 x 0.7 ** (AM ** 0.678)`` W/m2 with the air mass ``AM = 1 / cos(zenith)`` (Meinel and
  Meinel, 1976), plus 10 % diffuse, on a horizontal panel; clouds: each day draws a cloud cover
  ``c`` in 0..1 (a seeded Beta(``cloud_a``, ``cloud_b``)) and keeps ``1 - 0.75 c ** 3.4`` of the
  clear-sky irradiance (Kasten and Czeplak, 1980). A simple model, not a weather record.
- :class:`ConstantSource`: a source of constant power (a thermoelectric generator on a pipe).

:func:`parse_harvest` reads the command line's ``--harvest`` text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from device.energy.errors import TraceError
from device.energy.traces import FloatArray, Trace, load_trace

SOLAR_CONSTANT_W_M2 = 1353.0
DAY_S = 86400.0


class Harvester(Protocol):
    """A source of energy: its power (W) at simulated times (s), and one line saying what it is."""

    def power_w(self, t_s: FloatArray) -> FloatArray: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Panel:
    """A photovoltaic panel: ``area_m2`` and ``efficiency`` (incl. the charger's losses)."""

    area_m2: float = 0.005  # 5 cm x 10 cm
    efficiency: float = 0.15

    def __post_init__(self) -> None:
        if not (math.isfinite(self.area_m2) and self.area_m2 > 0):
            raise TraceError(f"panel area must be > 0 m2, got {self.area_m2!r}")
        if not 0 < self.efficiency <= 1:
            raise TraceError(f"panel efficiency must be in (0, 1], got {self.efficiency!r}")

    def describe(self) -> str:
        return f"{self.area_m2 * 1e4:g} cm2 panel at {self.efficiency:.0%}"


@dataclass(frozen=True, slots=True)
class ConstantSource:
    """A constant source of ``watts`` (e.g. a thermoelectric generator)."""

    watts: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.watts) and self.watts >= 0):
            raise TraceError(f"a constant source must be >= 0 W, got {self.watts!r}")

    def power_w(self, t_s: FloatArray) -> FloatArray:
        return np.full(np.shape(t_s), self.watts, dtype=np.float64)

    def describe(self) -> str:
        return f"constant {self.watts:.3g} W"


@dataclass(frozen=True, slots=True)
class SolarTrace:
    """A panel under a measured (or generated) irradiance trace, repeated past its end."""

    trace: Trace
    panel: Panel = Panel()

    def power_w(self, t_s: FloatArray) -> FloatArray:
        irradiance = self.trace.at(t_s)
        return np.asarray(irradiance * self.panel.area_m2 * self.panel.efficiency)

    def describe(self) -> str:
        mean = self.trace.mean()
        return f"solar trace {self.trace.name} (mean {mean:.3g} W/m2), {self.panel.describe()}"


def clear_sky_w_m2(latitude_deg: float, day_of_year: FloatArray, hour: FloatArray) -> FloatArray:
    """Clear-sky global horizontal irradiance (W/m2) at solar ``hour`` (0..24) of
    ``day_of_year`` (1..365) at ``latitude_deg``; 0 at night."""
    declination = np.radians(23.45) * np.sin(np.radians(360.0 / 365.0 * (284.0 + day_of_year)))
    latitude = math.radians(latitude_deg)
    hour_angle = np.radians(15.0 * (hour - 12.0))
    cos_zenith = math.sin(latitude) * np.sin(declination) + math.cos(latitude) * np.cos(
        declination
    ) * np.cos(hour_angle)
    up = cos_zenith > 0.01
    safe = np.where(up, cos_zenith, 1.0)
    direct = SOLAR_CONSTANT_W_M2 * 0.7 ** ((1.0 / safe) ** 0.678)
    return np.asarray(np.where(up, 1.1 * direct * safe, 0.0), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ClearSky:
    """The clear-sky model with seeded daily clouds (module docstring), from ``day_of_year``
    at midnight (solar time), on ``panel``."""

    latitude_deg: float = 45.0
    day_of_year: int = 172
    seed: int = 0
    cloud_a: float = 0.6
    cloud_b: float = 0.9
    panel: Panel = Panel()

    def __post_init__(self) -> None:
        if not -90 <= self.latitude_deg <= 90:
            raise TraceError(f"latitude must be in -90..90, got {self.latitude_deg!r}")
        if not 1 <= self.day_of_year <= 366:
            raise TraceError(f"day of year must be in 1..366, got {self.day_of_year!r}")

    def cloud_cover(self, days: int) -> FloatArray:
        """The cloud cover (0..1) of each of the first ``days`` days (seeded)."""
        rng = np.random.default_rng(self.seed)
        return np.asarray(rng.beta(self.cloud_a, self.cloud_b, size=days), dtype=np.float64)

    def irradiance_w_m2(self, t_s: FloatArray) -> FloatArray:
        t = np.asarray(t_s, dtype=np.float64)
        day_index = np.floor(t / DAY_S).astype(np.int64)
        days = int(day_index.max(initial=0)) + 1
        cover = self.cloud_cover(days)[np.clip(day_index, 0, days - 1)]
        day = (self.day_of_year - 1 + day_index) % 365 + 1
        hour = np.mod(t, DAY_S) / 3600.0
        clear = clear_sky_w_m2(self.latitude_deg, day.astype(np.float64), hour)
        return np.asarray(clear * (1.0 - 0.75 * cover**3.4))

    def power_w(self, t_s: FloatArray) -> FloatArray:
        return np.asarray(self.irradiance_w_m2(t_s) * self.panel.area_m2 * self.panel.efficiency)

    def describe(self) -> str:
        return (
            f"clear-sky model at {self.latitude_deg:g} deg from day {self.day_of_year}, "
            f"seeded clouds ({self.seed}), {self.panel.describe()}"
        )


def harvested_j(
    harvester: Harvester, start_s: float, end_s: float, *, step_s: float = 60.0
) -> float:
    """Joules ``harvester`` delivers from ``start_s`` to ``end_s`` (0 for an empty interval):
    the power sampled every ``step_s`` at most (at least 2 and at most 100,001 samples, so a
    long gap costs milliseconds) and integrated by the trapezoid rule."""
    span_s = end_s - start_s
    if not (math.isfinite(span_s) and span_s > 0):
        return 0.0
    n = min(100_001, max(2, math.ceil(span_s / step_s) + 1))
    t = np.linspace(start_s, end_s, n, dtype=np.float64)
    power = np.asarray(harvester.power_w(t), dtype=np.float64)
    return float(np.sum((power[1:] + power[:-1]) * 0.5 * np.diff(t)))


def parse_harvest(text: str, panel: Panel = Panel(), *, seed: int = 0) -> Harvester:
    """``solar:FILE`` (an irradiance trace), ``solar:clear-sky[:LAT[:DAY]]``, or
    ``constant:W`` / ``teg:W`` (watts); a :class:`TraceError` says what is wrong."""
    kind, _, rest = text.partition(":")
    if kind in ("constant", "teg"):
        try:
            return ConstantSource(float(rest))
        except ValueError:
            raise TraceError(f"--harvest {text!r}: {kind}:W needs a number of watts") from None
    if kind == "solar":
        if rest.startswith("clear-sky") or not rest:
            parts = rest.split(":")[1:] if rest else []
            try:
                numbers = [float(part) for part in parts]
            except ValueError:
                raise TraceError(f"--harvest {text!r}: solar:clear-sky[:LAT[:DAY]]") from None
            latitude = numbers[0] if numbers else 45.0
            day = int(numbers[1]) if len(numbers) > 1 else 172
            return ClearSky(latitude, day, seed=seed, panel=panel)
        trace = load_trace(rest, ("irradiance_w_m2", "ghi_w_m2"), minimum=0.0)
        return SolarTrace(trace, panel)
    raise TraceError(
        f"--harvest {text!r}: expected solar:FILE, solar:clear-sky[:LAT[:DAY]] or constant:W"
    )


__all__ = [
    "DAY_S",
    "SOLAR_CONSTANT_W_M2",
    "ClearSky",
    "ConstantSource",
    "Harvester",
    "Panel",
    "SolarTrace",
    "clear_sky_w_m2",
    "harvested_j",
    "parse_harvest",
]
