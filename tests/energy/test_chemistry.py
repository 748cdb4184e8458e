"""Battery chemistries: sourced profiles, usable energy, self-discharge by temperature, fade."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from device.energy import load_profile
from device.energy.chemistry import (
    CHEMISTRIES,
    MONTH_S,
    Temperature,
    ideal,
    load_chemistry,
    mean_self_discharge_w,
)
from device.energy.errors import ChemistryError, ProfileError, TraceError

VEGA = load_profile("vega")


def _shipped(name: str) -> str:
    folder = resources.files("device.energy.profiles.batteries")
    return folder.joinpath(f"{name}.toml").read_text("utf-8")


@pytest.mark.parametrize("name", CHEMISTRIES)
def test_every_shipped_table_has_a_source(name: str) -> None:
    data = tomllib.loads(_shipped(name))
    chemistry = load_chemistry(name)
    tables = [key for key, value in data.items() if isinstance(value, dict)]
    assert tables and all(data[t]["source"].strip() for t in tables)
    assert dict(chemistry.sources).keys() == set(tables)


@pytest.mark.parametrize("table", ["voltage", "capacity", "self_discharge", "cycles"])
def test_a_table_without_a_source_is_refused_naming_file_and_field(
    tmp_path: Path, table: str
) -> None:
    lines, section = [], ""
    for line in _shipped("lipo").splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        if not (section == table and line.startswith("source")):
            lines.append(line)
    path = tmp_path / "mine.toml"
    path.write_text("\n".join(lines), "utf-8")
    with pytest.raises(ChemistryError, match=rf"mine\.toml: \[{table}\] source is missing"):
        load_chemistry(path)
    assert issubclass(ChemistryError, ProfileError)


def test_bad_values_and_unknown_names_are_refused(tmp_path: Path) -> None:
    text = _shipped("lipo").replace("usable_fraction = 0.95", "usable_fraction = 1.5")
    (tmp_path / "bad.toml").write_text(text, "utf-8")
    with pytest.raises(ChemistryError, match=r"bad\.toml: \[capacity\] usable_fraction"):
        load_chemistry(tmp_path / "bad.toml")
    with pytest.raises(ChemistryError, match="nimh"):
        load_chemistry("nimh")


def test_the_ideal_battery_is_the_profiles() -> None:
    battery = ideal(VEGA)
    assert battery.usable_j(VEGA.capacity_mah) == VEGA.battery_j == 39204.0
    assert mean_self_discharge_w(battery, VEGA.battery_j, Temperature(60.0)) == 0.0


def test_self_discharge_doubles_every_ten_degrees() -> None:
    lipo = load_chemistry("lipo")
    at_20 = float(lipo.self_discharge_per_s(20.0))
    assert at_20 * MONTH_S == pytest.approx(0.02)
    assert float(lipo.self_discharge_per_s(30.0)) == pytest.approx(2 * at_20)
    assert float(lipo.self_discharge_per_s(35.0)) == pytest.approx(2**1.5 * at_20)
    usable = lipo.usable_j(3300)
    assert usable == pytest.approx(3300 * 3.6 * 3.7 * 0.95)
    watts = mean_self_discharge_w(lipo, usable, Temperature(20.0))
    assert watts * MONTH_S == pytest.approx(0.02 * usable)


def test_a_temperature_trace_averages_the_rate(tmp_path: Path) -> None:
    trace = tmp_path / "temp.csv"
    trace.write_text("# two hours\ntime_s,temp_c\n0,20\n3600,40\n", "utf-8")
    temperature = Temperature.parse(str(trace))
    lipo = load_chemistry("lipo")
    mean = mean_self_discharge_w(lipo, 1000.0, temperature)
    expected = (1 + 4) / 2 * float(lipo.self_discharge_per_s(20.0)) * 1000.0
    assert mean == pytest.approx(expected)
    assert np.allclose(temperature.at(np.array([0.0, 3599.0, 3600.0, 7200.0])), [20, 20, 40, 20])
    assert Temperature.parse("35").constant_c == 35.0


def test_a_bad_temperature_row_names_the_row(tmp_path: Path) -> None:
    trace = tmp_path / "temp.csv"
    trace.write_text("time_s,temp_c\n0,20\n60,warm\n", "utf-8")
    with pytest.raises(TraceError, match=r"temp\.csv: row 3: temp_c 'warm'"):
        Temperature.parse(str(trace))


def test_fade_with_cycles() -> None:
    lipo = load_chemistry("lipo")
    assert float(lipo.fade(500)) == pytest.approx(0.8)
    assert not load_chemistry("li-socl2").rechargeable
