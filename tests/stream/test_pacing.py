"""The pacing policy: every rule in one value, every refusal naming its field and value."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.url import BrokerURL
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.pacing import Pacing, PacingError, parse_speed


@pytest.mark.parametrize(
    ("kwargs", "field", "shown"),
    [
        ({"cadence_s": 0.0}, "cadence_s", "0.0 is not a positive number of seconds"),
        ({"cadence_s": -1.0}, "cadence_s", "-1.0 is not"),
        ({"cadence_s": math.inf}, "cadence_s", "inf is not"),
        ({"cadence_s": math.nan}, "cadence_s", "nan is not"),
        ({"speed": 1.6e-306}, "speed", "1.6e-306 is too slow"),
        ({"speed": 0.0}, "speed", "0.0 is not a positive number"),
        ({"speed": math.nan}, "speed", "nan is not"),
        ({"infer_per_s": math.nan}, "infer_per_s", "nan is not a number"),
        ({"infer_per_s": math.inf}, "infer_per_s", "inf is not a number"),
        ({"infer_per_s": -1.0}, "infer_per_s", "-1.0 is not a number >= 0"),
        ({"speed": None, "stagger": True}, "stagger", "paced stream"),
        ({"infer_per_s": 1.0, "stagger": True}, "stagger", "inference requests"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field_and_value(
    kwargs: dict[str, object], field: str, shown: str
) -> None:
    with pytest.raises(PacingError) as caught:
        Pacing(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert shown in caught.value.reason
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)


def test_good_values_are_kept() -> None:
    assert Pacing() == Pacing(cadence_s=60.0, speed=1.0, stagger=False, infer_per_s=0.0)
    assert Pacing(speed=None).closed_loop and not Pacing(speed=2.0).closed_loop
    assert Pacing(cadence_s=5, speed=30, stagger=True).stagger
    assert Pacing(speed=None, infer_per_s=2.5).infer_per_s == 2.5


@pytest.mark.parametrize(
    ("text", "speed"), [("max", None), (" MAX ", None), ("1", 1.0), ("2.5", 2.5)]
)
def test_parse_speed(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "fast", ""])
def test_parse_speed_names_the_text_as_given(text: str) -> None:
    with pytest.raises(PacingError) as caught:
        parse_speed(text)
    assert caught.value.field == "speed"
    assert caught.value.reason == f"{text!r} is not a positive number or 'max'"


@given(
    cadence_s=st.floats(allow_nan=True, allow_infinity=True),
    speed=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    infer_per_s=st.floats(allow_nan=True, allow_infinity=True),
    stagger=st.booleans(),
)
def test_the_publisher_takes_exactly_what_the_policy_takes(
    digits_nic: Scenario,
    cadence_s: float,
    speed: float | None,
    infer_per_s: float,
    stagger: bool,
) -> None:
    try:
        Pacing(cadence_s, speed, stagger, infer_per_s)
        expected: type[Exception] | None = None
    except PacingError:
        expected = PacingError
    url = BrokerURL("127.0.0.1", 9)
    try:
        StreamPublisher(
            url,
            digits_nic,
            ["a"],
            cadence_s=cadence_s,
            speed=speed,
            infer_rate=infer_per_s,
            stagger=stagger,
        )
        got: type[Exception] | None = None
    except PacingError:
        got = PacingError
    assert got is expected
