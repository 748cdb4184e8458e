"""Convolutions on ``[N, C, H, W]``: dense k x k (im2col), pointwise 1x1 (one GEMM), depthwise.

Weights use the ONNX ``Conv`` layout ``[out, in / groups, k, k]`` and a bias ``[out]``. Padding is
symmetric zero padding; the output size is ``(H + 2 * padding - k) // stride + 1``. Loops run
only over the k x k kernel offsets, never over samples, pixels or channels.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from device.learning.nn.base import AttrValue, Layer, he_normal
from device.learning.nn.planar import is_small, out_size, window_selection


def pad2d(x: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad the two spatial axes of ``[N, C, H, W]``."""
    if padding == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def channel_sum(x: np.ndarray) -> np.ndarray:
    """``x [N, C, H, W]`` summed over everything but the channel axis: ``[C]``.

    Summing the contiguous sample axis first is an order of magnitude faster in numpy than
    ``x.sum(axis=(0, 2, 3))`` on small maps.
    """
    n, c = x.shape[:2]
    total: np.ndarray = x.reshape(n, -1).sum(axis=0).reshape(c, -1).sum(axis=1)
    return total


def add_channel_bias(y: np.ndarray, bias: np.ndarray) -> None:
    """``y [N, C, ...] += bias [C]`` in place.

    On a C-contiguous ``y`` the bias is repeated over each channel's pixels once, so that numpy
    adds one ``[C * pixels]`` row per sample instead of broadcasting over a pixel axis only a few
    elements long (the same sums, several times faster on small maps).
    """
    n, c = y.shape[:2]
    if not y.flags.c_contiguous:
        y += bias.reshape((c,) + (1,) * (y.ndim - 2))
        return
    pixels = y.size // max(n * c, 1)
    flat = y.reshape(n, c * pixels)
    flat += np.repeat(bias, pixels)


def swap_leading_axes(a: np.ndarray) -> np.ndarray:
    """``a [A, B, K]`` -> C-contiguous ``[B, A, K]`` (``np.ascontiguousarray(a.transpose(1, 0,
    2))``, the same bytes).

    When each ``K`` row is contiguous, the rows are moved as single opaque items: numpy then
    copies whole rows instead of running an inner loop of ``K`` elements per row, which is
    most of the cost for the short rows of small feature maps.
    """
    _, _, k = a.shape
    item = a.itemsize
    if a.size and a.strides[2] == item and all(s % (k * item) == 0 for s in a.strides[:2]):
        rows = a.view(np.dtype((np.void, k * item)))  # [A, B, 1]
        return np.ascontiguousarray(rows.transpose(1, 0, 2)).view(a.dtype)
    return np.ascontiguousarray(a.transpose(1, 0, 2))


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

    Weight ``[O, C, 1, 1]``; computed as one (broadcast) matrix product per pass, in the
    ``[N, C, H*W]`` layout of the input, so that nothing is transposed or copied.
    """

    op = "pointwise"
    kind = "pointwise"
    CACHES = ("_x",)

    def __init__(
        self, in_channels: int, out_channels: int, *, name: str, rng: np.random.Generator
    ) -> None:
        super().__init__(name, in_channels, out_channels, 1, 1, 0)
        self.params = {
            "weight": he_normal(rng, (out_channels, in_channels, 1, 1), in_channels),
            "bias": np.zeros(out_channels, np.float32),
        }
        self._x: np.ndarray | None = None

    def attrs(self) -> dict[str, AttrValue]:
        return {"in_channels": self.in_ch, "out_channels": self.out_ch}

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, c, h, w = x.shape
        self.out_shape((c, h, w))
        y = np.empty((n, self.out_ch, h * w), x.dtype)
        # one weight matrix against every sample's [C, H*W] pixels, written in y's layout
        np.matmul(self.params["weight"].reshape(self.out_ch, c), x.reshape(n, c, h * w), out=y)
        add_channel_bias(y, self.params["bias"])
        if train:
            self._x = x
        return y.reshape(n, self.out_ch, h, w)

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        x = self._x
        if x is None:
            raise RuntimeError(f"{self.name}: backward without a training forward")
        n, c, h, w = x.shape
        g3 = grad.reshape(n, self.out_ch, h * w)
        weight = self.params["weight"]
        # np.tensordot(g3, x3, axes=([0, 2], [0, 2])), the same product of the same two
        # operands, with the [O, N*HW] one copied as whole pixel rows (swap_leading_axes)
        g_t = swap_leading_axes(g3).reshape(self.out_ch, n * h * w)
        x_t = x.reshape(n, c, h * w).transpose(0, 2, 1).reshape(n * h * w, c)
        gw = np.dot(g_t, x_t)  # [O, C]
        self.grads = {"weight": gw.reshape(weight.shape), "bias": channel_sum(grad)}
        if not need_input_grad:
            return None
        gx: np.ndarray = np.matmul(weight.reshape(self.out_ch, c).T, g3)
        return gx.reshape(n, c, h, w)


class DepthwiseConv2d(_ConvBase):
    """k x k convolution per channel (groups = C): ``[N, C, H, W]`` -> ``[N, C, OH, OW]``.

    Weight ``[C, 1, k, k]``. On small maps (:func:`device.learning.nn.planar.is_small`) each
    channel's
    convolution is a ``[OH*OW, H*W]`` matrix ``T_c`` built from its k x k weights, and a batch is
    one stacked matrix product per pass (forward ``y = T x``, backward ``gx = T^T g`` and
    ``gT = g x^T``, folded back onto the weights). On large maps it runs k x k multiply-adds over
    a zero-padded buffer that is reused while the batch shape stays the same.
    """

    op = "depthwise"
    kind = "depthwise"
    CACHES = ("_x", "_plane")

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
        self._x: np.ndarray | None = None  # the input (small maps) or its padded copy (large)
        self._plane: np.ndarray | None = None  # T [C, OH*OW, H*W] of the last training forward
        self._xshape: tuple[int, ...] = ()
        self._pad_buf: dict[tuple[bool, tuple[int, ...], np.dtype[np.floating]], np.ndarray] = {}

    def release(self) -> None:
        super().release()
        self._pad_buf.clear()

    def attrs(self) -> dict[str, AttrValue]:
        return {
            "channels": self.in_ch,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }

    def _selection(self, h: int, w: int, dtype: np.dtype[np.floating]) -> np.ndarray:
        return window_selection(h, w, self.kernel, self.stride, self.padding, dtype)

    def _padded(self, x: np.ndarray, train: bool) -> np.ndarray:
        """``x`` zero-padded into a buffer kept per (train, shape, dtype): only the interior is
        ever written, so the border stays zero. Training and inference use separate buffers, so
        an inference pass between a training forward and its backward changes nothing."""
        p = self.padding
        if p == 0:
            return x
        n, c, h, w = x.shape
        key = (train, x.shape, x.dtype)
        buf = self._pad_buf.get(key)
        if buf is None:
            buf = self._pad_buf[key] = np.zeros((n, c, h + 2 * p, w + 2 * p), x.dtype)
        buf[:, :, p : p + h, p : p + w] = x
        return buf

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, c, h, w = x.shape
        _, oh, ow = self.out_shape((c, h, w))
        weight, bias = self.params["weight"], self.params["bias"]
        y = np.empty((n, c, oh, ow), x.dtype)
        if is_small(h, w, self.kernel, self.stride, self.padding):
            sel = self._selection(h, w, weight.dtype)
            kk = self.kernel * self.kernel
            plane = (weight.reshape(c, kk) @ sel.reshape(kk, -1)).reshape(c, oh * ow, h * w)
            # per channel: y[:, c] = x[:, c] @ T_c^T, written straight into y's layout. T^T is
            # made contiguous for batches: BLAS is twice as slow on the transposed view of these
            # small matrices. On 4 x 4 maps (the default head) the result is bit for bit the
            # view's at every batch size but 1, where BLAS takes a matrix-vector path whose
            # rounding depends on the layout, so a single sample keeps the view; on larger maps
            # the two can differ in the last bit.
            x3 = x.reshape(n, c, h * w).transpose(1, 0, 2)
            plane_t = plane.transpose(0, 2, 1)
            if n > 1:
                plane_t = np.ascontiguousarray(plane_t)
            np.matmul(x3, plane_t, out=y.reshape(n, c, oh * ow).transpose(1, 0, 2))
            add_channel_bias(y, bias)
            if train:
                self._x, self._plane, self._xshape = x, plane, x.shape
            return y
        xp = self._padded(x, train)
        y[...] = bias[None, :, None, None]
        tmp = np.empty_like(y)
        for i, j in itertools.product(range(self.kernel), repeat=2):
            idx = offset_slice(i, j, self.stride, oh, ow)
            np.multiply(xp[idx], weight[None, :, 0, i, j, None, None], out=tmp)
            y += tmp
        if train:
            self._x, self._plane, self._xshape = xp, None, x.shape
        return y

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        x = self._x
        if x is None:
            raise RuntimeError(f"{self.name}: backward without a training forward")
        n, c, oh, ow = grad.shape
        weight = self.params["weight"]
        bias_grad = channel_sum(grad)
        plane = self._plane
        if plane is not None:
            _, _, h, w = self._xshape
            kk = self.kernel * self.kernel
            g3 = grad.reshape(n, c, oh * ow).transpose(1, 0, 2)  # [C, N, OH*OW]
            plane_grad = g3.transpose(0, 2, 1) @ x.reshape(n, c, h * w).transpose(1, 0, 2)
            sel = self._selection(h, w, weight.dtype)
            gw = (plane_grad.reshape(c, -1) @ sel.reshape(kk, -1).T).reshape(weight.shape)
            self.grads = {"weight": gw, "bias": bias_grad}
            if not need_input_grad:
                return None
            gx = np.empty((n, c, h, w), grad.dtype)
            np.matmul(g3, plane, out=gx.reshape(n, c, h * w).transpose(1, 0, 2))
            return gx
        gw = np.empty_like(weight)
        gxp = np.zeros_like(x) if need_input_grad else None
        for i, j in itertools.product(range(self.kernel), repeat=2):
            idx = offset_slice(i, j, self.stride, oh, ow)
            gw[:, 0, i, j] = np.einsum("nchw,nchw->c", grad, x[idx])
            if gxp is not None:
                gxp[idx] += grad * weight[None, :, 0, i, j, None, None]
        self.grads = {"weight": gw, "bias": bias_grad}
        if gxp is None:
            return None
        p = self.padding
        _, _, h, w = self._xshape
        return gxp[:, :, p : p + h, p : p + w] if p else gxp


__all__ = [
    "Conv2d",
    "DepthwiseConv2d",
    "PointwiseConv2d",
    "channel_sum",
    "out_size",
    "pad2d",
]
