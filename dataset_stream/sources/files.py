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
proportion).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataset_stream.errors import SourceError
from dataset_stream.sources.base import ArrayStore, Dataset, stratified_split

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


def load_npz(path: str | Path, *, seed: int = 0) -> Dataset:
    """Load a user's ``.npz`` (see the module docstring for the arrays it may hold)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SourceError(f"cannot read {path} as a .npz without pickles: {exc}") from exc
    missing = {"x", "y"} - set(arrays)
    if missing:
        raise SourceError(f"{path} lacks array(s) {sorted(missing)}")
    x, y = arrays["x"], arrays["y"]
    if len(x) == 0:
        raise SourceError(f"{path}: x holds no samples")
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise SourceError(f"{path}: x holds NaN or infinite values")
    elif x.dtype != np.uint8:
        raise SourceError(f"{path}: x must be uint8 or floating point, not {x.dtype}")
    if y.dtype.kind not in "iu" or y.shape != x.shape[:1]:
        raise SourceError(f"{path}: y must be integers [{len(x)}], not {y.dtype} {y.shape}")
    if "session" in arrays:
        session = arrays["session"]
        if session.dtype.kind not in "iu" or session.shape != y.shape:
            raise SourceError(f"{path}: session must be integers [{len(y)}]")
        session = session.astype(np.int64)
        origin = np.arange(len(y), dtype=np.int64)
    else:
        _, test = stratified_split(y, 0.2, np.random.default_rng([seed, 2024]))
        session = np.zeros(len(y), dtype=np.int64)
        session[test] = 1
        origin = np.arange(len(y), dtype=np.int64)
    sessions = sorted(set(session.tolist()))
    if "test_sessions" in arrays:
        test_sessions = tuple(int(s) for s in np.asarray(arrays["test_sessions"]).ravel())
    elif len(sessions) < 2:
        raise SourceError(f"{path}: one session only; add a second one or test_sessions")
    else:
        test_sessions = tuple(sessions[-max(1, round(3 * len(sessions) / 11)) :])
    if "classes" in arrays:
        classes = tuple(str(c) for c in np.asarray(arrays["classes"]).ravel())
    else:
        classes = tuple(str(c) for c in range(max(int(y.max()) + 1, 1)))
    return Dataset(
        name=f"npz:{path.name}",
        store=ArrayStore(np.ascontiguousarray(x)),
        y=y.astype(np.int64),
        session=session,
        origin=origin,
        classes=classes,
        train_sessions=tuple(s for s in sessions if s not in test_sessions),
        test_sessions=test_sessions,
    )
