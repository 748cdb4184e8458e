"""Shared fleet workers never share a login: ``vega-emu fleet --connection shared`` with more than
one worker and the one user of ``--broker`` (in the URL or ``VEGA_EMU_MQTT_USERNAME``) refuses
to start, in one line that names ``--credentials``, before it loads a model or connects.

On a broker that binds client ids to user names those workers would be one client that keeps
kicking itself off (tests/deploy/test_deploy_broker_probe.py shows two connections of one
gateway user doing it on the deployed Mosquitto config). One worker, a fleet no larger than one
worker, or a URL without a user (an open broker: the workers' gateway ids stay apart) is let
through.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker import parse_broker_url
from device.cli.fleet_cmd import _one_login_per_worker

FLEET = [sys.executable, "-m", "device.cli", "fleet", "--connection", "shared"]


@pytest.mark.parametrize(
    ("broker", "env"),
    [
        ("mqtt://gw-node-0000-4@127.0.0.1:1", {}),
        ("mqtt://127.0.0.1:1", {"VEGA_EMU_MQTT_USERNAME": "gw-node-0000-4"}),
    ],
)
def test_shared_workers_with_one_login_are_refused_naming_credentials(
    broker: str, env: dict[str, str], tmp_path: Path
) -> None:
    args = ["-n", "4", "--workers", "2", "--broker", broker, "--state-dir", str(tmp_path / "s")]
    out = subprocess.run(
        [*FLEET, *args],
        env={**os.environ, **env, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: --connection shared with 2 workers")
    assert "--credentials FILE" in lines[0] and "'gw-node-0000-4'" in lines[0]
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@pytest.mark.parametrize(
    ("broker", "workers"),
    [
        ("mqtt://gw-node-0000-4@127.0.0.1:1", 1),  # one worker: one connection, one client id
        ("mqtt://127.0.0.1:1", 2),  # no user: an open broker, gateway ids stay apart
    ],
)
def test_one_worker_or_no_user_is_let_through(broker: str, workers: int) -> None:
    _one_login_per_worker(parse_broker_url(broker), workers)  # raises nothing
