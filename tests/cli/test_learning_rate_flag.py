"""``--learning-rate`` on node, fleet and up; ``--lr``, its old spelling, still works, hidden and
with a one-line deprecation notice (``--lr-size`` and ``--lr-bits`` are the latent replays)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from device.cli import app
from device.model.bundle import ModelBundle

#: ``--lr`` as a whole option, not the start of ``--lr-size`` or ``--lr-bits``.
OLD_FLAG = re.compile(r"--lr(?![\w-])")
NOTICE = "deprecated: --lr is now --learning-rate; --lr will go away"


def vega_emu(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"COLUMNS": "200"},
        cwd=cwd,
    )


@pytest.mark.parametrize("command", ["node", "fleet", "up"])
def test_help_shows_learning_rate_and_hides_the_old_spelling(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--learning-rate" in result.output and "--lr-size" in result.output
    assert not OLD_FLAG.search(result.output)


def test_the_old_flag_still_sets_the_rate_and_says_it_is_deprecated(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    summary = tmp_path / "S.json"
    result = vega_emu(
        "up", "--devices", "1", "--events", "1", "--quiet", "--no-report",
        "--model", str(default_bundle.path), "--summary-json", str(summary),
        "--lr", "0.02",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads(summary.read_text())["config"]
    assert config["learning_rate"] == 0.02 and "lr" not in config
    notices = [line for line in result.stderr.splitlines() if "--learning-rate" in line]
    assert notices == [NOTICE]


def test_the_new_flag_says_nothing_and_both_at_once_are_refused(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    model = ("--model", str(default_bundle.path))
    bad = vega_emu("up", *model, "--learning-rate", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "learning_rate must be > 0" in bad.stderr
    assert NOTICE not in bad.stderr
    both = vega_emu(
        "node", "--id", "n", "--state-dir", str(tmp_path / "s"), *model,
        "--learning-rate", "0.1", "--lr", "0.1",
        cwd=tmp_path,
    )  # fmt: skip
    assert both.returncode == 2 and "give --learning-rate only" in both.stderr
