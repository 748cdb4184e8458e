"""``vega-emu model build``: a factory model for the user's own data, each architecture, the
scenario a run of it follows, and a node learning with it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset_stream.protocol import Batch
from device.app.owndata import build_own_model, factory_class_ids, scenario_for
from device.cli import app
from device.learning.nn.optim import SGDConfig
from device.model.build import BuildConfig, build_model
from device.model.bundle import ModelBundle
from device.model.errors import DataMismatchError, ModelInputError
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings, ReplaySettings
from tests.support.times import T0

ROOT = Path(__file__).resolve().parents[2]
SPEC = "csv[y=activity;session=subject;window=25;stride=12]:{path}"


def example_script() -> ModuleType:
    """``scripts/readings_csv.py``, the example CSV of docs/own-data.md."""
    found = importlib.util.spec_from_file_location(
        "readings_csv", ROOT / "scripts" / "readings_csv.py"
    )
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def readings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("csv") / "readings.csv"
    example_script().write(path, subjects=4, seconds=8.0, rate_hz=25.0, seed=0)
    return path


@pytest.fixture(scope="module")
def built(readings: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The bundle ``model build`` makes of the example CSV, and what the command printed."""
    out = tmp_path_factory.mktemp("model") / "walk"
    args = ["model", "build", "--data", str(readings), "--y", "activity", "--session", "subject"]
    args += ["--window", "25", "--stride", "12", "--factory-classes", "sit,walk,jump"]
    result = CliRunner().invoke(app, [*args, "--epochs", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_bundle_records_its_classes_and_carries_factory_replays(
    built: tuple[Path, str], readings: Path
) -> None:
    out, printed = built
    bundle = ModelBundle.load(out)
    assert bundle.input_shape == (3, 25) and bundle.input.dtype == "float32"
    assert bundle.lr_shape == (32, 3) and bundle.num_classes == 5
    assert bundle.meta["class_names"] == ["jump", "run", "sit", "stand", "walk"]
    assert bundle.meta["factory_classes"] == [0, 2, 4]
    replays = bundle.factory_replays
    assert replays is not None and sorted(replays.class_counts()) == [0, 2, 4]
    spec = SPEC.format(path=readings)
    assert spec in printed and "run it: vega-emu up --dataset" in printed.replace("\n", " ")


def test_stream_and_up_teach_the_classes_the_model_was_not_trained_on(
    built: tuple[Path, str], readings: Path
) -> None:
    bundle = ModelBundle.load(built[0])
    for seed in (0, 1, 2):  # whatever the seed would pick, the model's classes are the factory's
        plan = scenario_for(SPEC.format(path=readings), "nc", seed=seed, bundle=bundle)
        assert sorted(set(plan.factory[1].tolist())) == [0, 2, 4]
        assert {c for e in plan.events("node-0000") for c in e.classes} == {1, 3}


def test_a_node_learns_with_the_bundle(
    built: tuple[Path, str], readings: Path, tmp_path: Path
) -> None:
    bundle = ModelBundle.load(built[0])
    plan = scenario_for(SPEC.format(path=readings), "nic", seed=0, bundle=bundle)
    settings = NodeSettings(
        "node-0000", tmp_path, replay=ReplaySettings(1500, 8), sgd=SGDConfig(learning_rate=0.01)
    )
    engine = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
    try:
        x, y = plan.eval_set
        stage = FrozenStage.shared(bundle)
        factory = np.isin(y, bundle.meta["factory_classes"])
        before = engine.head.predict(stage.run(x))
        assert np.mean(before[factory] == y[factory]) > 0.6  # the factory model knows them
        new = [e for e in plan.events("node-0000") if e.classes[0] not in (0, 2, 4)][:3]
        start = len(bundle.factory_replays or ())
        for seq, event in enumerate(new, start=1):
            report = engine.apply(Batch(event.x, event.y, seq=seq, t=T0 + 60 * seq, source="csv"))
            telemetry = report.telemetry.to_dict()
            assert telemetry["seq"] == seq and telemetry["samples"] == len(event)
        assert telemetry["replay"]["size"] == start + sum(len(e) for e in new)
        after = engine.head.predict(stage.run(x))
        learned = np.isin(y, [e.classes[0] for e in new])
        assert np.mean(after[learned] == y[learned]) > np.mean(before[learned] == y[learned])
    finally:
        engine.close()


def test_the_command_refuses_bad_data_naming_the_line_and_the_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("ax,label,session\n1,0,0\n1,1,0\nx,0,1\n", encoding="utf-8")
    out = tmp_path / "m"
    result = CliRunner().invoke(app, ["model", "build", "--data", str(path), "--out", str(out)])
    assert result.exit_code == 1
    assert "line 4, column 'ax': 'x' is not a number" in " ".join(result.output.split())
    assert not out.exists()
    result = CliRunner().invoke(
        app, ["model", "build", "--data", str(tmp_path / "d.txt"), "--out", str(out)]
    )
    assert result.exit_code == 2 and "neither a .csv nor a .npz" in " ".join(result.output.split())


def test_unknown_factory_classes_are_named(readings: Path, tmp_path: Path) -> None:
    assert factory_class_ids(["walk", "0"], ("jump", "walk")) == (1, 0)
    with pytest.raises(ValueError, match="'swim' is not one of the classes jump, walk"):
        factory_class_ids(["swim"], ("jump", "walk"))
    args = ["model", "build", "--data", SPEC.format(path=readings), "--factory-classes", "swim"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "--factory-classes" in result.output


def test_help_explains_the_command() -> None:
    result = CliRunner().invoke(app, ["model", "build", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    for words in ("--data", "--factory-classes", "--arch", "cnn1d", "--window", "docs/own-data.md"):
        assert words in text, words
    assert re.search(r"test sessions", text)


def images(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, 2, 16, 20)).astype(np.uint8)
    x[y == 1, :, 4:12, 4:12] += 150  # a bright square: class 1
    return x, y


@pytest.mark.parametrize(
    ("arch", "x", "lr_shape", "head"),
    [
        ("cnn2d", images()[0], (32, 2, 2), ["dw3", "r3", "pw4", "r4", "p4", "flat", "fc5"]),
        (
            "cnn1d",
            np.random.default_rng(1).normal(size=(48, 2, 16)).astype(np.float32),
            (32, 2),
            ["flat3", "fc3", "r3", "fc4"],
        ),
        (
            "mlp",
            np.random.default_rng(2).normal(size=(48, 7)).astype(np.float32),
            (64,),
            ["fc2", "r2", "fc3"],
        ),
        (
            "mlp",
            np.random.default_rng(3).normal(size=(48, 3, 4)).astype(np.float32),
            (64,),
            ["fc2", "r2", "fc3"],
        ),
    ],
)
def test_each_architecture_builds_a_bundle(
    arch: str, x: np.ndarray, lr_shape: tuple[int, ...], head: list[str], tmp_path: Path
) -> None:
    y = images(len(x))[1]
    config = BuildConfig(arch, ("a", "b", "c"), name=f"test-{arch}", epochs=2)
    bundle = build_model(x, y, tmp_path / arch, config)
    assert bundle.lr_shape == lr_shape and bundle.num_classes == 3
    assert [spec.name for spec in bundle.adaptive_specs] == head
    assert bundle.meta["factory_classes"] == [0, 1]
    latents = FrozenStage.shared(bundle).run(x[:5])
    assert latents.shape == (5, *lr_shape) and np.isfinite(latents).all()
    if x.dtype == np.float32:  # one mean and std per channel
        assert len(bundle.input.mean) == x.shape[1]


def test_an_image_model_learns_its_factory_classes(tmp_path: Path) -> None:
    x, y = images(64)
    bundle = build_model(x, y, tmp_path / "img", BuildConfig("cnn2d", ("dark", "bright")))
    latents = FrozenStage.shared(bundle).run(x)
    assert np.mean(bundle.build_head().predict(latents) == y) > 0.9


def test_an_architecture_that_does_not_fit_the_samples_is_refused(tmp_path: Path) -> None:
    x = np.zeros((8, 3, 20), np.float32)
    y = np.arange(8) % 2
    with pytest.raises(ModelInputError, match=r"cnn2d takes images \[C, H, W\]"):
        build_model(x, y, tmp_path / "a", BuildConfig("cnn2d", ("a", "b")))
    with pytest.raises(ModelInputError, match="cnn1d takes windows"):
        build_model(x[:, 0], y, tmp_path / "b", BuildConfig("cnn1d", ("a", "b")))
    with pytest.raises(ModelInputError, match="at least 8 readings"):
        build_model(x[:, :, :5], y, tmp_path / "c", BuildConfig("cnn1d", ("a", "b")))


def test_a_model_run_on_other_data_is_refused(
    built: tuple[Path, str], readings: Path, tmp_path: Path
) -> None:
    bundle = ModelBundle.load(built[0])
    other = tmp_path / "other.csv"
    lines = ["a,b,c,label,session"]
    lines += [f"{i},{i},{i},{c},{s}" for s in range(3) for c in ("up", "down") for i in range(30)]
    other.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataMismatchError, match="built for the classes jump, run, sit"):
        scenario_for(f"csv[window=25]:{other}", "nic", seed=0, bundle=bundle)
    with pytest.raises(DataMismatchError, match="dataset digits has 0, 1, 2"):
        scenario_for("digits", "nic", seed=0, bundle=bundle)
    longer = f"csv[y=activity;session=subject;window=30]:{readings}"
    with pytest.raises(DataMismatchError, match=r"shape \(3, 30\), the model takes \(3, 25\)"):
        scenario_for(longer, "nic", seed=0, bundle=bundle)


def test_build_own_model_defaults_to_the_seeds_pick_and_the_shapes_arch(
    readings: Path, tmp_path: Path
) -> None:
    spec = f"csv[y=activity;session=subject]:{readings}"  # one line per sample: features
    made = build_own_model(spec, tmp_path / "m", seed=1, epochs=1)
    assert made.arch == "mlp" and made.bundle.input_shape == (3,)
    assert len(made.factory_classes) == 2  # 30 % of 5 classes, picked by the seed
    plan = scenario_for(spec, "nc", seed=1, bundle=None)
    picked = sorted(plan.classes[c] for c in set(plan.factory[1].tolist()))
    assert list(made.factory_classes) == picked


def test_stream_with_the_model_sends_the_other_classes(
    built: tuple[Path, str], readings: Path, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    spec = SPEC.format(path=readings)
    args = ["stream", "--dataset", spec, "--scenario", "nc", "--seed", "5", "--devices", "1"]
    result = CliRunner().invoke(
        app, [*args, "--model", str(built[0]), "--dump", str(tmp_path / "d")]
    )
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "d" / "node-0000").glob("0*.safetensors"))
    sent = {int(c) for f in files for c in np.unique(load_file(str(f))["y"])}
    assert sent == {1, 3}  # run, stand: the classes walk-model was not trained on
    other = f"csv[y=activity;session=subject;window=20]:{readings}"
    args = ["stream", "--dataset", other, "--model", str(built[0]), "--dump", str(tmp_path / "e")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "the model takes (3, 25)" in " ".join(result.output.split())
