"""``vega-emu stream``: the issue's "done when", flag errors, a real broker, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file
from typer.testing import CliRunner

from broker import EmbeddedBroker
from dataset_stream.protocol import decode_batch
from dataset_stream.sources import load_source
from device.cli import app

runner = CliRunner()


def row_hashes(x: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(row.tobytes()).digest() for row in x}


def test_dump_writes_plain_safetensors_without_test_samples(tmp_path: Path) -> None:
    out = tmp_path / "D"
    args = ["stream", "--dataset", "digits", "--scenario", "nic", "--devices", "2"]
    result = runner.invoke(app, [*args, "--events", "10", "--dump", str(out)])
    assert result.exit_code == 0, result.output
    digits = load_source("digits")
    test_rows = row_hashes(digits.take(digits.select(sessions=digits.test_sessions)))
    train_rows = row_hashes(digits.take(digits.select(sessions=digits.train_sessions)))
    assert sorted(p.name for p in out.iterdir()) == ["node-0000", "node-0001"]
    for device in ("node-0000", "node-0001"):
        files = sorted(p.name for p in (out / device).iterdir())
        assert files == [f"{seq:06d}.safetensors" for seq in range(1, 11)] + ["eval.safetensors"]
        for seq in range(1, 11):
            path = out / device / f"{seq:06d}.safetensors"
            tensors = load_file(path)
            assert set(tensors) == {"x", "y"}
            assert tensors["x"].dtype == np.uint8 and tensors["x"].shape[1:] == (1, 32, 32)
            assert tensors["y"].dtype == np.int64 and len(tensors["y"]) == len(tensors["x"])
            with safe_open(path, "np") as f:
                meta = f.metadata()
            assert {"v", "seq", "t", "source"} <= set(meta)
            assert (meta["v"], meta["seq"], meta["source"]) == ("1", str(seq), "digits")
            hashes = row_hashes(tensors["x"])
            assert not hashes & test_rows
            assert hashes <= train_rows
        eval_x = load_file(out / device / "eval.safetensors")["x"]
        assert row_hashes(eval_x) <= test_rows


def test_dump_with_same_order_and_other_sources(tmp_path: Path) -> None:
    out = tmp_path / "S"
    result = runner.invoke(
        app,
        [
            *("stream", "--dataset", "synthetic-sensor", "--scenario", "ni", "--devices", "a,b"),
            *("--same-order", "--events", "2", "--seed", "4", "--dump", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    a = (out / "a" / "000002.safetensors").read_bytes()
    b = (out / "b" / "000002.safetensors").read_bytes()
    assert decode_batch(a).x.dtype == np.float32
    np.testing.assert_array_equal(decode_batch(a).y, decode_batch(b).y)


@pytest.mark.parametrize(
    ("flags", "hint"),
    [
        (["--devices", "0"], "--devices"),
        (["--devices", "a,b c"], "--devices"),
        (["--devices", "a,a"], "--devices"),
        (["--prefix", "a/", "--devices", "2"], "--prefix"),
        (["--speed", "fast"], "--speed"),
        (["--speed", "0"], "--speed"),
        (["--cadence", "0"], "--cadence"),
        (["--dataset", "mnist"], "--dataset"),
        (["--dataset", "npz:/nonexistent.npz"], "--dataset"),
        (["--scenario", "cl"], "--scenario"),
        (["--events", "0"], "--events"),
        (["--broker", "http://127.0.0.1:1"], "--broker"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(flags: list[str], hint: str) -> None:
    result = runner.invoke(app, ["stream", "--dataset", "digits", *flags])
    assert result.exit_code == 2, result.output
    assert hint in result.output


def test_unreachable_broker_exits_1(tmp_path: Path) -> None:
    """A broker that is down is waited for up to --max-outage, then one error line."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        args = ["--broker", f"mqtt://127.0.0.1:{port}", "--events", "1", "--max-outage", "1"]
        result = runner.invoke(app, ["stream", *args])
    assert result.exit_code == 1
    assert "cannot connect" in result.output


async def run_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "device.cli",
        "stream",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "100"},
    )


async def test_stream_to_a_broker_then_sigterm_stops_cleanly(
    embedded_broker: EmbeddedBroker,
) -> None:
    url = f"mqtt://127.0.0.1:{embedded_broker.port}"
    async with aiomqtt.Client(**embedded_broker.url.client_kwargs()) as sub:
        await sub.subscribe("vega/+/batch", qos=1)
        # fast: 3 events per device at 600x (one per 0.1 s); no node runs, so after a drain of
        # 1 s it exits 3 naming every batch
        done = await run_cli(
            *("--broker", url, "--devices", "2", "--events", "3", "--speed", "600"),
            *("--drain-timeout", "1"),
        )
        async with asyncio.timeout(30):
            _, err = await done.communicate()
        text = " ".join(err.decode().split())
        assert done.returncode == 3, text
        assert "sent 6/6 events to 2 devices" in text
        assert "answered 0 of 6 batch(es)" in text and "; 6 unanswered" in text
        errors = [line for line in err.decode().splitlines() if line.startswith("error:")]
        assert errors == [
            "error: 6 batch(es) got no answer from their node: node-0000: 1-3; node-0001: 1-3"
        ], text
        # real time with an hour between events: the first one goes out, then we stop it
        slow = await run_cli("--broker", url, "--devices", "2", "--cadence", "3600")
        seen = 0
        async with asyncio.timeout(30):
            async for _ in sub.messages:
                seen += 1
                if seen == 6 + 2:
                    break
        slow.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            _, err = await slow.communicate()
        assert slow.returncode == 0, err.decode()
        assert "stopped" in err.decode()


def test_every_stream_option_is_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text()
    result = runner.invoke(app, ["stream", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    options = {word.rstrip(",") for word in result.output.split() if word.startswith("--")}
    options -= {"--help"}
    assert options >= {"--broker", "--devices", "--speed", "--dump", "--same-order"}
    for option in options:
        assert f"`{option}" in text, option
