"""Sources read from the user's disk: ``core50:PATH`` and ``npz:PATH``.

``core50:PATH`` reads the CORe50 128x128 folder layout ``s{1..11}/o{1..50}/C_{ss}_{oo}_{fff}.png``
(sessions 3, 7 and 10 are the test sessions). Labels are the 50 objects (``core50``) or their 10
categories (``core50-cat``; objects 1-5 are category 0, 6-10 category 1, ...). Images are indexed
when the source is loaded and read (RGB, ``[3, H, W]`` uint8) only when an event needs them.

``npz:PATH`` reads a NumPy ``.npz`` (never pickled objects) with arrays ``x`` (``[N, ...]`` uint8 or
float), ``y`` (``[N]`` integers) and optionally ``session`` (``[N]`` integers), ``classes``
(``[K]`` strings) and ``test_sessions`` (integers). Without ``session`` the samples are split 80/20
(stratified, seeded) into session 0 (training) and session 1 (test); without ``test_sessions`` the
last ``max(1, round(3 * S / 11))`` of the ``S`` sorted sessions are the test sessions (CORe50's
proportion). ``npz[x=ARRAY;y=ARRAY;session=ARRAY]:PATH`` reads arrays of other names
(:mod:`dataset_stream.sources.spec`). The file must hold at least two classes and two sessions,
at least two training samples of every class and one test sample of every class
(:mod:`dataset_stream.sources.quality`); y may be integers or floats holding whole numbers.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataset_stream.errors import DataError, SourceError
from dataset_stream.sources.base import ArrayStore, Dataset, stratified_split
from dataset_stream.sources.quality import Labelled, default_test_sessions
from dataset_stream.sources.spec import PathSpec

CORE50_TEST_SESSIONS = (3, 7, 10)
CORE50_TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)
CORE50_CATEGORIES = (
    "plug_adapter",
    "mobile_phone",
    "scissors",
    "light_bulb",
    "can",
    "glasses",
    "ball",
    "marker",
    "cup",
    "remote_control",
)
#: The options of ``npz[...]:PATH``: the names of the arrays that hold x, y and session.
NPZ_OPTIONS = ("x", "y", "session")
_CORE50_NAME = re.compile(r"C_(\d{2})_(\d{2})_(\d{3})\.png")


@dataclass(frozen=True, slots=True, eq=False)
class PngStore:
    """RGB PNG files of one size, read on demand as ``[3, H, W]`` uint8."""

    paths: tuple[Path, ...]
    size: tuple[int, int]  # (height, width)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, *self.size)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, indices: np.ndarray) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        out = np.empty((len(indices), *self.sample_shape), dtype=np.uint8)
        for row, index in enumerate(np.asarray(indices, dtype=np.intp)):
            path = self.paths[index]
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise SourceError(f"cannot read image {path}: {exc}") from exc
            if pixels.shape[:2] != self.size:
                raise SourceError(f"{path} is {pixels.shape[:2]}, expected {self.size}")
            out[row] = pixels.transpose(2, 0, 1)
        return out


def load_core50(root: str | Path, *, categories: bool = False) -> Dataset:
    """Index a CORe50 folder (``s{1..11}/o{1..50}/C_{ss}_{oo}_{fff}.png``)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"CORe50 folder {root} does not exist")
    rows: list[tuple[int, int, int, Path]] = []
    for path in root.glob("s*/o*/C_*.png"):
        match = _CORE50_NAME.fullmatch(path.name)
        if match is None:
            continue
        session, obj, frame = (int(g) for g in match.groups())
        if path.parent.name != f"o{obj}" or path.parent.parent.name != f"s{session}":
            raise SourceError(f"{path} is not in folder s{session}/o{obj}")
        if not (1 <= session <= 11 and 1 <= obj <= 50):
            raise SourceError(f"{path}: session or object out of range")
        rows.append((session, obj, frame, path))
    if not rows:
        raise SourceError(f"no CORe50 images (s*/o*/C_ss_oo_fff.png) under {root}")
    rows.sort(key=lambda r: r[:3])
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(rows[0][3]) as first:
            width, height = first.size
    except (OSError, UnidentifiedImageError) as exc:
        raise SourceError(f"cannot read image {rows[0][3]}: {exc}") from exc
    objects = np.array([r[1] for r in rows], dtype=np.int64)
    classes: tuple[str, ...]
    if categories:
        labels, classes = (objects - 1) // 5, CORE50_CATEGORIES
    else:
        labels, classes = objects - 1, tuple(f"o{i}" for i in range(1, 51))
    return Dataset(
        name="core50-cat" if categories else "core50",
        store=PngStore(tuple(r[3] for r in rows), (height, width)),
        y=labels,
        session=np.array([r[0] for r in rows], dtype=np.int64),
        origin=np.arange(len(rows), dtype=np.int64),
        classes=classes,
        train_sessions=CORE50_TRAIN_SESSIONS,
        test_sessions=CORE50_TEST_SESSIONS,
    )


def write_core50_sample(
    root: str | Path, objects: tuple[int, ...] = (1, 2, 6, 7), frames: int = 3, size: int = 8
) -> Path:
    """Write a tiny tree in the CORe50 layout (random RGB ``size`` x ``size`` PNGs) for demos and
    tests. Pixel ``[0, 0]`` of each image holds ``(session, object, frame)``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(0)
    for session in range(1, 12):
        for obj in objects:
            folder = root / f"s{session}" / f"o{obj}"
            folder.mkdir(parents=True, exist_ok=True)
            for frame in range(frames):
                pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
                pixels[0, 0] = (session, obj, frame)
                Image.fromarray(pixels).save(folder / f"C_{session:02d}_{obj:02d}_{frame:03d}.png")
    return root


def load_npz(path: str | Path, *, seed: int = 0, options: NpzOptions | None = None) -> Dataset:
    """Load a user's ``.npz`` (see the module docstring for the arrays it may hold).

    Bad data is one :class:`DataError` naming the array and the index of the first bad value
    (``x[12, 3, 40] is nan``), or the array and the class or session that is missing.
    """
    path = Path(path)
    names = options or NpzOptions()
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SourceError(f"cannot read {path} as a .npz without pickles: {exc}") from exc
    missing = [a for a in (names.x, names.y) if a not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks array(s) {missing} (it holds {sorted(arrays)}); name others with "
            "the options x=ARRAY;y=ARRAY",
            field=missing[0],
        )
    x = _samples(path, names.x, arrays[names.x])
    y = _integers(path, names.y, arrays[names.y], len(x))
    if "classes" in arrays:
        classes = tuple(str(c) for c in np.asarray(arrays["classes"]).ravel())
    else:
        classes = tuple(str(c) for c in range(max(int(y.max()) + 1, 1)))
    bad = np.flatnonzero((y < 0) | (y >= len(classes)))
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"{path}: {names.y}[{i}] = {y[i]}: labels must lie in 0..{len(classes) - 1}"
            + (f" (classes names {len(classes)})" if "classes" in arrays else ""),
            field=names.y,
            row=i,
        )
    if names.session in arrays:
        session = _integers(path, names.session, arrays[names.session], len(x))
    else:
        _, test = stratified_split(y, 0.2, np.random.default_rng([seed, 2024]))
        session = np.zeros(len(y), dtype=np.int64)
        session[test] = 1
    sessions = sorted(set(session.tolist()))
    if "test_sessions" in arrays:
        test_sessions = tuple(int(s) for s in np.asarray(arrays["test_sessions"]).ravel())
        unknown = sorted(set(test_sessions) - set(sessions))
        if unknown:
            raise DataError(
                f"{path}: test_sessions names {unknown}, not in {names.session} ({sessions})",
                field="test_sessions",
            )
    else:
        test_sessions = default_test_sessions(sessions)
    Labelled(
        source=str(path),
        y=y,
        session=session,
        classes=classes,
        label_field=names.y,
        session_field=names.session,
        where=lambda i: f"{names.y}[{i}]",
    ).check(test_sessions)
    return Dataset(
        name=f"npz:{path.name}",
        store=ArrayStore(np.ascontiguousarray(x)),
        y=y,
        session=session,
        origin=np.arange(len(y), dtype=np.int64),
        classes=classes,
        train_sessions=tuple(s for s in sessions if s not in test_sessions),
        test_sessions=test_sessions,
    )


@dataclass(frozen=True, slots=True)
class NpzOptions:
    """The array names of a ``npz[x=...;y=...;session=...]:PATH`` spec."""

    x: str = "x"
    y: str = "y"
    session: str = "session"

    @classmethod
    def of(cls, spec: PathSpec) -> NpzOptions:
        spec.check_keys(NPZ_OPTIONS)
        return cls(spec.get("x") or "x", spec.get("y") or "y", spec.get("session") or "session")


def _samples(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    """``x`` as uint8 or float32 ``[N, *sample_shape]``, every value finite."""
    if x.ndim < 2:
        raise DataError(
            f"{path}: {name} must be [N, *sample_shape], not {list(x.shape)}", field=name
        )
    if len(x) == 0:
        raise DataError(f"{path}: {name} holds no samples", field=name)
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
        bad = np.argwhere(~np.isfinite(x))
        if len(bad):
            index = tuple(int(i) for i in bad[0])
            raise DataError(
                f"{path}: {name}[{', '.join(map(str, index))}] is {x[index]} (NaN or infinite "
                "values cannot be learned)",
                field=name,
                row=index[0],
            )
    elif x.dtype != np.uint8:
        raise DataError(
            f"{path}: {name} must be uint8 or floating point, not {x.dtype}", field=name
        )
    return x


def _integers(path: Path, name: str, values: np.ndarray, n: int) -> np.ndarray:
    """``values`` as int64 ``[n]``: integers, or floats holding whole numbers."""
    if values.shape != (n,):
        raise DataError(
            f"{path}: {name} must be integers [{n}] (one per sample), not {list(values.shape)}",
            field=name,
        )
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if len(bad):
            i = int(bad[0])
            raise DataError(
                f"{path}: {name}[{i}] = {values[i]} is not a whole number", field=name, row=i
            )
    elif values.dtype.kind not in "iub":
        raise DataError(f"{path}: {name} must be integers, not {values.dtype}", field=name)
    return values.astype(np.int64)
