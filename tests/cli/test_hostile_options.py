"""Hostile option values, every command: a clear error that names the option, never a traceback.

Each case runs the real command line in a new process; the values are the ones users get wrong
(negative counts, topic wildcards in prefixes and ids, ports out of range, paths that cannot be
written, NaN and infinity) and must be refused at the edge, before any work starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from device.model.bundle import ModelBundle

BROKER = "mqtt://127.0.0.1:1"  # never reached: every case fails before connecting
UNWRITABLE = "{tmp}/a-file/x"  # a path under a regular file: no one can create it, not root

# (arguments, a piece the error must contain: the option or the bad value)
CASES: list[tuple[list[str], str]] = [
    (["broker", "--port", "-1"], "--port"),
    (["broker", "--port", "70000"], "--port"),
    (["broker", "--engine", "bogus"], "--engine"),
    (["broker", "--engine", "mosquitto", "--passwords", "/nonexistent"], "--passwords"),
    (["broker", "--engine", "mosquitto", "--acl-devices", "-3"], "--acl-devices"),
    (["stream", "--devices", "0", "--broker", BROKER], "--devices"),
    (["stream", "--devices", "-3", "--broker", BROKER], "--devices"),
    (["stream", "--devices", "-3", "--dump", "{tmp}/dump"], "--devices"),
    (["stream", "--client-id", "a b#", "--broker", BROKER], "--client-id"),
    (["stream", "--dump", UNWRITABLE], "--dump"),
    (["stream", "--password-file", "/none", "--broker", "mqtt://u@h:1"], "/none"),
    (["stream", "--devices", "a/b", "--broker", BROKER], "a/b"),
    (["stream", "--prefix", "#", "--broker", BROKER], "--prefix"),
    (["stream", "--speed", "-1", "--broker", BROKER], "--speed"),
    (["stream", "--speed", "nan", "--broker", BROKER], "--speed"),
    (["stream", "--cadence", "0", "--broker", BROKER], "--cadence"),
    (["stream", "--cadence", "inf", "--broker", BROKER], "--cadence"),
    (["stream", "--dataset", "npz:/nonexistent", "--broker", BROKER], "/nonexistent"),
    (["stream", "--broker", "mqtt://h:99999"], "port"),
    (["stream", "--broker", "ftp://h"], "mqtt://"),
    (["stream", "--max-outage", "-5", "--broker", BROKER], "--max-outage"),
    (["node", "--id", "../x", "--state-dir", "{tmp}"], "../x"),
    (["node", "--id", "a#", "--state-dir", "{tmp}"], "a#"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--prefix", "#"], "prefix"),
    (["node", "--id", "n", "--state-dir", UNWRITABLE], "--state-dir"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--model", "/nonexistent"], "/nonexistent"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--lr-bits", "3"], "bits"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--lr-size", "-1"], "--lr-size"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--epochs", "0"], "--epochs"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--mb", "0"], "--mb"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--learning-rate", "nan"], "learning_rate"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--lr", "nan"], "learning_rate"),
    (["up", "--learning-rate", "-1"], "learning_rate"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--hold", "-1"], "--hold"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--give-up-after", "inf"], "give_up"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--profile", "/none.toml"], "/none.toml"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--broker", "mqtt://h:0"], "port"),
    (["node", "--id", "n", "--state-dir", "{tmp}", "--password-file", "/none"], "/none"),
    (["up", "--devices", "0"], "--devices"),
    (["up", "--events", "0"], "--events"),
    (["up", "--speed", "abc"], "--speed"),
    (["up", "--cadence", "-1"], "--cadence"),
    (["up", "--lr-bits", "99"], "bits"),
    (["up", "--summary-json", UNWRITABLE], "--summary-json"),
    (["energy", "--mobilenet-v1", "--lr-layer", "99"], "lr_layer"),
    (["energy", "--mobilenet-v1", "--res", "-1"], "res"),
    (["energy", "--mobilenet-v1", "--events-per-hour", "nan"], "events_per_hour"),
    (["energy", "--profile", "/nonexistent"], "/nonexistent"),
    (["plan", "--rates", "a,b"], "--rates"),
    (["plan", "--lr-sizes", "-5"], "lr_size"),
    (["plan", "--summary", "/nonexistent.json"], "--summary"),
    (["model", "info", "/nonexistent"], "/nonexistent"),
    (["model", "split", "/nonexistent.onnx", "--at", "x", "--out", "{tmp}/m"], "nonexistent"),
    (["model", "build-default", "--out", UNWRITABLE], "--out"),
    (["model", "mobilenet-v1", "--lr-layer", "99", "--out", "{tmp}/mm"], "lr_layer"),
]


def run_case(args: list[str], tmp: Path, model: Path) -> tuple[int, str]:
    (tmp / "a-file").touch()
    args = [a.replace("{tmp}", str(tmp)) for a in args]
    if args[0] in ("node", "up") and "--model" not in args:
        args += ["--model", str(model)]
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"COLUMNS": "200"},
    )
    return result.returncode, result.stdout + result.stderr


def test_every_command_refuses_hostile_options_clearly(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(
            pool.map(lambda case: run_case(case[0], tmp_path, default_bundle.path), CASES)
        )
    problems = []
    for (args, named), (code, output) in zip(CASES, results, strict=True):
        flat = " ".join(output.split())
        if code == 0 or "Traceback" in output or named not in flat:
            problems.append(f"vega-emu {' '.join(args)} -> exit {code}: {flat[-300:]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", ["broker", "stream", "node", "up", "energy", "plan", "model"])
def test_every_command_is_covered(command: str) -> None:
    assert any(args[0] == command for args, _ in CASES)
