"""1-D layers on ``[N, C, L]`` time series: dense convolution (im2col) and average pooling.

Weights use the ONNX ``Conv`` layout for one spatial axis, ``[out, in, k]``, and a bias ``[out]``.
Padding is symmetric zero padding; the output length is ``(L + 2 * padding - k) // stride + 1``.
Loops run only over the k kernel offsets. The energy model counts a 1-D convolution as a dense
convolution (kind ``conv``) of ``out * in * k * OL`` multiply-accumulates per sample.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from device.learning.nn.base import AttrValue, Layer, he_normal
from device.learning.nn.planar import out_size


class Conv1d(Layer):
    """Dense 1-D convolution: ``[N, C, L]`` -> ``[N, O, OL]``; weight ``[O, C, k]``."""

    op = "conv1d"
    kind = "conv"
    CACHES = ("_cols",)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        *,
        stride: int = 1,
        padding: int = 0,
        name: str,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(name)
        if min(in_channels, out_channels, kernel, stride) < 1 or padding < 0:
            raise ValueError(
                f"{name}: bad convolution in={in_channels} out={out_channels} k={kernel} "
                f"stride={stride} padding={padding}"
            )
        self.in_ch, self.out_ch = in_channels, out_channels
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.params = {
            "weight": he_normal(rng, (out_channels, in_channels, kernel), in_channels * kernel),
            "bias": np.zeros(out_channels, np.float32),
        }
        self.trainable = ("weight", "bias")
        self._cols: np.ndarray | None = None
        self._xshape: tuple[int, ...] = ()

    def attrs(self) -> dict[str, AttrValue]:
        return {
            "in_channels": self.in_ch,
            "out_channels": self.out_ch,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 2 or in_shape[0] != self.in_ch:
            raise ValueError(f"{self.name}: expects ({self.in_ch}, L), got {in_shape}")
        length = out_size(in_shape[1], self.kernel, self.stride, self.padding)
        if length < 1:
            raise ValueError(f"{self.name}: input {in_shape} too short for kernel {self.kernel}")
        return (self.out_ch, length)

    def macs(self, in_shape: tuple[int, ...]) -> int:
        _, length = self.out_shape(in_shape)
        return self.out_ch * self.in_ch * self.kernel * length

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, c, length = x.shape
        k, s, p = self.kernel, self.stride, self.padding
        _, ol = self.out_shape((c, length))
        xp = np.pad(x, ((0, 0), (0, 0), (p, p))) if p else x
        win = sliding_window_view(xp, k, axis=2)[:, :, : s * (ol - 1) + 1 : s]  # [N, C, OL, k]
        cols = win.transpose(0, 2, 1, 3).reshape(n * ol, c * k)
        y = cols @ self.params["weight"].reshape(self.out_ch, -1).T + self.params["bias"]
        if train:
            self._cols, self._xshape = cols, x.shape
        return np.ascontiguousarray(y.reshape(n, ol, self.out_ch).transpose(0, 2, 1))

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        cols = self._cols
        if cols is None:
            raise RuntimeError(f"{self.name}: backward without a training forward")
        n, o, ol = grad.shape
        weight = self.params["weight"]
        g2 = grad.transpose(0, 2, 1).reshape(-1, o)
        self.grads = {"weight": (g2.T @ cols).reshape(weight.shape), "bias": g2.sum(axis=0)}
        if not need_input_grad:
            return None
        k, s, p = self.kernel, self.stride, self.padding
        _, c, length = self._xshape
        gcols = (g2 @ weight.reshape(o, -1)).reshape(n, ol, c, k)
        gxp = np.zeros((n, c, length + 2 * p), grad.dtype)
        for i in range(k):
            gxp[:, :, i : i + s * (ol - 1) + 1 : s] += gcols[..., i].transpose(0, 2, 1)
        return gxp[:, :, p : p + length] if p else gxp


class AvgPool1d(Layer):
    """Mean over windows of ``kernel`` steps: ``[N, C, L]`` -> ``[N, C, (L - k) // s + 1]``."""

    op = "avgpool1d"
    kind = "pool"

    def __init__(self, kernel: int = 2, stride: int | None = None, *, name: str) -> None:
        super().__init__(name)
        self.kernel = kernel
        self.stride = kernel if stride is None else stride
        if kernel < 1 or self.stride < 1:
            raise ValueError(f"{name}: kernel and stride must be >= 1")
        self._xshape: tuple[int, ...] = ()

    def attrs(self) -> dict[str, AttrValue]:
        return {"kernel": self.kernel, "stride": self.stride}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 2:
            raise ValueError(f"{self.name}: expects (C, L), got {in_shape}")
        length = out_size(in_shape[1], self.kernel, self.stride, 0)
        if length < 1:
            raise ValueError(f"{self.name}: input {in_shape} shorter than kernel {self.kernel}")
        return (in_shape[0], length)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, c, length = x.shape
        _, ol = self.out_shape((c, length))
        k, s = self.kernel, self.stride
        self._xshape = x.shape
        y = np.zeros((n, c, ol), x.dtype)
        for i in range(k):
            y += x[:, :, i : i + s * (ol - 1) + 1 : s]
        y *= np.asarray(1.0 / k, x.dtype)
        return y

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if not need_input_grad:
            return None
        ol = grad.shape[2]
        k, s = self.kernel, self.stride
        gx = np.zeros(self._xshape, grad.dtype)
        g = grad * np.asarray(1.0 / k, grad.dtype)
        for i in range(k):
            gx[:, :, i : i + s * (ol - 1) + 1 : s] += g
        return gx


__all__ = ["AvgPool1d", "Conv1d"]
