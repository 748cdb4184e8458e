"""The numbers of the command line's tables: short, and what they stand for."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.cli._units import compact, count, hours, mib, optional, si

SUFFIX = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
PREFIX = {**SUFFIX, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (77, "77"),
        (1500, "1.5k"),
        (0.772, "0.772"),
        (4.944, "4.94"),
        (999.6, "1k"),  # rounded before the scale is chosen: never 1e+03
        (10_174.3, "10.2k"),
        (25_831, "25.8k"),
        (179_296, "179k"),
        (5_268_051, "5.27M"),
        (-2_273.847, "-2.27k"),
        (math.inf, "inf"),
    ],
)
def test_compact(value: float, text: str) -> None:
    assert compact(value) == text


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0, "J", "0 J"),
        (4.944, "J", "4.94 J"),
        (1.2e6, "J", "1.2 MJ"),
        (0.00123, "s", "1.23 ms"),
        (9.996e-4, "s", "1 ms"),
        (6.07e-5, "W", "60.7 uW"),
    ],
)
def test_si(value: float, unit: str, text: str) -> None:
    assert si(value, unit) == text


def test_hours_counts_sizes_and_missing_values() -> None:
    assert hours(10_174.3) == "10.2k h" and hours(4.26) == "4.26 h" and hours(None) == "-"
    assert count(1500) == "1500" and count(25_831) == "25.8k"
    assert mib(9_216_000) == "8.79" and mib(1536 * 1024 * 1024) == "1.54k"
    assert optional(None, ".3f") == "-" and optional(0.9999, ".2%") == "99.99%"


def _read(text: str, scales: dict[str, float]) -> float:
    number = text.rstrip("".join(k for k in scales if k))
    return float(number) * scales[text[len(number) :]]


@given(st.floats(min_value=-1e19, max_value=1e19, allow_nan=False))
def test_compact_is_short_and_within_half_a_percent(value: float) -> None:
    text = compact(value)
    assert "e" not in text or abs(value) < 1e-4  # no exponent where a suffix does
    if abs(value) >= 1:
        assert len(text.lstrip("-")) <= 5
        assert _read(text, SUFFIX) == pytest.approx(value, rel=5e-3)


@given(st.floats(min_value=1e-12, max_value=1e19))
def test_si_reads_back_within_half_a_percent(value: float) -> None:
    number, unit = si(value, "J").split(" ")
    assert unit.endswith("J") and len(number) <= 4
    assert float(number) * PREFIX[unit[:-1]] == pytest.approx(value, rel=5e-3)
