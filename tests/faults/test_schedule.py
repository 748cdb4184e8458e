"""The fault schedule is pure and seeded: the same seed, device and fault give the same times."""

from __future__ import annotations

import numpy as np
import pytest

from device.faults import (
    DeviceFaults,
    FaultPlan,
    FaultSpec,
    NetworkFilter,
    NetworkImpairment,
    parse_faults,
)

MEMBERS = [(f"node-{i:04d}", "vega" if i < 150 else "stm32") for i in range(200)]


def times(plan: FaultPlan, until_s: float) -> dict[str, list[tuple[int, int, float]]]:
    out = {}
    for device, faults in plan.by_device(MEMBERS).items():
        out[device] = [(f.index, f.n, f.at_s) for f in faults.due(until_s)]
    return out


def test_same_seed_same_faults_and_another_seed_others() -> None:
    specs = (
        FaultSpec("crash", fraction=0.1, rate_per_hour=2.0),
        FaultSpec("capacity_loss", fraction=0.01, at_s=3600, capacity_fraction=1 / 3),
    )
    first, again = times(FaultPlan(specs, 7), 36_000), times(FaultPlan(specs, 7), 36_000)
    assert first == again and first
    assert times(FaultPlan(specs, 8), 36_000) != first


def test_a_fraction_is_exact_and_a_device_times_depend_on_its_id_only() -> None:
    plan = FaultPlan((FaultSpec("crash", classes=("vega",), fraction=0.1, rate_per_hour=1.0),))
    chosen = plan.targets(0, MEMBERS)
    assert len(chosen) == 15 and all(int(d[-4:]) < 150 for d in chosen)
    device = sorted(chosen)[0]
    alone = DeviceFaults(device, [(0, plan.faults[0])], plan.seed)  # nothing else of the fleet
    full = plan.by_device(MEMBERS)[device]
    assert [f.at_s for f in alone.due(50_000)] == [f.at_s for f in full.due(50_000)]


def test_due_hands_out_each_fault_once_in_time_order() -> None:
    plan = FaultPlan(
        (
            FaultSpec("clock_jump", ids=("node-0001",), at_s=10, jump_s=5),
            FaultSpec("crash", ids=("node-0001",), at_s=5),
        ),
    )
    faults = plan.by_device(MEMBERS)["node-0001"]
    assert faults.due(4) == []
    assert [f.kind for f in faults.due(20)] == ["crash", "clock_jump"]
    assert faults.due(1e9) == []


def test_the_spec_tables_are_checked_with_every_problem_named() -> None:
    doc = {
        "seed": 3,
        "fault": [
            {"kind": "network", "fraction": 0.02, "at_s": 0, "loss": 0.05},
            {"kind": "meteor", "at_s": 1},
            {"kind": "capacity_loss", "class": "nope", "at_s": 1, "capacity_fraction": 0.3},
            {"kind": "storage_full", "at_s": 1},
        ],
    }
    plan, problems = parse_faults(doc, ["vega"])
    assert plan.seed == 3 and [f.kind for f in plan.faults] == ["network"]
    assert len(problems) == 3
    assert problems[0].startswith("fault #2: fault kind 'meteor'")
    assert "no class named 'nope'" in problems[1] and "duration_s" in problems[2]


def test_a_network_filter_loses_duplicates_and_reorders_as_seeded() -> None:
    impairment = NetworkImpairment(loss=0.2, duplicate=0.2, reorder=0.2)
    runs = []
    for _ in range(2):
        net: NetworkFilter[int] = NetworkFilter(impairment, np.random.default_rng(1))
        handed = [d.message for m in range(500) for d in net.admit(m)[0]] + [
            d.message for d in net.release()
        ]
        runs.append((handed, net.lost, net.duplicated, net.reordered))
    assert runs[0] == runs[1]
    handed, lost, duplicated, reordered = runs[0]
    assert len(handed) == 500 - lost + duplicated
    assert lost > 50 and duplicated > 50 and reordered > 30
    assert handed != sorted(handed)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="probability"):
        NetworkImpairment(loss=1.5)
    with pytest.raises(ValueError, match="at_s"):
        FaultSpec("crash")


def test_the_kinds_a_spec_takes_are_the_kinds_the_protocol_carries() -> None:
    """The layers keep the two lists apart (device.faults may not import the protocol)."""
    from dataset_stream.protocol.fault import FAULT_KINDS
    from device.faults import KINDS

    assert KINDS == FAULT_KINDS
