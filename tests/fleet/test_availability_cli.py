"""``vega-emu up --spec FILE --devices N`` as a user runs it: a seeded heterogeneous fleet whose
devices go offline, every batch learned once, the drawn values and the offline devices in the
report; a bad spec refused with its class and field named."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from device.model.bundle import ModelBundle

SPEC = """
seed = 5
[availability]
speed = 20
horizon_s = 40

[[class]]
name = "steady"
count = 4
battery_j = {dist = "normal", mean = 39204, std = 4000, min = 20000}
speed_factor = {dist = "uniform", low = 0.8, high = 1.2}

[[class]]
name = "flaky"
count = 4
lr_size = {dist = "choice", values = [500, 1000]}
initial_soc = {dist = "uniform", low = 0.4, high = 0.9}
availability.up = {dist = "exponential", mean_s = 10}
availability.down = {dist = "weibull", shape = 1.5, scale_s = 20}
"""


def up(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", "up", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"COLUMNS": "160"},
        cwd=cwd,
    )


def test_up_runs_a_spec_scaled_to_devices_with_offline_devices_in_its_report(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    spec = tmp_path / "fleet.toml"
    spec.write_text(SPEC, encoding="utf-8")
    summary = tmp_path / "S.json"
    result = up(
        [
            "--spec",
            str(spec),
            "--devices",
            "4",
            "--events",
            "12",
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
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "2 go offline at times" in result.stdout + result.stderr  # flaky, scaled 4 to 2
    data = json.loads(summary.read_text())
    assert data["config"]["spec_seed"] == 5
    assert [d["device"] for d in data["devices"]] == [f"node-{i:04d}" for i in range(4)]
    assert data["stream"]["acked"] == data["stream"]["sent"] == 48
    for device in range(4):  # every batch learned exactly once
        with sqlite3.connect(tmp_path / "state" / f"node-{device:04d}.db") as db:
            rows = db.execute("SELECT seq, outcome FROM events ORDER BY seq").fetchall()
        assert rows == [(seq, "learned") for seq in range(1, 13)]
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "<h2>Device values</h2>" in page and "<h2>Availability</h2>" in page
    assert "<td>flaky</td><td>initial_soc</td>" in page
    assert "2 device(s) planned to go offline" in page


def test_up_refuses_a_bad_spec_naming_the_class_and_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "fleet.toml"
    spec.write_text(SPEC.replace("std = 4000, min = 20000", "std = 4000, mni = 20000"))
    result = up(["--spec", str(spec)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "class 'steady': battery_j: normal: unknown key(s) mni" in " ".join(
        result.stderr.split()
    )
    assert not (tmp_path / "vega-emu-runs").exists()
