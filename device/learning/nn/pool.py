"""Average pooling (k x k windows, no padding) and global average pooling.

On small maps (:func:`device.learning.nn.planar.is_small`) average pooling is one matrix product of
the
``[N*C, H*W]`` planes with the ``[H*W, OH*OW]`` mean matrix (and its transpose backward); on
large maps it sums the k x k strided views.
"""

from __future__ import annotations

import itertools

import numpy as np

from device.learning.nn.base import AttrValue, Layer
from device.learning.nn.conv import offset_slice
from device.learning.nn.planar import is_small, out_size, pool_matrix, pool_matrix_t


class AvgPool(Layer):
    """Mean over k x k windows: ``[N, C, H, W]`` -> ``[N, C, OH, OW]``, ``OH = (H-k) // s + 1``."""

    op = "avgpool"
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
        if len(in_shape) != 3:
            raise ValueError(f"{self.name}: expects (C, H, W), got {in_shape}")
        c, h, w = in_shape
        oh, ow = out_size(h, self.kernel, self.stride, 0), out_size(w, self.kernel, self.stride, 0)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name}: input {in_shape} smaller than kernel {self.kernel}")
        return (c, oh, ow)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, c, h, w = x.shape
        _, oh, ow = self.out_shape((c, h, w))
        k, s = self.kernel, self.stride
        self._xshape = x.shape
        if is_small(h, w, k, s, 0):  # one GEMM: every plane times the [H*W, OH*OW] mean matrix
            pooled: np.ndarray = x.reshape(n * c, h * w) @ pool_matrix(h, w, k, s, x.dtype)
            return pooled.reshape(n, c, oh, ow)
        y = np.zeros((n, c, oh, ow), x.dtype)
        for i, j in itertools.product(range(k), repeat=2):
            y += x[offset_slice(i, j, s, oh, ow)]
        y *= np.asarray(1.0 / (k * k), x.dtype)
        return y

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if not need_input_grad:
            return None
        n, c, oh, ow = grad.shape
        _, _, h, w = self._xshape
        k, s = self.kernel, self.stride
        if is_small(h, w, k, s, 0):
            spread: np.ndarray = grad.reshape(n * c, oh * ow) @ pool_matrix_t(
                h, w, k, s, grad.dtype
            )
            return spread.reshape(n, c, h, w)
        gx = np.zeros(self._xshape, grad.dtype)
        g = grad * np.asarray(1.0 / (k * k), grad.dtype)
        for i, j in itertools.product(range(k), repeat=2):
            gx[offset_slice(i, j, s, oh, ow)] += g
        return gx


class GlobalAvgPool(Layer):
    """Mean over the spatial axes: ``[N, C, H, W]`` -> ``[N, C]`` (pooling and flatten in one)."""

    op = "globalavgpool"
    kind = "pool"

    def __init__(self, *, name: str) -> None:
        super().__init__(name)
        self._xshape: tuple[int, ...] = ()

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3:
            raise ValueError(f"{self.name}: expects (C, H, W), got {in_shape}")
        return (in_shape[0],)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self._xshape = x.shape
        y: np.ndarray = x.mean(axis=(2, 3), dtype=x.dtype)
        return y

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if not need_input_grad:
            return None
        n, c, h, w = self._xshape
        g = grad * np.asarray(1.0 / (h * w), grad.dtype)
        return np.broadcast_to(g[:, :, None, None], (n, c, h, w)).copy()


__all__ = ["AvgPool", "GlobalAvgPool"]
