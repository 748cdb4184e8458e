"""Checks shared by the store's values: counts, finite numbers, read-only JSON objects.

Each raises :class:`ValueError` naming the value; the store turns that into
:class:`~device.node.store.errors.StoreCorruptError` when the value was read from a file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from device.node.store.errors import StoreCorruptError

__all__ = ["check_float", "check_int", "freeze_json", "stored"]

T = TypeVar("T")


def check_int(name: str, value: object, *, optional: bool = False) -> None:
    """``value`` is an ``int >= 0`` (not a bool), or None when ``optional``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def check_float(
    name: str, value: object, *, optional: bool = False, nonnegative: bool = False
) -> None:
    """``value`` is a finite number (``>= 0`` when ``nonnegative``), or None when ``optional``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def freeze_json(owner: object, name: str, value: Mapping[str, Any]) -> None:
    """Check ``value`` is a JSON object and store a read-only copy of it as ``owner.name``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping, got {value!r:.80}")
    try:
        text = json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serialisable with finite numbers: {exc}") from exc
    object.__setattr__(owner, name, MappingProxyType(json.loads(text)))


def stored(cls: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``cls(*args, **kwargs)`` of values read from a file: a bad one is a corrupt file."""
    try:
        return cls(*args, **kwargs)
    except ValueError as exc:
        name = getattr(cls, "__name__", repr(cls))
        raise StoreCorruptError(f"stored {name} is invalid: {exc}") from exc
