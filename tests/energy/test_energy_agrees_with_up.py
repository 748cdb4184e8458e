"""``vega-emu up`` and ``vega-emu energy --model default`` give one lifetime for one configuration.

``up`` projects each node's lifetime from the events it learned, at their observed rate (one per
``--cadence`` simulated seconds) and mean cost; ``energy`` costs one event of the mean size of the
same scenario with a full replay memory. They differ by the events learned before the memory held
enough replays to fill a mini-batch (the first event trains its new samples alone), about 1 % over
the default scenario's 77 events; docs/energy-model.md explains it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_stream import Scenario
from device.app.models import Benchmark, benchmark_of, is_default, is_default_bundle
from device.model.bundle import ModelBundle
from device.model.default import default_cache_dir

#: How far apart the two lifetimes may be (relative).
AGREEMENT = 0.05


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_up_and_energy_give_the_same_lifetime(default_bundle: ModelBundle, tmp_path: Path) -> None:
    # both commands find the test session's default bundle under the name "default"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / default_cache_dir().name).symlink_to(default_bundle.path.resolve())
    env = os.environ | {"VEGA_EMU_CACHE": str(cache), "COLUMNS": "120"}
    summary = tmp_path / "S.json"
    up_args = ["--devices", "1", "--speed", "max", "--quiet", "--no-report"]
    _cli(
        "up", *up_args, "--model", "default", "--summary-json", str(summary), env=env, cwd=tmp_path
    )
    ran = json.loads(summary.read_text("utf-8"))
    events_per_hour = 3600.0 / ran["config"]["cadence"]
    assert events_per_hour == 60.0  # the rate the energy command is given below
    (device,) = ran["devices"]
    energy = _cli(
        "energy",
        "--model",
        "default",
        "--events-per-hour",
        f"{events_per_hour:g}",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    costed = json.loads(energy.stdout)
    benchmark = costed["model"]["benchmark"]
    assert costed["model"]["new_per_event_from"] == "benchmark"
    assert device["events"] == benchmark["events"]  # up streamed the whole benchmark
    assert costed["config"]["lr_size"] == ran["config"]["lr_size"]
    assert costed["config"]["lr_bits"] == ran["config"]["lr_bits"]
    assert costed["config"]["epochs"] == ran["config"]["epochs"]
    assert device["lifetime_h"] == pytest.approx(costed["lifetime_h"], rel=AGREEMENT)


def test_the_default_benchmark_is_the_scenario_up_streams(digits_nic: Scenario) -> None:
    benchmark = benchmark_of("default")
    assert benchmark == Benchmark.of(digits_nic)
    assert benchmark is not None
    streamed = digits_nic.events("node-0000")
    assert benchmark.events == len(streamed)
    assert benchmark.samples == sum(len(event) for event in streamed)
    assert benchmark.new_per_event == round(benchmark.samples / benchmark.events)
    assert 100 < benchmark.new_per_event < 300  # not the paper's 300 images


def test_default_names_the_default_bundle(tmp_path: Path) -> None:
    assert is_default(None) and is_default("default") and is_default(Path("default"))
    assert not is_default(tmp_path / "default")
    assert is_default_bundle(default_cache_dir(0)) and not is_default_bundle(tmp_path)
    assert benchmark_of(tmp_path) is None  # a bundle directory names no benchmark
