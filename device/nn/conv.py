"""Convolutions on ``[N, C, H, W]``: dense k x k (im2col), pointwise 1x1 (one GEMM), depthwise.

Weights use the ONNX ``Conv`` layout ``[out, in / groups, k, k]`` and a bias ``[out]``. Padding is
symmetric zero padding; the output size is ``(H + 2 * padding - k) // stride + 1``. Loops run
only over the k x k kernel offsets, never over samples, pixels or channels.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from device.nn.base import AttrValue, Layer, he_normal


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output height/width of a convolution or pooling window."""
    return (size + 2 * padding - kernel) // stride + 1


def pad2d(x: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad the two spatial axes of ``[N, C, H, W]``."""
    if padding == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def offset_slice(i: int, j: int, stride: int, oh: int, ow: int) -> tuple[slice, ...]:
    """Index of the input pixels that kernel offset ``(i, j)`` meets, for every output pixel."""
    return (
        slice(None),
        slice(None),
        slice(i, i + stride * (oh - 1) + 1, stride),
        slice(j, j + stride * (ow - 1) + 1, stride),
    )


class _ConvBase(Layer):
    def __init__(
        self, name: str, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int
    ) -> None:
        super().__init__(name)
        if min(in_ch, out_ch, kernel, stride) < 1 or padding < 0:
            raise ValueError(
                f"{name}: bad convolution in={in_ch} out={out_ch} k={kernel} "
                f"stride={stride} padding={padding}"
            )
        self.in_ch, self.out_ch = in_ch, out_ch
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.trainable = ("weight", "bias")

    def attrs(self) -> dict[str, AttrValue]:
        return {
            "in_channels": self.in_ch,
            "out_channels": self.out_ch,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3 or in_shape[0] != self.in_ch:
            raise ValueError(f"{self.name}: expects ({self.in_ch}, H, W), got {in_shape}")
        k, s, p = self.kernel, self.stride, self.padding
        oh, ow = out_size(in_shape[1], k, s, p), out_size(in_shape[2], k, s, p)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name}: input {in_shape} too small for kernel {k}")
        return (self.out_ch, oh, ow)

    def macs(self, in_shape: tuple[int, ...]) -> int:
        _, oh, ow = self.out_shape(in_shape)
        groups_in = 1 if self.kind == "depthwise" else self.in_ch
        return self.out_ch * groups_in * self.kernel * self.kernel * oh * ow


class Conv2d(_ConvBase):
    """Dense k x k convolution: ``[N, C, H, W]`` -> ``[N, O, OH, OW]``; weight ``[O, C, k, k]``."""

    op = "conv"
    kind = "conv"

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
        super().__init__(name, in_channels, out_channels, kernel, stride, padding)
        fan_in = in_channels * kernel * kernel
        self.params = {
            "weight": he_normal(rng, (out_channels, in_channels, kernel, kernel), fan_in),
            "bias": np.zeros(out_channels, np.float32),
        }
        self._cols: np.ndarray | None = None
        self._xshape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, c, h, w = x.shape
        k, s = self.kernel, self.stride
        _, oh, ow = self.out_shape((c, h, w))
        win = sliding_window_view(pad2d(x, self.padding), (k, k), axis=(2, 3))
        win = win[:, :, : s * (oh - 1) + 1 : s, : s * (ow - 1) + 1 : s]  # [N, C, OH, OW, k, k]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
        wmat = self.params["weight"].reshape(self.out_ch, -1)
        y = cols @ wmat.T + self.params["bias"]  # [N*OH*OW, O]
        if train:
            self._cols, self._xshape = cols, x.shape
        return np.ascontiguousarray(y.reshape(n, oh, ow, self.out_ch).transpose(0, 3, 1, 2))

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        cols = self._cols
        if cols is None:
            raise RuntimeError(f"{self.name}: backward without a training forward")
        n, o, oh, ow = grad.shape
        weight = self.params["weight"]
        g2 = grad.transpose(0, 2, 3, 1).reshape(-1, o)
        self.grads = {"weight": (g2.T @ cols).reshape(weight.shape), "bias": g2.sum(axis=0)}
        if not need_input_grad:
            return None
        k, p = self.kernel, self.padding
        _, c, h, w = self._xshape
        gcols = (g2 @ weight.reshape(o, -1)).reshape(n, oh, ow, c, k, k)
        gxp = np.zeros((n, c, h + 2 * p, w + 2 * p), grad.dtype)
        for i in range(k):
            for j in range(k):
                gxp[offset_slice(i, j, self.stride, oh, ow)] += gcols[..., i, j].transpose(
                    0, 3, 1, 2
                )
        return gxp[:, :, p : p + h, p : p + w] if p else gxp


class PointwiseConv2d(_ConvBase):
    """1x1 convolution (stride 1, no padding): ``[N, C, H, W]`` -> ``[N, O, H, W]``.

    Weight ``[O, C, 1, 1]``; computed as one GEMM over all samples and pixels.
    """

    op = "pointwise"
    kind = "pointwise"

    def __init__(
        self, in_channels: int, out_channels: int, *, name: str, rng: np.random.Generator
    ) -> None:
        super().__init__(name, in_channels, out_channels, 1, 1, 0)
        self.params = {
            "weight": he_normal(rng, (out_channels, in_channels, 1, 1), in_channels),
            "bias": np.zeros(out_channels, np.float32),
        }
        self._xt: np.ndarray | None = None
        self._xshape: tuple[int, ...] = ()

    def attrs(self) -> dict[str, AttrValue]:
        return {"in_channels": self.in_ch, "out_channels": self.out_ch}

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, c, h, w = x.shape
        self.out_shape((c, h, w))
        xt = x.transpose(1, 0, 2, 3).reshape(c, -1)  # [C, N*H*W]
        y = self.params["weight"].reshape(self.out_ch, c) @ xt + self.params["bias"][:, None]
        if train:
            self._xt, self._xshape = xt, x.shape
        return np.ascontiguousarray(y.reshape(self.out_ch, n, h, w).transpose(1, 0, 2, 3))

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        xt = self._xt
        if xt is None:
            raise RuntimeError(f"{self.name}: backward without a training forward")
        n, c, h, w = self._xshape
        gt = grad.transpose(1, 0, 2, 3).reshape(self.out_ch, -1)  # [O, N*H*W]
        weight = self.params["weight"]
        self.grads = {"weight": (gt @ xt.T).reshape(weight.shape), "bias": gt.sum(axis=1)}
        if not need_input_grad:
            return None
        gx = weight.reshape(self.out_ch, c).T @ gt
        return np.ascontiguousarray(gx.reshape(c, n, h, w).transpose(1, 0, 2, 3))


class DepthwiseConv2d(_ConvBase):
    """k x k convolution per channel (groups = C): ``[N, C, H, W]`` -> ``[N, C, OH, OW]``.

    Weight ``[C, 1, k, k]``.
    """

    op = "depthwise"
    kind = "depthwise"

    def __init__(
        self,
        channels: int,
        kernel: int = 3,
        *,
        stride: int = 1,
        padding: int = 1,
        name: str,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(name, channels, channels, kernel, stride, padding)
        self.params = {
            "weight": he_normal(rng, (channels, 1, kernel, kernel), kernel * kernel),
            "bias": np.zeros(channels, np.float32),
        }
        self._xp: np.ndarray | None = None
        self._xshape: tuple[int, ...] = ()

    def attrs(self) -> dict[str, AttrValue]:
        return {
            "channels": self.in_ch,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }

    def _offsets(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.kernel) for j in range(self.kernel)]

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, c, h, w = x.shape
        _, oh, ow = self.out_shape((c, h, w))
        xp = pad2d(x, self.padding)
        weight = self.params["weight"]
        y = np.empty((n, c, oh, ow), x.dtype)
        y[...] = self.params["bias"][None, :, None, None]
        for i, j in self._offsets():
            y += xp[offset_slice(i, j, self.stride, oh, ow)] * weight[None, :, 0, i, j, None, None]
        if train:
            self._xp, self._xshape = xp, x.shape
        return y

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        xp = self._xp
        if xp is None:
            raise RuntimeError(f"{self.name}: backward without a training forward")
        _, _, oh, ow = grad.shape
        weight = self.params["weight"]
        gw = np.empty_like(weight)
        gxp = np.zeros_like(xp) if need_input_grad else None
        for i, j in self._offsets():
            idx = offset_slice(i, j, self.stride, oh, ow)
            gw[:, 0, i, j] = np.einsum("nchw,nchw->c", grad, xp[idx])
            if gxp is not None:
                gxp[idx] += grad * weight[None, :, 0, i, j, None, None]
        self.grads = {"weight": gw, "bias": grad.sum(axis=(0, 2, 3))}
        if gxp is None:
            return None
        p = self.padding
        _, _, h, w = self._xshape
        return gxp[:, :, p : p + h, p : p + w] if p else gxp


__all__ = ["Conv2d", "DepthwiseConv2d", "PointwiseConv2d", "out_size", "pad2d"]
