"""Energy and lifetime of a VEGA (or other) continual-learning node: pure, analytical.

- :func:`load_profile` reads a hardware profile (``vega``, ``stm32l4`` or a TOML file);
- :func:`event_cost` charges one learning event, per layer and phase, from the same AR1* plan the
  node trains (:func:`device.learning.ar1.plan_event`); :func:`inference_cost` charges classifying
  samples
  (frozen stage plus the adaptive stage's forward pass);
- :func:`memory_map` places weights, activations and LRs on the device's memories;
- :class:`Battery` and :class:`LifetimeEstimator` follow the energy over simulated time.

The equations and every profile number are in ``docs/energy-model.md``.
"""

from device.energy.battery import Battery
from device.energy.config import CostConfig
from device.energy.cost import (
    FROZEN_PHASE,
    EventCost,
    InferenceCost,
    LayerCost,
    MemoryTraffic,
    PhaseCost,
    event_cost,
    inference_cost,
)
from device.energy.errors import BatteryStateError, CostConfigError, EnergyError, ProfileError
from device.energy.lifetime import (
    Duty,
    LifetimeEstimator,
    average_power_w,
    lifetime_hours,
    max_events_per_hour,
)
from device.energy.memory import (
    MemoryMap,
    MemoryPlacement,
    RegionUse,
    item_sizes,
    lr_elements,
    memory_map,
)
from device.energy.plan import PlanRow, attach_accuracy, summary_accuracy, sweep
from device.energy.profile import (
    BUILTIN,
    PHASES,
    PRIMITIVES,
    MemoryRegion,
    Profile,
    Rates,
    load_profile,
    parse_profile,
)
from device.energy.radio import DOWNLINK_J_PER_BYTE, downlink_energy_j

__all__ = [
    "BUILTIN",
    "DOWNLINK_J_PER_BYTE",
    "FROZEN_PHASE",
    "PHASES",
    "PRIMITIVES",
    "Battery",
    "BatteryStateError",
    "CostConfig",
    "CostConfigError",
    "Duty",
    "EnergyError",
    "EventCost",
    "InferenceCost",
    "LayerCost",
    "LifetimeEstimator",
    "MemoryMap",
    "MemoryPlacement",
    "MemoryRegion",
    "MemoryTraffic",
    "PhaseCost",
    "PlanRow",
    "Profile",
    "ProfileError",
    "Rates",
    "RegionUse",
    "attach_accuracy",
    "average_power_w",
    "downlink_energy_j",
    "event_cost",
    "inference_cost",
    "item_sizes",
    "lifetime_hours",
    "load_profile",
    "lr_elements",
    "max_events_per_hour",
    "memory_map",
    "parse_profile",
    "summary_accuracy",
    "sweep",
]
