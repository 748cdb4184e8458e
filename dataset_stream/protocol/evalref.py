"""Eval sets shared by reference: one retained set per distinct content, a small reference per
device.

A held-out eval set is the same for every device of a scenario (the scenario's test sessions),
so instead of one retained 1.1 MB copy per device the producer publishes each distinct set once,
retained, on a content-addressed topic (:func:`evalset_topic`)::

    {prefix}/evalsets/{sha256 of the payload, 64 hex digits}/set

(four levels, like a pushed head's, so that ``{prefix}/+/{kind}`` never matches it and no device
id can own it), and on each device's ``{prefix}/{device}/eval`` a small retained JSON reference
(``schemas/eval_ref.json``; :class:`EvalRef`)::

    {"kind": "eval_ref", "v": "1", "sha256": "9f2c...", "size": 1111680, "source": "digits",
     "scenario": "nic"}

A node that gets a reference and does not hold that set already fetches the referenced topic,
checks the SHA-256 and size of what it receives (a mismatch is refused, answered with code
``eval_mismatch``, and never used), and then uses the set exactly like a per-device eval
payload, which is still accepted on the same topic. The two are told apart by their first
bytes (:func:`is_eval_ref`): JSON text starts with ``{`` and holds no NUL byte, while a
safetensors payload starts with its header length as 8 little-endian bytes, whose top bytes are
NUL for any header a node accepts (at most 64 KiB).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from dataset_stream.errors import ProtocolError
from dataset_stream.protocol.messages import JsonMessage, bad_message, extra_fields
from dataset_stream.protocol.topics import validate_prefix

__all__ = [
    "EVALSETS_LEVEL",
    "EVAL_REF_KIND",
    "EvalRef",
    "evalset_filter",
    "evalset_topic",
    "is_eval_ref",
    "parse_evalset_topic",
    "payload_sha256",
]

#: The ``kind`` of a reference message.
EVAL_REF_KIND: Final = "eval_ref"
#: The topic level under the prefix that holds the shared eval sets.
EVALSETS_LEVEL: Final = "evalsets"
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_KNOWN: Final = frozenset({"kind", "v", "sha256", "size", "source", "scenario"})


def payload_sha256(payload: bytes) -> str:
    """The SHA-256 of an eval payload, 64 lowercase hex digits: its name on the wire."""
    return hashlib.sha256(payload).hexdigest()


def evalset_topic(prefix: str, sha256: str) -> str:
    """``evalset_topic("vega", d)`` -> ``"vega/evalsets/{d}/set"``: where the set is retained."""
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise ProtocolError("bad_format", f"eval set digest {sha256!r} is not 64 hex digits")
    return f"{validate_prefix(prefix)}/{EVALSETS_LEVEL}/{sha256}/set"


def evalset_filter(prefix: str) -> str:
    """Every shared eval set's topic: ``vega/evalsets/+/set`` (the ACLs' rule)."""
    return f"{validate_prefix(prefix)}/{EVALSETS_LEVEL}/+/set"


def parse_evalset_topic(prefix: str, value: str) -> str | None:
    """The digest named by ``{prefix}/evalsets/{sha256}/set``; None for any other topic."""
    head = f"{prefix}/{EVALSETS_LEVEL}/"
    if not value.startswith(head) or not value.endswith("/set"):
        return None
    digest = value[len(head) : -len("/set")]
    return digest if _SHA256_RE.fullmatch(digest) else None


def is_eval_ref(payload: bytes) -> bool:
    """Whether an ``eval`` payload is a reference (JSON) rather than a set (safetensors)."""
    return payload[:1] == b"{" and b"\x00" not in payload[:8]


@dataclass(frozen=True, slots=True)
class EvalRef(JsonMessage):
    """A device's reference to a shared eval set: its SHA-256 and size in bytes (of the
    safetensors payload retained on :func:`evalset_topic`), the dataset it comes from and the
    scenario that holds it out (both informative; the digest alone names the set)."""

    SCHEMA: ClassVar[str] = "eval_ref"

    sha256: str
    size: int
    source: str
    scenario: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"sha256 {self.sha256!r} is not 64 lowercase hex digits")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive int, not {self.size!r}")

    @classmethod
    def of(cls, payload: bytes, *, source: str, scenario: str | None = None) -> Self:
        """The reference to ``payload``, an encoded eval set."""
        return cls(payload_sha256(payload), len(payload), source, scenario)

    def topic(self, prefix: str) -> str:
        """Where the referenced set is retained."""
        return evalset_topic(prefix, self.sha256)

    def matches(self, payload: bytes) -> bool:
        """Whether ``payload`` is the referenced set (size, then SHA-256)."""
        return len(payload) == self.size and payload_sha256(payload) == self.sha256

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "kind": EVAL_REF_KIND,
            "v": "1",
            "sha256": self.sha256,
            "size": self.size,
            "source": self.source,
        }
        if self.scenario is not None:
            out["scenario"] = self.scenario
        return out

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        try:
            return cls(
                obj["sha256"],
                obj["size"],
                obj["source"],
                obj.get("scenario"),
                extra_fields(obj, _KNOWN),
            )
        except ValueError as exc:
            raise bad_message(cls.SCHEMA, exc) from None
