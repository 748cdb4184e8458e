"""The README's Mosquitto recipe (passwords and an ACL), run as it is written: its password
files are private, the stream learns, and its last line stops the jobs it started."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

from broker.url import free_port
from tests.support.mosquitto import require_mosquitto

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### A fleet on Mosquitto with passwords and an ACL"


def recipe() -> str:
    """The shell block of the README's section, as a user copies it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").split(SECTION, 1)[1]
    match = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert match is not None, "the section has no bash block"
    return match.group(1)


def test_the_recipe_ends_by_stopping_what_it_started() -> None:
    lines = recipe().strip().splitlines()
    started = [line for line in lines if line.rstrip().endswith("&")]
    assert len(started) == 2 and lines[-1].startswith("kill %2 %1 && wait")


def test_the_recipe_runs_makes_private_files_and_leaves_nothing_running(tmp_path: Path) -> None:
    require_mosquitto()
    port = str(free_port("127.0.0.1"))
    script = recipe().replace("1884", port).replace("vega-emu ", f"{sys.executable} -m device.cli ")
    # umask 022, as on most machines: the recipe's own umask makes its files private
    result = subprocess.run(
        ["bash", "-c", f"umask 022\n{script}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,  # the jobs did not stop if the final wait never returns
        env=os.environ | {"COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "answered 20 of 20 batch(es): 20 learned" in out, out
    for name in ("users.txt", "node-0000.pw"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(port))) != 0, "the broker still listens"
