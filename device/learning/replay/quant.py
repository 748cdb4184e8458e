"""Per-LR asymmetric uniform quantization and bit packing of latent replays (pure numpy).

Each latent replay (LR, one row of ``[N, D]``) gets its own FP32 ``scale`` and ``zero_point``
from its minimum and maximum, and ``bits``-bit codes ``q`` in ``0 .. 2**bits - 1``::

    zero_point = min(x)                 # the real value of code 0
    scale      = (max(x) - min(x)) / (2**bits - 1)     # rounded up to FP32, so max(x) is covered
    q          = round((x - zero_point) / scale)
    x_hat      = zero_point + scale * q                # |x - x_hat| <= scale / 2

``zero_point`` is kept as a real value (not an integer code offset): rounding an integer zero
point would add up to half a step of error on top of the code rounding. A constant LR gets
``scale == 0`` and all-zero codes, and is reconstructed exactly.

``bits == 32`` stores the raw little-endian FP32 values as the codes (``scale`` 1, ``zero_point``
0, neither counted in :attr:`QuantizedLR.nbytes`).

Codes are bit-packed, little-endian within each byte, ``ceil(D * bits / 8)`` bytes per LR: a
7-bit LR really takes 7/8 of the bytes of an 8-bit one when ``D % 8 == 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from device.learning.replay.errors import QuantizationError

__all__ = [
    "SUPPORTED_BITS",
    "QuantizedLR",
    "dequantize",
    "pack_codes",
    "quantize",
    "row_bytes",
    "unpack_codes",
]

SUPPORTED_BITS: Final = (32, 8, 7, 6, 5, 4)
"""Bit widths of a stored LR: 32 is raw FP32, the others are quantized codes."""

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


def _check_bits(bits: int, allowed: tuple[int, ...]) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits not in allowed:
        raise QuantizationError(f"bits must be one of {allowed}, got {bits!r}")


def row_bytes(dim: int, bits: int) -> int:
    """Bytes of the packed codes of one LR of ``dim`` values at ``bits`` bits."""
    if dim < 1:
        raise QuantizationError(f"latent size must be >= 1, got {dim}")
    _check_bits(bits, (32, *range(1, 9)))
    return dim * 4 if bits == 32 else -(-dim * bits // 8)


def pack_codes(codes: npt.ArrayLike, bits: int) -> U8:
    """Pack ``bits``-bit codes, uint8 ``[N, D]`` (each < 2**bits), into ``[N, ceil(D*bits/8)]``.

    Code ``j`` of a row occupies bits ``j*bits .. j*bits + bits - 1`` of the row's byte string
    (little-endian bit order). Vectorised: every group of 8 codes is ``bits`` whole bytes, built
    as one 64-bit integer.
    """
    _check_bits(bits, tuple(range(1, 9)))
    c = np.asarray(codes)
    if c.dtype != np.uint8 or c.ndim != 2:
        raise QuantizationError(f"codes must be uint8 [N, D], got {c.dtype} {c.shape}")
    n, dim = c.shape
    width = row_bytes(dim, bits)
    if bits < 8 and c.size and int(c.max()) >> bits:
        raise QuantizationError(f"a code does not fit in {bits} bits (max {int(c.max())})")
    if bits == 8:
        return np.array(c, dtype=np.uint8, order="C", copy=True)
    groups = -(-dim // 8)
    padded = np.zeros((n, groups * 8), dtype=np.uint64)
    padded[:, :dim] = c
    words = np.bitwise_or.reduce(padded.reshape(n, groups, 8) << _shifts(bits), axis=2)
    as_bytes = words.astype("<u8").view(np.uint8).reshape(n, groups, 8)[:, :, :bits]
    return np.ascontiguousarray(as_bytes.reshape(n, groups * bits)[:, :width])


def unpack_codes(packed: npt.ArrayLike, bits: int, dim: int) -> U8:
    """Inverse of :func:`pack_codes`: uint8 ``[N, ceil(dim*bits/8)]`` -> uint8 ``[N, dim]``."""
    _check_bits(bits, tuple(range(1, 9)))
    p = np.asarray(packed)
    width = row_bytes(dim, bits)
    if p.dtype != np.uint8 or p.ndim != 2 or p.shape[1] != width:
        raise QuantizationError(
            f"packed codes must be uint8 [N, {width}] for {dim} values at {bits} bits, "
            f"got {p.dtype} {p.shape}"
        )
    if bits == 8:
        return np.array(p, dtype=np.uint8, order="C", copy=True)
    n, groups = p.shape[0], -(-dim // 8)
    as_bytes = np.zeros((n, groups * bits), dtype=np.uint8)
    as_bytes[:, :width] = p
    word_bytes = np.zeros((n, groups, 8), dtype=np.uint8)
    word_bytes[:, :, :bits] = as_bytes.reshape(n, groups, bits)
    words = word_bytes.view("<u8")  # [n, groups, 1]
    codes = (words >> _shifts(bits)) & np.uint64((1 << bits) - 1)  # [n, groups, 8]
    return codes.reshape(n, groups * 8)[:, :dim].astype(np.uint8)


def _shifts(bits: int) -> npt.NDArray[np.uint64]:
    return np.arange(8, dtype=np.uint64) * np.uint64(bits)


@dataclass(frozen=True, slots=True, eq=False)
class QuantizedLR:
    """``N`` quantized LRs of ``dim`` values: packed codes and one scale / zero point per LR.

    packed: uint8 ``[N, row_bytes(dim, bits)]``; scale, zero_point: float32 ``[N]``.
    """

    packed: U8
    scale: F32
    zero_point: F32
    bits: int
    dim: int

    def __post_init__(self) -> None:
        width = row_bytes(self.dim, self.bits)  # validates bits and dim
        p = self.packed
        if not isinstance(p, np.ndarray) or p.dtype != np.uint8 or p.ndim != 2:
            raise QuantizationError(f"packed must be a uint8 [N, {width}] array, got {p!r:.80}")
        if p.shape[1] != width:
            raise QuantizationError(f"packed rows must hold {width} bytes, got {p.shape[1]}")
        for name in ("scale", "zero_point"):
            v = getattr(self, name)
            if not isinstance(v, np.ndarray) or v.dtype != np.float32 or v.shape != (len(p),):
                raise QuantizationError(f"{name} must be float32 [{len(p)}], got {v!r:.80}")
            if not np.isfinite(v).all():
                raise QuantizationError(f"{name} must be finite")
        if (self.scale < 0).any():
            raise QuantizationError("scale must be >= 0")

    def __len__(self) -> int:
        return len(self.packed)

    @property
    def nbytes(self) -> int:
        """Stored bytes: packed codes, plus the FP32 scale and zero point of each quantized LR."""
        extra = 0 if self.bits == 32 else 8 * len(self)
        return int(self.packed.nbytes) + extra

    def take(self, index: npt.ArrayLike) -> QuantizedLR:
        """The LRs at ``index`` (int ``[k]``), as a new :class:`QuantizedLR`."""
        i = np.asarray(index, dtype=np.intp)
        return QuantizedLR(self.packed[i], self.scale[i], self.zero_point[i], self.bits, self.dim)


def quantize(latents: npt.ArrayLike, bits: int) -> QuantizedLR:
    """Quantize float ``[N, D]`` latents (each row one LR) to ``bits`` bits per value."""
    _check_bits(bits, SUPPORTED_BITS)
    x = np.asarray(latents)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise QuantizationError(f"latents must be a float [N, D] array, got {x.dtype} {x.shape}")
    x = x.astype(np.float32, copy=False)
    n, dim = x.shape
    row_bytes(dim, bits)  # validates dim
    if not np.isfinite(x).all():
        raise QuantizationError("latents must be finite (found NaN or infinity)")
    if bits == 32:
        packed = np.ascontiguousarray(x, dtype="<f4").view(np.uint8).reshape(n, dim * 4).copy()
        return QuantizedLR(packed, np.ones(n, np.float32), np.zeros(n, np.float32), 32, dim)
    levels = (1 << bits) - 1
    lo = x.min(axis=1)
    span = x.max(axis=1).astype(np.float64) - lo
    scale = (span / levels).astype(np.float32)
    short = scale.astype(np.float64) * levels < span  # FP32 rounding fell short of max(x)
    scale = np.where(short, np.nextafter(scale, np.float32(np.inf)), scale).astype(np.float32)
    step = np.where(scale > 0, scale, 1.0).astype(np.float64)
    q = np.rint((x.astype(np.float64) - lo[:, None]) / step[:, None])
    codes = np.clip(q, 0, levels).astype(np.uint8)
    return QuantizedLR(pack_codes(codes, bits), scale, lo.astype(np.float32), bits, dim)


def dequantize(q: QuantizedLR) -> F32:
    """Reconstruct float32 ``[N, D]`` latents from :func:`quantize` output."""
    return dequantize_rows(q.packed, q.scale, q.zero_point, q.bits, q.dim)


def dequantize_rows(
    packed: U8, scale: F32, zero_point: F32, bits: int, dim: int, out: F32 | None = None
) -> F32:
    """:func:`dequantize` of rows already known to be consistent (a replay memory's own arrays):
    no validation, float32 throughout (``zero_point + scale * code``: the product of a float32
    scale and a code below 2^8 rounds once, well inside the quantization step).

    With ``out`` (float32 ``[N, dim]``), the values are written there and ``out`` is returned.
    The training loop draws replays for every mini-batch, so this is on the hot path.
    """
    n = len(packed)
    if bits == 32:
        raw = np.ascontiguousarray(packed).view("<f4").reshape(n, dim)
        if out is None:
            return raw.astype(np.float32)
        out[...] = raw
        return out
    codes = packed if bits == 8 else unpack_codes(packed, bits, dim)
    if out is None:
        x = codes.astype(np.float32)
        x *= scale[:, None]
    else:  # the same float32 product, written straight into out (codes convert exactly)
        x = np.multiply(codes, scale[:, None], out=out)
    x += zero_point[:, None]
    return x
