"""A fleet spec is checked whole: every problem at once, each naming the file, class and key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.fleet.errors import FleetSpecError
from device.fleet.spec import FleetSpec

TWO_BAD_CLASSES = """
[[class]]
name = "vega"
count = 2
lr_bits = "eight"

[[class]]
name = "stm"
count = 0
profile = "no-such-profile"
dataset = "no-such-data"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def vega_emu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"COLUMNS": "200"},
    )


def test_every_problem_of_every_class_is_named_with_file_class_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "fleet.toml", TWO_BAD_CLASSES)
    with pytest.raises(FleetSpecError) as err:
        FleetSpec.load(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"3 problems in fleet spec {path}:"
    assert lines[1:] == [
        f"fleet spec {path}: class 'vega': lr_bits must be int, not 'eight'",
        f"fleet spec {path}: class 'stm': count must be an int >= 1, not 0",
        f"fleet spec {path}: class 'stm': profile: unknown profile 'no-such-profile': "
        "not one of vega, vega-hw, stm32l4 and not a file",
    ]


def test_values_are_checked_too_and_a_class_without_a_name_is_counted(tmp_path: Path) -> None:
    text = (
        '[[class]]\nname = "a"\ncount = 1\nlr_bits = 9\nepochs = 0\n'
        "[[class]]\ncount = 1\nlearning_rate = -1.0\n"
    )
    with pytest.raises(FleetSpecError) as err:
        FleetSpec.load(write(tmp_path / "f.toml", text))
    message = str(err.value)
    assert message.startswith("4 problems in fleet spec")
    assert "class 'a': lr_bits: replay bits must be one of" in message
    assert "class 'a': epochs, mb, new_per_mb: epochs must be >= 1, got 0" in message
    assert "class #2: name is missing" in message
    assert "class #2: learning_rate: learning_rate must be > 0" in message


def test_one_problem_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "f.toml", '[[class]]\nname = "a"\ncount = 2\nlr_size = -1\n')
    with pytest.raises(FleetSpecError) as err:
        FleetSpec.load(path)
    assert str(err.value) == (
        f"fleet spec {path}: class 'a': lr_size: lr_size must be >= 0, got -1"
    )


@pytest.mark.parametrize("command", ["fleet", "stream"])
def test_the_commands_report_every_problem_and_exit_2(tmp_path: Path, command: str) -> None:
    path = write(tmp_path / "fleet.toml", TWO_BAD_CLASSES)
    args = ["--broker", "mqtt://127.0.0.1:9", "--spec", str(path)]  # never reached
    if command == "fleet":
        args += ["--state-dir", str(tmp_path / "state")]
    result = vega_emu(command, *args)
    assert result.returncode == 2, result.stderr
    out = result.stdout + result.stderr
    assert "Traceback" not in out
    for words in (
        f"fleet spec {path}: class 'vega': lr_bits must be int",
        f"fleet spec {path}: class 'stm': count must be an int >= 1",
        f"fleet spec {path}: class 'stm': profile: unknown profile 'no-such-profile'",
    ):
        assert words in out
    if command == "stream":  # the stream also reads each class's data
        assert f"fleet spec {path}: class 'stm': dataset: unknown dataset 'no-such-data'" in out
        assert "4 problems in fleet spec" in out
    else:
        assert "3 problems in fleet spec" in out
