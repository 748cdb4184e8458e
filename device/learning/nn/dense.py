"""Linear, activations, frozen-statistics batch normalisation and flatten."""

from __future__ import annotations

import math

import numpy as np

from device.learning.nn.base import AttrValue, Layer, he_normal


class Linear(Layer):
    """``y = x @ weight.T + bias``; x ``[N, in]`` -> y ``[N, out]``; weight ``[out, in]``.

    The weight layout is ONNX ``Gemm`` with ``transB=1`` (and PyTorch's ``nn.Linear``).
    """

    op = "linear"
    kind = "linear"
    CACHES = ("_x",)

    def __init__(
        self, in_features: int, out_features: int, *, name: str, rng: np.random.Generator
    ) -> None:
        super().__init__(name)
        if in_features < 1 or out_features < 1:
            raise ValueError(f"{name}: features must be >= 1, got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.params = {
            "weight": he_normal(rng, (out_features, in_features), in_features),
            "bias": np.zeros(out_features, np.float32),
        }
        self.trainable = ("weight", "bias")
        self._x: np.ndarray | None = None

    def attrs(self) -> dict[str, AttrValue]:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (self.in_features,):
            raise ValueError(f"{self.name}: expects input ({self.in_features},), got {in_shape}")
        return (self.out_features,)

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return self.in_features * self.out_features

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if train:
            self._x = x
        y: np.ndarray = x @ self.params["weight"].T + self.params["bias"]
        return y

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        x = self._x
        if x is None:
            raise RuntimeError(f"{self.name}: backward without a training forward")
        self.grads = {"weight": grad.T @ x, "bias": grad.sum(axis=0)}
        return grad @ self.params["weight"] if need_input_grad else None


class ReLU(Layer):
    """``max(x, 0)``, any shape. In place on request (:attr:`Layer.IN_PLACE`)."""

    op = "relu"
    kind = "relu"
    CACHES = ("_mask",)
    IN_PLACE = True

    def __init__(self, *, name: str) -> None:
        super().__init__(name)
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool, *, inplace: bool = False) -> np.ndarray:
        mask: np.ndarray = x > 0
        if train:
            # kept as 0.0 / 1.0 in x's dtype: the products are the same as with the boolean
            # mask, and numpy multiplies two float arrays faster than a float and a bool one
            mask = self._mask = mask.astype(x.dtype)
        if inplace:
            np.multiply(x, mask, out=x)
            return x
        return x * mask

    def backward(
        self, grad: np.ndarray, need_input_grad: bool = True, *, inplace: bool = False
    ) -> np.ndarray | None:
        mask = self._mask
        if mask is None:
            raise RuntimeError(f"{self.name}: backward without a training forward")
        if not need_input_grad:
            return None
        if mask.dtype != grad.dtype:
            mask = mask.astype(grad.dtype)
        if inplace:
            np.multiply(grad, mask, out=grad)
            return grad
        return grad * mask


class ReLU6(ReLU):
    """``min(max(x, 0), 6)``, any shape (ONNX ``Clip(0, 6)``)."""

    op = "relu6"

    def forward(self, x: np.ndarray, train: bool, *, inplace: bool = False) -> np.ndarray:
        if train:
            self._mask = (x > 0) & (x < 6)
        return np.clip(x, 0, 6, out=x if inplace else None)


class Flatten(Layer):
    """``[N, *shape]`` -> ``[N, prod(shape)]``."""

    op = "flatten"
    kind = "flatten"
    RETURNS_VIEW = True

    def __init__(self, *, name: str) -> None:
        super().__init__(name)
        self._shape: tuple[int, ...] = ()

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(in_shape),)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return grad.reshape(self._shape) if need_input_grad else None


class BatchNorm(Layer):
    """Batch normalisation with frozen statistics: an affine map per channel.

    ``y = weight * (x - running_mean) / sqrt(running_var + eps) + bias`` over axis 1 of
    ``[N, C]`` or ``[N, C, H, W]``. ``weight`` and ``bias`` are trained; the statistics are not.
    """

    op = "batchnorm"
    CACHES = ("_xhat",)
    kind = "batchnorm"

    def __init__(self, channels: int, *, name: str, eps: float = 1e-5) -> None:
        super().__init__(name)
        if channels < 1 or eps <= 0:
            raise ValueError(f"{name}: channels must be >= 1 and eps > 0")
        self.channels, self.eps = channels, eps
        self.params = {
            "weight": np.ones(channels, np.float32),
            "bias": np.zeros(channels, np.float32),
            "running_mean": np.zeros(channels, np.float32),
            "running_var": np.ones(channels, np.float32),
        }
        self.trainable = ("weight", "bias")
        self._xhat: np.ndarray | None = None

    def attrs(self) -> dict[str, AttrValue]:
        return {"channels": self.channels, "eps": self.eps}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not in_shape or in_shape[0] != self.channels:
            raise ValueError(f"{self.name}: expects {self.channels} channels, got {in_shape}")
        return in_shape

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return math.prod(in_shape)

    def _bcast(self, v: np.ndarray, ndim: int) -> np.ndarray:
        return v.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        p = self.params
        inv = (1.0 / np.sqrt(p["running_var"] + self.eps)).astype(x.dtype)
        xhat = (x - self._bcast(p["running_mean"], x.ndim)) * self._bcast(inv, x.ndim)
        if train:
            self._xhat = xhat
        y: np.ndarray = xhat * self._bcast(p["weight"], x.ndim) + self._bcast(p["bias"], x.ndim)
        return y

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        xhat = self._xhat
        if xhat is None:
            raise RuntimeError(f"{self.name}: backward without a training forward")
        axes = (0, *range(2, grad.ndim))
        self.grads = {"weight": (grad * xhat).sum(axis=axes), "bias": grad.sum(axis=axes)}
        if not need_input_grad:
            return None
        p = self.params
        scale = p["weight"] / np.sqrt(p["running_var"] + self.eps)
        gx: np.ndarray = grad * self._bcast(scale.astype(grad.dtype), grad.ndim)
        return gx


__all__ = ["BatchNorm", "Flatten", "Linear", "ReLU", "ReLU6"]
