"""Every fleet spec the docs ship loads, with the classes and faults its comments promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.fleet.spec import FleetSpec

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("name", sorted(p.name for p in DOCS.glob("*.toml")))
def test_a_shipped_spec_loads(name: str) -> None:
    spec = FleetSpec.load(DOCS / name)
    assert spec.classes and sum(c.count for c in spec.classes) > 0


def test_the_worked_example_is_200_devices_10_percent_flaky_with_its_faults() -> None:
    """docs/faults.md names the devices the seed picks; the schedule picks those."""
    spec = FleetSpec.load(DOCS / "faults-200.toml")
    assert {c.name: c.count for c in spec.classes} == {"vega": 180, "vega-flaky": 20}
    members = [(m.device_id, m.device_class.name) for m in spec.members()]
    hit = {
        fault.kind: set(spec.faults.targets(index, members))
        for index, fault in enumerate(spec.faults.faults)
    }
    assert hit["crash"] == {f"node-{i:04d}" for i in range(180, 200)}
    assert hit["capacity_loss"] == {"node-0022", "node-0104"}
    assert hit["network"] == {"node-0034", "node-0039", "node-0131", "node-0167"}
