"""Where a configuration lives on the device: the memory map and its fit warnings.

Items, in the order they are placed (the most latency-critical first):

- ``activations``: the larger of the frozen stage's INT8 ping-pong buffers (largest input +
  output of a frozen layer) and the adaptive stage's FP32 training buffers for one sample (its
  input LR, every adaptive output kept for the backward pass, two error buffers);
- ``adaptive_state``: adaptive parameters in FP32, their gradients and SGD momentum (3 x 4 B);
- ``event_latents``: the new latents of one event, stored like LRs while they are trained on;
- ``lr_memory``: ``lr_size`` stored LRs, bit-packed at ``lr_bits`` (+ per-LR scale);
- ``frozen_weights``: frozen conv / linear weights at INT8 (BatchNorm folded at deployment).

Each item goes to the first region of the profile, in file order, that lists it in ``holds`` and
still has room; an item that fits nowhere is reported with a warning (it is not split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from device.energy.config import CostConfig
from device.energy.errors import CostConfigError
from device.energy.profile import Profile
from device.learning.layers import LayerInfo

WEIGHT_KINDS = frozenset({"conv", "pointwise", "depthwise", "linear"})
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MemoryPlacement:
    """One item of the memory map; ``region`` is ``None`` when it fits nowhere."""

    item: str
    bytes: int
    region: str | None


@dataclass(frozen=True, slots=True)
class RegionUse:
    name: str
    capacity_bytes: int
    used_bytes: int


@dataclass(frozen=True, slots=True)
class MemoryMap:
    placements: tuple[MemoryPlacement, ...]
    regions: tuple[RegionUse, ...]
    warnings: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return all(p.region is not None for p in self.placements)

    def region_of(self, item: str) -> str | None:
        for placement in self.placements:
            if placement.item == item:
                return placement.region
        raise KeyError(item)

    def bytes_of(self, item: str) -> int:
        for placement in self.placements:
            if placement.item == item:
                return placement.bytes
        raise KeyError(item)

    def as_dict(self) -> dict[str, object]:
        return {
            "fits": self.fits,
            "items": {p.item: {"bytes": p.bytes, "region": p.region} for p in self.placements},
            "regions": {
                r.name: {"capacity_bytes": r.capacity_bytes, "used_bytes": r.used_bytes}
                for r in self.regions
            },
            "warnings": list(self.warnings),
        }


def _elements(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def lr_elements(layers: Sequence[LayerInfo]) -> int:
    """Values in one latent replay: the input of the first adaptive layer."""
    for layer in layers:
        if layer.adaptive:
            return _elements(layer.in_shape)
    raise CostConfigError("the model has no adaptive layer: there is nothing to train")


def item_sizes(layers: Sequence[LayerInfo], config: CostConfig) -> dict[str, int]:
    """Bytes of every memory-map item, keyed by item name, in placement order."""
    adaptive = [layer for layer in layers if layer.adaptive]
    frozen = [layer for layer in layers if not layer.adaptive]
    lr_values = lr_elements(layers)
    lr_bytes = config.lr_bytes(lr_values)
    frozen_peak = max((_elements(x.in_shape) + _elements(x.out_shape) for x in frozen), default=0)
    outs = [_elements(layer.out_shape) for layer in adaptive]
    adaptive_buffers = 4 * (lr_values + sum(outs) + 2 * max([lr_values, *outs]))
    sizes = {
        "activations": max(frozen_peak, adaptive_buffers),
        "adaptive_state": 3 * 4 * sum(layer.params for layer in adaptive),
        "event_latents": config.new_per_event * lr_bytes,
        "lr_memory": config.lr_size * lr_bytes,
        "frozen_weights": sum(x.params for x in frozen if x.kind in WEIGHT_KINDS),
    }
    return sizes


def memory_map(layers: Sequence[LayerInfo], profile: Profile, config: CostConfig) -> MemoryMap:
    """Place every item of ``layers`` + ``config`` on the memories of ``profile``."""
    free = {region.name: region.capacity_bytes for region in profile.memory}
    placements: list[MemoryPlacement] = []
    warnings: list[str] = []
    for item, size in item_sizes(layers, config).items():
        allowed = [region for region in profile.memory if item in region.holds]
        target = next((r.name for r in allowed if free[r.name] >= size), None)
        if target is not None:
            free[target] -= size
        else:
            where = ", ".join(f"{r.name} {free[r.name] / MIB:.2f} MiB free" for r in allowed)
            total = sum(r.capacity_bytes for r in allowed) / MIB
            warnings.append(
                f"{item} needs {size / MIB:.2f} MiB and does not fit on {profile.name}: "
                f"{where or 'no region may hold it'} (at most {total:.2f} MiB in all)"
            )
        placements.append(MemoryPlacement(item=item, bytes=size, region=target))
    regions = tuple(
        RegionUse(r.name, r.capacity_bytes, r.capacity_bytes - free[r.name]) for r in profile.memory
    )
    return MemoryMap(placements=tuple(placements), regions=regions, warnings=tuple(warnings))


__all__ = ["MemoryMap", "MemoryPlacement", "RegionUse", "item_sizes", "lr_elements", "memory_map"]
