"""The ``watch`` source: the restricted unpickler, windows, subject split, scenarios, the CLI."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format
from safetensors.numpy import load_file
from typer.testing import CliRunner

from dataset_stream import build_scenario
from dataset_stream.errors import SourceError
from dataset_stream.sources import load_source
from dataset_stream.sources.npy_object import (
    UnsafePickleError,
    load_npy_object,
    restricted_loads,
)
from dataset_stream.sources.watch import (
    STRIDE,
    TEST_SUBJECTS,
    TRAIN_SUBJECTS,
    WINDOW,
    cached_recordings,
    window_starts,
)
from device.cli import app
from tests.support.watch import require_watch

#: A protocol-0 pickle that would call ``os.system("echo pwned")`` when loaded.
EVIL = b"cos\nsystem\n(S'echo pwned'\ntR."


def write_npy_object(path: Path, payload: bytes) -> Path:
    """A ``.npy`` file holding a 0-d object array whose pickle is ``payload``."""
    with path.open("wb") as fh:
        npy_format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(payload)
    return path


def test_the_unpickler_refuses_any_other_global(tmp_path: Path) -> None:
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle global os\.system"):
        restricted_loads(EVIL)
    for module, name in (("builtins", "eval"), ("numpy", "load"), ("subprocess", "run")):
        payload = f"c{module}\n{name}\n(S'x'\ntR.".encode()
        with pytest.raises(UnsafePickleError, match=rf"{module}\.{name}: only "):
            restricted_loads(payload)
    evil_file = write_npy_object(tmp_path / "evil.npy", EVIL)
    with pytest.raises(UnsafePickleError, match=r"evil\.npy: refusing .*os\.system"):
        load_npy_object(evil_file)


def test_the_unpickler_reads_what_np_save_writes_of_a_dict(tmp_path: Path) -> None:
    data = {"X": [np.arange(12.0).reshape(6, 2)], "y": np.array([3, 1]), "names": ["a", "b"]}
    np.save(tmp_path / "d.npy", np.array(data, dtype=object), allow_pickle=True)
    back = load_npy_object(tmp_path / "d.npy").item()
    assert back["names"] == ["a", "b"]
    np.testing.assert_array_equal(back["X"][0], data["X"][0])
    np.testing.assert_array_equal(back["y"], [3, 1])


def test_the_reader_refuses_plain_arrays_and_broken_pickles(tmp_path: Path) -> None:
    np.save(tmp_path / "plain.npy", np.arange(3))
    with pytest.raises(SourceError, match="expected one pickled object"):
        load_npy_object(tmp_path / "plain.npy")
    broken = write_npy_object(tmp_path / "broken.npy", pickle.dumps([1, 2])[:-3])
    with pytest.raises(SourceError, match="not a readable pickle"):
        load_npy_object(broken)


def test_window_starts_cover_whole_windows_only() -> None:
    assert window_starts(99).tolist() == []
    assert window_starts(100).tolist() == [0]
    assert window_starts(249).tolist() == [0, 50, 100]


def test_windows_shape_count_and_normalisation() -> None:
    require_watch()
    data = load_source("watch")
    rec = cached_recordings()
    lengths = np.diff(rec.offsets)
    assert len(rec) == 140 and int(lengths.sum()) == 244_102
    assert data.sample_shape == (6, WINDOW) and data.dtype == np.float32
    assert len(data) == sum((n - WINDOW) // STRIDE + 1 for n in lengths.tolist())
    assert np.bincount(data.y).tolist() == [502, 770, 780, 718, 723, 583, 601]
    train = data.take(data.select(sessions=TRAIN_SUBJECTS))
    np.testing.assert_allclose(train.mean(axis=(0, 2)), 0.0, atol=0.05)
    np.testing.assert_allclose(train.std(axis=(0, 2)), 1.0, atol=0.05)


def test_subjects_in_test_and_train_are_disjoint() -> None:
    require_watch()
    data = load_source("watch")
    assert set(data.train_sessions).isdisjoint(data.test_sessions)
    assert set(data.test_sessions) == set(TEST_SUBJECTS)
    for name in ("nic", "nc"):
        scenario = build_scenario("watch", name, seed=0)
        trained = np.concatenate(
            [scenario.factory_indices, *(c for block in scenario.blocks for c in block)]
        )
        train_subjects = set(np.unique(data.session[trained]).tolist())
        eval_subjects = set(np.unique(data.session[scenario.eval_indices]).tolist())
        assert train_subjects == set(TRAIN_SUBJECTS)
        assert eval_subjects == set(TEST_SUBJECTS)
        assert not np.intersect1d(trained, scenario.eval_indices).size


def test_nic_and_nc_event_counts() -> None:
    require_watch()
    nic = build_scenario("watch", "nic", seed=0)
    nc = build_scenario("watch", "nc", seed=0)
    factory_classes = np.unique(nic.factory[1]).tolist()
    assert factory_classes == np.unique(nc.factory[1]).tolist() and len(factory_classes) == 2
    assert nic.num_events == 8 * 7 - 2 and nc.num_events == 7 - 2
    for event in nic.events("node-0000")[:5]:
        assert event.session is not None and len(event.classes) == 1


def test_stream_dumps_watch_windows(tmp_path: Path) -> None:
    require_watch()
    out = tmp_path / "dump"
    result = CliRunner().invoke(
        app,
        [
            *("stream", "--dataset", "watch", "--scenario", "nic"),
            *("--dump", str(out), "--devices", "1", "--events", "3"),
        ],
    )
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (out / "node-0000").iterdir())
    assert files == [f"00000{k}.safetensors" for k in (1, 2, 3)] + ["eval.safetensors"]
    batch = load_file(out / "node-0000" / "000001.safetensors")
    assert batch["x"].dtype == np.float32 and batch["x"].shape[1:] == (6, WINDOW)
    assert len(np.unique(batch["y"])) == 1
