"""Radios: sourced profiles, LoRa time on air, pricing traffic, flagging what cannot be carried."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from device.energy.errors import ProfileError, RadioError
from device.energy.radio import Traffic, price_traffic
from device.energy.radio_profile import RADIOS, load_radio


def _text(name: str) -> str:
    return resources.files("device.energy.profiles.radios").joinpath(f"{name}.toml").read_text()


@pytest.mark.parametrize("name", RADIOS)
def test_every_shipped_radio_loads_with_sources(name: str) -> None:
    radio = load_radio(name)
    assert radio.name == name
    assert name == "none" or all(source.strip() for _, source in radio.sources)


@pytest.mark.parametrize("table", ["uplink", "downlink", "idle", "limits"])
def test_a_table_without_a_source_is_refused(tmp_path: Path, table: str) -> None:
    lines, section = [], ""
    for line in _text("ble").splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        if not (section == table and line.startswith("source")):
            lines.append(line)
    path = tmp_path / "radio.toml"
    path.write_text("\n".join(lines), "utf-8")
    with pytest.raises(RadioError, match=rf"radio\.toml: \[{table}\] source is missing"):
        load_radio(path)
    assert issubclass(RadioError, ProfileError)


def test_unknown_radios_are_refused() -> None:
    for name in ("wifi", "lorawan", "lorawan-sf13"):
        with pytest.raises(RadioError):
            load_radio(name)


def test_lora_time_on_air_is_semtechs() -> None:
    # Semtech's formula, 125 kHz, CR 4/5, 8-symbol preamble, explicit header, CRC on:
    # 20 B of payload + 13 B of LoRaWAN header at SF7 = 71.936 ms; 51 B at SF12 = 2793.472 ms.
    assert load_radio("lorawan-sf7").lora.time_on_air_s(20) == pytest.approx(0.071936)  # type: ignore[union-attr]
    assert load_radio("lorawan-sf12").lora.time_on_air_s(51) == pytest.approx(2.793472)  # type: ignore[union-attr]


def test_telemetry_every_minute_at_sf12_is_over_the_duty_cycle() -> None:
    radio = load_radio("lorawan-sf12")
    cost = price_traffic(radio, Traffic(events_per_hour=60, telemetry_bytes=20))
    assert [p.code for p in cost.problems] == ["duty_cycle"]
    assert "over its 1% duty-cycle limit" in cost.problems[0].message
    assert cost.airtime_share == pytest.approx(60 * 1.810432 / 3600)
    hourly = price_traffic(radio, Traffic(events_per_hour=1, telemetry_bytes=20))
    assert hourly.carried and hourly.power_w > 0


def test_a_payload_over_the_maximum_is_flagged() -> None:
    cost = price_traffic(load_radio("lorawan-sf9"), Traffic(events_per_hour=1))
    assert [p.code for p in cost.problems] == ["payload_over_max"]
    assert "387 B is over lorawan-sf9's maximum payload of 115 B" in cost.problems[0].message


def test_packet_radios_are_linear_in_bytes_and_none_is_free() -> None:
    ble = load_radio("ble")
    one = price_traffic(ble, Traffic(events_per_hour=3600, telemetry_bytes=100))
    two = price_traffic(ble, Traffic(events_per_hour=3600, telemetry_bytes=200))
    assert two.telemetry_w - one.telemetry_w == pytest.approx(100 * ble.uplink.per_byte_j)  # type: ignore[union-attr]
    assert one.telemetry_w == pytest.approx(ble.uplink.per_message_j + 100 * ble.uplink.per_byte_j)  # type: ignore[union-attr]
    down = price_traffic(
        ble, Traffic(events_per_hour=0, downlink_bytes_per_h=3600, downlink_message_bytes=1000)
    )
    assert down.downlink_w == pytest.approx((4.5e-5 + 1000 * 1.55e-7) / 1000)
    free = price_traffic(load_radio("none"), Traffic(events_per_hour=60, predictions_per_s=1))
    assert free.power_w == 0 and free.carried
