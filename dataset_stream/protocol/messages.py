"""Validators for the JSON messages on the wire (a node's telemetry, status, error and
prediction; a gateway's status).

The schemas ship as package data in ``dataset_stream/schemas/*.json`` so that consumers in other
languages can use the very same files. Each validator accepts a parsed object or the raw JSON text
(``str`` / ``bytes``), returns the object, and raises ``ProtocolError("bad_format")`` whose message
names the offending field.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib import resources
from typing import Any, ClassVar, Self

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from dataset_stream.errors import ProtocolError, UnsupportedSchema
from dataset_stream.protocol.fastcheck import Check, compile_schema

SCHEMA_NAMES = (
    "telemetry",
    "status",
    "error",
    "prediction",
    "gateway_status",
    "fault",
    "desired",
    "reported",
    "rollout",
    "eval_ref",
)
MAX_MESSAGE_BYTES = 1024 * 1024


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` (one of :data:`SCHEMA_NAMES`) as a dict."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = resources.files("dataset_stream.schemas").joinpath(f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@functools.cache
def _fast_check(name: str) -> Check | None:
    """The compiled pre-check of schema ``name`` (:mod:`.fastcheck`), None if it has none."""
    _validator(name)  # the schema is checked (SchemaError) before any message passes it
    try:
        return compile_schema(load_schema(name))
    except UnsupportedSchema as exc:
        # correct without it (jsonschema decides every message), only slower
        warnings.warn(f"{name} schema: no fast check ({exc})", RuntimeWarning, stacklevel=2)
        return None


def validate_message(name: str, obj: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """Validate ``obj`` against schema ``name``; see the module docstring.

    A valid message, the common case, is accepted by the schema's compiled pre-check alone
    (valid and finite throughout); any other goes through jsonschema, which names the field.
    """
    if isinstance(obj, str | bytes | bytearray):
        if len(obj) > MAX_MESSAGE_BYTES:
            raise ProtocolError("bad_format", f"{name} message larger than {MAX_MESSAGE_BYTES} B")
        try:
            obj = json.loads(obj)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ProtocolError("bad_format", f"{name} message is not JSON: {exc}") from None
    if not isinstance(obj, Mapping):
        raise ProtocolError("bad_format", f"{name} message must be a JSON object")
    data = dict(obj)
    check = _fast_check(name)
    if check is not None and check(data):
        return data
    error = best_match(_validator(name).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(message)"
        raise ProtocolError("bad_format", f"{name} field {where}: {error.message}")
    path = _non_finite(data)
    if path is not None:
        raise ProtocolError("bad_format", f"{name} field {path}: NaN or infinite number")
    return data


class JsonMessage(ABC):
    """A typed JSON message, serialised only at the edge: :meth:`to_json` writes
    :meth:`to_dict`; :meth:`from_json` validates the payload against schema ``SCHEMA`` and
    builds the type with :meth:`from_valid`; a value the type still refuses is a
    ``ProtocolError("bad_format")`` too. Subclasses are frozen dataclasses."""

    __slots__ = ()
    SCHEMA: ClassVar[str]

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The message as JSON values (fields it does not know kept as they came)."""

    @classmethod
    @abstractmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        """The message of ``obj``, a JSON object that passed the schema."""

    def to_json(self) -> bytes:
        return dump_json(self.to_dict())

    @classmethod
    def from_json(cls, payload: Mapping[str, Any] | str | bytes) -> Self:
        """Validate ``payload`` against the schema and build the message."""
        obj = validate_message(cls.SCHEMA, payload)
        try:
            return cls.from_valid(obj)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise bad_message(cls.SCHEMA, exc) from None


def validate_telemetry(obj: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """Validate a telemetry message (``schemas/telemetry.json``)."""
    return validate_message("telemetry", obj)


def validate_status(obj: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """Validate a status message (``schemas/status.json``)."""
    return validate_message("status", obj)


def validate_error(obj: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """Validate an error message (``schemas/error.json``)."""
    return validate_message("error", obj)


def validate_prediction(obj: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """Validate a prediction message (``schemas/prediction.json``)."""
    return validate_message("prediction", obj)


def extra_fields(obj: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """The fields of ``obj`` a message type does not know (kept and written back unchanged)."""
    if obj.keys() <= known:  # the common case, a set operation in C
        return {}
    return {k: v for k, v in obj.items() if k not in known}


def dump_json(obj: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes; NaN and infinities are refused (JSON has none)."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


def bad_message(schema: str, exc: Exception) -> ProtocolError:
    """A message that passed its schema but still does not build its type."""
    return ProtocolError("bad_format", f"{schema} message: {exc}")


def _non_finite(value: object, path: str = "") -> str | None:
    """The path of the first NaN/infinite float inside ``value`` (JSON has no such numbers)."""
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
