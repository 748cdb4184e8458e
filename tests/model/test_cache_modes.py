"""The default model's cache is its user's: created 0700, the bundle's files 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from device.model.bundle import MANIFEST, ModelBundle
from device.model.default import INPUT_SHAPE, NUM_CLASSES, default_bundle_path


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: the modes must not depend on the user's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def tiny_factory() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, *INPUT_SHAPE), dtype=np.uint8)
    return x, np.arange(40, dtype=np.int64) % NUM_CLASSES


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_a_built_cache_is_private(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "models" / "default-v1-seed0"
    path = default_bundle_path(target, factory=tiny_factory)
    assert (path / MANIFEST).is_file()
    assert mode(target.parent) == 0o700  # created here (an existing one keeps its mode)
    assert mode(target) == 0o700
    files = [p for p in target.rglob("*") if p.is_file()]
    assert files and {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    ModelBundle.load(path)  # still loads
