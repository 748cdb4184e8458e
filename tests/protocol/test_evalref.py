"""The eval-set reference of wire contract v1: its JSON, its schema, its topic, how it is told
apart from a set, and a producer's payloads that name the same set the same way on every run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dataset_stream import build_scenario
from dataset_stream.payloads import eval_payload, eval_ref
from dataset_stream.protocol import (
    NODE_ERROR_CODES,
    SCHEMA_NAMES,
    EvalRef,
    ProtocolError,
    decode_eval,
    encode_eval,
    evalset_filter,
    evalset_topic,
    is_eval_ref,
    parse_evalset_topic,
    payload_sha256,
)

DIGEST = "ab" * 32


def test_a_reference_reads_back_and_keeps_fields_it_does_not_know() -> None:
    ref = EvalRef(DIGEST, 1234, "digits", "nic")
    assert EvalRef.from_json(ref.to_json()) == ref
    data = json.loads(ref.to_json())
    assert data == {
        "kind": "eval_ref",
        "v": "1",
        "sha256": DIGEST,
        "size": 1234,
        "source": "digits",
        "scenario": "nic",
    }
    extended = EvalRef.from_json(json.dumps({**data, "note": [1, 2]}))
    assert json.loads(extended.to_json())["note"] == [1, 2]
    assert "eval_ref" in SCHEMA_NAMES and "eval_mismatch" in NODE_ERROR_CODES


@pytest.mark.parametrize(
    "change",
    [
        {"sha256": "AB" * 32},
        {"sha256": "ab" * 31},
        {"size": 0},
        {"size": "12"},
        {"kind": "eval"},
        {"v": "2"},
        {"source": ""},
    ],
)
def test_a_bad_reference_is_refused_bad_format(change: dict[str, object]) -> None:
    data = {**json.loads(EvalRef(DIGEST, 10, "digits").to_json()), **change}
    with pytest.raises(ProtocolError) as info:
        EvalRef.from_json(json.dumps(data))
    assert info.value.code == "bad_format"


def test_the_shared_topic_is_content_addressed_and_four_levels() -> None:
    assert evalset_topic("vega", DIGEST) == f"vega/evalsets/{DIGEST}/set"
    assert evalset_filter("lab/vega") == "lab/vega/evalsets/+/set"
    assert parse_evalset_topic("vega", f"vega/evalsets/{DIGEST}/set") == DIGEST
    for other in (f"vega/evalsets/{DIGEST}", "vega/evalsets/abc/set", "vega/node-0000/eval"):
        assert parse_evalset_topic("vega", other) is None
    with pytest.raises(ProtocolError):
        evalset_topic("vega", "../x")


def test_a_reference_and_a_set_are_told_apart_by_their_first_bytes() -> None:
    scenario = build_scenario("digits", "nic", seed=0)
    payload = eval_payload(scenario)
    ref = eval_ref(scenario, payload)
    assert is_eval_ref(ref.to_json()) and not is_eval_ref(payload)
    # a safetensors header of 123 bytes starts with "{" too, then NUL bytes
    assert not is_eval_ref((123).to_bytes(8, "little") + b"{}")
    assert ref.matches(payload) and ref.size == len(payload)
    assert ref.sha256 == payload_sha256(payload)
    assert not ref.matches(payload[:-1] + bytes([payload[-1] ^ 1]))


def test_the_same_set_has_the_same_bytes_in_every_process() -> None:
    """The encoder orders the header's metadata differently from one process to the next; the
    producer's payload does not, so a set keeps its topic across runs."""
    code = (
        "from dataset_stream import build_scenario;"
        "from dataset_stream.payloads import eval_payload;"
        "from dataset_stream.protocol import payload_sha256;"
        "print(payload_sha256(eval_payload(build_scenario('digits', 'nic', seed=0))))"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(3)
    }
    scenario = build_scenario("digits", "nic", seed=0)
    payload = eval_payload(scenario)
    assert digests == {payload_sha256(payload)}
    x, y = scenario.eval_set
    decoded = decode_eval(payload)
    assert (decoded.x == x).all() and (decoded.y == y).all()
    assert (
        decoded.meta
        == decode_eval(encode_eval(x, y, source="digits", extra={"scenario": "nic"})).meta
    )


def test_devices_of_one_scenario_share_its_set() -> None:
    """The eval set is the scenario's held-out sessions: no device in it, so one set per
    scenario (the digits' held-out sessions do not depend on the seed either; the scenario's
    name is in the set's metadata)."""
    a, b = build_scenario("digits", "nic", seed=0), build_scenario("digits", "nic", seed=1)
    assert eval_ref(a, eval_payload(a)) == eval_ref(b, eval_payload(b))
    other = build_scenario("digits", "nc", seed=0)
    assert eval_ref(other, eval_payload(other)).sha256 != eval_ref(a, eval_payload(a)).sha256
