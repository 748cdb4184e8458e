"""``vega-emu energy`` with a radio, a battery chemistry and a temperature; ``vega-emu plan``
with harvesting and a policy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from device.cli import app
from device.model.bundle import ModelBundle
from device.model.default import default_cache_dir

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
SUN = ROOT / "docs" / "sun-example.csv"
WIDE = {"COLUMNS": "80"}


def _json(*args: str) -> dict:
    result = runner.invoke(app, ["energy", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def default_named(default_bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / default_cache_dir().name).symlink_to(default_bundle.path.resolve())
    monkeypatch.setenv("VEGA_EMU_CACHE", str(cache))
    return default_bundle


def test_the_issue_command_prints_shares_and_a_lifetime(default_named: ModelBundle) -> None:
    args = ["--model", "default", "--radio", "ble", "--battery", "lipo", "--temperature", "35"]
    result = runner.invoke(app, ["energy", *args, "--events-per-hour", "60"], env=WIDE)
    assert result.exit_code == 0, result.output
    text = result.stdout
    for part in ("power budget, lipo cell", "radio ble", "self-discharge at 35 C"):
        assert part in text
    assert "lifetime of the lipo cell" in text and "self-discharge" in text
    assert max(len(line) for line in text.splitlines() if line[:1] in "┏┃┡│└") <= 80


def test_the_default_json_has_no_budget_and_the_options_add_one() -> None:
    plain = _json("--events-per-hour", "60")
    assert "budget" not in plain
    ideal = _json("--events-per-hour", "60", "--battery", "ideal")
    budget = ideal["budget"]
    assert budget["lifetime_h"] == plain["lifetime_h"]  # the ideal cell is the paper's battery
    assert budget["self_discharge_w"] == 0 and budget["radio"]["power_w"] == 0
    hot = _json("--events-per-hour", "60", "--battery", "lipo", "--temperature", "35")["budget"]
    cold = _json("--events-per-hour", "60", "--battery", "lipo", "--temperature", "15")["budget"]
    assert hot["self_discharge_w"] == pytest.approx(2**2 * cold["self_discharge_w"])
    assert hot["lifetime_h"] < cold["lifetime_h"]
    assert hot["self_discharge_share"] + hot["compute_w"] / hot["power_w"] == pytest.approx(1)


def test_lorawan_that_cannot_carry_the_telemetry_is_flagged() -> None:
    args = ["energy", "--radio", "lorawan-sf12", "--events-per-hour", "60"]
    result = runner.invoke(app, [*args, "--telemetry-bytes", "20"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "the radio cannot carry this" in result.stdout and "duty_cycle" in result.stdout
    data = _json("--radio", "lorawan-sf12", "--events-per-hour", "60")
    codes = {p["code"] for p in data["budget"]["radio"]["problems"]}
    assert codes == {"payload_over_max", "duty_cycle"}


def test_bad_options_exit_2(tmp_path: Path) -> None:
    for args in (["--radio", "wifi"], ["--battery", "nimh"], ["--temperature", "warm"]):
        result = runner.invoke(app, ["energy", *args])
        assert result.exit_code == 2, args


def test_plan_with_the_sun_and_a_policy(tmp_path: Path) -> None:
    out_csv = tmp_path / "plan.csv"
    args = [
        "plan",
        "--harvest",
        f"solar:{SUN}",
        "--policy",
        "soc-threshold:0.3",
        "--lr-layers",
        "25,27",
        "--lr-sizes",
        "1500",
        "--lr-bits",
        "8",
        "--csv",
        str(out_csv),
        "--plot",
        str(tmp_path / "plan.png"),
    ]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert "energy-neutral" in result.stdout and "soc-threshold:0.3" in result.stdout
    tables = [line for line in result.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert tables and max(len(line) for line in tables) <= 80
    rows = list(csv.DictReader(out_csv.read_text("utf-8").splitlines()))
    assert len(rows) == 2 * 3
    assert {row["energy_neutral"] for row in rows} == {"True"}
    learned = {
        (row["lr_layer"], row["events_per_hour"]): float(row["learned_share"]) for row in rows
    }
    assert learned[("27", "4.0")] == 1.0 and learned[("25", "4.0")] < 1.0


def test_plan_without_harvest_options_is_unchanged(tmp_path: Path) -> None:
    args = ["plan", "--lr-layers", "27", "--lr-sizes", "1500", "--lr-bits", "8"]
    args += ["--csv", str(tmp_path / "p.csv"), "--plot", str(tmp_path / "p.png")]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert "first empty" not in result.stdout
    assert "lifetime of a full battery" in result.stdout


def test_plan_refuses_a_bad_trace_and_policy(tmp_path: Path) -> None:
    bad = tmp_path / "sun.csv"
    bad.write_text("time_s,irradiance_w_m2\n0,100\n3600,cloudy\n", "utf-8")
    common = [
        "--lr-layers",
        "27",
        "--csv",
        str(tmp_path / "p.csv"),
        "--plot",
        str(tmp_path / "p.png"),
    ]
    result = runner.invoke(app, ["plan", "--harvest", f"solar:{bad}", *common])
    assert result.exit_code == 2 and "row 3" in result.output
    result = runner.invoke(
        app, ["plan", "--harvest", "constant:1", "--policy", "sometimes", *common]
    )
    assert result.exit_code == 2 and "unknown policy" in result.output
