"""Battery chemistries: usable energy, self-discharge by temperature, capacity fade by cycles.

A chemistry is a TOML data file (``device/energy/profiles/batteries/*.toml``: ``li-socl2``,
``lipo``, ``alkaline``; ``--battery FILE`` loads a copy) in which every table of numbers has its
``source``; the loader refuses a table without one. The cell keeps the hardware profile's
capacity (mAh): a chemistry says what a cell of that size delivers::

    E_usable   = capacity_mAh x 3.6 x V_nominal x usable_fraction          (J, to V_cutoff)
    r(T)       = r_month(T_ref) x 2 ** ((T - T_ref) / doubling_C) / month  (fraction per second)
    P_self     = r(T) x E_usable                                           (W, lost on the shelf)
    E_full(n)  = E_usable x max(0, 1 - fade_per_cycle x n)                 (n full cycles)

:func:`ideal` is the paper's battery (the profile's mAh x 3.6 x V, no self-discharge, no fade):
the default, whose numbers are today's. A temperature is a constant or a trace (a CSV of
``time_s``/``time`` and ``temp_c``, see :mod:`device.energy.traces`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.energy.errors import ChemistryError, TraceError
from device.energy.profile import Profile
from device.energy.sourced import SourcedTable, read_toml
from device.energy.traces import FloatArray, Trace, load_trace

#: Shipped chemistries (``device/energy/profiles/batteries/NAME.toml``); ``ideal`` is built in.
CHEMISTRIES: tuple[str, ...] = ("li-socl2", "lipo", "alkaline")
IDEAL = "ideal"
#: One month of self-discharge: a twelfth of a Julian year, in seconds.
MONTH_S = 365.25 * 86400 / 12


@dataclass(frozen=True, slots=True)
class Chemistry:
    """What a cell of one chemistry delivers, loses on the shelf and loses with cycles.

    ``nominal_v`` is the mean voltage over a discharge to ``cutoff_v``; ``usable_fraction`` the
    part of the rated capacity delivered down to ``cutoff_v`` at a node's small currents;
    ``self_discharge_per_month`` the fraction of the capacity lost per month at
    ``reference_c``, doubling every ``doubling_c`` degrees; ``fade_per_cycle`` the fraction
    of capacity lost per equivalent full cycle (0 for primaries, which cannot be recharged).
    ``sources`` maps each table of the profile to where its numbers come from.
    """

    name: str
    description: str
    nominal_v: float
    cutoff_v: float
    usable_fraction: float
    self_discharge_per_month: float
    reference_c: float
    doubling_c: float
    rechargeable: bool
    fade_per_cycle: float
    sources: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nominal_v) and self.nominal_v > 0):
            raise ChemistryError(f"{self.name}: nominal_v must be > 0")
        if not 0 <= self.cutoff_v < self.nominal_v:
            raise ChemistryError(f"{self.name}: cutoff_v must be in [0, nominal_v)")
        if not 0 < self.usable_fraction <= 1:
            raise ChemistryError(f"{self.name}: usable_fraction must be in (0, 1]")
        if not 0 <= self.self_discharge_per_month < 1:
            raise ChemistryError(f"{self.name}: self_discharge_per_month must be in [0, 1)")
        if not self.doubling_c > 0:
            raise ChemistryError(f"{self.name}: doubling_c must be > 0")
        if not 0 <= self.fade_per_cycle < 1:
            raise ChemistryError(f"{self.name}: fade_per_cycle must be in [0, 1)")
        if self.fade_per_cycle and not self.rechargeable:
            raise ChemistryError(f"{self.name}: a primary cell has no cycles to fade with")

    @property
    def ideal(self) -> bool:
        return self.name == IDEAL

    def usable_j(self, capacity_mah: float) -> float:
        """Energy a full cell of ``capacity_mah`` delivers down to the cutoff voltage."""
        return capacity_mah * 3.6 * self.nominal_v * self.usable_fraction

    def self_discharge_per_s(self, temperature_c: FloatArray | float) -> FloatArray:
        """Fraction of the capacity lost per second at ``temperature_c`` (any shape)."""
        temp = np.asarray(temperature_c, dtype=np.float64)
        factor = np.exp2((temp - self.reference_c) / self.doubling_c)
        return np.asarray(self.self_discharge_per_month * factor / MONTH_S, dtype=np.float64)

    def fade(self, cycles: FloatArray | float) -> FloatArray:
        """Capacity left, as a fraction of the new cell's, after ``cycles`` full cycles."""
        used = np.asarray(cycles, dtype=np.float64)
        return np.asarray(np.maximum(0.0, 1.0 - self.fade_per_cycle * used), dtype=np.float64)


def ideal(profile: Profile) -> Chemistry:
    """The paper's battery: the profile's mAh at its voltage, all usable, nothing lost."""
    return Chemistry(
        name=IDEAL,
        description=f"ideal {profile.capacity_mah:g} mAh at {profile.voltage_v:g} V (the paper's)",
        nominal_v=profile.voltage_v,
        cutoff_v=0.0,
        usable_fraction=1.0,
        self_discharge_per_month=0.0,
        reference_c=20.0,
        doubling_c=10.0,
        rechargeable=True,
        fade_per_cycle=0.0,
        sources=(("battery", "the hardware profile"),),
    )


def parse_chemistry(data: dict[str, object], label: str) -> Chemistry:
    """A :class:`Chemistry` from parsed TOML; ``label`` names the file in errors."""
    top = SourcedTable(label, "", data, ChemistryError)
    voltage = top.sub("voltage")
    capacity = top.sub("capacity")
    shelf = top.sub("self_discharge")
    cycles = top.sub("cycles")
    sources = tuple((t.section, t.source()) for t in (voltage, capacity, shelf, cycles))
    try:
        chemistry = Chemistry(
            name=top.text("name"),
            description=top.text("description", default=""),
            nominal_v=voltage.number("nominal_v", strict=True),
            cutoff_v=voltage.number("cutoff_v"),
            usable_fraction=capacity.number("usable_fraction", strict=True, maximum=1.0),
            self_discharge_per_month=shelf.number("per_month", maximum=0.999),
            reference_c=shelf.number("reference_c", minimum=-273.15),
            doubling_c=shelf.number("doubling_c", strict=True),
            rechargeable=cycles.flag("rechargeable"),
            fade_per_cycle=cycles.number("fade_per_cycle", maximum=0.999),
            sources=sources,
        )
    except ChemistryError as exc:
        raise ChemistryError(f"{label}: {exc}") from exc
    for table in (voltage, capacity, shelf, cycles, top):
        table.done()
    return chemistry


def load_chemistry(name_or_path: str | Path, profile: Profile | None = None) -> Chemistry:
    """A shipped chemistry (:data:`CHEMISTRIES`), ``ideal`` (needs ``profile``) or a file."""
    if str(name_or_path) == IDEAL:
        if profile is None:
            raise ChemistryError("the ideal battery is the hardware profile's: give the profile")
        return ideal(profile)
    label, data = read_toml(
        name_or_path, "device.energy.profiles.batteries", CHEMISTRIES, ChemistryError, "battery"
    )
    return parse_chemistry(data, label)


@dataclass(frozen=True, slots=True)
class Temperature:
    """A constant temperature (``trace`` None) or a periodic trace of ``temp_c``."""

    constant_c: float = 20.0
    trace: Trace | None = None

    def at(self, t_s: FloatArray | float) -> FloatArray:
        if self.trace is None:
            return np.full(np.shape(t_s), self.constant_c, dtype=np.float64)
        return self.trace.at(t_s)

    def describe(self) -> str:
        if self.trace is None:
            return f"{self.constant_c:g} C"
        return f"trace {self.trace.name} (mean {self.trace.mean():.3g} C)"

    @classmethod
    def parse(cls, text: str) -> Temperature:
        """A number (degrees C) or the path of a trace CSV (``time_s``/``time``, ``temp_c``)."""
        try:
            value = float(text)
        except ValueError:
            return cls(trace=load_trace(text, ("temp_c",), minimum=-273.15))
        if not math.isfinite(value) or value < -273.15:
            raise TraceError(f"temperature {text!r} must be a finite number of degrees C")
        return cls(constant_c=value)


def mean_self_discharge_w(chemistry: Chemistry, usable_j: float, temperature: Temperature) -> float:
    """Mean power lost to self-discharge at ``temperature`` (over one period of a trace)."""
    if chemistry.self_discharge_per_month == 0:
        return 0.0
    if temperature.trace is None:
        return float(chemistry.self_discharge_per_s(temperature.constant_c)) * usable_j
    trace = temperature.trace
    edges = np.append(trace.times_s, trace.times_s[0] + trace.period_s)
    rates = chemistry.self_discharge_per_s(trace.values)
    return float(np.sum(rates * np.diff(edges)) / trace.period_s) * usable_j


__all__ = [
    "CHEMISTRIES",
    "IDEAL",
    "MONTH_S",
    "Chemistry",
    "Temperature",
    "ideal",
    "load_chemistry",
    "mean_self_discharge_w",
    "parse_chemistry",
]
