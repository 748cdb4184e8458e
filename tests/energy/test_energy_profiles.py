"""Hardware profiles: shipped numbers and their derivations, and validation errors."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

from device.energy import PHASES, PRIMITIVES, ProfileError, load_profile, parse_profile
from device.learning.layers import total_macs
from device.model.mobilenet import mobilenet_v1_layers


def _data(name: str) -> dict:
    text = resources.files("device.energy.profiles").joinpath(f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def test_vega_numbers_are_the_papers() -> None:
    vega = load_profile("vega")
    assert vega.freq_hz == 375e6 and vega.cores == 8
    assert vega.active_w == pytest.approx(0.062) and vega.sleep_w == pytest.approx(1.7e-6)
    assert vega.tiling_overhead == 0.0  # [P]'s ~7 % is inside its measured MAC/cycle (Calibration)
    pw, dw, fc = vega.fp32["pointwise"], vega.fp32["depthwise"], vega.fp32["linear"]
    assert (pw.forward, pw.backward_error, pw.backward_gradient) == (1.7, 1.33, 0.97)
    assert (dw.forward, dw.backward_error, dw.backward_gradient) == (0.37, 0.24, 0.39)
    assert (fc.forward, fc.backward_error, fc.backward_gradient) == (1.5, 1.42, 1.2)
    assert vega.battery_j == pytest.approx(3300 * 3.6 * 3.3)
    external = {r.name: r for r in vega.memory}["external"]
    assert external.capacity_bytes == 64 * 1024 * 1024


def test_vega_int8_rate_reproduces_the_measurement() -> None:
    """MobileNet-V1 1.0/128 up to its last depthwise-separable block, 300 images, 1.25 s."""
    vega = load_profile("vega")
    frozen = total_macs(mobilenet_v1_layers(res=128, lr_layer=27), adaptive=False)
    seconds = frozen * 300 / vega.int8_mac_per_cycle * (1 + vega.tiling_overhead) / vega.freq_hz
    assert seconds == pytest.approx(1.25, rel=1e-9)


def test_stm32l4_rates_are_derived_from_vega() -> None:
    vega, stm = load_profile("vega"), load_profile("stm32l4")
    factor = 4 / (9 * 7.2)  # per VEGA core (/7.2), 9 instructions per MAC against 4
    for primitive in PRIMITIVES:
        for phase in PHASES:
            expected = vega.fp32[primitive].of(phase) * factor
            assert stm.fp32[primitive].of(phase) == pytest.approx(expected, rel=1e-5)
    assert stm.int8_mac_per_cycle == pytest.approx(vega.int8_mac_per_cycle * factor, rel=1e-6)
    assert stm.freq_hz == 80e6 and stm.cores == 1
    assert stm.active_w == pytest.approx(vega.active_w / 2)


def test_user_file_by_path(tmp_path: Path) -> None:
    text = resources.files("device.energy.profiles").joinpath("vega.toml").read_text("utf-8")
    path = tmp_path / "mine.toml"
    path.write_text(text.replace('name = "vega"', 'name = "mine"').replace("0.062", "0.1"))
    mine = load_profile(str(path))
    assert mine.name == "mine" and mine.active_w == 0.1


def _set(data: dict, dotted: str, value: object) -> dict:
    *parents, key = dotted.split(".")
    table = data
    for parent in parents:
        table = table[parent]
    if value is None:
        del table[key]
    else:
        table[key] = value
    return data


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("fp32.pointwise.backward_error", 0, "[fp32.pointwise] backward_error must be > 0"),
        ("fp32.linear.forward", "fast", "[fp32.linear] forward must be a number"),
        ("fp32.depthwise", None, "depthwise is missing"),
        ("compute.freq_hz", -1.0, "[compute] freq_hz must be > 0"),
        ("compute.cores", 2.5, "[compute] cores must be an integer"),
        ("power.sleep_w", -1e-6, "[power] sleep_w must be >= 0"),
        ("battery.capacity_mah", None, "[battery] capacity_mah is missing"),
        ("battery.volts", 3.3, "[battery] volts is not a known key"),
        ("compute.int8_mac_per_cycle", True, "int8_mac_per_cycle must be a number"),
    ],
)
def test_validation_names_the_bad_key(dotted: str, value: object, message: str) -> None:
    data = _set(_data("stm32l4"), dotted, value)
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "stm32l4.toml")
    assert str(info.value).startswith("stm32l4.toml: ")
    assert message in str(info.value)


def test_memory_region_errors() -> None:
    data = _data("vega")
    data["memory"][1]["holds"] = ["lr_memory", "coffee"]
    with pytest.raises(ProfileError, match=r"\[memory\.L2\] holds has unknown items \['coffee'\]"):
        parse_profile(data, "vega.toml")
    data = _data("vega")
    data["memory"][2]["name"] = "L2"
    with pytest.raises(ProfileError, match="duplicate memory region names"):
        parse_profile(data, "vega.toml")


def test_unknown_name_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="unknown profile 'gap8'"):
        load_profile("gap8")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ProfileError, match=r"bad\.toml: not valid TOML"):
        load_profile(bad)


def test_vega_hw_is_vega_with_a_hardware_bounded_frozen_stage() -> None:
    """vega-hw differs from vega only in its INT8 rate: PULP-NN's 15.5 MAC/cycle on 8 cores,
    under the 8 cores x 4-way SIMD = 32 MAC/cycle peak that vega's paper-derived rate exceeds."""
    vega, hw = load_profile("vega"), load_profile("vega-hw")
    simd_peak = vega.cores * 4
    assert vega.int8_basis == "paper-derived" and vega.int8_mac_per_cycle > simd_peak
    assert hw.int8_basis == "hardware-bounded" and hw.int8_mac_per_cycle == 15.5 <= simd_peak
    same = ("freq_hz", "cores", "active_w", "sleep_w", "capacity_mah", "voltage_v")
    assert all(getattr(hw, key) == getattr(vega, key) for key in same)
    assert (hw.tiling_overhead, dict(hw.fp32), hw.memory) == (
        vega.tiling_overhead,
        dict(vega.fp32),
        vega.memory,
    )
