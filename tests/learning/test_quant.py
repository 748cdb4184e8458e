"""Per-LR quantization and bit packing: round trips, error bound, exact byte sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from device.learning.replay import (
    SUPPORTED_BITS,
    QuantizationError,
    QuantizedLR,
    dequantize,
    pack_codes,
    quantize,
    row_bytes,
    unpack_codes,
)


@st.composite
def codes_and_bits(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    bits = draw(st.integers(1, 8))
    n = draw(st.integers(0, 5))
    d = draw(st.integers(1, 67))  # odd and even sizes, not multiples of 8 too
    codes = draw(hnp.arrays(np.uint8, (n, d), elements=st.integers(0, (1 << bits) - 1)))
    return codes, bits


@given(codes_and_bits())
def test_pack_unpack_round_trip(case: tuple[np.ndarray, int]) -> None:
    codes, bits = case
    n, d = codes.shape
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.shape == (n, -(-d * bits // 8))
    np.testing.assert_array_equal(unpack_codes(packed, bits, d), codes)


@given(codes_and_bits())
def test_pack_matches_the_bitwise_reference(case: tuple[np.ndarray, int]) -> None:
    codes, bits = case
    n, d = codes.shape
    planes = np.unpackbits(codes[:, :, None], axis=2, bitorder="little")[:, :, :bits]
    reference = np.packbits(planes.reshape(n, d * bits), axis=1, bitorder="little")
    np.testing.assert_array_equal(pack_codes(codes, bits), reference)


def test_pack_layout_is_little_endian_bit_concatenation() -> None:
    codes = np.array([[1, 2, 3]], dtype=np.uint8)  # 3 bits each: 001 010 011 -> bits 100 010 110
    packed = pack_codes(codes, 3)
    assert packed.tolist() == [[0b11010001, 0b0]]


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 6, 7])
def test_pack_rejects_codes_that_do_not_fit(bits: int) -> None:
    with pytest.raises(QuantizationError, match=f"{bits} bits"):
        pack_codes(np.full((2, 3), 1 << bits, dtype=np.uint8), bits)


def test_unpack_rejects_wrong_width() -> None:
    with pytest.raises(QuantizationError, match=r"\[N, 7\]"):
        unpack_codes(np.zeros((1, 8), np.uint8), 7, 8)


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
@pytest.mark.parametrize("dim", [1, 8, 13, 1024])
def test_byte_sizes_are_exact(bits: int, dim: int) -> None:
    q = quantize(np.random.default_rng(0).normal(size=(3, dim)).astype(np.float32), bits)
    per_row = dim * 4 if bits == 32 else -(-dim * bits // 8)
    assert q.packed.shape == (3, per_row) == (3, row_bytes(dim, bits))
    assert q.nbytes == 3 * per_row + (0 if bits == 32 else 3 * 8)


def test_seven_bits_take_seven_eighths_of_eight_bits() -> None:
    x = np.random.default_rng(1).random((10, 1024), dtype=np.float32)
    eight, seven, six = (quantize(x, b).packed.nbytes for b in (8, 7, 6))
    assert seven * 8 == eight * 7
    assert six * 8 == eight * 6


finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=200)
@given(
    hnp.arrays(
        np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40), elements=finite32
    ),
    st.sampled_from([b for b in SUPPORTED_BITS if b != 32]),
)
@example(np.array([[0.0, 1.9, -1.9]], np.float32), 7)
def test_dequantization_error_within_half_a_step(x: np.ndarray, bits: int) -> None:
    q = quantize(x, bits)
    x_hat = dequantize(q)
    assert x_hat.dtype == np.float32 and x_hat.shape == x.shape
    err = np.abs(x_hat.astype(np.float64) - x)
    # Half a step, plus the float32 rounding of ``zero_point + scale * code``: its terms are as
    # large as the row's range, not as the value (0 in a row spanning -1.9..1.9, 7 bits, is off
    # by half a step and one ulp of 1.9: a bound in ulps of |x| alone failed there).
    magnitude = np.abs(x).max(axis=1, initial=0.0)[:, None] if x.size else np.abs(x)
    rounding = np.spacing(2 * magnitude.astype(np.float32)).astype(np.float64)
    bound = q.scale.astype(np.float64)[:, None] / 2 + rounding
    assert (err <= bound).all()
    if len(x):  # the range covers each LR: min is exact, the step is the smallest that fits
        np.testing.assert_array_equal(q.zero_point, x.min(axis=1))
        span = x.max(axis=1).astype(np.float64) - x.min(axis=1)
        assert (q.scale.astype(np.float64) * ((1 << bits) - 1) >= span).all()


@given(hnp.arrays(np.float32, (3, 17), elements=finite32))
def test_fp32_is_lossless(x: np.ndarray) -> None:
    q = quantize(x, 32)
    np.testing.assert_array_equal(dequantize(q), x)


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_constant_lr_is_exact(bits: int) -> None:
    x = np.full((2, 9), 3.25, dtype=np.float32)
    q = quantize(x, bits)
    np.testing.assert_array_equal(dequantize(q), x)
    if bits != 32:
        assert (q.scale == 0).all()


@pytest.mark.parametrize("bad", [np.array([[1.0, np.nan]]), np.array([[np.inf, 0.0]])])
def test_non_finite_latents_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises(QuantizationError, match="finite"):
        quantize(bad.astype(np.float32), 8)


@pytest.mark.parametrize("bits", [0, 3, 16, 33, True])
def test_unsupported_bits_are_rejected(bits: int) -> None:
    with pytest.raises(QuantizationError, match="bits must be one of"):
        quantize(np.zeros((1, 4), np.float32), bits)


def test_quantized_lr_checks_its_arrays() -> None:
    with pytest.raises(QuantizationError, match="rows must hold 4 bytes"):
        QuantizedLR(
            np.zeros((1, 3), np.uint8), np.ones(1, np.float32), np.zeros(1, np.float32), 8, 4
        )
    with pytest.raises(QuantizationError, match="scale must be float32"):
        QuantizedLR(
            np.zeros((1, 4), np.uint8), np.ones(2, np.float32), np.zeros(1, np.float32), 8, 4
        )


def test_take_selects_rows() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    q = quantize(x, 6).take([2, 0])
    np.testing.assert_allclose(dequantize(q), x[[2, 0]], atol=0.1)
