"""What a node's radio and cell add to its compute (:mod:`device.energy.node_power`)."""

from __future__ import annotations

import pytest

from device.energy import (
    DOWNLINK_J_PER_BYTE,
    load_chemistry,
    load_node_power,
    load_profile,
    load_radio,
)
from device.energy.chemistry import Temperature, mean_self_discharge_w
from device.energy.errors import ChemistryError, RadioError
from device.energy.radio import Traffic, price_traffic


def test_the_default_changes_nothing() -> None:
    power = load_node_power()
    vega = load_profile("vega")
    assert not power.priced
    assert power.as_built(vega) is vega
    assert power.send_j(387) == power.receive_j(387) == 0.0
    assert power.downlink_j(1000) == 1000 * DOWNLINK_J_PER_BYTE  # the stand-in, as before
    assert power.problems(3600.0) == ()


def test_a_radio_prices_its_downlinks_instead_of_the_stand_in() -> None:
    power = load_node_power("ble")
    radio = load_radio("ble")
    assert power.downlink_j(1000) == radio.receive(1000)[0] != 1000 * DOWNLINK_J_PER_BYTE
    assert power.send_j(387) == radio.send(387)[0]


def test_as_built_matches_the_budget_of_energy_and_plan() -> None:
    vega = load_profile("vega")
    power = load_node_power("ble", "lipo", 35.0)
    built = power.as_built(vega)
    lipo = load_chemistry("lipo")
    assert built.battery_j == pytest.approx(lipo.usable_j(vega.capacity_mah), rel=1e-12)
    idle_w = price_traffic(load_radio("ble"), Traffic(events_per_hour=0.0)).idle_w
    self_w = mean_self_discharge_w(lipo, built.battery_j, Temperature(35.0))
    assert built.sleep_w == pytest.approx(vega.sleep_w + idle_w + self_w, rel=1e-12)


def test_lorawan_sf12_cannot_carry_a_telemetry_a_minute() -> None:
    codes = {p.code for p in load_node_power("lorawan-sf12").problems(60.0)}
    assert codes == {"payload_over_max", "duty_cycle"}
    assert load_node_power("lorawan-sf7").problems(60.0, telemetry_bytes=50) == ()


def test_unknown_names_are_refused() -> None:
    with pytest.raises(RadioError):
        load_node_power("wifi")
    with pytest.raises(ChemistryError):
        load_node_power(battery="nicd")
