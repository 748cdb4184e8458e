"""A minimal TOML writer for the bundle manifest (the standard library only reads TOML).

Supports strings, booleans, ints, floats, lists of those, inline tables inside arrays, tables
and arrays of tables: what ``model.toml`` needs, nothing more.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} value {v!r} to TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _emit(data: Mapping[str, Any], prefix: str, out: list[str]) -> None:
    for k, v in data.items():
        if not isinstance(v, Mapping) and not _is_table_array(v):
            out.append(f"{_key(k)} = {_value(v)}")
    for k, v in data.items():
        path = f"{prefix}{_key(k)}"
        if isinstance(v, Mapping):
            out.extend(["", f"[{path}]"])
            _emit(v, f"{path}.", out)
        elif _is_table_array(v):
            for item in v:
                out.extend(["", f"[[{path}]]"])
                _emit(item, f"{path}.", out)


def dumps(data: Mapping[str, Any]) -> str:
    """TOML text for ``data``."""
    out: list[str] = []
    _emit(data, "", out)
    return "\n".join(out).lstrip("\n") + "\n"


__all__ = ["dumps"]
