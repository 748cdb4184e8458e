"""Dataset specs that name a file and options: ``KIND:PATH`` or ``KIND[key=value;...]:PATH``.

The options come *before* the path so that a path may hold any character (commas, colons,
brackets): the path is everything after the first ``]:`` (with options) or the first ``:``
(without). Options are ``key=value`` items separated by ``;``; a value that is a list separates
its items with ``,``::

    csv:readings.csv
    csv[window=50;stride=25]:data/walk, run: 2024.csv
    csv[x=ax,ay,az;y=activity;session=subject]:readings.csv
    npz[x=images;y=labels]:my data.npz

The same string is the ``--dataset`` of ``stream`` and ``up`` and the ``--data`` of ``model
build``, so the options travel with the data they describe. Which keys a kind takes is the
source's business (:mod:`dataset_stream.sources.csvfile`, :mod:`dataset_stream.sources.files`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from dataset_stream.errors import SourceError

__all__ = ["FILE_KINDS", "PathSpec", "file_spec", "split_list"]

#: The kinds of spec that name one data file of the user's.
FILE_KINDS: Final = ("csv", "npz")
_FORM: Final = re.compile(r"(?P<kind>[a-z0-9-]+)(?:\[(?P<options>[^\]]*)\])?:(?P<path>.*)", re.S)
_KEY: Final = re.compile(r"[a-z][a-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class PathSpec:
    """A parsed ``KIND[options]:PATH``; ``options`` keep their order, keys are unique."""

    kind: str
    path: str
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        keys = [key for key, _ in self.options]
        if len(set(keys)) != len(keys):
            raise SourceError(f"dataset {self}: an option is given twice ({', '.join(keys)})")
        for key, value in self.options:
            if not _KEY.fullmatch(key):
                raise SourceError(f"dataset {self}: {key!r} is not an option name")
            if any(ch in value for ch in ";]\n"):
                raise SourceError(
                    f"dataset option {key}={value!r}: a value cannot hold ; ] or a newline"
                )

    @classmethod
    def parse(cls, text: str) -> PathSpec | None:
        """The spec ``text`` names, or None when it is not of the ``KIND[...]:PATH`` form."""
        match = _FORM.fullmatch(text)
        if match is None:
            return None
        options: list[tuple[str, str]] = []
        for item in (match["options"] or "").split(";"):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep:
                raise SourceError(f"dataset {text!r}: option {item.strip()!r} is not key=value")
            options.append((key.strip(), value.strip()))
        return cls(match["kind"], match["path"], tuple(options))

    def get(self, key: str) -> str | None:
        """The value of option ``key``, None when it is not given."""
        return dict(self.options).get(key)

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        """Refuse an option this kind does not take, naming the ones it does."""
        unknown = [key for key, _ in self.options if key not in allowed]
        if unknown:
            takes = ", ".join(allowed) if allowed else "no options"
            raise SourceError(
                f"dataset {self}: unknown option {unknown[0]!r} ({self.kind} takes {takes})"
            )

    def with_options(self, extra: dict[str, str]) -> PathSpec:
        """This spec with ``extra`` options added; an option given in both is refused."""
        both = sorted(set(extra) & {key for key, _ in self.options})
        if both:
            raise SourceError(f"dataset {self}: option {both[0]!r} is given twice")
        return PathSpec(self.kind, self.path, (*self.options, *extra.items()))

    def __str__(self) -> str:
        if not self.options:
            return f"{self.kind}:{self.path}"
        options = ";".join(f"{key}={value}" for key, value in self.options)
        return f"{self.kind}[{options}]:{self.path}"


def split_list(value: str) -> tuple[str, ...]:
    """A list option's items (``a,b,c``), stripped; empty items are dropped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def file_spec(data: str, options: dict[str, str]) -> PathSpec:
    """The spec of ``data`` -- a ``.csv`` or ``.npz`` file, or a ``csv:``/``npz:`` spec -- with
    ``options`` added (an option given in both is refused)."""
    parsed = PathSpec.parse(data)
    if parsed is None or parsed.kind not in FILE_KINDS:
        suffix = data.rsplit(".", 1)[-1].lower() if "." in data else ""
        if suffix not in FILE_KINDS:
            raise SourceError(
                f"{data!r} is neither a .csv nor a .npz file, nor a csv:PATH or npz:PATH dataset"
            )
        parsed = PathSpec(suffix, data)
    return parsed.with_options(options)
