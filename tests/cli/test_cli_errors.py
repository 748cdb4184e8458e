"""Every command turns the project's errors into one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.url import free_port
from device.model.bundle import ModelBundle


def vega_emu(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"COLUMNS": "200"} | (env or {}),
    )


@pytest.mark.parametrize(
    ("case", "named"),
    [("corrupt-state", "not a usable vega-emu state file"), ("missing-ca", "no-such-ca.pem")],
)
def test_node_errors_are_one_line(
    default_bundle: ModelBundle, tmp_path: Path, case: str, named: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    url = f"mqtt://127.0.0.1:{free_port('127.0.0.1')}"
    env = {}
    if case == "corrupt-state":
        (state / "node-0000.db").write_bytes(b"this is not SQLite" * 100)
    else:
        url = url.replace("mqtt://", "mqtts://")
        env["VEGA_EMU_MQTT_CA_FILE"] = str(tmp_path / "no-such-ca.pem")
    result = vega_emu(
        "node", "--broker", url, "--id", "node-0000", "--state-dir", str(state),
        "--model", str(default_bundle.path), env=env,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "error:" in result.stderr and named in " ".join(result.stderr.split())
