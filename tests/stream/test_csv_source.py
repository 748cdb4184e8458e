"""``csv:PATH`` and ``npz:PATH`` on a user's data: windows, options in the spec, and one clear
error naming the row and the field for each kind of bad data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataset_stream import build_scenario, load_source
from dataset_stream.errors import DataError, ScenarioError, SourceError
from dataset_stream.sources import PathSpec

HEADER = "time,ax,ay,label,session"


def readings(sessions: int = 3, classes: int = 3, run: int = 8) -> list[str]:
    """Lines of a readings CSV: every session does every class for ``run`` readings in turn;
    ``ax`` is ``10 * class + session``, ``ay`` counts readings (its line number - 2)."""
    lines = [HEADER]
    for s in range(sessions):
        for c in range(classes):
            for _ in range(run):
                n = len(lines) - 1
                lines.append(f"{n / 10:.1f},{10 * c + s},{n},{c},{s}")
    return lines


def write(tmp_path: Path, lines: list[str], name: str = "r.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_lines_become_feature_vectors_standardised_with_the_training_sessions(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, readings())
    data = load_source(f"csv:{path}")
    assert data.sample_shape == (2,) and data.dtype == np.float32  # time is no channel
    assert data.classes == ("0", "1", "2")
    assert data.test_sessions == (2,) and data.train_sessions == (0, 1)
    x = data.take(np.arange(len(data)))
    train = np.isin(data.session, data.train_sessions)
    np.testing.assert_allclose(x[train].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[train].std(axis=0), 1.0, atol=1e-5)
    assert abs(float(x[~train].mean())) > 0.1  # the test session's statistics were not used


def test_windows_are_cut_inside_runs_of_one_session_and_label(tmp_path: Path) -> None:
    path = write(tmp_path, readings(run=8))
    data = load_source(f"csv[window=4;stride=2;x=ay]:{path}")
    assert data.sample_shape == (1, 4)
    # 3 windows per run of 8 (starts 0, 2, 4), 9 runs
    assert len(data) == 27
    x = data.take(np.arange(len(data)))[:, 0, :]
    steps = np.diff(x, axis=1)
    np.testing.assert_allclose(steps, steps[:, :1].repeat(3, axis=1), rtol=1e-4)  # consecutive
    assert np.all(steps > 0)  # never across two runs: each window's readings are in order
    assert np.bincount(data.y).tolist() == [9, 9, 9]


def test_names_options_and_a_path_with_commas_and_colons(tmp_path: Path) -> None:
    lines = ["when,a,b,activity,subject"]
    for subject in ("ann", "bob", "cyd"):
        for activity in ("walk", "sit"):
            lines += [f"0,{i},{-i},{activity},{subject}" for i in range(4)]
    folder = tmp_path / "2024: run, walk"
    folder.mkdir()
    path = write(folder, lines, "data[1].csv")
    spec = f"csv[y=activity;session=subject;x=a,b;test=ann;classes=sit,walk]:{path}"
    parsed = PathSpec.parse(spec)
    assert parsed is not None and parsed.path == str(path) and str(parsed) == spec
    data = load_source(spec)
    assert data.classes == ("sit", "walk") and data.sample_shape == (2,)
    assert data.test_sessions == (0,) and data.train_sessions == (1, 2)  # ann, bob, cyd
    assert data.name == "csv:data[1].csv"


def test_a_scenario_of_a_csv_follows_its_sessions_and_factory_classes(tmp_path: Path) -> None:
    path = write(tmp_path, readings(sessions=4, classes=4, run=10))
    spec = f"csv[window=4]:{path}"
    scenario = build_scenario(spec, "nic", seed=0, factory_class_ids=[1, 3])
    assert sorted(set(scenario.factory[1].tolist())) == [1, 3]
    test = set(scenario.dataset.test_sessions)
    for event in scenario.events("node-0000"):
        assert not test & set(event.sessions)
    with pytest.raises(ScenarioError, match="leave no new class"):
        build_scenario(spec, "nc", factory_class_ids=[0, 1, 2, 3])
    with pytest.raises(ScenarioError, match=r"\[7\] not among"):
        build_scenario(spec, "nc", factory_class_ids=[7])


def test_named_factory_classes_keep_every_other_draw_of_the_seed() -> None:
    """The classes the seed picks, named: the same scenario (what a default model records)."""
    plain = build_scenario("digits", "nic", seed=3)
    picked = sorted(set(plain.factory[1].tolist()))
    named = build_scenario("digits", "nic", seed=3, factory_class_ids=picked)
    np.testing.assert_array_equal(named.factory_indices, plain.factory_indices)
    for a, b in zip(named.events("node-0001"), plain.events("node-0001"), strict=True):
        np.testing.assert_array_equal(a.indices, b.indices)


def lines_with(line: int, text: str, **kwargs: int) -> list[str]:
    """:func:`readings` with line ``line`` (1 = the header) replaced by ``text``."""
    lines = readings(**kwargs)
    lines[line - 1] = text
    return lines


# (lines, spec options, line named, field named, message)
BAD_CSV = [
    (lines_with(5, "0.3,nan,3,0,0"), "", 5, "ax", "'nan' is not a finite number"),
    (lines_with(6, "0.3,,3,0,0"), "", 6, "ax", "empty cell"),
    (lines_with(7, "0.3,1,2,0"), "", 7, None, "4 fields, the header has 5"),
    (lines_with(8, "0.3,1,2,3,0,9"), "", 8, None, "6 fields"),
    (lines_with(9, "0.3,1,two,0,0"), "", 9, "ay", "'two' is not a number"),
    (lines_with(10, "0.3,1,2,,0"), "", 10, "label", "empty cell"),
    (lines_with(11, "0.3,1,2,0,"), "", 11, "session", "empty cell"),
    (lines_with(12, "0.3,1,2,-1,0"), "", 12, "label", "label -1 is out of range 0..2"),
    (lines_with(13, "0.3,1,2,3,0"), "classes=a,b,c", 13, "label", "label 3 is out of range"),
    (lines_with(14, "0.3,1,2,jog,0"), "classes=0,1,2", 14, "label", "'jog' is not one of"),
    (readings(classes=1), "", None, "label", "one class only"),
    (readings(sessions=1), "", None, "session", "one session only"),
    (readings(sessions=2, run=1), "", None, "label", "has 1 line(s) in the training sessions"),
    (readings(run=4), "window=4;stride=4;test=0,1,2", None, "session", "every session"),
    (readings(run=3), "window=4", None, "label", "no run of 4 consecutive lines"),
    (readings(), "y=activity", None, "activity", "no column 'activity' for y"),
    (readings(), "test=9", None, "session", "test session '9' is not in column"),
    (["a,,b"], "", 1, None, "column 2 has no name"),
    ([HEADER], "", None, None, "no data lines"),
]


@pytest.mark.parametrize(("lines", "options", "line", "field", "message"), BAD_CSV)
def test_bad_csv_data_is_one_error_naming_the_line_and_the_column(
    tmp_path: Path,
    lines: list[str],
    options: str,
    line: int | None,
    field: str | None,
    message: str,
) -> None:
    path = write(tmp_path, lines)
    spec = f"csv[{options}]:{path}" if options else f"csv:{path}"
    with pytest.raises(DataError) as caught:
        load_source(spec)
    error = caught.value
    assert message in str(error) and str(path) in str(error)
    assert (error.row, error.field) == (line, field)
    if line is not None:
        assert f"line {line}" in str(error)
    if field is not None:
        assert repr(field) in str(error)


def test_a_class_missing_from_the_test_sessions_is_named_with_its_first_line(
    tmp_path: Path,
) -> None:
    lines = [line for line in readings() if not line.endswith(",2,2")]  # class 2 of session 2
    with pytest.raises(DataError, match=r"class '2' .* no line in the test sessions \(2\)"):
        load_source(f"csv:{write(tmp_path, lines)}")


@pytest.mark.parametrize(
    "spec",
    ["csv[window=0]:r.csv", "csv[window=two]:r.csv", "csv[colour=red]:r.csv", "csv[window]:r.csv"],
)
def test_bad_options_are_refused_by_name(spec: str) -> None:
    with pytest.raises(SourceError, match=r"window|colour"):
        load_source(spec)


def npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    base: dict[str, np.ndarray] = {
        "x": np.random.default_rng(0).normal(size=(24, 2, 3)),
        "y": np.tile(np.arange(3), 8),
        "session": np.repeat(np.arange(4), 6),
    }
    np.savez(tmp_path / "d.npz", **(base | arrays))  # type: ignore[arg-type]
    return str(tmp_path / "d.npz")


def test_npz_errors_name_the_array_and_the_index(tmp_path: Path) -> None:
    x = np.zeros((24, 2, 3))
    x[7, 1, 2] = np.inf
    with pytest.raises(DataError, match=r"x\[7, 1, 2\] is inf") as caught:
        load_source(f"npz:{npz(tmp_path, x=x)}")
    assert (caught.value.field, caught.value.row) == ("x", 7)
    y = np.tile(np.arange(3), 8)
    y[5] = 3
    with pytest.raises(DataError, match=r"labels\[5\] = 3: labels must lie in 0..2"):
        load_source(f"npz[y=labels]:{npz(tmp_path, labels=y, classes=np.array(['a', 'b', 'c']))}")
    y = np.tile(np.arange(3.0), 8)
    y[4] = 1.5
    with pytest.raises(DataError, match=r"y\[4\] = 1.5 is not a whole number"):
        load_source(f"npz:{npz(tmp_path, y=y)}")
    with pytest.raises(DataError, match=r"class '2' of field 'y' has 1 sample\(s\)"):
        load_source(f"npz:{npz(tmp_path, y=np.array([2] + [0, 1] * 11 + [2]))}")
    with pytest.raises(DataError, match=r"session must be integers \[24\]"):
        load_source(f"npz:{npz(tmp_path, session=np.zeros(3, int))}")
    with pytest.raises(DataError, match="lacks array"):
        load_source(f"npz[x=images]:{npz(tmp_path)}")
    with pytest.raises(SourceError, match="unknown option 'window'"):
        load_source(f"npz[window=3]:{npz(tmp_path)}")


def test_npz_arrays_of_other_names(tmp_path: Path) -> None:
    path = npz(tmp_path, images=np.zeros((24, 4, 4), np.uint8), subject=np.arange(24) // 8)
    data = load_source(f"npz[x=images;session=subject]:{path}")
    assert data.sample_shape == (4, 4) and data.test_sessions == (2,)
