"""What every source produces: a :class:`Dataset` of labelled samples, each with a session id.

Samples themselves live in a :class:`SampleStore` so that a source can keep them in memory
(:class:`ArrayStore`) or read them on demand (CORe50's PNG files): a scenario only handles
indices, and ``x`` is materialised one learning event at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dataset_stream.errors import SourceError


@runtime_checkable
class SampleStore(Protocol):
    """Random access to samples ``[N, *sample_shape]`` of one dtype."""

    @property
    def sample_shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def __len__(self) -> int: ...

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Samples ``indices`` (int array ``[k]``) as a new array ``[k, *sample_shape]``."""
        ...


@dataclass(frozen=True, slots=True, eq=False)
class ArrayStore:
    """Samples held in one in-memory array ``[N, *sample_shape]`` (uint8 or float32)."""

    x: np.ndarray

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise SourceError(f"samples must be [N, *sample_shape], not {list(self.x.shape)}")
        if self.x.dtype not in (np.dtype(np.uint8), np.dtype(np.float32)):
            raise SourceError(f"samples must be uint8 or float32, not {self.x.dtype}")
        self.x.flags.writeable = False

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.x.dtype

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, indices: np.ndarray) -> np.ndarray:
        return self.x[np.asarray(indices, dtype=np.intp)]


@dataclass(frozen=True, slots=True, eq=False)
class Dataset:
    """Labelled samples split into training and test sessions.

    ``y``, ``session`` and ``origin`` are int64 ``[N]``. ``origin`` names the underlying instance
    a sample was rendered from (the same digit image appears in every training session under a
    different transform); no origin is shared between training and test sessions.
    """

    name: str
    store: SampleStore
    y: np.ndarray
    session: np.ndarray
    origin: np.ndarray
    classes: tuple[str, ...]
    train_sessions: tuple[int, ...]
    test_sessions: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.store)
        for name in ("y", "session", "origin"):
            array = getattr(self, name)
            if array.shape != (n,) or array.dtype != np.int64:
                raise SourceError(f"{self.name}: {name} must be int64 [{n}], not {array.dtype}")
            array.flags.writeable = False
        if n == 0:
            raise SourceError(f"{self.name}: the source holds no samples")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise SourceError(f"{self.name}: class names must be unique and non-empty")
        if int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes):
            raise SourceError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1}")
        train, test = set(self.train_sessions), set(self.test_sessions)
        if not train or not test or train & test:
            raise SourceError(
                f"{self.name}: training sessions {sorted(train)} and test sessions "
                f"{sorted(test)} must be non-empty and disjoint"
            )
        unknown = set(np.unique(self.session).tolist()) - train - test
        if unknown:
            raise SourceError(f"{self.name}: sessions {sorted(unknown)} are neither train nor test")
        is_test = np.isin(self.session, list(test))
        if not is_test.any() or is_test.all():
            raise SourceError(f"{self.name}: needs samples in both training and test sessions")
        if np.intersect1d(self.origin[is_test], self.origin[~is_test]).size:
            raise SourceError(f"{self.name}: a test sample also appears in a training session")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.store.sample_shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.store.dtype

    def __len__(self) -> int:
        return len(self.store)

    def take(self, indices: np.ndarray) -> np.ndarray:
        return self.store.take(indices)

    def select(self, *, sessions: object = None, classes: object = None) -> np.ndarray:
        """Indices (sorted) of the samples in ``sessions`` and ``classes`` (``None`` = all)."""
        mask = np.ones(len(self), dtype=bool)
        if sessions is not None:
            mask &= np.isin(self.session, np.asarray(sessions, dtype=np.int64))
        if classes is not None:
            mask &= np.isin(self.y, np.asarray(classes, dtype=np.int64))
        return np.flatnonzero(mask).astype(np.int64)


def stratified_split(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split of ``range(len(y))`` into sorted (train, test) indices."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), not {test_fraction}")
    train, test = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = min(len(members) - 1, max(1, round(len(members) * test_fraction)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
