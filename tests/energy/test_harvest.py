"""Harvesting and the forward simulation: neutral, time to depletion, storage limit, traces."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from device.energy import load_profile
from device.energy.chemistry import MONTH_S, Temperature, ideal, load_chemistry
from device.energy.errors import ChemistryError, TraceError
from device.energy.harvest import ClearSky, ConstantSource, Panel, SolarTrace, parse_harvest
from device.energy.simulate import YEAR_S, Storage, simulate

VEGA = load_profile("vega")
IDEAL = Storage(ideal(VEGA), 1000.0)
DAY_S = 86400.0


def test_a_source_above_the_mean_load_is_energy_neutral() -> None:
    result = simulate(0.010, IDEAL, ConstantSource(0.0101))
    assert result.neutral and result.min_soc == 1.0
    assert result.wasted_j == pytest.approx(0.0001 * YEAR_S, rel=1e-6)


def test_a_source_just_below_depletes_at_the_analytical_time() -> None:
    result = simulate(0.010, IDEAL, ConstantSource(0.0099))
    analytical = 1000.0 / (0.010 - 0.0099)  # 1e7 s, 116 days
    assert result.depleted_at_s == pytest.approx(analytical, rel=0.01)
    assert result.depleted_at_s == pytest.approx(analytical, rel=1e-6)
    assert not result.neutral and "empty after 116 days" in result.describe()


def test_no_harvest_is_the_division() -> None:
    result = simulate(0.001, Storage(ideal(VEGA), VEGA.battery_j), horizon_s=2 * YEAR_S, step_s=600)
    assert result.depleted_at_s == pytest.approx(VEGA.battery_j / 0.001, rel=1e-6)


def test_self_discharge_alone_empties_a_cell() -> None:
    lipo = load_chemistry("lipo")
    storage = Storage(lipo, 1000.0, Temperature(30.0))
    result = simulate(0.0, storage, horizon_s=3 * YEAR_S, step_s=3600)
    # 2 %/month at 20 C doubles at 30 C: the capacity is lost in 25 months
    assert result.depleted_at_s == pytest.approx(25 * MONTH_S, rel=1e-4)
    assert result.self_discharge_j == pytest.approx(1000.0, rel=1e-3)


def test_a_year_in_seconds() -> None:
    started = time.process_time()
    result = simulate(0.002, Storage(load_chemistry("lipo"), 5000.0), ClearSky(panel=Panel(0.001)))
    assert time.process_time() - started < 5
    assert result.horizon_s == YEAR_S and result.cycles > 1


def test_the_clear_sky_model_has_nights_and_seeded_clouds() -> None:
    sky = ClearSky(latitude_deg=45, day_of_year=172, seed=3)
    t = np.arange(0, 3 * 86400, 3600.0)
    irradiance = sky.irradiance_w_m2(t)
    assert np.all(irradiance.reshape(3, 24)[:, :4] == 0)  # night
    assert 0 < irradiance.max() < 1100
    assert np.array_equal(irradiance, ClearSky(45, 172, seed=3).irradiance_w_m2(t))
    assert not np.array_equal(irradiance, ClearSky(45, 172, seed=4).irradiance_w_m2(t))


def test_an_irradiance_trace(tmp_path: Path) -> None:
    path = tmp_path / "sun.csv"
    path.write_text(
        "# generated\ntime,irradiance_w_m2\n2026-06-21T00:00,0\n2026-06-21T12:00,800\n", "utf-8"
    )
    solar = parse_harvest(f"solar:{path}", Panel(0.01, 0.2))
    assert isinstance(solar, SolarTrace)
    assert solar.power_w(np.array([0.0, 43200.0, 86400.0 + 43200.0])).tolist() == [0, 1.6, 1.6]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("time_s,irradiance_w_m2\n0,1\n60,-5\n", r"row 3: irradiance_w_m2 '-5' must be"),
        ("time_s,irradiance_w_m2\n0,1\n0,5\n", r"row 3: time '0' does not increase"),
        ("time_s,irradiance_w_m2\n0,1\nabc,5\n", r"row 3: time_s 'abc' is not a number"),
        ("time,irradiance_w_m2\nyesterday,1\n", r"row 2: time 'yesterday' is not an ISO"),
        ("t,w\n0,1\n", r"the header must name a time column"),
        ("time_s,irradiance_w_m2\n0,1,2\n", r"row 2: 3 fields"),
    ],
)
def test_bad_trace_rows_are_named(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, "utf-8")
    with pytest.raises(TraceError, match=match):
        parse_harvest(f"solar:{path}")


def test_harvest_specs() -> None:
    assert parse_harvest("constant:0.002").describe() == "constant 0.002 W"
    assert isinstance(parse_harvest("solar:clear-sky:30:80"), ClearSky)
    for bad in ("wind:3", "constant:lots", "solar:/no/such/file.csv"):
        with pytest.raises(TraceError):
            parse_harvest(bad)


def test_a_primary_cell_cannot_store_harvested_energy() -> None:
    primary = Storage(load_chemistry("li-socl2"), 1000.0)
    with pytest.raises(ChemistryError, match="li-socl2 is a primary cell"):
        simulate(0.001, primary, ConstantSource(0.002))
    assert simulate(0.001, primary, horizon_s=DAY_S, step_s=60).neutral
