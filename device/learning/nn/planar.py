"""Window operations on small feature maps as matrices (one GEMM per layer instead of k x k passes).

A k x k window operation (convolution per channel, average pooling) on one ``H x W`` plane is a
linear map from the ``H * W`` input pixels to the ``OH * OW`` output pixels. On the small maps of
an adaptive stage (the default head works on 4 x 4 maps) that map is a tiny matrix, and applying
it to every plane of a batch is one matrix product -- far cheaper in numpy than k x k strided
passes whose innermost loop is only ``OW`` elements long. On large maps the matrix grows as
``(H * W) * (OH * OW)``, so layers fall back to the offset loop there (:data:`SMALL_PLANE`).
"""

from __future__ import annotations

import functools

import numpy as np

#: Largest ``(H * W) * (OH * OW)`` for which layers use the plane matrix (8 x 8 maps, stride 1).
SMALL_PLANE = 4096


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output height/width of a convolution or pooling window."""
    return (size + 2 * padding - kernel) // stride + 1


def is_small(h: int, w: int, kernel: int, stride: int, padding: int) -> bool:
    """Whether the plane matrix of this geometry is small enough to use."""
    oh, ow = out_size(h, kernel, stride, padding), out_size(w, kernel, stride, padding)
    return h * w * oh * ow <= SMALL_PLANE


@functools.lru_cache(maxsize=64)
def window_selection(
    h: int, w: int, kernel: int, stride: int, padding: int, dtype: np.dtype[np.floating]
) -> np.ndarray:
    """``S [k * k, OH * OW, H * W]``: 1 where kernel offset ``(i, j)`` of output pixel ``o``
    meets input pixel ``p`` (row ``i * k + j``); zero padding contributes nothing. Read-only."""
    oh, ow = out_size(h, kernel, stride, padding), out_size(w, kernel, stride, padding)
    sel = np.zeros((kernel * kernel, oh * ow, h * w), dtype)
    rows, cols = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    out_pix = (rows * ow + cols).ravel()
    for i in range(kernel):
        for j in range(kernel):
            ih = (rows * stride + i - padding).ravel()
            iw = (cols * stride + j - padding).ravel()
            ok = (ih >= 0) & (ih < h) & (iw >= 0) & (iw < w)
            sel[i * kernel + j, out_pix[ok], ih[ok] * w + iw[ok]] = 1
    sel.flags.writeable = False
    return sel


@functools.lru_cache(maxsize=64)
def pool_matrix(
    h: int, w: int, kernel: int, stride: int, dtype: np.dtype[np.floating]
) -> np.ndarray:
    """``P [H * W, OH * OW]``: the mean over each k x k window (no padding). Read-only."""
    sel = window_selection(h, w, kernel, stride, 0, dtype)
    mat = np.ascontiguousarray(sel.sum(axis=0).T) * np.asarray(1.0 / (kernel * kernel), dtype)
    mat.flags.writeable = False
    return mat


@functools.lru_cache(maxsize=64)
def pool_matrix_t(
    h: int, w: int, kernel: int, stride: int, dtype: np.dtype[np.floating]
) -> np.ndarray:
    """``P^T [OH * OW, H * W]`` as a C-contiguous array (the backward pass multiplies by it: a
    transposed view makes BLAS take a much slower path on these narrow matrices). Read-only."""
    mat = np.ascontiguousarray(pool_matrix(h, w, kernel, stride, dtype).T)
    mat.flags.writeable = False
    return mat


__all__ = [
    "SMALL_PLANE",
    "is_small",
    "out_size",
    "pool_matrix",
    "pool_matrix_t",
    "window_selection",
]
