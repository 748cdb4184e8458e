"""The downlink's messages: desired and reported state, pushed heads, rollout state."""

from __future__ import annotations

import json

import pytest

from dataset_stream.protocol import (
    DESIRED_SETTINGS,
    DesiredRefused,
    DesiredState,
    ForeignMessage,
    ProtocolError,
    Refusal,
    ReportedState,
    RolloutState,
    head_topic,
    read_desired,
    read_reported,
    rollout_topic,
)

SHA = "ab" * 32


def desired_payload(**settings: object) -> bytes:
    return json.dumps({"device": "node-0001", "version": 3, "settings": settings}).encode()


def test_a_desired_state_round_trips_and_keeps_only_what_was_set() -> None:
    state = read_desired("vega", "vega/node-0001/desired", desired_payload(lr_bits=6))
    assert state.version == 3 and dict(state.settings) == {"lr_bits": 6}
    again = DesiredState.from_json(state.to_json())
    assert again == state


@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ({"lr_bitz": 6}, "settings.lr_bitz", "unknown setting"),
        ({"lr_bits": 9}, "settings.lr_bits", "not one of 32, 8, 7, 6, 5, 4"),
        ({"lr_bits": 3}, "settings.lr_bits", "not within 4..32"),
        ({"lr_bits": 6.5}, "settings.lr_bits", "not a whole number"),
        ({"learning_rate": -0.1}, "settings.learning_rate", "not within"),
        ({"learning_rate": "fast"}, "settings.learning_rate", "not a number"),
        ({"epochs": True}, "settings.epochs", "not a number"),
        ({"learning": 1}, "settings.learning", "not a bool"),
        ({"head": "v2"}, "settings.head_sha256", "SHA-256"),
        ({"head": "v/2", "head_sha256": SHA}, "settings.head", "not 'own'"),
        ({"head_sha256": SHA}, "settings.head_sha256", "without a head"),
    ],
)
def test_a_desired_state_that_cannot_apply_is_refused_naming_version_and_field(
    settings: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(DesiredRefused) as caught:
        read_desired("vega", "vega/node-0001/desired", desired_payload(**settings))
    assert (caught.value.version, caught.value.field) == (3, field)
    assert words in caught.value.reason
    assert isinstance(caught.value, ProtocolError)  # a consumer that knows only these catches it


def test_an_unreadable_desired_state_is_refused_without_a_version() -> None:
    with pytest.raises(DesiredRefused) as caught:
        read_desired("vega", "vega/node-0001/desired", b"{not json")
    assert caught.value.version is None
    bad_version = json.dumps({"device": "node-0001", "version": 0, "settings": {}}).encode()
    with pytest.raises(DesiredRefused, match="version"):
        read_desired("vega", "vega/node-0001/desired", bad_version)


def test_a_desired_state_for_another_device_or_topic_is_not_taken() -> None:
    with pytest.raises(DesiredRefused, match="on the topic of node-0002"):
        read_desired("vega", "vega/node-0002/desired", desired_payload())
    with pytest.raises(ForeignMessage):
        read_desired("vega", "vega/node-0001/reported", desired_payload())


def test_the_next_version_merges_and_removes() -> None:
    first = DesiredState("node-0001", 1, {"lr_bits": 6, "epochs": 2})
    second = first.with_settings({"epochs": None, "learning_rate": 0.005}, ts=1.0, by="ctl")
    assert second.version == 2
    assert dict(second.settings) == {"lr_bits": 6, "learning_rate": 0.005}


def test_every_desired_setting_has_a_rule() -> None:
    for name, rule in DESIRED_SETTINGS.items():
        assert rule[0] in (int, float, bool, str), name
        assert len(rule) in (1, 3), name


def test_a_reported_state_round_trips_with_its_refusal() -> None:
    state = ReportedState(
        "node-0001",
        2,
        {"lr_bits": 6, "lr_size": 1500},
        seq=17,
        t=1020.0,
        refused=Refusal(3, "settings.lr_bits", "3 is not one of 32, 8, 7, 6, 5, 4"),
    )
    again = read_reported("vega", "vega/node-0001/reported", state.to_json())
    assert again == state
    assert state.converged(DesiredState("node-0001", 2, {}))
    assert not state.converged(DesiredState("node-0001", 3, {}))
    assert state.converged(None)


def test_heads_and_rollouts_live_four_levels_deep() -> None:
    assert head_topic("vega", "v2.1") == "vega/heads/v2.1/weights"
    assert rollout_topic("vega", "r1") == "vega/rollout/r1/state"
    with pytest.raises(ProtocolError):
        head_topic("vega", "v2/+")
    state = RolloutState("r1", "v2", "halted", 0, [5, 25, 100], ["node-0001"], reason="x")
    assert RolloutState.from_json(state.to_json()) == state
    with pytest.raises(ProtocolError):
        RolloutState.from_json(json.dumps({**state.to_dict(), "state": "paused"}))
