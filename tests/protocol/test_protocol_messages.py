"""JSON Schemas of the node's messages, and the topic helpers."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_stream.protocol import (
    ERROR_CODES,
    KINDS,
    SCHEMA_NAMES,
    GatewayStatus,
    ProtocolError,
    Status,
    fleet_ids,
    gateway_filter,
    gateway_topic,
    load_schema,
    parse_gateway_topic,
    parse_topic,
    topic,
    topic_filter,
    validate_device_id,
    validate_error,
    validate_status,
    validate_telemetry,
)

TELEMETRY: dict[str, Any] = {
    "device": "node-0001",
    "seq": 17,
    "t": 1764000000.0,
    "state": "learning",
    "samples": 300,
    "accuracy": 0.71,
    "latency_s": {"frozen": 1.25, "adaptive": 0.4, "total": 1.65},
    "energy_j": {"frozen": 0.08, "adaptive": 0.02, "memory": 0.001, "idle": 0.0001, "total": 0.1},
    "battery": {"soc": 0.93, "remaining_j": 36000.0},
    "lifetime_h": 2613.0,
    "replay": {"size": 1500, "capacity": 1500, "bits": 8, "bytes": 1536000},
    "host_s": 0.12,
}


def reject(validator: Any, obj: object) -> str:
    with pytest.raises(ProtocolError) as info:
        validator(obj)
    assert info.value.code == "bad_format"
    return info.value.message


def test_schemas_ship_as_package_data() -> None:
    files = {p.name for p in resources.files("dataset_stream.schemas").iterdir()}
    assert {f"{name}.json" for name in SCHEMA_NAMES} <= files
    for name in SCHEMA_NAMES:
        assert load_schema(name)["$schema"].endswith("2020-12/schema")


def test_design_md_telemetry_example_is_valid_and_extra_fields_are_allowed() -> None:
    assert validate_telemetry(TELEMETRY) == TELEMETRY
    assert validate_telemetry(json.dumps(TELEMETRY).encode())["seq"] == 17
    validate_telemetry({**TELEMETRY, "accuracy": None, "lifetime_h": None, "custom": [1, 2]})
    validate_telemetry({**TELEMETRY, "energy_j": {**TELEMETRY["energy_j"], "radio": 0.5}})


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("seq",), -1, "seq"),
        (("seq",), "17", "seq"),
        (("state",), "sleeping", "state"),
        (("accuracy",), 1.5, "accuracy"),
        (("device",), "node 1", "device"),
        (("battery", "soc"), 2.0, "battery/soc"),
        (("energy_j", "total"), -1.0, "energy_j/total"),
        (("replay", "bits"), 0, "replay/bits"),
        (("latency_s", "frozen"), float("nan"), "latency_s/frozen"),
    ],
)
def test_bad_telemetry_names_the_field(path: tuple[str, ...], value: object, field: str) -> None:
    message = copy.deepcopy(TELEMETRY)
    target = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert field in reject(validate_telemetry, message)


@pytest.mark.parametrize("missing", sorted(TELEMETRY))
def test_every_documented_telemetry_field_is_required(missing: str) -> None:
    message = {k: v for k, v in TELEMETRY.items() if k != missing}
    assert missing in reject(validate_telemetry, message)


def test_status_messages() -> None:
    validate_status({"state": "offline"})  # the last will
    will = Status.offline("node-0001")  # the will a node leaves
    assert Status.from_json(will.to_json()) == will and not will.online
    assert validate_status(will.to_json()) == {"state": "offline", "device": "node-0001"}
    validate_status({"device": "node-0001", "state": "idle", "t": 1.0, "lr": 8})
    assert "state" in reject(validate_status, {"device": "node-0001"})
    assert "state" in reject(validate_status, {"state": "Offline!"})
    assert "t" in reject(validate_status, {"state": "idle", "t": "noon"})


def test_gateway_status_messages() -> None:
    status = GatewayStatus("gw-0", "online", ("node-0000", "node-0001"), extra={"site": "lab"})
    assert GatewayStatus.from_json(status.to_json()) == status and status.online
    assert json.loads(status.to_json()) == {
        "gateway": "gw-0",
        "state": "online",
        "devices": ["node-0000", "node-0001"],
        "site": "lab",
    }
    for bad in (
        {"gateway": "gw 0"},
        {"state": "asleep"},
        {"devices": "node-0000"},
        {"devices": ["node 0"]},
    ):
        with pytest.raises(ValueError):
            GatewayStatus(**{"gateway": "gw-0", "state": "offline", "devices": (), **bad})
    with pytest.raises(ProtocolError, match="devices"):
        GatewayStatus.from_json(b'{"gateway": "gw-0", "state": "online"}')


def test_error_messages() -> None:
    sent = ProtocolError("stale_seq", "seen", seq=3).to_message("node-0002")
    assert validate_error(sent) == {
        "device": "node-0002",
        "code": "stale_seq",
        "message": "seen",
        "seq": 3,
    }
    validate_error({"device": "n", "code": "bad_shape", "message": "x"})
    assert "seq" in reject(validate_error, {"device": "n", "code": "x", "message": "m", "seq": 1.5})
    assert "message" in reject(validate_error, {"device": "n", "code": "x"})


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100) | st.text(max_size=50))
def test_validators_raise_only_protocol_error(raw: bytes | str) -> None:
    for validator in (validate_telemetry, validate_status, validate_error):
        try:
            validator(raw)
        except ProtocolError as exc:
            assert exc.code == "bad_format"


def test_non_objects_are_rejected() -> None:
    for raw in ("[]", "1", "null", b"\xff", "{"):
        reject(validate_status, raw)


def test_topics() -> None:
    assert topic("vega", "node-0001", "batch") == "vega/node-0001/batch"
    assert topic("site/a", "x", "eval") == "site/a/x/eval"
    assert topic_filter("vega", "telemetry") == "vega/+/telemetry"
    assert parse_topic("vega", "vega/node-0001/telemetry") == ("node-0001", "telemetry")
    for bad in ("vega/node-0001", "vega/a/b/telemetry", "other/x/batch", "vega/x/unknown"):
        with pytest.raises(ProtocolError):
            parse_topic("vega", bad)
    for prefix, device, kind in [
        ("vega/#", "a", "batch"),
        ("vega", "a+", "batch"),
        ("vega", "a", "x"),
    ]:
        with pytest.raises(ProtocolError):
            topic(prefix, device, kind)


def test_gateway_topics() -> None:
    assert gateway_topic("vega", "gw-0") == "vega/gateway/gw-0/status"
    assert gateway_filter("site/a") == "site/a/gateway/+/status"
    assert parse_gateway_topic("vega", "vega/gateway/gw-0/status") == "gw-0"
    for where in ("vega/gateway/gw-0/telemetry", "vega/gateway/status", "vega/node-0/status"):
        with pytest.raises(ProtocolError, match="not a gateway status"):
            parse_gateway_topic("vega", where)
    with pytest.raises(ProtocolError):
        gateway_topic("vega", "gw/0")


def test_device_ids() -> None:
    assert validate_device_id("node-0001") == "node-0001"
    assert validate_device_id("A" * 64)
    for bad in ("", "A" * 65, "a/b", "é", "a b", None, 3):
        with pytest.raises(ProtocolError):
            validate_device_id(bad)


def test_fleet_ids() -> None:
    assert fleet_ids(2) == ["node-0000", "node-0001"]
    assert fleet_ids(3, prefix="cam_")[-1] == "cam_0002"
    assert fleet_ids(0) == []
    assert len(set(fleet_ids(12000))) == 12000
    with pytest.raises(ValueError, match="invalid device id"):
        fleet_ids(1, prefix="a/b")
    with pytest.raises(ValueError):
        fleet_ids(-1)


DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_protocol_doc_covers_every_code_field_and_topic() -> None:
    text = (DOCS / "protocol.md").read_text()
    for code in sorted(ERROR_CODES):
        assert f"`{code}`" in text, code
    for field in TELEMETRY:
        assert f'"{field}"' in text, field
    for kind in KINDS:
        assert f"vega/{{id}}/{kind}" in text, kind
    # the gateway's status points into the protocol package
    assert "vega/gateway/{gateway_id}/status" in text and "schemas/gateway_status.json" in text
    assert "`GatewayStatus`" in text and "`Status.offline(device)`" in text
    # the telemetry example of the doc is a valid message
    start = text.index("Telemetry, one per learning event")
    block = text[
        text.index("```json", start) + 7 : text.index("```", text.index("```json", start) + 7)
    ]
    validate_telemetry(json.loads(block))
