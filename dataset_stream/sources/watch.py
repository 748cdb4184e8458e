"""``watch``: smartwatch recordings of shoulder-rehabilitation exercises (seglearn's data set).

The data ships inside the ``seglearn`` wheel (BSD; ``pip install 'vega-emu[watch]'``) as
``seglearn/data/watch_dataset.npy``: 140 recordings of a wrist-worn 3-axis accelerometer and
3-axis gyroscope at 50 Hz (6 channels), 7 exercise classes x 20 recordings, 10 subjects x 14
(each subject does every exercise twice). That file is a pickled dict; it is read once with a
restricted unpickler (:mod:`dataset_stream.sources.npy_object`: seglearn itself is never
imported) and converted into a pickle-free ``.npz`` cache, which every later load reads.

Samples are windows ``float32 [6, 100]`` (channels first: ax, ay, az, wx, wy, wz): 2 s of signal,
about one repetition of an exercise, cut every 50 samples (1 s stride, half overlap) inside each
recording, never across two. Each channel is standardised with the mean and standard deviation
of the *training* subjects' samples. A session is a subject; subjects 3 and 7 (2 of 10) are the
held-out test sessions, so no window of a test subject is ever sent for training.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from dataset_stream.errors import SourceError
from dataset_stream.sources.base import ArrayStore, Dataset
from dataset_stream.sources.npy_object import load_npy_object

CLASSES: Final = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
CHANNELS: Final = ("ax", "ay", "az", "wx", "wy", "wz")
SAMPLE_RATE_HZ: Final = 50
WINDOW: Final = 100  # samples: 2 s
STRIDE: Final = 50  # samples: 1 s
SUBJECTS: Final = tuple(range(1, 11))
TEST_SUBJECTS: Final = (3, 7)
TRAIN_SUBJECTS: Final = tuple(s for s in SUBJECTS if s not in TEST_SUBJECTS)
DATA_FILE: Final = "seglearn/data/watch_dataset.npy"
INSTALL_HINT: Final = "pip install 'vega-emu[watch]' (or pip install seglearn)"
_CACHE_VERSION: Final = 1


@dataclass(frozen=True, slots=True, eq=False)
class Recordings:
    """The raw recordings: ``samples`` float32 ``[T, 6]`` of all recordings end to end,
    recording ``i`` being ``samples[offsets[i]:offsets[i + 1]]``; ``y``, ``subject`` and
    ``side`` int64 ``[R]``."""

    samples: np.ndarray
    offsets: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    side: np.ndarray

    def __post_init__(self) -> None:
        r = len(self.y)
        if self.samples.ndim != 2 or self.samples.shape[1] != len(CHANNELS):
            raise SourceError(f"watch: samples must be [T, 6], not {list(self.samples.shape)}")
        if self.offsets.shape != (r + 1,) or self.offsets[0] != 0:
            raise SourceError("watch: offsets must be [R + 1] starting at 0")
        if self.offsets[-1] != len(self.samples) or np.any(np.diff(self.offsets) <= 0):
            raise SourceError("watch: offsets must increase up to the number of samples")
        if self.subject.shape != (r,) or self.side.shape != (r,):
            raise SourceError("watch: y, subject and side must have one entry per recording")
        if not np.isfinite(self.samples).all():
            raise SourceError("watch: the recordings hold NaN or infinite values")
        if int(self.y.min()) < 0 or int(self.y.max()) >= len(CLASSES):
            raise SourceError(f"watch: labels must lie in 0..{len(CLASSES) - 1}")
        if not set(self.subject.tolist()) <= set(SUBJECTS):
            raise SourceError(f"watch: subjects must be among {SUBJECTS}")

    def __len__(self) -> int:
        return len(self.y)

    def recording(self, index: int) -> np.ndarray:
        return self.samples[self.offsets[index] : self.offsets[index + 1]]


def seglearn_data_path() -> Path:
    """Where the installed ``seglearn`` wheel keeps ``watch_dataset.npy`` (found from the
    package metadata: seglearn is not imported). :class:`SourceError` when it is missing."""
    from importlib import metadata

    try:
        dist = metadata.distribution("seglearn")
    except metadata.PackageNotFoundError:
        raise SourceError(f"dataset watch needs seglearn's data: {INSTALL_HINT}") from None
    path = Path(str(dist.locate_file(DATA_FILE)))
    if not path.is_file():
        raise SourceError(f"seglearn is installed but {path} is missing: reinstall it")
    return path


def recordings_from_npy(path: str | Path) -> Recordings:
    """Read seglearn's ``watch_dataset.npy`` with the restricted unpickler."""
    obj = load_npy_object(path)
    data = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    if not isinstance(data, dict) or not {"X", "y", "subject", "side"} <= set(data):
        raise SourceError(f"{path}: expected a dict with X, y, subject and side")
    xs = [np.asarray(x, dtype=np.float32) for x in data["X"]]
    if any(x.ndim != 2 or x.shape[1] != len(CHANNELS) or len(x) < WINDOW for x in xs):
        raise SourceError(f"{path}: every recording must be [n >= {WINDOW}, 6]")
    labels = data.get("y_labels")
    if labels is not None and tuple(str(c) for c in labels) != CLASSES:
        raise SourceError(f"{path}: classes {list(labels)} are not {list(CLASSES)}")
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in xs])]).astype(np.int64)
    return Recordings(
        samples=np.concatenate(xs),
        offsets=offsets,
        y=np.asarray(data["y"]).astype(np.int64),
        subject=np.asarray(data["subject"]).astype(np.int64),
        side=np.asarray(data["side"]).astype(np.int64),
    )


def cache_root() -> Path:
    """``$VEGA_EMU_CACHE``, else ``~/.cache/vega-emu/data``."""
    root = os.environ.get("VEGA_EMU_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "vega-emu" / "data"


def cached_recordings(source: Path | None = None, cache: Path | None = None) -> Recordings:
    """The recordings, from the ``.npz`` cache named after the source file's SHA-256, made from
    ``source`` (default: seglearn's file) with the restricted unpickler on first use."""
    source = source or seglearn_data_path()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = (cache or cache_root()) / f"watch-v{_CACHE_VERSION}-{digest}.npz"
    if not target.is_file():
        rec = recordings_from_npy(source)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".npz", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    samples=rec.samples,
                    offsets=rec.offsets,
                    y=rec.y,
                    subject=rec.subject,
                    side=rec.side,
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    try:
        with np.load(target, allow_pickle=False) as archive:
            return Recordings(**{k: archive[k] for k in Recordings.__dataclass_fields__})
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise SourceError(f"watch cache {target} is broken; delete it: {exc}") from exc


def window_starts(length: int, window: int = WINDOW, stride: int = STRIDE) -> np.ndarray:
    """First sample of every whole window of a recording of ``length`` samples."""
    if length < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - window + 1, stride, dtype=np.int64)


def make_windows(rec: Recordings) -> Dataset:
    """The ``watch`` data set (see the module docstring) from raw recordings."""
    train = np.isin(rec.subject, TRAIN_SUBJECTS)
    if not train.any() or train.all():
        raise SourceError("watch: needs recordings of both training and test subjects")
    train_samples = np.concatenate([rec.recording(int(i)) for i in np.flatnonzero(train)])
    mean = train_samples.mean(axis=0, dtype=np.float64)
    std = train_samples.std(axis=0, dtype=np.float64) + 1e-6
    xs, ys, sessions = [], [], []
    for i in range(len(rec)):
        signal = ((rec.recording(i) - mean) / std).astype(np.float32).T  # [6, n]
        starts = window_starts(signal.shape[1])
        xs.append(np.stack([signal[:, s : s + WINDOW] for s in starts]))
        ys.append(np.full(len(starts), rec.y[i], dtype=np.int64))
        sessions.append(np.full(len(starts), rec.subject[i], dtype=np.int64))
    x = np.ascontiguousarray(np.concatenate(xs))
    return Dataset(
        name="watch",
        store=ArrayStore(x),
        y=np.concatenate(ys),
        session=np.concatenate(sessions),
        origin=np.arange(len(x), dtype=np.int64),
        classes=CLASSES,
        train_sessions=TRAIN_SUBJECTS,
        test_sessions=TEST_SUBJECTS,
    )


@functools.lru_cache(maxsize=1)
def load_watch() -> Dataset:
    """The ``watch`` data set (cached in the process; the first call ever converts seglearn's
    file into the on-disk cache)."""
    return make_windows(cached_recordings())


__all__ = [
    "CHANNELS",
    "CLASSES",
    "INSTALL_HINT",
    "STRIDE",
    "TEST_SUBJECTS",
    "TRAIN_SUBJECTS",
    "WINDOW",
    "Recordings",
    "cached_recordings",
    "load_watch",
    "make_windows",
    "recordings_from_npy",
    "seglearn_data_path",
    "window_starts",
]
