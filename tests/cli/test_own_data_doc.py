"""docs/own-data.md, run as it is written: its shell commands, in order, in an empty directory
(30 s of each activity shortened to 12 and the build to 4 epochs, so that it takes less than a
minute), end in a model, a recording and a report, and what the doc quotes is what they print."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from device.model.bundle import ModelBundle

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "own-data.md"


def commands() -> list[str]:
    """Every line of the doc's ``bash`` blocks, in order."""
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_the_doc_is_linked_from_the_readme() -> None:
    assert "(docs/own-data.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_walk_runs_as_written(tmp_path: Path) -> None:
    lines = commands()
    assert [line.split()[:3] for line in lines] == [
        ["python", "scripts/readings_csv.py", "--subjects"],
        ["vega-emu", "model", "build"],
        ["vega-emu", "model", "info"],
        ["vega-emu", "energy", "--model"],
        ["vega-emu", "up", "--dataset"],
    ]
    script = "\n".join(lines)
    script = script.replace("--seconds 30", "--seconds 12").replace(
        "--out walk-model", "--epochs 4 --out walk-model"
    )
    script = script.replace("python scripts/", f"{sys.executable} {ROOT}/scripts/")
    script = script.replace("vega-emu ", f"{sys.executable} -m device.cli ")
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"COLUMNS": "200"},
    )
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, result.stdout + result.stderr
    doc = " ".join(DOC.read_text(encoding="utf-8").split())
    quoted = re.search(r"dataset: '[^']+'", out)
    assert quoted is not None and quoted.group(0) in doc  # the doc quotes what build prints
    assert "2 nodes" in out and "17 events each" in out and "17 events per device" in doc
    assert re.search(r"answered 34 of 34 batch\(es\): 34 learned", out), out
    assert (
        "run recorded in walk-run/run.sqlite" in out and "report: walk-run/report/index.html" in out
    )
    assert (tmp_path / "walk-run" / "report" / "index.html").is_file()
    bundle = ModelBundle.load(tmp_path / "walk-model")
    assert bundle.meta["factory_classes"] == [0, 2, 4]  # jump, sit, walk
    assert bundle.input_shape == (3, 50) and bundle.lr_shape == (32, 6)
