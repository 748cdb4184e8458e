"""Per-layer work of a model: the common currency of layers, model tools and the energy model.

It imports nothing from the project, so :mod:`device.learning.nn` and :mod:`device.model` both
build on it.

Shapes are per sample, channels first (``(C, H, W)`` for feature maps, ``(F,)`` for vectors).
MACs count multiply-accumulates of the forward pass for one sample.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

LayerKind = Literal[
    "conv",  # dense convolution (k x k or k-wide 1-D, groups = 1), including the first layer
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


def _number(name: str) -> int | None:
    digits = re.search(r"(\d+)$", name)
    return int(digits.group(1)) if digits else None


def lr_layer_of(layers: Sequence[LayerInfo]) -> int:
    """The LR layer's number: the first adaptive layer's (trailing digits of its name, else its
    index in ``layers``); ``len(layers)`` when no layer is adaptive.

    MobileNet-V1's ``fc27`` is 27, the default model's ``dw3`` is 3: the paper's convention that
    LR layer ``l`` stores the input of layer ``l`` and trains layers ``l`` onwards.
    """
    for index, layer in enumerate(layers):
        if layer.adaptive:
            number = _number(layer.name)
            return index if number is None else number
    return len(layers)


def with_lr_layer(layers: Sequence[LayerInfo], lr_layer: int) -> list[LayerInfo]:
    """``layers`` re-split at LR layer ``lr_layer`` (numbered as :func:`lr_layer_of` reads it):
    the layer of that number and every later one adaptive, every earlier one frozen.

    A layer whose name ends in that number is chosen first; else the unnumbered layer at that
    index. ``ValueError`` names the numbers there are when no layer has it.
    """
    chosen = next((i for i, layer in enumerate(layers) if _number(layer.name) == lr_layer), None)
    if chosen is None and 0 <= lr_layer < len(layers) and _number(layers[lr_layer].name) is None:
        chosen = lr_layer
    if chosen is None:
        numbers = sorted({n for layer in layers if (n := _number(layer.name)) is not None})
        raise ValueError(f"no layer numbered {lr_layer!r}; the layers are numbered {numbers}")
    return [replace(layer, adaptive=i >= chosen) for i, layer in enumerate(layers)]


__all__ = ["KINDS", "LayerInfo", "LayerKind", "lr_layer_of", "total_macs", "with_lr_layer"]
