"""The compiled pre-check of the message schemas (dataset_stream/protocol/fastcheck.py).

Its contract: ``True`` only if jsonschema accepts the message and it holds no NaN/infinity; a
``False`` sends the message through jsonschema, which writes the error. These tests run the
pre-check and jsonschema side by side on thousands of variants of real messages (fixed seeds) and
require the same verdict, and require validate_message to answer exactly as it did with
jsonschema alone (same dict, or same code and text).
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal
from enum import IntEnum
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from dataset_stream.errors import ProtocolError, UnsupportedSchema
from dataset_stream.protocol import ClassMetrics, EvalRef, messages
from dataset_stream.protocol.desired import DesiredState, Refusal, ReportedState, RolloutState
from dataset_stream.protocol.fastcheck import compile_schema, plain_finite
from dataset_stream.protocol.fault import FaultReport
from dataset_stream.protocol.gateway_status import GatewayStatus
from dataset_stream.protocol.messages import SCHEMA_NAMES, load_schema, validate_message
from dataset_stream.protocol.node_messages import ErrorMessage, ReplayStats, Status, Telemetry
from dataset_stream.protocol.prediction import Prediction
from dataset_stream.protocol.values import BatteryState

BATTERY = BatteryState(soc=0.93, remaining_j=36000.0)
REPLAY = ReplayStats(size=1500, capacity=1500, bits=8, bytes=1536000)


def _telemetry(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "device": "node-0001",
        "seq": 17,
        "t": 1764000000.0,
        "state": "learning",
        "samples": 300,
        "accuracy": 0.71,
        "latency_s": {"frozen": 1.25, "adaptive": 0.4, "total": 1.65},
        "energy_j": {"frozen": 0.08, "adaptive": 0.02, "memory": 0.001, "idle": 1e-4, "total": 0.1},
        "battery": BATTERY,
        "lifetime_h": 2613.0,
        "replay": REPLAY,
        "host_s": 0.12,
    }
    fields.update(changes)
    return Telemetry(**fields).to_dict()


#: Real messages, as the message classes write them (to_dict is what to_json serialises).
BASES: dict[str, list[dict[str, Any]]] = {
    "telemetry": [
        _telemetry(),
        _telemetry(
            accuracy=None,
            lifetime_h=None,
            events=17,
            gaps=2,
            accuracy_by_class={0: 0.5, 1: 1.0, 7: 0.0},
            inferences=3,
            inference_energy_j=0.01,
            prequential_accuracy=None,
            prequential_n=0,
            extra={"firmware": "1.2", "radio": {"rssi": -70, "snr": 7.5}, "tags": [1, "a"]},
        ),
        _telemetry(state="depleted", samples=0, prequential_accuracy=1.0, prequential_n=5),
        _telemetry(  # the long-horizon metrics
            events=40,
            accuracy_by_class={0: 0.5, 3: 0.25},
            classes=ClassMetrics(
                classes_seen=2,
                forgetting=0.125,
                forgetting_max=0.25,
                backward_transfer=-0.125,
                forgetting_by_class={0: 0.0, 3: 0.25},
                backward_transfer_by_class={0: 0.0, 3: -0.25},
                events_since_class={0: 4, 3: 0},
                seconds_since_class={3: 0.0},
            ),
        ),
        _telemetry(classes=ClassMetrics(classes_seen=0)),  # aggregates only, all null
    ],
    "status": [
        {"state": "offline"},  # the last will
        Status(
            state="learning",
            device="node-0001",
            t=1764000000.0,
            last_seq=17,
            events=17,
            gaps=0,
            battery=BATTERY,
            lifetime_h=2613.0,
            replay=REPLAY,
            model="mcunet",
        ).to_dict(),
        Status(state="error", device="n_1", last_seq=None, reason="loop failed").to_dict(),
        Status(  # the factory point: events 0, with the accuracy of each class
            state="idle", device="n_1", events=0, accuracy=0.3, accuracy_by_class={0: 0.9, 1: 0.0}
        ).to_dict(),
        Status(state="idle", device="n_1", events=9, accuracy=0.5, forgetting=-0.25).to_dict(),
    ],
    "error": [
        ErrorMessage(device="node-0002", code="stale_seq", message="seen", seq=3).to_dict(),
        ErrorMessage(
            device="node-0002", code="gap", message="skipped", gap_first=3, gap_last=5, next_seq=6
        ).to_dict(),
        ErrorMessage(device="x", code="depleted", message="", infer_seq=0).to_dict(),
    ],
    "prediction": [
        Prediction(
            device="node-0001",
            seq=12,
            t=1764000060.0,
            classes=[3, 7],
            confidence=[0.91, 0.48],
            ids=[120, 121],
            latency_s={"frozen": 0.1, "adaptive": 0.01, "total": 0.11},
            energy_j={"frozen": 0.2, "adaptive": 0.02, "total": 0.22},
            battery=BATTERY,
            repeated=True,
        ).to_dict(),
        Prediction(
            device="node-0001",
            seq=0,
            t=0.0,
            classes=[],
            confidence=[],
            latency_s={"frozen": 0.0, "adaptive": 0.0, "total": 0.0},
            energy_j={"frozen": 0.0, "adaptive": 0.0, "total": 0.0},
        ).to_dict(),
    ],
    "gateway_status": [
        GatewayStatus("gw-node-0000-500", "online", ["node-0000", "node-0001"]).to_dict(),
        GatewayStatus("gw_1", "offline", [], extra={"site": "lab", "since": 1.5}).to_dict(),
    ],
    "fault": [
        FaultReport("node-0001", "network", 2, 0, 0.0, 0.0, seq=1, params={"loss": 0.05}).to_dict(),
        FaultReport("node-0002", "crash", 0, 3, 61.5, 120.0, ts=1.0).to_dict(),
    ],
    "desired": [
        DesiredState("node-0001", 3, {"lr_bits": 6, "learning": False}, ts=1.0, by="ctl").to_dict(),
        DesiredState("n_1", 1, {"head": "v2", "head_sha256": "ab" * 32}).to_dict(),
    ],
    "reported": [
        ReportedState("node-0001", 0, {"lr_bits": 8, "learning_rate": 0.01}).to_dict(),
        ReportedState(
            "node-0001", 2, {}, seq=17, t=1020.0, refused=Refusal(3, "settings.lr_bits", "x")
        ).to_dict(),
    ],
    "rollout": [
        RolloutState("r1", "v2", "soaking", 1, [5.0, 25.0, 100.0], ["node-0001"]).to_dict(),
        RolloutState("r_2", "h.1", "halted", 0, [100.0], reason="accuracy_drop 0.2").to_dict(),
    ],
    "eval_ref": [
        EvalRef("0f" * 32, 1111680, "digits", "nic").to_dict(),
        EvalRef("a1" * 32, 1, "x" * 256, extra={"note": "more"}).to_dict(),
    ],
}

#: Values a mutation puts somewhere: wrong types, bools for ints, bounds, huge ints, NaN, ...
PALETTE: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    8,
    32,
    33,
    4096,
    0.0,
    -0.0,
    0.5,
    1.0,
    1.0000001,
    -1e-300,
    5e-324,
    17.0,
    1.5,
    -1.5,
    1e308,
    2**53 + 1,
    10**400,
    -(10**400),
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "x",
    "17",
    "node 1",
    "node-0001",
    "node-0001\n",  # "$" matches before a final newline with re.search: jsonschema accepts it
    "A" * 64,
    "A" * 65,
    "é",
    "a" * 4096,
    "a" * 4097,
    "learning",
    "idle",
    "depleted",
    "offline",
    "Offline!",
    "sleeping",
    "bad_format",
    "_x",
    [],
    [1],
    [0, 5],
    [-1],
    [1.5],
    [0.5, 1.0],
    [2.0],
    [True],
    [None],
    [float("nan")],
    [[1]],
    {},
    {"a": 1},
    {"a": float("nan")},
    {"a": [{"b": float("inf")}]},
    {"frozen": 1.0, "adaptive": 0.0, "total": 1.0},
    {"soc": 0.5, "remaining_j": 1.0},
    {"size": 1, "capacity": 1, "bits": 8, "bytes": 1},
    {"0": 0.5, "1": 1.0},
    [[[[[]]]]],
]

KEYS = ["seq", "t", "state", "device", "events", "x", "0", "soc", "total", "bits", "ids", "frozen"]


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (dict keys and list indexes) inside ``value``, the root included."""
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _nodes(item, (*path, index))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _mutate(rng: random.Random, message: dict[str, Any]) -> dict[str, Any]:
    """``message`` changed in one to three random places."""
    out = copy.deepcopy(message)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        path = rng.choice(_nodes(out))
        target = _get(out, path)
        op = rng.randrange(8)
        if op == 0 and path:  # drop a field / an item
            del _get(out, path[:-1])[path[-1]]
        elif op == 1 and isinstance(target, dict):  # add a field
            target[rng.choice(KEYS)] = copy.deepcopy(rng.choice(PALETTE))
        elif op == 2 and path:  # wrap in an array or an object
            parent = _get(out, path[:-1])
            parent[path[-1]] = [target] if rng.random() < 0.5 else {"v": target}
        elif op == 3 and path and isinstance(target, int | float) and not isinstance(target, bool):
            parent = _get(out, path[:-1])  # int <-> float, or its bool
            choices = [-target, bool(target)]
            if isinstance(target, float) and target.is_integer():
                choices.append(int(target))
            elif isinstance(target, int) and abs(target) < 2**1000:
                choices.append(float(target))
            parent[path[-1]] = rng.choice(choices)
        elif op == 4 and isinstance(target, dict) and target:  # rename a field
            key = rng.choice(list(target))
            target[key + "_"] = target.pop(key)
        elif path:  # replace by a palette value (the most frequent change)
            _get(out, path[:-1])[path[-1]] = copy.deepcopy(rng.choice(PALETTE))
    return out


def _non_finite(value: object, path: str = "") -> str | None:
    """The NaN scan of validate_message before the pre-check (commit 1e98f64), verbatim."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(message)"
    items: Any = ()
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for key, item in items:
        found = _non_finite(item, f"{path}/{key}" if path else str(key))
        if found is not None:
            return found
    return None


VALIDATORS = {name: Draft202012Validator(load_schema(name)) for name in SCHEMA_NAMES}
CHECKS = {name: compile_schema(load_schema(name)) for name in SCHEMA_NAMES}


def reference(name: str, obj: Mapping[str, Any]) -> dict[str, Any] | tuple[str, str]:
    """validate_message as it was with jsonschema alone: the dict, or (code, message)."""
    data = dict(obj)
    error = best_match(VALIDATORS[name].iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(message)"
        return ("bad_format", f"{name} field {where}: {error.message}")
    path = _non_finite(data)
    if path is not None:
        return ("bad_format", f"{name} field {path}: NaN or infinite number")
    return data


def actual(name: str, obj: Mapping[str, Any] | bytes) -> dict[str, Any] | tuple[str, str]:
    try:
        return validate_message(name, obj)
    except ProtocolError as exc:
        return (exc.code, exc.message)


def truth(name: str, obj: Any) -> bool:
    """jsonschema accepts ``obj`` and it holds no NaN/infinity."""
    return VALIDATORS[name].is_valid(obj) and _non_finite(obj) is None


def test_every_shipped_schema_compiles() -> None:
    """A schema edit that uses a keyword the pre-check lacks fails here (and warns at run time,
    where validation falls back to jsonschema alone)."""
    for name in SCHEMA_NAMES:
        assert callable(compile_schema(load_schema(name)))
        assert messages._fast_check(name) is not None


def test_real_messages_pass_the_pre_check() -> None:
    for name, bases in BASES.items():
        for message in bases:
            assert CHECKS[name](message), (name, message)
            assert CHECKS[name](json.loads(json.dumps(message)))
            assert actual(name, message) == message


def test_a_valid_message_never_reaches_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("jsonschema ran on a valid message")

    monkeypatch.setattr(messages, "best_match", refuse)
    for name, bases in BASES.items():
        for message in bases:
            assert validate_message(name, json.dumps(message).encode()) == message


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_pre_check_agrees_with_jsonschema_on_mutated_messages(name: str) -> None:
    """The pre-check's verdict is jsonschema's (plus the NaN scan) on every variant, and
    validate_message answers exactly as before: the same dict, or the same code and text."""
    rng = random.Random(f"fastcheck-{name}")  # a fixed seed per schema
    verdicts = {True: 0, False: 0}
    for _ in range(1500):
        variant = _mutate(rng, rng.choice(BASES[name]))
        expected = truth(name, variant)
        assert CHECKS[name](variant) is expected, variant
        verdicts[expected] += 1
        assert actual(name, variant) == reference(name, variant), variant
        if rng.random() < 0.1:  # the same through the wire (NaN/Infinity tokens, 1e400)
            raw = json.dumps(variant).encode()
            assert actual(name, raw) == reference(name, json.loads(raw))
    # both verdicts are well represented, or the comparison proves little
    assert min(verdicts.values()) > 100, verdicts


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_pre_check_agrees_with_jsonschema_on_single_field_changes(name: str) -> None:
    """Every palette value in every place of every real message, and every field dropped."""
    for message in BASES[name]:
        for path in _nodes(message):
            variants = [copy.deepcopy(v) for v in PALETTE] if path else []
            for value in variants:
                variant = copy.deepcopy(message)
                if len(path) == 1:
                    variant[path[0]] = value
                else:
                    _get(variant, path[:-1])[path[-1]] = value
                assert CHECKS[name](variant) is truth(name, variant), (path, value)
            if path:
                variant = copy.deepcopy(message)
                del _get(variant, path[:-1])[path[-1]]
                assert CHECKS[name](variant) is truth(name, variant), ("drop", path)
                assert actual(name, variant) == reference(name, variant)
        for value in PALETTE:  # an extra field of any kind
            variant = {**copy.deepcopy(message), "extra_field": copy.deepcopy(value)}
            assert CHECKS[name](variant) is truth(name, variant), value


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from([*KEYS, "latency_s", "battery"]), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,  # the same examples on every run
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(SCHEMA_NAMES),
    base=st.integers(min_value=0, max_value=2),
    changes=st.lists(st.tuples(st.integers(min_value=0), st.booleans(), JSON), max_size=3),
)
def test_pre_check_agrees_with_jsonschema_on_generated_values(
    name: str, base: int, changes: list[tuple[int, bool, Any]]
) -> None:
    """Arbitrary JSON values (hypothesis) put in place of any node, or deleting it."""
    message = copy.deepcopy(BASES[name][base % len(BASES[name])])
    for where, drop, value in changes:
        paths = [p for p in _nodes(message) if p]
        if not paths:
            break
        path = paths[where % len(paths)]
        parent = _get(message, path[:-1])
        if drop:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    assert CHECKS[name](message) is truth(name, message)
    assert actual(name, message) == reference(name, message)


class Small(IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),  # a tuple is no JSON array
        np.float64(0.5),
        np.float64("nan"),
        np.int64(3),
        Decimal("0.5"),
        Decimal("NaN"),
        Small.ONE,
        OrderedDict(frozen=1.0, adaptive=0.0, total=1.0),
        type("S", (str,), {})("node-0001"),
    ],
)
def test_python_values_json_cannot_hold_go_to_jsonschema(value: object) -> None:
    """The pre-check refuses what json.loads never builds; jsonschema then decides as before."""
    for name in ("telemetry", "prediction"):
        for key in ("seq", "t", "latency_s", "device", "extra_field"):
            message = {**BASES[name][0], key: value}
            assert not CHECKS[name](message)
            assert _outcome(actual, name, message) == _outcome(reference, name, message)


def _outcome(validate: Any, name: str, message: dict[str, Any]) -> object:
    try:
        return validate(name, message)
    except Exception as exc:  # Decimal("NaN") < 0 raises in jsonschema, before and after
        return type(exc)


def test_recursion_is_left_to_the_full_validator() -> None:
    deep: Any = 0
    for _ in range(5000):
        deep = [deep]
    assert not CHECKS["telemetry"]({**BASES["telemetry"][0], "deep": deep})


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "minLength": 1},
        {"type": "object", "patternProperties": {"^a": {}}},
        {"type": "string", "format": "date-time"},
        {"const": 1},
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "object", "properties": {"a": {"$id": "other.json"}}},
        {"$ref": "https://example.invalid/other.json"},
        {"$ref": "#/$defs/missing"},
        {"$ref": "#/$defs/a%20b", "$defs": {"a%20b": {}, "a b": {}}},
        {"type": "thing"},
        {"type": []},
        {"enum": [[1]]},
        {"minimum": True},
        {"maximum": "1"},
        {"maxLength": -1},
        {"maxProperties": -1},
        {"maxProperties": 1.5},
        {"required": "a"},
        {"items": [{"type": "string"}]},
        {"$schema": "http://json-schema.org/draft-07/schema#"},
        # refused wherever it is, even where it could not apply (a string has no properties)
        {"type": "string", "properties": {"a": {"uniqueItems": True}}},
        {"$defs": {"unused": {"not": {}}}},
        [],
    ],
)
def test_unsupported_keywords_are_refused_at_compile_time(schema: Any) -> None:
    with pytest.raises(UnsupportedSchema):
        compile_schema(schema)


def test_an_unsupported_schema_falls_back_to_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = {**load_schema("status"), "minProperties": 2}
    monkeypatch.setattr(messages, "load_schema", lambda name: schema)
    messages._fast_check.cache_clear()
    messages._validator.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no fast check"):
            assert messages._fast_check("status") is None
        assert validate_message("status", {"state": "idle", "t": 1.0})["t"] == 1.0
        with pytest.raises(ProtocolError, match=r"should be non-empty|not have enough"):
            validate_message("status", {"state": "idle"})
    finally:
        messages._fast_check.cache_clear()
        messages._validator.cache_clear()


#: Keywords the shipped schemas use, in combinations they do not (yet): the compiler handles them
#: as jsonschema does.
SCHEMAS: list[Any] = [
    True,
    False,
    {},
    {"type": "integer"},
    {"type": ["integer", "string"], "minimum": 2, "maxLength": 1},
    {"type": ["boolean", "null"]},
    {"type": "number", "maximum": 0},
    {"minimum": 0, "maximum": 1},  # no type: only numbers are bounded
    {"pattern": "^a"},
    {"type": "string", "pattern": "^[a-z]", "maxLength": 6},
    {"enum": [1, True, None, "a", 0.5]},
    {"enum": [0, False]},
    {"enum": [1, "a"]},
    {"enum": [0.0, None]},
    {"enum": [True, "b"]},
    {"type": "integer", "enum": [1, 2.0]},
    {"type": "array"},
    {"type": "array", "items": False},
    {"items": {"type": "number", "minimum": 0}},
    {"type": "object", "additionalProperties": False, "properties": {"a": True}},
    {"type": "object", "additionalProperties": {"type": "integer"}, "required": ["b"]},
    {"properties": {"a": False}},
    {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"},
    {"type": "object", "properties": {"self": {"$ref": "#"}}, "maxLength": 0},
    {"$ref": "#/$defs/a~1b", "$defs": {"a/b": {"type": "string"}}, "maxLength": 2},
    {"type": "object", "maxProperties": 1},
    {"maxProperties": 0},  # no type: only objects are bounded
    {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "number"}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_compiler_agrees_with_jsonschema_on_other_schemas(schema: Any) -> None:
    check = compile_schema(schema)
    validator = Draft202012Validator(schema)
    values: list[Any] = [
        *PALETTE,
        *([v] for v in PALETTE),
        *({"a": v} for v in PALETTE),
        *({"b": v} for v in PALETTE),
        *({"self": {"self": v}} for v in PALETTE),
    ]
    for value in values:
        expected = validator.is_valid(value) and _non_finite(value) is None
        assert check(value) is expected, value


def test_plain_finite() -> None:
    assert plain_finite({"a": [1, "x", None, True, {"b": 0.5}]})
    assert not plain_finite({"a": [1, {"b": float("nan")}]})
    assert not plain_finite((1,))
    assert not plain_finite(np.float64(1.0))
