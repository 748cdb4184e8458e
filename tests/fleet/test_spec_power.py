"""A class's radio, battery chemistry and temperature: read from a spec, checked by field, and
given to each of its nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.fleet.errors import FleetSpecError
from device.fleet.spec import DeviceClass, FleetSpec
from device.model.bundle import ModelBundle
from device.node.settings import PowerSettings

POWERED = """
[[class]]
name = "ble"
count = 2
radio = "ble"
battery = "lipo"
temperature_c = 35

[[class]]
name = "paper"
count = 1
"""


def test_spec_fields_reach_the_node_settings(tmp_path: Path, default_bundle: ModelBundle) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(POWERED, encoding="utf-8")
    spec = FleetSpec.load(path)
    ble, paper = spec.classes
    assert (ble.radio, ble.battery, ble.temperature_c) == ("ble", "lipo", 35)
    node = ble.settings("node-0000", tmp_path, default_bundle)
    assert node.power == PowerSettings(radio="ble", battery="lipo", temperature_c=35.0)
    assert paper.settings("node-0002", tmp_path, default_bundle).power == PowerSettings()
    # the defaults stay out of a class's table, so a spec without them reads as before
    assert {"radio", "battery", "temperature_c"} <= set(ble.to_dict())
    assert not {"radio", "battery", "temperature_c"} & set(paper.to_dict())
    assert DeviceClass.from_dict(ble.to_dict()) == ble


@pytest.mark.parametrize(
    ("line", "field", "says"),
    [
        ('radio = "wifi"', "radio", "unknown radio 'wifi'"),
        ('radio = "lorawan"', "radio", "spreading factor"),
        ('battery = "nicd"', "battery", "nicd"),
        ("temperature_c = -300", "temperature_c", "degrees C"),
        ('temperature_c = "hot"', "temperature_c", "must be float"),
        ("radio = 3", "radio", "must be str"),
    ],
)
def test_a_bad_power_field_is_named(tmp_path: Path, line: str, field: str, says: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(f'[[class]]\nname = "x"\ncount = 1\n{line}\n', encoding="utf-8")
    with pytest.raises(FleetSpecError) as caught:
        FleetSpec.load(path)
    text = str(caught.value)
    assert f"class 'x': {field}" in text and says in text, text
