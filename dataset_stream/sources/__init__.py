"""Data sources: each yields labelled samples with a stable class list and a session id.

:func:`load_source` turns a ``--dataset`` spec into a :class:`Dataset`:

=======================  ===========================================================
``digits``               bundled handwritten digits as an 11-session benchmark (default)
``synthetic-sensor``     float32 ``[3, 64]`` time-series windows, sessions as drift
``watch``                smartwatch exercise recordings (seglearn's data), ``[6, 100]`` windows
``core50:PATH``          the CORe50 128x128 folder layout, 50 object classes
``core50-cat:PATH``      the same, labelled by the 10 categories
``npz:PATH``             your own arrays ``x``, ``y`` and optionally ``session``
``csv:PATH``             your own CSV of sensor readings, cut into windows
=======================  ===========================================================

``npz`` and ``csv`` take options before the path, ``csv[window=50;stride=25]:PATH``
(:mod:`dataset_stream.sources.spec`), so that the one ``--dataset`` string carries them.
"""

from __future__ import annotations

from pathlib import Path

from dataset_stream.errors import SourceError
from dataset_stream.sources.base import ArrayStore, Dataset, SampleStore, stratified_split
from dataset_stream.sources.csvfile import CsvOptions, load_csv
from dataset_stream.sources.digits import load_digits_benchmark
from dataset_stream.sources.files import (
    NpzOptions,
    PngStore,
    load_core50,
    load_npz,
    write_core50_sample,
)
from dataset_stream.sources.sensor import load_sensor_benchmark
from dataset_stream.sources.spec import PathSpec
from dataset_stream.sources.watch import load_watch

BUILTIN_SOURCES = ("digits", "synthetic-sensor", "watch")
PATH_SOURCES = ("core50", "core50-cat", "npz", "csv")


def load_source(spec: str, *, seed: int = 0) -> Dataset:
    """The dataset named by ``spec`` (see the table above); ``seed`` fixes generated data."""
    if spec == "digits":
        return load_digits_benchmark(seed)
    if spec == "synthetic-sensor":
        return load_sensor_benchmark(seed)
    if spec == "watch":
        return load_watch()
    parsed = PathSpec.parse(spec)
    if parsed is not None and parsed.kind in PATH_SOURCES:
        if not parsed.path:
            raise SourceError(f"dataset {spec!r} needs a path after '{parsed.kind}:'")
        path = Path(parsed.path)
        if parsed.kind == "npz":
            return load_npz(path, seed=seed, options=NpzOptions.of(parsed))
        if parsed.kind == "csv":
            return load_csv(path, CsvOptions.of(parsed))
        parsed.check_keys(())
        return load_core50(path, categories=parsed.kind == "core50-cat")
    known = ", ".join([*BUILTIN_SOURCES, *(f"{k}:PATH" for k in PATH_SOURCES)])
    raise SourceError(f"unknown dataset {spec!r}; use one of {known}")


__all__ = [
    "BUILTIN_SOURCES",
    "PATH_SOURCES",
    "ArrayStore",
    "CsvOptions",
    "Dataset",
    "NpzOptions",
    "PathSpec",
    "PngStore",
    "SampleStore",
    "load_core50",
    "load_csv",
    "load_digits_benchmark",
    "load_npz",
    "load_sensor_benchmark",
    "load_source",
    "load_watch",
    "stratified_split",
    "write_core50_sample",
]
