"""The long-horizon fields on the wire: additive, optional, bounded; old messages still valid."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dataset_stream.protocol import (
    CLASS_METRIC_FIELDS,
    PER_CLASS_CAP,
    BatteryState,
    ClassMetrics,
    ProtocolError,
    ReplayStats,
    Status,
    Telemetry,
    validate_status,
    validate_telemetry,
)

#: A telemetry as nodes sent it before the long-horizon metrics (and a 100-class map with it).
OLD_TELEMETRY: dict[str, Any] = {
    "device": "node-0001",
    "seq": 17,
    "t": 1764000000.0,
    "state": "learning",
    "samples": 300,
    "accuracy": 0.71,
    "latency_s": {"frozen": 1.25, "adaptive": 0.4, "total": 1.65},
    "energy_j": {"frozen": 0.08, "adaptive": 0.02, "memory": 0.001, "idle": 1e-4, "total": 0.1},
    "battery": {"soc": 0.93, "remaining_j": 36000.0},
    "lifetime_h": 2613.0,
    "replay": {"size": 1500, "capacity": 1500, "bits": 8, "bytes": 1536000},
    "host_s": 0.12,
    "events": 17,
    "gaps": 0,
    "accuracy_by_class": {str(c): 0.5 for c in range(100)},
}
OLD_STATUS: dict[str, Any] = {
    "state": "idle",
    "device": "node-0001",
    "t": 1764000000.0,
    "last_seq": 17,
    "events": 17,
    "accuracy": 0.71,
    "battery": {"soc": 0.93, "remaining_j": 36000.0},
    "online_since": 1764000000.0,
}
METRICS = ClassMetrics(
    classes_seen=3,
    forgetting=0.2,
    forgetting_max=0.5,
    backward_transfer=-0.1,
    forgetting_by_class={0: 0.5, 3: -0.1},
    backward_transfer_by_class={0: -0.5},
    events_since_class={0: 12, 3: 1, 8: 40},
    seconds_since_class={3: 60.0},
)


def test_old_messages_still_validate_and_read_without_the_new_fields() -> None:
    telemetry = Telemetry.from_json(json.dumps(OLD_TELEMETRY))
    assert telemetry.classes is None and telemetry.accuracy_by_class is not None
    assert len(telemetry.accuracy_by_class) == 100  # what old nodes sent is still read
    assert json.loads(telemetry.to_json()) == OLD_TELEMETRY
    status = Status.from_json(json.dumps(OLD_STATUS))
    assert status.accuracy_by_class is None and status.forgetting is None
    assert json.loads(status.to_json()) == OLD_STATUS


def test_new_messages_round_trip() -> None:
    telemetry = Telemetry.from_json(json.dumps(OLD_TELEMETRY | METRICS.to_dict()))
    assert telemetry.classes == METRICS
    wire = json.loads(telemetry.to_json())
    assert wire["forgetting_by_class"] == {"0": 0.5, "3": -0.1}
    assert set(CLASS_METRIC_FIELDS) <= set(wire)
    empty = ClassMetrics(classes_seen=0)
    assert empty.to_dict() == {
        "classes_seen": 0,
        "forgetting": None,
        "forgetting_max": None,
        "backward_transfer": None,
    }
    assert Telemetry.from_json(json.dumps(OLD_TELEMETRY | empty.to_dict())).classes == empty
    factory = Status(
        state="idle", device="node-0001", events=0, accuracy=0.3, accuracy_by_class={0: 0.9}
    )
    assert Status.from_json(factory.to_json()) == factory
    later = Status(state="idle", device="node-0001", events=4, accuracy=0.5, forgetting=0.25)
    assert Status.from_json(later.to_json()) == later


def test_fields_without_classes_seen_stay_a_producers_own() -> None:
    mine = OLD_TELEMETRY | {"forgetting": 0.5}
    telemetry = Telemetry.from_json(json.dumps(mine))
    assert telemetry.classes is None and telemetry.extra == {"forgetting": 0.5}
    assert json.loads(telemetry.to_json()) == mine


@pytest.mark.parametrize(
    "field", ["forgetting_by_class", "backward_transfer_by_class", "events_since_class"]
)
def test_per_class_maps_are_bounded_by_the_cap(field: str) -> None:
    too_many = {str(c): 0 for c in range(PER_CLASS_CAP + 1)}
    message = OLD_TELEMETRY | METRICS.to_dict() | {field: too_many}
    with pytest.raises(ProtocolError, match=field):
        validate_telemetry(message)
    with pytest.raises(ValueError, match="cap"):
        ClassMetrics(classes_seen=1, **{field: {c: 0 for c in range(PER_CLASS_CAP + 1)}})
    with pytest.raises(ProtocolError, match="accuracy_by_class"):
        validate_status(OLD_STATUS | {"accuracy_by_class": too_many})


@pytest.mark.parametrize(
    "change",
    [
        {"forgetting": 1.5},
        {"backward_transfer": -2},
        {"classes_seen": -1},
        {"events_since_class": {"3": -1}},
        {"seconds_since_class": {"3": -1.0}},
        {"forgetting_by_class": {"3": "a lot"}},
    ],
)
def test_out_of_range_values_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        Telemetry.from_json(json.dumps(OLD_TELEMETRY | METRICS.to_dict() | change))


def test_types_refuse_what_the_schema_would() -> None:
    with pytest.raises(ValueError, match=r"within -1\.\.1"):
        ClassMetrics(classes_seen=1, forgetting=1.01)
    with pytest.raises(ValueError, match="more than"):
        Status(state="idle", accuracy_by_class={c: 0.0 for c in range(PER_CLASS_CAP + 1)})
    assert BatteryState(0.5, 1.0) and ReplayStats(0, 0, 8, 0)  # the rest is unchanged
