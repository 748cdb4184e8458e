"""Latency and energy of one learning event, per layer and phase (pure arithmetic).

For every layer and phase: cycles = MACs / (MAC/cycle of that primitive and phase) x (1 + tiling
overhead); seconds = cycles / f; joules = P_active x seconds. The frozen stage runs once per new
sample at the profile's INT8 MAC/cycle. The adaptive stage runs forward, backward-error and
backward-gradient passes over every latent the AR1* plan trains (:func:`device.ar1.plan_event`);
the first trained layer needs no backward-error pass. LR memory traffic costs bytes x the energy
per byte of the memory holding the LRs. Sleep between events is the battery's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from device.ar1 import EventPlan, plan_event
from device.energy.config import CostConfig
from device.energy.errors import CostConfigError
from device.energy.memory import MemoryMap, lr_elements, memory_map
from device.energy.profile import PHASES, Profile
from device.layerinfo import LayerInfo

FROZEN_PHASE = "forward_int8"


@dataclass(frozen=True, slots=True)
class PhaseCost:
    """Work of one layer in one phase over a whole event."""

    macs: int
    cycles: float
    seconds: float
    joules: float

    def as_dict(self) -> dict[str, float]:
        return {"macs": self.macs, "cycles": self.cycles, "s": self.seconds, "j": self.joules}


@dataclass(frozen=True, slots=True)
class LayerCost:
    """One layer over one event; ``phases`` is empty for layers the model does not charge."""

    name: str
    kind: str
    adaptive: bool
    macs_per_sample: int
    phases: Mapping[str, PhaseCost]

    @property
    def seconds(self) -> float:
        return math.fsum(p.seconds for p in self.phases.values())

    @property
    def joules(self) -> float:
        return math.fsum(p.joules for p in self.phases.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "stage": "adaptive" if self.adaptive else "frozen",
            "macs_per_sample": self.macs_per_sample,
            "phases": {name: phase.as_dict() for name, phase in self.phases.items()},
            "s": self.seconds,
            "j": self.joules,
        }


@dataclass(frozen=True, slots=True)
class MemoryTraffic:
    """LR memory bytes moved in one event and their energy."""

    lr_bytes: int  # one stored LR
    bytes_read: int  # replays read into the mini-batches, every epoch
    bytes_written: int  # new LRs stored after the event
    region: str | None  # where the LR memory lives (None: it does not fit)
    joules: float

    def as_dict(self) -> dict[str, object]:
        return {
            "lr_bytes": self.lr_bytes,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "region": self.region,
            "j": self.joules,
        }


@dataclass(frozen=True, slots=True)
class EventCost:
    """Latency and energy of one learning event on one profile."""

    profile: str
    plan: EventPlan
    layers: tuple[LayerCost, ...]
    traffic: MemoryTraffic
    memory: MemoryMap

    def _sum(self, adaptive: bool, field: str) -> float:
        chosen = (layer for layer in self.layers if layer.adaptive == adaptive)
        return math.fsum(getattr(layer, field) for layer in chosen)

    @property
    def latency_s(self) -> dict[str, float]:
        frozen, adaptive = self._sum(False, "seconds"), self._sum(True, "seconds")
        return {"frozen": frozen, "adaptive": adaptive, "total": frozen + adaptive}

    @property
    def energy_j(self) -> dict[str, float]:
        frozen, adaptive = self._sum(False, "joules"), self._sum(True, "joules")
        memory = self.traffic.joules
        total = frozen + adaptive + memory
        return {"frozen": frozen, "adaptive": adaptive, "memory": memory, "total": total}

    def as_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "plan": {
                "n_new": self.plan.n_new,
                "epochs": self.plan.epochs,
                "minibatches": self.plan.minibatches,
                "replays_per_mb": self.plan.replays_per_mb,
                "samples_trained": self.plan.samples_trained,
            },
            "traffic": self.traffic.as_dict(),
        }


def _phase(macs: int, mac_per_cycle: float, profile: Profile) -> PhaseCost:
    cycles = macs / mac_per_cycle * (1.0 + profile.tiling_overhead)
    seconds = cycles / profile.freq_hz
    return PhaseCost(macs=macs, cycles=cycles, seconds=seconds, joules=profile.active_w * seconds)


def event_cost(
    layers: Sequence[LayerInfo],
    profile: Profile,
    config: CostConfig,
    *,
    n_new: int,
    n_replay: int,
    n_written: int | None = None,
) -> EventCost:
    """Cost of one event training ``n_new`` new latents with ``n_replay`` LRs in memory.

    ``n_written`` is how many new LRs the event stores (default: ``min(n_new, lr_size)``, the
    first event's and the worst case). Layers are in forward order; ``adaptive`` marks the
    trained ones.
    """
    if n_new < 0 or n_replay < 0:
        raise CostConfigError(f"n_new ({n_new}) and n_replay ({n_replay}) must be >= 0")
    written = min(n_new, config.lr_size) if n_written is None else n_written
    if written < 0:
        raise CostConfigError(f"n_written must be >= 0, got {written}")
    plan = plan_event(
        n_new, n_replay, mb_size=config.mb_size, new_per_mb=config.new_per_mb, epochs=config.epochs
    )
    costs: list[LayerCost] = []
    first_trained = True
    for layer in layers:
        phases: dict[str, PhaseCost] = {}
        rates = profile.rates(layer.kind)
        if not layer.adaptive:
            phases[FROZEN_PHASE] = _phase(layer.macs * n_new, profile.int8_mac_per_cycle, profile)
        elif rates is not None:
            for phase in PHASES:
                if phase == "backward_error" and first_trained:
                    continue
                macs = layer.macs * plan.samples_trained
                phases[phase] = _phase(macs, rates.of(phase), profile)
            first_trained = False
        costs.append(LayerCost(layer.name, layer.kind, layer.adaptive, layer.macs, phases))
    mmap = memory_map(layers, profile, config)
    region = mmap.region_of("lr_memory")
    regions = {r.name: r for r in profile.memory}
    if region is not None:
        pj = regions[region].pj_per_byte
    else:  # charge at the dearest memory allowed to hold LRs
        pj = max((r.pj_per_byte for r in profile.memory if "lr_memory" in r.holds), default=0.0)
    lr_bytes = config.lr_bytes(lr_elements(layers))
    read = plan.epochs * plan.minibatches * plan.replays_per_mb * lr_bytes
    wrote = written * lr_bytes
    traffic = MemoryTraffic(lr_bytes, read, wrote, region, (read + wrote) * pj * 1e-12)
    return EventCost(profile.name, plan, tuple(costs), traffic, mmap)


__all__ = ["FROZEN_PHASE", "EventCost", "LayerCost", "MemoryTraffic", "PhaseCost", "event_cost"]
