"""The CPU time of the parts of a process's learning events (device.node.cputime)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from device.node import cputime


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_part_is_charged_the_cpu_of_its_own_thread_only() -> None:
    before = cputime.totals()
    other = threading.Thread(target=spin, args=(0.2,))  # another thread's CPU, meanwhile
    with cputime.charged("frozen"):
        other.start()
        spin(0.05)
        other.join()  # waiting costs this thread no CPU
    after = cputime.totals()
    spent = after["frozen"]["s"] - before["frozen"]["s"]
    assert after["frozen"]["n"] == before["frozen"]["n"] + 1
    assert 0.05 <= spent < 0.15
    assert after["process"]["s"] - before["process"]["s"] >= 0.25  # both threads' CPU


def test_a_part_that_raises_is_charged_all_the_same() -> None:
    before = cputime.totals()["training"]
    with pytest.raises(ValueError), cputime.charged("training"):
        spin(0.01)
        raise ValueError("boom")
    after = cputime.totals()["training"]
    assert after["n"] == before["n"] + 1 and after["s"] > before["s"]


def test_the_totals_are_written_whole_as_json(tmp_path: Path) -> None:
    path = tmp_path / "worker-0.json"
    cputime.write_totals(path)
    cputime.write_totals(path)  # replaced, never appended to
    got = json.loads(path.read_text())
    assert set(got["parts"]) == {*cputime.PARTS, "process"}
    assert [p.name for p in tmp_path.iterdir()] == ["worker-0.json"]  # no temporary left


def test_an_unknown_part_is_refused_before_the_block_runs() -> None:
    ran = []
    with pytest.raises(ValueError, match="unknown part 'nap'"), cputime.charged("nap"):
        ran.append(True)
    assert not ran
