"""The halt rule parser: what it accepts, what it evaluates to, and what it refuses (clearly)."""

from __future__ import annotations

import pytest

from device.app.haltrule import HaltRuleError, parse_rule


def test_the_documented_rule() -> None:
    rule = parse_rule("accuracy_drop > 0.05 or errors > 1%")
    assert rule.metrics == {"accuracy_drop", "errors"}
    assert rule.tripped({"accuracy_drop": 0.01, "errors": 0.0}) == []
    tripped = rule.tripped({"accuracy_drop": 0.3, "errors": 0.02})
    assert [c.text for c in tripped] == ["accuracy_drop > 0.05", "errors > 1%"]
    assert rule.why({"accuracy_drop": 0.3, "errors": 0.0}) == (
        "accuracy_drop > 0.05 (accuracy_drop = 0.3)"
    )


def test_percent_is_a_hundredth() -> None:
    rule = parse_rule("errors >= 1%")
    assert rule.tripped({"errors": 0.01})
    assert not rule.tripped({"errors": 0.0099})


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    loose = parse_rule("accuracy < 0.5 or error_count > 2 and errors > 10%")
    assert loose.tripped({"accuracy": 0.4, "error_count": 0, "errors": 0})
    grouped = parse_rule("(accuracy < 0.5 or error_count > 2) and errors > 10%")
    assert not grouped.tripped({"accuracy": 0.4, "error_count": 0, "errors": 0})
    assert grouped.tripped({"accuracy": 0.4, "error_count": 0, "errors": 0.2})


def test_a_metric_without_a_value_never_trips() -> None:
    rule = parse_rule("accuracy_drop > 0.05 or accuracy < 0.2")
    assert rule.tripped({"accuracy_drop": None, "accuracy": None}) == []
    assert rule.tripped({}) == []


@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "==", "!="])
def test_every_comparison(op: str) -> None:
    rule = parse_rule(f"error_count {op} 3")
    expected = {">": 4, ">=": 3, "<": 2, "<=": 3, "==": 3, "!=": 5}[op]
    assert rule.tripped({"error_count": expected})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("accuracy_drop >", "expected a number at 16, found the end"),
        ("accuracy_drop 0.05", "expected a comparison"),
        ("loss > 0.1", "unknown metric 'loss' at 1 (known: accuracy_drop"),
        ("accuracy_drop > 0.05 or", "expected a metric"),
        ("(accuracy_drop > 0.05", "expected ')' at 22, found the end"),
        ("accuracy_drop > 0.05)", "expected 'and', 'or' or the end at 21, found ')'"),
        ("accuracy_drop > 0.05 errors > 1", "expected 'and', 'or' or the end at 22"),
        ("__import__('os') > 1", "unexpected"),
        ("accuracy_drop > -1", "unexpected '-1'"),
        ("accuracy_drop => 1", "unexpected '=> 1' at 15"),
        ("x" * 2000, "over 1000"),
    ],
)
def test_bad_rules_are_refused_naming_the_fault(text: str, says: str) -> None:
    with pytest.raises(HaltRuleError) as info:
        parse_rule(text)
    assert says in str(info.value)
