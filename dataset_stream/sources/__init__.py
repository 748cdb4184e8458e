"""Data sources: each yields labelled samples with a stable class list and a session id.

:func:`load_source` turns a ``--dataset`` spec into a :class:`Dataset`:

=======================  ===========================================================
``digits``               bundled handwritten digits as an 11-session benchmark (default)
``synthetic-sensor``     float32 ``[3, 64]`` time-series windows, sessions as drift
``watch``                smartwatch exercise recordings (seglearn's data), ``[6, 100]`` windows
``core50:PATH``          the CORe50 128x128 folder layout, 50 object classes
``core50-cat:PATH``      the same, labelled by the 10 categories
``npz:PATH``             your own arrays ``x``, ``y`` and optionally ``session``
=======================  ===========================================================
"""

from __future__ import annotations

from pathlib import Path

from dataset_stream.errors import SourceError
from dataset_stream.sources.base import ArrayStore, Dataset, SampleStore, stratified_split
from dataset_stream.sources.digits import load_digits_benchmark
from dataset_stream.sources.files import PngStore, load_core50, load_npz, write_core50_sample
from dataset_stream.sources.sensor import load_sensor_benchmark
from dataset_stream.sources.watch import load_watch

BUILTIN_SOURCES = ("digits", "synthetic-sensor", "watch")
PATH_SOURCES = ("core50", "core50-cat", "npz")


def load_source(spec: str, *, seed: int = 0) -> Dataset:
    """The dataset named by ``spec`` (see the table above); ``seed`` fixes generated data."""
    if spec == "digits":
        return load_digits_benchmark(seed)
    if spec == "synthetic-sensor":
        return load_sensor_benchmark(seed)
    if spec == "watch":
        return load_watch()
    kind, sep, path = spec.partition(":")
    if sep and kind in PATH_SOURCES:
        if not path:
            raise SourceError(f"dataset {spec!r} needs a path after '{kind}:'")
        if kind == "npz":
            return load_npz(Path(path), seed=seed)
        return load_core50(Path(path), categories=kind == "core50-cat")
    known = ", ".join([*BUILTIN_SOURCES, *(f"{k}:PATH" for k in PATH_SOURCES)])
    raise SourceError(f"unknown dataset {spec!r}; use one of {known}")


__all__ = [
    "BUILTIN_SOURCES",
    "PATH_SOURCES",
    "ArrayStore",
    "Dataset",
    "PngStore",
    "SampleStore",
    "load_core50",
    "load_digits_benchmark",
    "load_npz",
    "load_sensor_benchmark",
    "load_source",
    "load_watch",
    "stratified_split",
    "write_core50_sample",
]
