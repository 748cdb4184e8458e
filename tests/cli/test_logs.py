"""Log records off a terminal: one line each, an ISO-8601 time, one format for every command."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Final

import pytest
from rich.console import Console

from device.cli._logs import OneLineFormatter, configure_logging

#: time, level, logger: message
LINE: Final = re.compile(r"^(\S+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S")


def _record(message: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("first line\nsecond line")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("vega.test", logging.WARNING, __file__, 1, message, None, info)


def test_a_record_is_one_line_with_an_iso_time() -> None:
    long = "a message longer than any terminal " * 5
    line = OneLineFormatter().format(_record(long + "\nand its second line", exc=True))
    assert "\n" not in line and "\\nand its second line" in line and "ValueError" in line
    match = LINE.match(line)
    assert match is not None, line
    stamp = datetime.fromisoformat(match.group(1))
    assert stamp.tzinfo is not None and "T" in match.group(1)


def test_configuring_again_replaces_its_own_handler_only() -> None:
    root = logging.getLogger()
    others = list(root.handlers)
    level = root.level
    console = Console(file=io.StringIO(), force_terminal=False)
    try:
        first = configure_logging(logging.WARNING, console)
        second = configure_logging(logging.INFO, console, verbose=("vega.test.verbose",))
        assert first not in root.handlers and second in root.handlers
        assert [h for h in root.handlers if h not in others] == [second]
        assert logging.getLogger("vega.test.verbose").level == logging.INFO
        assert isinstance(second.formatter, OneLineFormatter)  # off a terminal
        assert type(configure_logging(logging.INFO, Console(force_terminal=True))).__name__ == (
            "_TerminalLines"
        )
    finally:
        for handler in [h for h in root.handlers if h not in others]:
            root.removeHandler(handler)
        root.setLevel(level)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "args",
    [
        ["monitor", "--quiet", "--duration", "1.5"],
        ["stream", "--devices", "1", "--events", "1", "--speed", "max", "--max-outage", "1.5"],
    ],
    ids=["monitor", "stream"],
)
def test_a_command_logs_one_line_per_record_to_a_file(args: list[str], tmp_path: Path) -> None:
    """No broker: the command logs a warning per attempt to reach it, then gives up."""
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "device.cli",
                *args,
                "--broker",
                f"mqtt://127.0.0.1:{_closed_port()}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=120,
            env=os.environ | {"COLUMNS": "40"},  # a narrow terminal must not wrap a file
        )
    lines = log.read_text("utf-8").splitlines()
    records = [line for line in lines if LINE.match(line)]
    assert len(records) >= 2, lines
    assert all(len(line) > 40 for line in records)  # not wrapped at COLUMNS
    for line in records:
        match = LINE.match(line)
        assert match is not None
        assert datetime.fromisoformat(match.group(1)).tzinfo is not None
    # the rest is the command's own words, never the second half of a record
    pieces = [line for line in lines if not LINE.match(line) and "reconnecting in" in line]
    assert pieces == [], lines
