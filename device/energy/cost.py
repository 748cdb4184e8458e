"""Latency and energy of a learning event or an inference, per layer and phase (pure arithmetic).

For every layer and phase: cycles = MACs / (MAC/cycle of that primitive and phase) x (1 + tiling
overhead); seconds = cycles / f; joules = P_active x seconds. The frozen stage runs once per new
sample at the profile's INT8 MAC/cycle. The adaptive stage runs forward, backward-error and
backward-gradient passes over every latent the AR1* plan trains
(:func:`device.learning.ar1.plan_event`),
on every trained layer: the first trained layer's input error is not needed, but the paper's
measured runtime computes it (its Table IV steps show it, docs/energy-model.md "Calibration"),
and the model charges what the device does. LR memory traffic costs bytes x the energy
per byte of the memory holding the LRs. Sleep between events is the battery's business.

An inference (:func:`inference_cost`) is the same frozen stage once per sample plus the adaptive
stage's forward pass only, with the same per-layer arithmetic; it touches no LR memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from device.energy.config import CostConfig
from device.energy.errors import CostConfigError
from device.energy.memory import MemoryMap, lr_elements, memory_map
from device.energy.profile import PHASES, Profile
from device.learning.ar1 import EventPlan, plan_event
from device.learning.layers import LayerInfo, with_lr_layer

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


def _stage_sum(layers: Sequence[LayerCost], adaptive: bool, field: str) -> float:
    chosen = (layer for layer in layers if layer.adaptive == adaptive)
    return math.fsum(getattr(layer, field) for layer in chosen)


def _stages(layers: Sequence[LayerCost], field: str) -> dict[str, float]:
    """``{"frozen", "adaptive", "total"}`` sums of ``field`` (``seconds`` or ``joules``)."""
    frozen, adaptive = _stage_sum(layers, False, field), _stage_sum(layers, True, field)
    return {"frozen": frozen, "adaptive": adaptive, "total": frozen + adaptive}


@dataclass(frozen=True, slots=True)
class EventCost:
    """Latency and energy of one learning event on one profile."""

    profile: str
    plan: EventPlan
    layers: tuple[LayerCost, ...]
    traffic: MemoryTraffic
    memory: MemoryMap

    @property
    def latency_s(self) -> dict[str, float]:
        return _stages(self.layers, "seconds")

    @property
    def energy_j(self) -> dict[str, float]:
        stages = _stages(self.layers, "joules")
        memory = self.traffic.joules
        total = stages["frozen"] + stages["adaptive"] + memory
        return {
            "frozen": stages["frozen"],
            "adaptive": stages["adaptive"],
            "memory": memory,
            "total": total,
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "plan": {
                "n_new": self.plan.n_new,
                "epochs": self.plan.epochs,
                "minibatches": self.plan.minibatches,
                "new_per_mb": list(self.plan.new_sizes),
                "replays_per_mb": list(self.plan.replay_sizes),
                "samples_trained": self.plan.samples_trained,
            },
            "traffic": self.traffic.as_dict(),
        }


def _phase(macs: int, mac_per_cycle: float, profile: Profile) -> PhaseCost:
    cycles = macs / mac_per_cycle * (1.0 + profile.tiling_overhead)
    seconds = cycles / profile.freq_hz
    return PhaseCost(macs=macs, cycles=cycles, seconds=seconds, joules=profile.active_w * seconds)


def _layer_costs(
    layers: Sequence[LayerInfo],
    profile: Profile,
    *,
    n_frozen: int,
    n_adaptive: int,
    phases: Sequence[str],
) -> tuple[LayerCost, ...]:
    """Each layer's cost: a frozen layer runs INT8 forward over ``n_frozen`` samples, an adaptive
    one runs ``phases`` over ``n_adaptive`` samples (all of them, the first trained layer's
    ``backward_error`` included, as the measured runtime does); kinds without FP32 rates
    (pooling, ReLU, ...) cost nothing."""
    costs: list[LayerCost] = []
    for layer in layers:
        charged: dict[str, PhaseCost] = {}
        rates = profile.rates(layer.kind)
        if not layer.adaptive:
            charged[FROZEN_PHASE] = _phase(
                layer.macs * n_frozen, profile.int8_mac_per_cycle, profile
            )
        elif rates is not None:
            for phase in phases:
                charged[phase] = _phase(layer.macs * n_adaptive, rates.of(phase), profile)
        costs.append(LayerCost(layer.name, layer.kind, layer.adaptive, layer.macs, charged))
    return tuple(costs)


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
    costs = _layer_costs(
        layers, profile, n_frozen=n_new, n_adaptive=plan.samples_trained, phases=PHASES
    )
    mmap = memory_map(layers, profile, config)
    region = mmap.region_of("lr_memory")
    regions = {r.name: r for r in profile.memory}
    if region is not None:
        pj = regions[region].pj_per_byte
    else:  # charge at the dearest memory allowed to hold LRs
        pj = max((r.pj_per_byte for r in profile.memory if "lr_memory" in r.holds), default=0.0)
    lr_bytes = config.lr_bytes(lr_elements(layers))
    read = plan.epochs * plan.replays_per_epoch * lr_bytes
    wrote = written * lr_bytes
    traffic = MemoryTraffic(lr_bytes, read, wrote, region, (read + wrote) * pj * 1e-12)
    return EventCost(profile.name, plan, costs, traffic, mmap)


@dataclass(frozen=True, slots=True)
class InferenceCost:
    """Latency and energy of classifying ``n_samples`` samples on one profile.

    ``layers`` holds each layer's cost over all the samples (frozen layers: phase
    :data:`FROZEN_PHASE`; adaptive layers: ``forward`` only). ``latency_s`` and ``energy_j`` are
    ``{"frozen", "adaptive", "total"}``; :meth:`per_sample` is the cost of one sample (the cost
    is linear in the number of samples).
    """

    profile: str
    n_samples: int
    layers: tuple[LayerCost, ...]

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise CostConfigError(f"n_samples must be >= 1, got {self.n_samples!r}")

    @property
    def latency_s(self) -> dict[str, float]:
        return _stages(self.layers, "seconds")

    @property
    def energy_j(self) -> dict[str, float]:
        return _stages(self.layers, "joules")

    def per_sample(self) -> InferenceCost:
        """The cost of one of the samples: every layer's MACs, cycles, seconds and joules / n."""
        n = self.n_samples
        layers = tuple(
            LayerCost(
                layer.name,
                layer.kind,
                layer.adaptive,
                layer.macs_per_sample,
                {
                    name: PhaseCost(p.macs // n, p.cycles / n, p.seconds / n, p.joules / n)
                    for name, p in layer.phases.items()
                },
            )
            for layer in self.layers
        )
        return InferenceCost(self.profile, 1, layers)

    def as_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "n_samples": self.n_samples,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
        }


def inference_cost(
    layers: Sequence[LayerInfo], profile: Profile, n_samples: int, *, lr_layer: int | None = None
) -> InferenceCost:
    """Cost of classifying ``n_samples`` (>= 1) samples: the frozen stage at the profile's INT8
    MAC/cycle, exactly as an event's new samples, plus the adaptive stage's FP32 ``forward`` pass
    (same tiling overhead), all at ``P_active``. No LR memory traffic.

    The frozen/adaptive split is the layers' ``adaptive`` flags, or with ``lr_layer`` the split
    at that LR layer (:func:`device.learning.layers.with_lr_layer`: MobileNet-V1 27 = ``fc27``).
    A bad ``n_samples`` or ``lr_layer`` is a :class:`CostConfigError`.
    """
    if n_samples < 1:
        raise CostConfigError(f"n_samples must be >= 1, got {n_samples!r}")
    if lr_layer is not None:
        try:
            layers = with_lr_layer(layers, lr_layer)
        except ValueError as exc:
            raise CostConfigError(f"lr_layer: {exc}") from exc
    costs = _layer_costs(
        layers, profile, n_frozen=n_samples, n_adaptive=n_samples, phases=("forward",)
    )
    return InferenceCost(profile.name, n_samples, costs)


__all__ = [
    "FROZEN_PHASE",
    "EventCost",
    "InferenceCost",
    "LayerCost",
    "MemoryTraffic",
    "PhaseCost",
    "event_cost",
    "inference_cost",
]
