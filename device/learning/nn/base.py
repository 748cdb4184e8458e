"""The layer contract of the numpy adaptive stage, and the serialisable description of a layer.

Every layer keeps its forward and backward side by side (micrograd style): ``forward(x, train)``
caches what ``backward`` needs when ``train`` is true; ``backward(grad_out)`` fills ``grads`` for
the trainable tensors and returns the gradient with respect to the input (or ``None`` when asked
not to compute it: the first trainable layer needs no backward-error pass).

Arrays are float32, channels first: ``[N, C, H, W]`` feature maps, ``[N, F]`` vectors. The
computation runs in the dtype of the layer's parameters (``astype`` switches it, e.g. to float64
for finite-difference tests).

A layer never keeps a reference to the array its ``forward`` returns, nor to the input gradient
its ``backward`` returns (it keeps its input, or what it derives from it). So when a layer's
result is a new array (not a view of its argument: :attr:`Layer.RETURNS_VIEW`), the next layer
is its only user, and a layer that can work in place (:attr:`Layer.IN_PLACE`) may overwrite it;
:class:`device.learning.nn.Sequential` tracks this. Arrays passed in from outside are never
overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from device.learning.layers import LayerKind

AttrValue = int | float | bool

OPS: frozenset[str] = frozenset(
    [
        "conv",
        "conv1d",
        "pointwise",
        "depthwise",
        "linear",
        "batchnorm",
        "relu",
        "relu6",
        "avgpool",
        "avgpool1d",
        "globalavgpool",
        "flatten",
    ]
)


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """What is needed to rebuild a layer (its weights live elsewhere): name, op and attributes."""

    name: str
    op: str
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"layer name {self.name!r} must be non-empty [A-Za-z0-9_-]")
        if self.op not in OPS:
            raise ValueError(f"layer {self.name!r}: unknown op {self.op!r} (known: {sorted(OPS)})")
        for key, value in self.attrs.items():
            if not isinstance(value, int | float | bool):
                raise ValueError(f"layer {self.name!r}: attribute {key!r}={value!r} not a number")
        object.__setattr__(self, "attrs", dict(self.attrs))


class Layer:
    """Base class: no parameters, identity shape. Subclasses override what they need."""

    op: ClassVar[str]
    kind: ClassVar[LayerKind]
    #: Attributes in which a training forward keeps what its backward needs; :meth:`release`
    #: drops them.
    CACHES: ClassVar[tuple[str, ...]] = ()
    #: ``forward`` and ``backward`` accept ``inplace=True``: they may then overwrite their
    #: argument (the input, or the output gradient) and return it.
    IN_PLACE: ClassVar[bool] = False
    #: ``forward`` and ``backward`` may return a view of their argument instead of a new array.
    RETURNS_VIEW: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.trainable: tuple[str, ...] = ()

    # -- description -----------------------------------------------------------------------
    def attrs(self) -> dict[str, AttrValue]:
        """Constructor attributes (everything but the weights)."""
        return {}

    def spec(self) -> LayerSpec:
        return LayerSpec(self.name, self.op, self.attrs())

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape for a per-sample input shape."""
        return in_shape

    def macs(self, in_shape: tuple[int, ...]) -> int:
        """Forward multiply-accumulates per sample."""
        return 0

    def num_params(self) -> int:
        return sum(int(self.params[k].size) for k in self.trainable)

    def astype(self, dtype: type[np.floating[Any]] | np.dtype[Any]) -> None:
        """Convert parameters (and so the computation) to ``dtype``."""
        for key, value in self.params.items():
            self.params[key] = value.astype(dtype)

    # -- computation -----------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def release(self) -> None:
        """Drop what the last training forward kept for its backward.

        A node between two learning events then holds its weights only: in a fleet of thousands
        of nodes the activations of each one's last mini-batch would cost more than its weights.
        """
        for attr in self.CACHES:
            setattr(self, attr, None)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.attrs().items())
        return f"{type(self).__name__}({self.name!r}, {args})"


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """He (Kaiming) normal initialisation, float32."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


__all__ = ["OPS", "AttrValue", "Layer", "LayerSpec", "he_normal"]
