"""A chain of layers with one flat parameter dictionary: the adaptive stage ("head")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from device.learning.layers import LayerInfo
from device.learning.nn.base import Layer, LayerSpec
from device.learning.nn.conv import Conv2d, DepthwiseConv2d, PointwiseConv2d
from device.learning.nn.conv1d import AvgPool1d, Conv1d
from device.learning.nn.dense import BatchNorm, Flatten, Linear, ReLU, ReLU6
from device.learning.nn.pool import AvgPool, GlobalAvgPool


class Sequential:
    """Layers applied in order. Parameters are ``{"<layer>.<tensor>": array}``.

    ``forward(x [N, *in_shape], train) -> [N, *out_shape]``; ``backward(grad_out)`` fills the
    gradients and returns the gradient with respect to the input (``None`` unless
    ``need_input_grad``).
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        names = [layer.name for layer in layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate layer names: {sorted(dup)}")
        if not layers:
            raise ValueError("a Sequential needs at least one layer")
        self.layers: list[Layer] = list(layers)

    # -- computation -----------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        owned = False  # whether x is a new array of this pass that nothing else refers to
        for layer in self.layers:
            if owned and layer.IN_PLACE:
                x = layer.forward(x, train, inplace=True)  # type: ignore[call-arg]
            else:
                x = layer.forward(x, train)
                owned = owned or not layer.RETURNS_VIEW
        return x

    __call__ = forward

    def backward(self, grad: np.ndarray, need_input_grad: bool = False) -> np.ndarray | None:
        out: np.ndarray | None = grad
        last = len(self.layers) - 1
        # gradients flow back to the first trainable layer only (no backward-error pass below it)
        first = next((i for i, lay in enumerate(self.layers) if lay.trainable), last)
        stop = 0 if need_input_grad else first
        owned = False  # whether out is a new array of this pass that nothing else refers to
        for i in range(last, stop - 1, -1):
            assert out is not None
            layer, need = self.layers[i], i > stop or need_input_grad
            if owned and layer.IN_PLACE:
                out = layer.backward(out, need_input_grad=need, inplace=True)  # type: ignore[call-arg]
            else:
                out = layer.backward(out, need_input_grad=need)
                owned = owned or not layer.RETURNS_VIEW
        return out if need_input_grad else None

    def release(self) -> None:
        """Drop every layer's training caches (:meth:`Layer.release`); the weights stay."""
        for layer in self.layers:
            layer.release()

    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Class index (int64 ``[N]``) of the largest output, in batches."""
        parts = [
            self.forward(x[i : i + batch_size], train=False).argmax(axis=1)
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    # -- parameters ------------------------------------------------------------------------
    def params(self) -> dict[str, np.ndarray]:
        """Every tensor (trainable weights and frozen statistics); live arrays, not copies."""
        return {f"{lay.name}.{k}": v for lay in self.layers for k, v in lay.params.items()}

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the trainable tensors from the last ``backward``."""
        return {
            f"{lay.name}.{k}": lay.grads[k]
            for lay in self.layers
            for k in lay.trainable
            if k in lay.grads
        }

    def load_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Copy ``params`` in; the key set and every shape must match exactly."""
        own = self.params()
        missing, extra = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
        if missing or extra:
            raise ValueError(f"parameter keys differ: missing {missing}, unexpected {extra}")
        for key, value in params.items():
            arr = np.asarray(value)
            if arr.shape != own[key].shape:
                raise ValueError(f"parameter {key!r}: shape {arr.shape} != {own[key].shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"parameter {key!r}: not finite")
            np.copyto(own[key], arr, casting="same_kind")

    def astype(self, dtype: type[np.floating[Any]] | np.dtype[Any]) -> Sequential:
        for layer in self.layers:
            layer.astype(dtype)
        return self

    # -- description -----------------------------------------------------------------------
    def specs(self) -> list[LayerSpec]:
        return [layer.spec() for layer in self.layers]

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        for layer in self.layers:
            in_shape = layer.out_shape(in_shape)
        return in_shape

    def layer_infos(self, in_shape: tuple[int, ...], *, adaptive: bool = True) -> list[LayerInfo]:
        """Per-layer cost entries for a per-sample input shape."""
        infos = []
        for layer in self.layers:
            out = layer.out_shape(in_shape)
            infos.append(
                LayerInfo(
                    layer.name,
                    layer.kind,
                    in_shape,
                    out,
                    layer.num_params(),
                    layer.macs(in_shape),
                    adaptive,
                )
            )
            in_shape = out
        return infos


def build_layer(spec: LayerSpec, rng: np.random.Generator) -> Layer:
    """A freshly initialised layer from its description (``ValueError`` names bad attributes)."""
    a, name = dict(spec.attrs), spec.name

    def i(key: str, default: int | None = None) -> int:
        if key not in a:
            if default is None:
                raise ValueError(f"layer {name!r} ({spec.op}): missing attribute {key!r}")
            return default
        value = a[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"layer {name!r}: attribute {key!r}={value!r} must be an integer")
        return value

    op = spec.op
    if op == "conv":
        return Conv2d(
            i("in_channels"),
            i("out_channels"),
            i("kernel"),
            stride=i("stride", 1),
            padding=i("padding", 0),
            name=name,
            rng=rng,
        )
    if op == "conv1d":
        return Conv1d(
            i("in_channels"),
            i("out_channels"),
            i("kernel"),
            stride=i("stride", 1),
            padding=i("padding", 0),
            name=name,
            rng=rng,
        )
    if op == "avgpool1d":
        return AvgPool1d(i("kernel", 2), i("stride", i("kernel", 2)), name=name)
    if op == "pointwise":
        return PointwiseConv2d(i("in_channels"), i("out_channels"), name=name, rng=rng)
    if op == "depthwise":
        return DepthwiseConv2d(
            i("channels"),
            i("kernel", 3),
            stride=i("stride", 1),
            padding=i("padding", 1),
            name=name,
            rng=rng,
        )
    if op == "linear":
        return Linear(i("in_features"), i("out_features"), name=name, rng=rng)
    if op == "batchnorm":
        return BatchNorm(i("channels"), eps=float(a.get("eps", 1e-5)), name=name)
    if op == "avgpool":
        return AvgPool(i("kernel", 2), i("stride", i("kernel", 2)), name=name)
    simple: dict[str, type[ReLU] | type[Flatten] | type[GlobalAvgPool]] = {
        "relu": ReLU,
        "relu6": ReLU6,
        "flatten": Flatten,
        "globalavgpool": GlobalAvgPool,
    }
    return simple[op](name=name)


def build_sequential(specs: Iterable[LayerSpec], rng: np.random.Generator) -> Sequential:
    """A freshly initialised :class:`Sequential` from layer descriptions."""
    return Sequential([build_layer(s, rng) for s in specs])


__all__ = ["Sequential", "build_layer", "build_sequential"]
