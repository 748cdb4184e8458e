"""Log records off a terminal: one line each, an ISO-8601 time, one format for every command."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Final

import pytest
from rich.console import Console
from rich.live import Live
from rich.text import Text

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
        terminal = configure_logging(logging.INFO, Console(force_terminal=True))
        assert type(terminal).__name__ == "_TerminalLines"
        terminal.close()
    finally:
        for handler in [h for h in root.handlers if h not in others]:
            root.removeHandler(handler)
        root.setLevel(level)


def test_a_record_logged_while_the_live_table_draws_does_not_freeze_the_console() -> None:
    """A finalizer run by the garbage collector in the middle of drawing a live table (a future
    whose exception nobody retrieved) logs from inside the console's locks, while the table's
    refresh thread takes them in the other order: printing such a record at once froze
    ``vega-emu up``. Here the table itself logs each time it is drawn."""
    root = logging.getLogger()
    others, level = list(root.handlers), root.level
    console = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    log = logging.getLogger("vega.test.drawing")

    class LogsWhenDrawn:
        def __rich_console__(self, console: Console, options: object) -> Iterator[Text]:
            log.warning("logged while drawing")
            yield Text("the table")

    finished = threading.Event()

    def work() -> None:
        with Live(LogsWhenDrawn(), console=console, refresh_per_second=100):
            for i in range(200):
                log.warning("record %d", i)
        finished.set()

    handler = configure_logging(logging.WARNING, console)
    try:
        threading.Thread(target=work, daemon=True).start()
        assert finished.wait(60), "the console froze: logging and the live table deadlocked"
        handler.flush()
        text = console.file.getvalue()  # type: ignore[attr-defined]
        assert "record 199" in text and "logged while drawing" in text
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
        for extra in [h for h in root.handlers if h not in others]:
            root.removeHandler(extra)


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
