"""A fast yes/no pre-check of a parsed JSON message against one of the shipped JSON Schemas.

:func:`compile_schema` turns a schema into a plain Python predicate, once. The predicate answers
``True`` only when the value is valid for ``jsonschema.Draft202012Validator`` (as configured in
:mod:`dataset_stream.protocol.messages`: no format checking) *and* holds no NaN or infinite
float anywhere, extra fields included. ``False`` means "invalid, or not sure": the caller then runs
the full jsonschema validation, which also writes the error message. So the predicate may be
conservative (it gives ``False`` for anything json.loads cannot produce, e.g. a tuple, a
``numpy.float64`` or a dict subclass) but must never say ``True`` where jsonschema would refuse;
``tests/protocol/test_fastcheck.py`` runs both on many variants of real messages.

Only the keywords the shipped schemas use are supported: ``type``, ``enum``, ``minimum``,
``maximum``, ``pattern``, ``maxLength``, ``maxProperties``, ``required``, ``properties``,
``additionalProperties``,
``items``, local ``$ref`` (``#/...``) and ``$defs``, plus annotations (``title``,
``description``, ...). Any other keyword raises :class:`UnsupportedSchema` when the schema is
compiled, so that a schema edit can never be silently ignored; keyword semantics follow
jsonschema's Python implementation (``pattern`` is :func:`re.search`, ``integer`` accepts an
integral float, ``bool`` is neither ``integer`` nor ``number``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from dataset_stream.errors import UnsupportedSchema

#: A compiled schema: ``True`` only if the value is valid and finite throughout.
Check = Callable[[Any], bool]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

#: Keywords with no effect on validation.
_ANNOTATIONS: Final = frozenset(
    {"title", "description", "$comment", "default", "examples", "deprecated"}
)
_ROOT_ONLY: Final = frozenset({"$schema", "$id"})
_KEYWORDS: Final = frozenset(
    {
        "type",
        "enum",
        "minimum",
        "maximum",
        "pattern",
        "maxLength",
        "maxProperties",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "$ref",
        "$defs",
    }
)
_TYPES: Final = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})

_isfinite = math.isfinite


def compile_schema(schema: Mapping[str, Any] | bool) -> Check:
    """The predicate of ``schema`` (a JSON Schema 2020-12 document); see the module docstring.

    Raises :class:`UnsupportedSchema` for a keyword outside the supported set.
    """
    if isinstance(schema, Mapping):
        dialect = schema.get("$schema", DIALECT)
        if dialect != DIALECT:
            raise UnsupportedSchema(f"$schema {dialect!r}: only {DIALECT} is supported")
    compiler = _Compiler(schema)
    check = compiler.node(schema, "#", root=True)

    def checked(value: Any) -> bool:
        try:
            return check(value)
        except RecursionError:  # absurdly deep extra field: let the full validator decide
            return False

    return checked


def plain_finite(value: Any) -> bool:
    """Whether ``value`` is made of what json.loads builds only, with no NaN or infinity."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return _isfinite(value)
    # loops, not all() over a generator: the generator costs ~40% more on a message
    if t is dict:
        for item in value.values():  # noqa: SIM110
            if not plain_finite(item):
                return False
        return True
    if t is list:
        for item in value:  # noqa: SIM110
            if not plain_finite(item):
                return False
        return True
    return False


def _never(value: Any) -> bool:
    return False


def _true(value: Any) -> bool:
    return True


def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


class _Compiler:
    def __init__(self, root: Mapping[str, Any] | bool) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}
        self.compiling: set[str] = set()

    def ref(self, ref: object, where: str) -> Check:
        # no percent-escapes either: jsonschema would unquote them, this lookup does not
        if not isinstance(ref, str) or not ref.startswith("#") or "%" in ref:
            raise UnsupportedSchema(f"{where}: only local $ref (#/...) is supported, not {ref!r}")
        if ref in self.refs:
            return self.refs[ref]
        if ref in self.compiling:  # a recursive schema: bind late

            def late(value: Any) -> bool:
                return self.refs[ref](value)

            return late
        self.compiling.add(ref)
        target: Any = self.root
        pointer = ref[1:]
        if pointer and not pointer.startswith("/"):
            raise UnsupportedSchema(f"{where}: $ref {ref!r} is not a JSON pointer")
        for part in pointer.split("/")[1:] if pointer else ():
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, Mapping) and key in target:
                target = target[key]
            else:
                raise UnsupportedSchema(f"{where}: $ref {ref!r} does not resolve")
        check = self.node(target, ref, root=ref == "#")
        self.refs[ref] = check
        self.compiling.discard(ref)
        return check

    def node(self, schema: object, where: str, *, root: bool = False) -> Check:
        if schema is True:
            return plain_finite
        if schema is False:
            return _never
        if not isinstance(schema, Mapping):
            raise UnsupportedSchema(f"{where}: a schema must be an object or a boolean")
        allowed = _KEYWORDS | _ANNOTATIONS | (_ROOT_ONLY if root else frozenset())
        unknown = sorted(str(k) for k in schema if k not in allowed)
        if unknown:
            raise UnsupportedSchema(f"{where}: unsupported keyword(s) {', '.join(unknown)}")
        for name, sub in (schema.get("$defs") or {}).items():  # compiled for the errors only
            self.node(sub, f"{where}/$defs/{name}")
        own = self.own(schema, where)
        if "$ref" not in schema:
            return own
        target = self.ref(schema["$ref"], where)
        if own is _plain_any:  # $ref with annotations only
            return target

        def both(value: Any) -> bool:
            return target(value) and own(value)

        return both

    def own(self, schema: Mapping[str, Any], where: str) -> Check:
        """The keywords of ``schema`` but ``$ref``, as one type-dispatching predicate."""
        constraints = _KEYWORDS - {"$ref", "$defs"}
        if not any(k in schema for k in constraints):
            return _plain_any
        types = _types(schema.get("type", sorted(_TYPES)), where)
        for name in ("properties", "additionalProperties", "required", "items", "maxProperties"):
            _check_shape(schema, name, where)
        # compiled whatever the type, so that an unsupported keyword below is always refused
        check_object = self.object(schema, where)
        check_array = self.array(schema, where)
        handlers: dict[type, Check] = {}
        if "null" in types:
            handlers[type(None)] = _true
        if "boolean" in types:
            handlers[bool] = _true
        if "string" in types:
            handlers[str] = _string(schema, where)
        if "number" in types or "integer" in types:
            number = _number(schema, where, integral="number" not in types, null="null" in types)
            if types <= {"number", "integer", "null"} and "enum" not in schema:
                return number  # the common case, without the dispatch
            handlers[int] = handlers[float] = number
        if "object" in types:
            handlers[dict] = check_object
        if "array" in types:
            handlers[list] = check_array
        dispatch = _dispatch(handlers)
        if "enum" not in schema:
            return dispatch
        member = _enum(schema["enum"], where)

        def enum_and_type(value: Any) -> bool:
            return member(value) and dispatch(value)

        return enum_and_type

    def object(self, schema: Mapping[str, Any], where: str) -> Check:
        properties = schema.get("properties", {})
        props: dict[str, Check] = {
            name: self.node(sub, f"{where}/properties/{name}") for name, sub in properties.items()
        }
        extra = self.node(schema.get("additionalProperties", True), f"{where}/additional")
        required = frozenset(schema.get("required", ()))
        most: float = schema.get("maxProperties", math.inf)
        get = props.get

        def check_object(value: dict[Any, Any]) -> bool:
            if not value.keys() >= required or len(value) > most:
                return False
            for key, item in value.items():  # noqa: SIM110 (a loop is faster)
                if not get(key, extra)(item):
                    return False
            return True

        return check_object

    def array(self, schema: Mapping[str, Any], where: str) -> Check:
        items = self.node(schema.get("items", True), f"{where}/items")

        def check_array(value: list[Any]) -> bool:
            for item in value:  # noqa: SIM110 (a loop is faster)
                if not items(item):
                    return False
            return True

        return check_array


def _plain_any(value: Any) -> bool:
    """A schema with annotations only: anything json.loads builds, finite."""
    return plain_finite(value)


def _dispatch(handlers: dict[type, Check]) -> Check:
    get = handlers.get

    def check(value: Any) -> bool:
        handler = get(type(value))
        return handler is not None and handler(value)

    return check


def _types(spec: object, where: str) -> frozenset[str]:
    names = [spec] if isinstance(spec, str) else spec
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n in _TYPES for n in names)
    ):
        raise UnsupportedSchema(f"{where}: type {spec!r} is not a JSON type or a list of them")
    return frozenset(names)


def _check_shape(schema: Mapping[str, Any], name: str, where: str) -> None:
    if name not in schema:
        return
    value = schema[name]
    ok = {
        "properties": isinstance(value, Mapping),
        "additionalProperties": isinstance(value, Mapping | bool),
        "items": isinstance(value, Mapping | bool),
        "required": isinstance(value, list) and all(isinstance(v, str) for v in value),
        # an integral float is legal JSON Schema, unused here
        "maxProperties": type(value) is int and value >= 0,
    }[name]
    if not ok:
        raise UnsupportedSchema(f"{where}: {name} {value!r} is not supported")


def _bound(schema: Mapping[str, Any], name: str, where: str) -> int | float | None:
    value = schema.get(name)
    if value is None:
        return None
    if not _is_number(value) or (isinstance(value, float) and not _isfinite(value)):
        raise UnsupportedSchema(f"{where}: {name} {value!r} is not a finite number")
    bound: int | float = value
    return bound


def _number(schema: Mapping[str, Any], where: str, *, integral: bool, null: bool) -> Check:
    """An int, or a float (finite; integral if only ``integer`` is allowed), within the bounds;
    or None if ``null``."""
    lo = _bound(schema, "minimum", where)
    hi = _bound(schema, "maximum", where)
    # Python compares an int of any size with a float (even infinite) exactly
    low: int | float = -math.inf if lo is None else lo
    high: int | float = math.inf if hi is None else hi
    # is_integer() is False for NaN and infinities, so "integral" implies "finite"
    finite: Callable[[float], bool] = float.is_integer if integral else _isfinite

    def number(value: Any) -> bool:
        t = type(value)
        if t is float:
            return finite(value) and low <= value <= high
        if t is int:
            return low <= value <= high
        return null and value is None

    return number


def _string(schema: Mapping[str, Any], where: str) -> Check:
    pattern = schema.get("pattern")
    max_length = schema.get("maxLength")
    if pattern is not None and not isinstance(pattern, str):
        raise UnsupportedSchema(f"{where}: pattern {pattern!r} is not a string")
    if max_length is not None and (
        type(max_length) is not int or max_length < 0  # an integral float is legal, unused
    ):
        raise UnsupportedSchema(f"{where}: maxLength {max_length!r} is not supported")
    # jsonschema runs re.search (not fullmatch) with Python's re: the same here
    search = None if pattern is None else re.compile(pattern).search
    if search is not None and max_length is not None:
        return lambda v: len(v) <= max_length and search(v) is not None
    if search is not None:
        return lambda v: search(v) is not None
    if max_length is not None:
        return lambda v: len(v) <= max_length
    return _true


def _enum(values: object, where: str) -> Check:
    """Membership as jsonschema's ``equal``: ``True`` is not ``1``, ``1`` is ``1.0``."""
    if not isinstance(values, list) or not values:
        raise UnsupportedSchema(f"{where}: enum {values!r} is not a non-empty list")
    strings: set[str] = set()
    numbers: set[int | float] = set()
    bools: set[bool] = set()
    null = False
    for v in values:
        if type(v) is str:
            strings.add(v)
        elif type(v) is bool:
            bools.add(v)
        elif v is None:
            null = True
        elif type(v) is int or (type(v) is float and _isfinite(v)):
            numbers.add(v)
        else:
            raise UnsupportedSchema(f"{where}: enum value {v!r} is not a string, number, ...")
    frozen_strings = frozenset(strings)
    if not numbers and not bools and not null:
        return lambda v: type(v) is str and v in frozen_strings

    def member(value: Any) -> bool:
        t = type(value)
        if t is str:
            return value in frozen_strings
        if t is bool:
            return value in bools
        if value is None:
            return null
        if t is int or t is float:
            return value in numbers
        return False

    return member


__all__ = ["DIALECT", "Check", "compile_schema", "plain_finite"]
