"""Data sources: digits benchmark, synthetic sensor, CORe50 folder layout, user npz."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from dataset_stream import SourceError
from dataset_stream.sources import load_source, write_core50_sample
from dataset_stream.sources.digits import SessionLook, load_digits_benchmark, session_looks


def test_digits_benchmark_shape_and_sessions() -> None:
    d = load_source("digits")
    assert d.sample_shape == (1, 32, 32) and d.dtype == np.uint8
    assert d.classes == tuple("0123456789")
    assert len(d.train_sessions) >= 8 and len(d.test_sessions) >= 3
    assert set(np.unique(d.session)) == set(d.train_sessions) | set(d.test_sessions)
    test = np.isin(d.session, d.test_sessions)
    # every base image appears in every session of its side, and never on the other side
    assert not set(d.origin[test]) & set(d.origin[~test])
    assert len(set(d.origin[test])) + len(set(d.origin[~test])) == 1797
    for s in d.train_sessions + d.test_sessions:
        in_session = d.session == s
        assert set(d.y[in_session]) == set(range(10))
        assert len(set(d.origin[in_session])) == in_session.sum()


def test_digits_sessions_look_different_but_show_the_same_images() -> None:
    d = load_source("digits")
    a, b = d.train_sessions[:2]
    rows_a = np.flatnonzero(d.session == a)
    rows_b = np.flatnonzero(d.session == b)
    np.testing.assert_array_equal(d.origin[rows_a], d.origin[rows_b])
    xa = d.take(rows_a).astype(np.float32)
    xb = d.take(rows_b).astype(np.float32)
    assert np.abs(xa - xb).mean() > 10  # another appearance
    assert xa.std() > 20 and xb.std() > 20  # not blank
    looks = session_looks(0)
    assert len({(look.rotation_deg, look.scale) for look in looks.values()}) == 11


def test_digits_is_deterministic_cached_and_fast() -> None:
    load_digits_benchmark.cache_clear()
    started = time.perf_counter()
    first = load_digits_benchmark(5)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, elapsed
    assert load_digits_benchmark(5) is first
    load_digits_benchmark.cache_clear()
    again = load_digits_benchmark(5)
    rows = np.arange(0, len(first), 97)
    np.testing.assert_array_equal(first.take(rows), again.take(rows))
    np.testing.assert_array_equal(first.origin, again.origin)
    other = load_digits_benchmark(6)
    assert not np.array_equal(first.origin, other.origin)  # the split depends on the seed
    with pytest.raises(ValueError, match=r"writeable|read-only"):
        first.y[0] = 3


def test_session_look_is_validated() -> None:
    with pytest.raises(ValueError, match="scale"):
        SessionLook(0.0, 3.0, (0.0, 0.0), 0.0, 1.0, 0.0, 0.0)


def test_synthetic_sensor() -> None:
    d = load_source("synthetic-sensor")
    assert d.sample_shape == (3, 64) and d.dtype == np.float32
    x = d.take(np.arange(len(d)))
    assert np.isfinite(x).all()
    assert len(d.classes) == 6
    test = np.isin(d.session, d.test_sessions)
    assert not set(d.origin[test]) & set(d.origin[~test])
    # sessions drift: the per-session channel means differ
    means = [x[d.session == s].mean(axis=(0, 2)) for s in d.train_sessions]
    assert np.ptp(np.array(means), axis=0).min() > 0.1
    # classes differ: frequency content separates a slow from a fast oscillation
    spectrum = np.abs(np.fft.rfft(x, axis=-1)).mean(axis=1)
    slow = spectrum[d.y == 1].mean(axis=0)
    fast = spectrum[d.y == 2].mean(axis=0)
    assert slow[1:4].sum() > fast[1:4].sum() and fast[5:9].sum() > slow[5:9].sum()


def make_core50(root: Path, objects: tuple[int, ...] = (1, 2, 6, 7), frames: int = 3) -> Path:
    """A tiny CORe50 tree in the real layout, plus a file the loader must ignore."""
    write_core50_sample(root, objects, frames)
    (root / "s1" / "o1" / "notes.txt").write_text("ignored")
    return root


def test_core50_layout(tmp_path: Path) -> None:
    root = make_core50(tmp_path / "core50")
    d = load_source(f"core50:{root}")
    assert len(d) == 11 * 4 * 3
    assert len(d.classes) == 50 and d.sample_shape == (3, 8, 8)
    assert d.test_sessions == (3, 7, 10)
    assert set(d.y) == {0, 1, 5, 6}
    rows = np.arange(len(d))
    x = d.take(rows)
    # the marker pixel proves each row was read from the file its labels describe
    np.testing.assert_array_equal(x[:, 0, 0, 0], d.session)
    np.testing.assert_array_equal(x[:, 1, 0, 0], d.y + 1)
    cat = load_source(f"core50-cat:{root}")
    assert len(cat.classes) == 10 and set(cat.y) == {0, 1}


def test_core50_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        load_source(f"core50:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no CORe50 images"):
        load_source(f"core50:{tmp_path / 'empty'}")
    root = make_core50(tmp_path / "c", objects=(1,), frames=1)
    (root / "s2" / "o1" / "C_02_01_000.png").write_bytes(b"not a png")
    d = load_source(f"core50:{root}")
    with pytest.raises(SourceError, match="cannot read image"):
        d.take(np.flatnonzero(d.session == 2))


def test_npz_with_sessions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2, 5))
    y = np.repeat(np.arange(3), 20)
    session = np.tile(np.arange(4), 15)
    np.savez(tmp_path / "d.npz", x=x, y=y, session=session, classes=np.array(["a", "b", "c"]))
    d = load_source(f"npz:{tmp_path / 'd.npz'}")
    assert d.dtype == np.float32 and d.sample_shape == (2, 5)
    assert d.classes == ("a", "b", "c")
    assert d.test_sessions == (3,) and d.train_sessions == (0, 1, 2)
    np.savez(tmp_path / "e.npz", x=x, y=y, session=session, test_sessions=np.array([0, 1]))
    assert load_source(f"npz:{tmp_path / 'e.npz'}").test_sessions == (0, 1)


def test_npz_without_sessions_is_split_stratified(tmp_path: Path) -> None:
    x = np.zeros((100, 4), np.uint8)
    y = np.repeat(np.arange(4), 25)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_source(f"npz:{tmp_path / 'd.npz'}")
    test = d.session == 1
    assert test.sum() == 20 and set(d.y[test]) == {0, 1, 2, 3}
    assert d.classes == ("0", "1", "2", "3")


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((4, 2))}, "lacks"),
        ({"x": np.zeros((4, 2), np.int32), "y": np.zeros(4, int)}, "uint8 or floating"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3, int)}, "y must be"),
        ({"x": np.full((4, 2), np.nan), "y": np.zeros(4, int)}, "NaN"),
        (
            {"x": np.zeros(4), "y": np.zeros(4, int), "session": np.arange(4)},
            r"\[N, \*sample_shape\]",
        ),
        (
            {"x": np.zeros((4, 2)), "y": np.zeros(4, int), "session": np.zeros(4, int)},
            "one session",
        ),
        ({"x": np.zeros((4, 2)), "y": -np.ones(4, int), "session": np.arange(4)}, "labels"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, "no samples"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(SourceError, match=match):
        load_source(f"npz:{tmp_path / 'bad.npz'}")


def test_npz_refuses_pickles(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, int))
    with pytest.raises(SourceError, match="pickle"):
        load_source(f"npz:{tmp_path / 'p.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(SourceError):
        load_source(f"npz:{tmp_path / 'junk.npz'}")


@pytest.mark.parametrize("spec", ["mnist", "npz:", "core50:", "digits:x", ""])
def test_unknown_specs(spec: str) -> None:
    with pytest.raises(SourceError):
        load_source(spec)
