"""Forward simulation of a node's stored energy under harvesting: energy-neutral, or when empty.

The horizon is cut in steps of ``step_s``; in step ``i`` the storage gains
``(P_harvest(t_i) - P_load - P_self(t_i)) x step`` (``P_self``: self-discharge at the step's
temperature, :mod:`device.energy.chemistry`), never holds more than its capacity (what is
harvested above full is wasted) and the node is **depleted** the first time it reaches 0. With
a rechargeable chemistry the capacity fades with the equivalent full cycles charged so far.

The whole horizon is computed at once with numpy: without the empty side the stored energy is
the cumulative sum ``S`` reflected under the (fading) capacity ``C``,
``E_i = S_i - max(0, max_{k <= i} (S_k - C_k))`` (the Skorokhod map of a one-sided barrier),
and the first ``E_i <= 0`` is the depletion, interpolated within its step. A year in 60 s
steps (525,600 of them) takes well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from device.energy.chemistry import Chemistry, Temperature
from device.energy.errors import ChemistryError, CostConfigError
from device.energy.harvest import Harvester
from device.energy.traces import FloatArray

YEAR_S = 365.0 * 86400.0


@dataclass(frozen=True, slots=True)
class Storage:
    """Where harvested energy is kept: a cell of ``chemistry`` holding ``capacity_j`` when new
    and full, starting at ``initial_soc``, at ``temperature``."""

    chemistry: Chemistry
    capacity_j: float
    temperature: Temperature = field(default_factory=Temperature)
    initial_soc: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity_j) and self.capacity_j > 0):
            raise CostConfigError(f"storage capacity must be > 0 J, got {self.capacity_j!r}")
        if not 0 <= self.initial_soc <= 1:
            raise CostConfigError(f"initial_soc must be in 0..1, got {self.initial_soc!r}")

    def check_chargeable(self, harvester: object | None) -> None:
        """A primary cell cannot store harvested energy: refuse the pair, naming the cell."""
        if harvester is not None and not self.chemistry.rechargeable:
            raise ChemistryError(
                f"{self.chemistry.name} is a primary cell: it cannot store harvested energy "
                "(use a rechargeable chemistry such as lipo)"
            )

    def self_discharge_w(self, t_s: FloatArray) -> FloatArray:
        rate = self.chemistry.self_discharge_per_s(self.temperature.at(t_s))
        return np.asarray(rate * self.capacity_j)


@dataclass(frozen=True, slots=True)
class Simulation:
    """What happened over ``horizon_s``: ``depleted_at_s`` (None: never: energy-neutral),
    the lowest and last state of charge, and the energy harvested, spent by the load, lost to
    self-discharge and wasted (harvested while full), up to the depletion."""

    horizon_s: float
    step_s: float
    depleted_at_s: float | None
    min_soc: float
    final_soc: float
    harvested_j: float
    load_j: float
    self_discharge_j: float
    wasted_j: float
    cycles: float

    @property
    def neutral(self) -> bool:
        """Never depleted over the horizon."""
        return self.depleted_at_s is None

    def describe(self) -> str:
        if self.depleted_at_s is None:
            days = self.horizon_s / 86400
            return f"energy-neutral over {days:.0f} days (min SoC {self.min_soc:.0%})"
        return f"empty after {self.depleted_at_s / 86400:.3g} days"


def simulate(
    load_w: float | FloatArray,
    storage: Storage,
    harvester: Harvester | None = None,
    *,
    horizon_s: float = YEAR_S,
    step_s: float = 60.0,
) -> Simulation:
    """Simulate ``horizon_s`` of a constant ``load_w`` (or one value per step) drawn from
    ``storage`` while ``harvester`` (None: nothing) charges it (module docstring)."""
    if not (step_s > 0 and horizon_s >= step_s):
        raise CostConfigError(f"need 0 < step_s <= horizon_s, got {step_s!r}, {horizon_s!r}")
    storage.check_chargeable(harvester)
    steps = math.ceil(horizon_s / step_s)
    t = np.arange(steps, dtype=np.float64) * step_s
    load = np.broadcast_to(np.asarray(load_w, dtype=np.float64), t.shape)
    if np.any(load < 0) or not np.all(np.isfinite(load)):
        raise CostConfigError("load_w must be finite and >= 0")
    harvest = np.zeros_like(t) if harvester is None else harvester.power_w(t)
    self_w = storage.self_discharge_w(t)
    net_j = (harvest - load - self_w) * step_s
    cap0 = storage.capacity_j
    charged = np.cumsum(np.maximum(net_j, 0.0))
    capacity = cap0 * storage.chemistry.fade(charged / cap0)
    level = storage.initial_soc * cap0 + np.cumsum(net_j)
    spill = np.maximum.accumulate(np.maximum(level - capacity, 0.0))
    stored = level - spill
    empty = np.flatnonzero(stored <= 0.0)
    end = steps
    depleted_at: float | None = None
    if empty.size:
        i = int(empty[0])
        before = storage.initial_soc * cap0 if i == 0 else float(stored[i - 1])
        drop = before - float(stored[i])
        fraction = before / drop if drop > 0 else 0.0
        depleted_at = (i + fraction) * step_s
        end = i + 1
    span = slice(0, end)
    soc = stored[span] / cap0
    wasted = float(spill[end - 1])
    return Simulation(
        horizon_s=steps * step_s,
        step_s=step_s,
        depleted_at_s=depleted_at,
        min_soc=max(0.0, float(soc.min())),
        final_soc=max(0.0, float(soc[-1])),
        harvested_j=float(np.sum(harvest[span]) * step_s),
        load_j=float(np.sum(load[span]) * step_s),
        self_discharge_j=float(np.sum(self_w[span]) * step_s),
        wasted_j=wasted,
        cycles=float(charged[end - 1] / cap0),
    )


__all__ = ["YEAR_S", "Simulation", "Storage", "simulate"]
