"""The help a newcomer reads first: commands in the order of use, flags as flags, a version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import pytest
import typer

from device.cli._help import ORDER


def _cli(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"COLUMNS": str(columns)},
    )


def _commands(help_text: str) -> list[str]:
    panel = help_text.split("Commands", 1)[1]
    return re.findall(r"^│ (\S+)\s", panel, re.MULTILINE)


def test_version() -> None:
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"vega-emu {version('vega-emu')}"


def test_the_top_help_lists_the_commands_in_the_order_of_use_one_line_each() -> None:
    result = _cli("--help")
    assert result.returncode == 0, result.stderr
    assert _commands(result.stdout) == list(ORDER)
    assert list(ORDER)[:3] == ["up", "node", "fleet"] and ORDER[-1] == "broker"
    # at 200 columns every command's summary is one line: no line break of its docstring
    rows = [line for line in result.stdout.split("Commands", 1)[1].splitlines()]
    continued = [line for line in rows if re.match(r"^│ {6,}\S", line)]
    assert continued == [], continued


@pytest.mark.parametrize("command", [[], *([name] for name in ORDER), ["model", "info"]])
def test_no_flag_shows_a_value_type(command: list[str]) -> None:
    result = _cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "<bool>" not in result.stdout and "BOOLEAN" not in result.stdout
    assert "--help" in result.stdout


def test_a_flag_still_takes_no_value() -> None:
    result = _cli("up", "--quiet", "true")
    assert result.returncode == 2 and "true" in result.stderr


def _helps(command: Any, path: str = "vega-emu") -> Iterator[tuple[str, str]]:
    """(where, text) of every help text in the command tree (Typer's own click carries it):
    commands and their options."""
    yield path, command.help or ""
    for param in command.params:
        yield f"{path} {param.name}", getattr(param, "help", None) or ""
    for name, sub in getattr(command, "commands", {}).items():
        yield from _helps(sub, f"{path} {name}")


def test_no_help_text_loses_square_brackets_to_markup() -> None:
    """The help is drawn with rich markup, which takes ``[watch]`` for a style and drops it:
    ``pip install 'vega-emu[watch]'`` read ``pip install 'vega-emu'``. Brackets are escaped."""
    from device.cli import app

    lost = [
        (where, text)
        for where, text in _helps(typer.main.get_command(app))
        if re.search(r"(?<!\\)\[[A-Za-z/][^\]]*\]", text)
    ]
    assert lost == []
    result = _cli("up", "--help")
    assert "vega-emu[watch]" in re.sub(r"[│\s]+", "", result.stdout)
