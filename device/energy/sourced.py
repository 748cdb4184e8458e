"""Reading TOML data files in which every number carries its source.

Battery chemistries and radios are data a user copies and edits; each table of such a file holds
a few numbers and a ``source = "..."`` naming where they come from (a datasheet, a paper, a
measurement, or ``"assumption: ..."``). :class:`SourcedTable` reads one table, refuses a table
with numbers and no source, and names the file, the table and the key in every error.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from device.energy.errors import ProfileError


class SourcedTable:
    """One TOML table being read; errors are ``error`` (a :class:`ProfileError` subclass)."""

    def __init__(
        self, label: str, section: str, data: object, error: type[ProfileError] = ProfileError
    ) -> None:
        self.label, self.section, self.error = label, section, error
        if not isinstance(data, dict):
            raise error(f"{label}: [{section}] must be a table")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def fail(self, key: str, problem: str) -> ProfileError:
        where = f"[{self.section}] " if self.section else ""
        return self.error(f"{self.label}: {where}{key} {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> Any:
        self.seen.add(key)
        if key not in self.data:
            raise self.fail(key, "is missing")
        return self.data[key]

    def text(self, key: str, default: str | None = None) -> str:
        if default is not None and key not in self.data:
            self.seen.add(key)
            return default
        value = self.get(key)
        if not isinstance(value, str):
            raise self.fail(key, "must be a string")
        return value

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def number(
        self, key: str, *, minimum: float = 0.0, strict: bool = False, maximum: float | None = None
    ) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "must be a number")
        low = value <= minimum if strict else value < minimum
        if not math.isfinite(value) or low:
            raise self.fail(key, f"must be {'>' if strict else '>='} {minimum:g}")
        if maximum is not None and value > maximum:
            raise self.fail(key, f"must be <= {maximum:g}")
        return float(value)

    def sub(self, key: str) -> SourcedTable:
        name = f"{self.section}.{key}" if self.section else key
        return SourcedTable(self.label, name, self.get(key), self.error)

    def source(self) -> str:
        """The table's ``source``: required, a non-empty string."""
        if "source" not in self.data:
            raise self.fail(
                "source",
                "is missing: every number needs a source (a datasheet, "
                'a paper, or "assumption: why")',
            )
        value = self.text("source")
        if not value.strip():
            raise self.fail("source", "must not be empty")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "is not a known key")


def read_toml(
    name_or_path: str | Path,
    package: str,
    builtin: tuple[str, ...],
    error: type[ProfileError],
    what: str = "profile",
) -> tuple[str, dict[str, Any]]:
    """``(label, parsed TOML)`` of a shipped file (``name`` in ``builtin``, in ``package``) or of
    any file by path; ``label`` names the file in errors, ``what`` the kind of file."""
    key = str(name_or_path)
    if key in builtin:
        label = f"{key}.toml"
        text = resources.files(package).joinpath(label).read_text("utf-8")
    else:
        path = Path(key)
        label = path.name
        if not path.is_file():
            known = ", ".join(builtin)
            raise error(f"unknown {what} {key!r}: not one of {known} and not a file")
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise error(f"{label}: cannot read: {exc}") from exc
    try:
        return label, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{label}: not valid TOML: {exc}") from exc


__all__ = ["SourcedTable", "read_toml"]
