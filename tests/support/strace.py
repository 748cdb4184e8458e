"""The mode each file is *created* with, seen by ``strace`` in a real process.

A file written and then chmod'ed ends 0600 all the same, but between the two it is as open as
the umask lets it be; only the ``open``/``mkdir`` calls themselves tell the two apart.
:func:`created_modes` runs a command under ``strace -f`` and returns the mode passed with every
``O_CREAT`` open and every ``mkdir`` under a directory. Without a usable ``strace`` (not
installed, or ptrace not allowed in this container) the test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

__all__ = ["created_modes"]

_CALL = re.compile(
    r'(?:openat\(AT_FDCWD, |open\()"(?P<file>[^"]+)", (?P<flags>[A-Z_|]+), (?P<fmode>0[0-7]*)\)'
    r'|mkdir(?:at\(AT_FDCWD, |\()"(?P<dir>[^"]+)", (?P<dmode>0[0-7]*)\)'
)


def created_modes(
    argv: Sequence[str], *, under: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> dict[Path, int]:
    """``{path: mode}`` of what ``argv`` (and its children) created under ``under``; the mode
    as passed to the call (before the umask). Fails if ``argv`` fails."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    log = cwd / "strace.log"
    done = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=open,openat,mkdir,mkdirat", "-o", str(log), *argv],
        cwd=cwd,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "PTRACE" in done.stderr or "Operation not permitted" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    root = under.resolve()
    modes: dict[Path, int] = {}
    for match in _CALL.finditer(log.read_text(encoding="utf-8")):
        if match["file"] is not None and "O_CREAT" not in match["flags"]:
            continue
        name = match["file"] or match["dir"]
        path = (cwd / name).resolve()
        if path.is_relative_to(root):
            modes[path] = int(match["fmode"] or match["dmode"], 8)
    return modes
