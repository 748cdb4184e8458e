"""Energy and lifetime of a VEGA (or other) continual-learning node: pure, analytical.

- :func:`load_profile` reads a hardware profile (``vega``, ``stm32l4`` or a TOML file);
- :func:`event_cost` charges one learning event, per layer and phase, from the same AR1* plan the
  node trains (:func:`device.learning.ar1.plan_event`); :func:`inference_cost` charges classifying
  samples
  (frozen stage plus the adaptive stage's forward pass);
- :func:`memory_map` places weights, activations and LRs on the device's memories;
- :class:`Battery` and :class:`LifetimeEstimator` follow the energy over simulated time;
- :func:`load_chemistry` (battery chemistries), :func:`load_radio` and :func:`price_traffic`
  (radios), :func:`budget` (compute + radio + self-discharge), :func:`parse_harvest` and
  :func:`simulate` (harvesting, simulated forward), :class:`Policy` and :func:`run_policy`
  (energy-aware learning).

The equations and every profile number are in ``docs/energy-model.md``.
"""

from device.energy.battery import Battery
from device.energy.budget import Budget, budget
from device.energy.chemistry import (
    CHEMISTRIES,
    Chemistry,
    Temperature,
    ideal,
    load_chemistry,
)
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
from device.energy.downlink import DOWNLINK_J_PER_BYTE, downlink_energy_j
from device.energy.errors import (
    BatteryStateError,
    ChemistryError,
    CostConfigError,
    EnergyError,
    PolicyError,
    ProfileError,
    RadioError,
    TraceError,
)
from device.energy.harvest import (
    ClearSky,
    ConstantSource,
    Harvester,
    Panel,
    SolarTrace,
    parse_harvest,
)
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
from device.energy.node_power import NodePower, load_node_power
from device.energy.plan import PlanRow, attach_accuracy, summary_accuracy, sweep
from device.energy.policy import NodeLoad, Policy, PolicyRun, reduced_config, run_policy
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
from device.energy.radio import (
    NO_RADIO,
    TELEMETRY_BYTES,
    Radio,
    RadioCost,
    RadioProblem,
    Traffic,
    price_traffic,
)
from device.energy.radio_profile import RADIOS, load_radio
from device.energy.simulate import Simulation, Storage, simulate

__all__ = [
    "BUILTIN",
    "CHEMISTRIES",
    "DOWNLINK_J_PER_BYTE",
    "FROZEN_PHASE",
    "NO_RADIO",
    "PHASES",
    "PRIMITIVES",
    "RADIOS",
    "TELEMETRY_BYTES",
    "Battery",
    "BatteryStateError",
    "Budget",
    "Chemistry",
    "ChemistryError",
    "ClearSky",
    "ConstantSource",
    "CostConfig",
    "CostConfigError",
    "Duty",
    "EnergyError",
    "EventCost",
    "Harvester",
    "InferenceCost",
    "LayerCost",
    "LifetimeEstimator",
    "MemoryMap",
    "MemoryPlacement",
    "MemoryRegion",
    "MemoryTraffic",
    "NodeLoad",
    "NodePower",
    "Panel",
    "PhaseCost",
    "PlanRow",
    "Policy",
    "PolicyError",
    "PolicyRun",
    "Profile",
    "ProfileError",
    "Radio",
    "RadioCost",
    "RadioError",
    "RadioProblem",
    "Rates",
    "RegionUse",
    "Simulation",
    "SolarTrace",
    "Storage",
    "Temperature",
    "TraceError",
    "Traffic",
    "attach_accuracy",
    "average_power_w",
    "budget",
    "downlink_energy_j",
    "event_cost",
    "ideal",
    "inference_cost",
    "item_sizes",
    "lifetime_hours",
    "load_chemistry",
    "load_node_power",
    "load_profile",
    "load_radio",
    "lr_elements",
    "max_events_per_hour",
    "memory_map",
    "parse_harvest",
    "parse_profile",
    "price_traffic",
    "reduced_config",
    "run_policy",
    "simulate",
    "summary_accuracy",
    "sweep",
]
