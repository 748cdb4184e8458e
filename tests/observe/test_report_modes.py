"""A report is as private as the recording it is made from: a 0700 directory, 0600 files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.observe.recorder import RunRecorder
from device.observe.report import render_report
from tests.support.messages import draining_telemetry


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: the modes must not depend on the user's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def recording(path: Path) -> Path:
    with RunRecorder(path) as recorder:
        for seq in range(3):
            for device in ("node-0000", "node-0001"):
                message = draining_telemetry(device, seq)
                recorder.add(device, message, message.t)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_a_new_report_directory_and_its_files_are_private(tmp_path: Path) -> None:
    index = render_report(recording(tmp_path / "run.sqlite"), tmp_path / "report")
    assert mode(index.parent) == 0o700
    files = sorted(index.parent.iterdir())
    assert index in files and any(p.suffix == ".png" for p in files)
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


@pytest.mark.usefixtures("open_umask")
def test_an_existing_directory_keeps_its_mode_and_old_files_are_tightened(tmp_path: Path) -> None:
    out = tmp_path / "public"
    out.mkdir(mode=0o755)
    (out / "index.html").write_text("an older report")
    (out / "index.html").chmod(0o644)
    index = render_report(recording(tmp_path / "run.sqlite"), out)
    assert mode(out) == 0o755  # the user's own choice
    assert mode(index) == 0o600 and "an older report" not in index.read_text(encoding="utf-8")
