"""``vega-emu energy``: JSON contract, every paper LR layer on both profiles, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from device.cli import app
from device.model.bundle import ModelBundle
from device.model.default import build_default, default_cache_dir
from device.model.train import FitConfig

runner = CliRunner()


def _json(*args: str) -> dict:
    result = runner.invoke(app, ["energy", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("profile", ["vega", "vega-hw", "stm32l4"])
def test_every_paper_lr_layer_has_the_json_keys(profile: str) -> None:
    started = time.monotonic()
    for layer in range(19, 28):
        args = ["--mobilenet-v1", "--res", "128", "--lr-layer", str(layer), "--profile", profile]
        data = _json(*args)
        event = data["event"]
        assert set(event["latency_s"]) == {"frozen", "adaptive", "total"}
        assert set(event["energy_j"]) == {"frozen", "adaptive", "memory", "total"}
        assert data["lifetime_h"] > 0 and data["max_events_per_hour"] > 0
        assert {"fits", "items", "regions", "warnings"} <= set(data["memory"])
        names = [layer["name"] for layer in data["layers"]]
        assert names[0] == "conv0" and names[-1] == "fc27"
        assert data["config"]["lr_layer"] == layer
    assert time.monotonic() - started < 10


def test_json_agrees_with_the_tables_inputs() -> None:
    data = _json("--lr-layer", "27", "--events-per-hour", "4", "--lr-bits", "6")
    assert data["config"]["lr_bits"] == 6 and data["events_per_hour"] == 4
    energy = data["event"]["energy_j"]
    assert energy["total"] == pytest.approx(
        energy["frozen"] + energy["adaptive"] + energy["memory"]
    )
    per_layer = sum(layer["j"] for layer in data["layers"])
    assert per_layer + energy["memory"] == pytest.approx(energy["total"])
    hours = 39204.0 / data["power_w"] / 3600
    assert data["lifetime_h"] == pytest.approx(hours)


@pytest.mark.parametrize(
    ("profile", "basis", "rate"),
    [("vega", "paper-derived", "118.6"), ("vega-hw", "hardware-bounded", "15.5")],
)
def test_the_frozen_stage_says_where_its_rate_comes_from(
    profile: str, basis: str, rate: str
) -> None:
    data = _json("--lr-layer", "27", "--profile", profile)
    assert data["frozen_stage"]["basis"] == basis
    assert data["frozen_stage"]["int8_mac_per_cycle"] == pytest.approx(float(rate), rel=1e-3)
    result = runner.invoke(app, ["energy", "--lr-layer", "27", "--profile", profile])
    assert result.exit_code == 0, result.output
    assert f"frozen stage: INT8 at {rate} MAC/cycle, {basis}" in result.stdout


def test_tables_render() -> None:
    result = runner.invoke(app, ["energy", "--lr-layer", "19", "--lr-bits", "32"])
    assert result.exit_code == 0, result.output
    for text in ("event totals", "memory map", "does not fit", "lifetime at 1 events/h"):
        assert text in result.stdout


def test_errors_exit_2() -> None:
    bad_profile = runner.invoke(app, ["energy", "--profile", "nope"])
    assert bad_profile.exit_code == 2
    bad_bits = runner.invoke(app, ["energy", "--lr-bits", "12"])
    assert bad_bits.exit_code == 2
    both = runner.invoke(app, ["energy", "--mobilenet-v1", "--model", "."])
    assert both.exit_code == 2


def test_model_bundle(tmp_path: Path) -> None:
    """--model DIR charges the bundle's own layers (the default CNN, LR = input of dw3)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (32, 1, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 3, 32)
    build_default(x, y, tmp_path / "bundle", fit_config=FitConfig(epochs=1))
    data = _json("--model", str(tmp_path / "bundle"), "--lr-size", "200")
    assert data["config"]["lr_layer"] == 3
    adaptive = [layer["name"] for layer in data["layers"] if layer["stage"] == "adaptive"]
    assert adaptive[0] == "dw3"
    assert data["event"]["traffic"]["lr_bytes"] == 32 * 4 * 4 + 8
    wrong = runner.invoke(app, ["energy", "--model", str(tmp_path / "bundle"), "--lr-layer", "5"])
    assert wrong.exit_code == 2
    out_csv = tmp_path / "p.csv"
    args = ["plan", "--model", str(tmp_path / "bundle"), "--csv", str(out_csv)]
    planned = runner.invoke(app, [*args, "--plot", str(tmp_path / "p.png"), "--rates", "60"])
    assert planned.exit_code == 0, planned.output
    assert out_csv.read_text().count("\n") == 1 + 4 * 4


def test_without_a_model_it_says_which_one_it_analyses() -> None:
    data = _json()
    assert data["model"]["path"] is None and data["model"]["new_per_event_from"] == "paper"
    assert data["config"]["new_per_event"] == 300
    assert _json("--new-per-event", "50")["model"]["new_per_event_from"] == "option"
    shown = runner.invoke(app, ["energy"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    first = shown.stdout.splitlines()[0]
    assert first.startswith("model: analytical MobileNet-V1") and "--model default" in first


@pytest.fixture
def default_named(default_bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The test session's default bundle is the one ``default`` names."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / default_cache_dir().name).symlink_to(default_bundle.path.resolve())
    monkeypatch.setenv("VEGA_EMU_CACHE", str(cache))
    return default_bundle


def test_model_default_takes_new_samples_from_its_benchmark(default_named: ModelBundle) -> None:
    data = _json("--model", "default", "--events-per-hour", "60")
    model = data["model"]
    assert model["name"] == default_named.name and model["default"] is True
    assert model["new_per_event_from"] == "benchmark"
    mean = model["benchmark"]["mean_new_per_event"]
    assert data["config"]["new_per_event"] == round(mean) and 100 < mean < 300
    given = _json("--model", "default", "--new-per-event", "300")
    assert given["config"]["new_per_event"] == 300
    assert given["model"]["new_per_event_from"] == "option"
    assert given["lifetime_h"] < _json("--model", "default")["lifetime_h"]
    shown = runner.invoke(app, ["energy", "--model", "default"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert "the default bundle up runs" in shown.stdout.splitlines()[0]


def test_model_info_without_a_path_is_the_default_bundle(default_named: ModelBundle) -> None:
    for args in ([], ["default"]):
        result = runner.invoke(app, ["model", "info", *args, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["name"] == default_named.name
