"""Per-layer work of a model: the common currency of layers, model tools and the energy model.

It imports nothing from the project, so :mod:`device.nn` and :mod:`device.model` both build on it.

Shapes are per sample, channels first (``(C, H, W)`` for feature maps, ``(F,)`` for vectors).
MACs count multiply-accumulates of the forward pass for one sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

LayerKind = Literal[
    "conv",  # dense convolution (k x k, groups = 1), including the first layer
    "pointwise",  # 1x1 convolution
    "depthwise",  # k x k convolution with groups == channels
    "linear",  # fully connected (Gemm / MatMul)
    "batchnorm",
    "relu",
    "pool",  # average or global average pooling
    "flatten",
    "add",
]

KINDS: frozenset[str] = frozenset(
    ["conv", "pointwise", "depthwise", "linear", "batchnorm", "relu", "pool", "flatten", "add"]
)


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """One layer: what it is, how big, how much work, and whether the device trains it."""

    name: str
    kind: LayerKind
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int  # forward multiply-accumulates per sample
    adaptive: bool  # trained on the device (after the latent-replay layer)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"layer {self.name!r}: unknown kind {self.kind!r}")
        if self.params < 0 or self.macs < 0:
            raise ValueError(f"layer {self.name!r}: params and macs must be >= 0")
        if any(d <= 0 for d in (*self.in_shape, *self.out_shape)):
            raise ValueError(f"layer {self.name!r}: shape dimensions must be positive")


def total_macs(layers: Sequence[LayerInfo], *, adaptive: bool | None = None) -> int:
    """Sum of forward MACs per sample, over all layers or only the adaptive / frozen ones."""
    return sum(layer.macs for layer in layers if adaptive is None or layer.adaptive == adaptive)


__all__ = ["KINDS", "LayerInfo", "LayerKind", "total_macs"]
