"""``vega-emu up`` as a user runs it: one process, embedded broker, stream and fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from device.model.bundle import ModelBundle


def test_up_runs_a_fleet_and_writes_a_summary(default_bundle: ModelBundle, tmp_path: Path) -> None:
    summary = tmp_path / "S.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "device.cli",
            "up",
            "--devices",
            "2",
            "--events",
            "6",
            "--quiet",
            "--model",
            str(default_bundle.path),
            "--state-dir",
            str(tmp_path / "state"),
            "--summary-json",
            str(summary),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(summary.read_text())
    assert data["config"]["devices"] == 2 and data["config"]["lr_size"] == 1500
    assert data["config"]["learning_rate"] == default_bundle.recommended_learning_rate
    assert [d["device"] for d in data["devices"]] == ["node-0000", "node-0001"]
    for device in data["devices"]:
        assert device["events"] == 6
        assert 0 <= device["accuracy"] <= 1
        assert device["energy_j"] > 0 and 0 < device["lifetime_h"] < float("inf")
        assert 0 < device["soc"] < 1
        assert device["accuracy_factory_classes"] is not None
    assert data["stream"]["acked"] == 12
    assert sorted(Path(tmp_path / "state").glob("*.db")) != []
    assert "summary" in result.stdout + result.stderr
    page = tmp_path / "run" / "report" / "index.html"
    assert f"report: {page}" in " ".join((result.stdout + result.stderr).split())
    html = page.read_text()
    assert "node-0000" in html and "accuracy.png" in html
    assert (tmp_path / "run" / "report" / "accuracy.png").stat().st_size > 0


def test_up_rejects_bad_flags_with_their_names(default_bundle: ModelBundle, tmp_path: Path) -> None:
    cases = {
        ("--lr-bits", "3", "--model", str(default_bundle.path)): "bits",
        ("--model", str(tmp_path)): "model.toml",
        ("--profile", str(tmp_path / "none.toml")): "none.toml",
    }
    for args, named in cases.items():
        result = subprocess.run(
            [sys.executable, "-m", "device.cli", "up", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ | {"COLUMNS": "200"},
            cwd=tmp_path,
        )
        assert result.returncode == 2, (args, result.stderr)
        assert named in result.stderr, (args, result.stderr)
        assert not (tmp_path / "vega-emu-runs").exists()  # a refused run leaves nothing behind
