"""A rollout's halt rule: ``accuracy_drop > 0.05 or errors > 1%``, parsed without ``eval``.

The grammar is tiny and parsed by recursive descent::

    rule       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := term ("and" term)*
    term       := "(" or_expr ")" | comparison
    comparison := NAME OP NUMBER ["%"]
    OP         := ">" | ">=" | "<" | "<=" | "==" | "!="

``NAME`` is one of :data:`METRICS`; a number followed by ``%`` is a hundredth of it
(``errors > 1%`` is ``errors > 0.01``). A rule is a frozen value (:class:`HaltRule`): it says
which comparisons tripped (:meth:`HaltRule.tripped`) for a mapping of metric values, so that a
rollout can say why it halted in one line. A metric without a value (no events yet) never
trips a comparison.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from device.app.errors import HaltRuleError

__all__ = ["METRICS", "Comparison", "HaltRule", "HaltRuleError", "parse_rule"]

#: The metrics a rule may name, and what each one is.
METRICS: Final[Mapping[str, str]] = {
    "accuracy_drop": "mean accuracy of the rest of the fleet minus the stage's, over the soak",
    "accuracy": "mean accuracy of the stage's devices over the soak",
    "errors": "the stage's errors and refusals per event over the soak (a fraction: 1% = 0.01)",
    "error_count": "the stage's errors and refusals over the soak",
}
_OPS: Final = (">=", "<=", "==", "!=", ">", "<")
_TOKEN: Final = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>>=|<=|==|!=|>|<)|(?P<sym>[()%]))"
)
#: The longest rule accepted (a rule is one line typed by an operator).
MAX_RULE_CHARS: Final = 1000


@dataclass(frozen=True, slots=True)
class Comparison:
    """``metric op threshold`` (``threshold`` already divided by 100 for a ``%``)."""

    metric: str
    op: str
    threshold: float
    text: str  # as typed, e.g. "errors > 1%"

    def holds(self, values: Mapping[str, float | None]) -> bool:
        value = values.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        match self.op:
            case ">":
                return value > self.threshold
            case ">=":
                return value >= self.threshold
            case "<":
                return value < self.threshold
            case "<=":
                return value <= self.threshold
            case "==":
                return value == self.threshold
            case _:
                return value != self.threshold


@dataclass(frozen=True, slots=True)
class _Node:
    """``op`` is "and" or "or" over ``parts``; a leaf holds one comparison."""

    op: str
    parts: tuple[_Node, ...] = ()
    leaf: Comparison | None = None

    def tripped(self, values: Mapping[str, float | None]) -> list[Comparison]:
        """The comparisons that make this node true (empty: it is false)."""
        if self.leaf is not None:
            return [self.leaf] if self.leaf.holds(values) else []
        found = [part.tripped(values) for part in self.parts]
        if self.op == "and":
            return [c for f in found for c in f] if all(found) else []
        return [c for f in found for c in f]


@dataclass(frozen=True, slots=True)
class HaltRule:
    """A parsed rule; ``text`` is the rule as typed."""

    text: str
    root: _Node

    @property
    def metrics(self) -> frozenset[str]:
        """The metrics the rule names."""
        return frozenset(c.metric for c in _leaves(self.root))

    def tripped(self, values: Mapping[str, float | None]) -> list[Comparison]:
        """The comparisons that make the rule true for ``values`` (empty: it does not trip)."""
        return self.root.tripped(values)

    def why(self, values: Mapping[str, float | None]) -> str:
        """One line: each tripped comparison with the value that tripped it."""
        return ", ".join(
            f"{c.text} ({c.metric} = {_show(values.get(c.metric))})" for c in self.tripped(values)
        )


def _leaves(node: _Node) -> list[Comparison]:
    if node.leaf is not None:
        return [node.leaf]
    return [c for part in node.parts for c in _leaves(part)]


def _show(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # num, name, op, sym, end
    text: str
    at: int  # offset in the rule


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            where = len(text) - len(text[at:].lstrip())
            raise HaltRuleError(
                f"halt rule {text[:100]!r}: unexpected {text[where:][:20]!r} at {where + 1}"
            )
        kind = match.lastgroup or "sym"
        start = match.start(kind)
        out.append(_Token(kind, match.group(kind), start))
        at = match.end()
    out.append(_Token("end", "", len(text)))
    return out


class _Parser:
    """Recursive descent over the tokens; each method consumes one rule of the grammar."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, expected: str) -> HaltRuleError:
        token = self.peek()
        found = "the end" if token.kind == "end" else repr(token.text)
        return HaltRuleError(
            f"halt rule {self.text!r}: expected {expected} at {token.at + 1}, found {found}"
        )

    def is_word(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "name" and token.text.lower() == word

    def rule(self) -> _Node:
        node = self.or_expr()
        if self.peek().kind != "end":
            raise self.error("'and', 'or' or the end")
        return node

    def or_expr(self) -> _Node:
        parts = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else _Node("or", tuple(parts))

    def and_expr(self) -> _Node:
        parts = [self.term()]
        while self.is_word("and"):
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else _Node("and", tuple(parts))

    def term(self) -> _Node:
        token = self.peek()
        if token.kind == "sym" and token.text == "(":
            self.take()
            node = self.or_expr()
            if not (self.peek().kind == "sym" and self.peek().text == ")"):
                raise self.error("')'")
            self.take()
            return node
        return _Node("leaf", leaf=self.comparison())

    def comparison(self) -> Comparison:
        name = self.peek()
        if name.kind != "name" or name.text.lower() in ("and", "or"):
            raise self.error(f"a metric ({', '.join(METRICS)}) or '('")
        if name.text not in METRICS:
            raise HaltRuleError(
                f"halt rule {self.text!r}: unknown metric {name.text!r} at {name.at + 1} "
                f"(known: {', '.join(METRICS)})"
            )
        self.take()
        op = self.peek()
        if op.kind != "op":
            raise self.error(f"a comparison ({' '.join(_OPS)})")
        self.take()
        number = self.peek()
        if number.kind != "num":
            raise self.error("a number")
        self.take()
        threshold = float(number.text)
        end = number.at + len(number.text)
        if self.peek().kind == "sym" and self.peek().text == "%":
            end = self.take().at + 1
            threshold /= 100.0
        if not math.isfinite(threshold):
            raise HaltRuleError(f"halt rule {self.text!r}: {number.text} is not a finite number")
        return Comparison(name.text, op.text, threshold, " ".join(self.text[name.at : end].split()))


def parse_rule(text: str) -> HaltRule:
    """The rule ``text`` parsed; :class:`HaltRuleError` names what is wrong and where
    (1-based character offset)."""
    if not text.strip():
        raise HaltRuleError("halt rule is empty: give e.g. 'accuracy_drop > 0.05 or errors > 1%'")
    if len(text) > MAX_RULE_CHARS:
        raise HaltRuleError(f"halt rule is {len(text)} characters, over {MAX_RULE_CHARS}")
    return HaltRule(text, _Parser(text).rule())
