"""Every module of the project imports on its own, in a fresh interpreter.

An import cycle hides as long as something else imported the modules in a lucky order first
(``tests/conftest.py`` did, for ``device.learning.nn`` <-> ``device.model``); a new interpreter per
module takes that luck away.

A new interpreter per module imported numpy and onnxruntime 234 times (110 s of a CI run). So one
new interpreter imports the third-party packages the project uses, checks that no module of the
project came with them, and forks a child per module: each child imports its module with no
other project module loaded, which is what finds a cycle (a third-party package loaded before
cannot hide one). The entry points are also imported in interpreters of their own, with nothing
loaded before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = ("device", "broker", "dataset_stream")
#: Imported once before the forks: the heavy third-party packages of the project.
PRELOAD: Final = (
    "numpy",
    "onnxruntime",
    "aiomqtt",
    "amqtt.broker",
    "rich",
    "typer",
    "sqlite_utils",
)
#: Imported in interpreters of their own, with nothing loaded before.
ENTRY_POINTS: Final = ("device.cli", "device.node.node", "broker", "dataset_stream")

#: The forking importer: argv[1] a JSON list of modules; prints a JSON {module: error or null}.
FORKER: Final = """
import importlib, json, os, sys, traceback
for name in PRELOAD:
    importlib.import_module(name)
ours = [m for m in sys.modules if m.split(".")[0] in PACKAGES]
if ours:
    sys.exit(f"the preloaded packages imported project modules: {ours}")
results = {}
for module in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            error = ""
        except BaseException as exc:
            error = traceback.format_exception_only(exc)[-1].strip() or type(exc).__name__
        os.write(write, error.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        error = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if status != 0 and not error:
        error = f"the child ended with status {status}"
    results[module] = error or None
print(json.dumps(results))
"""


def project_modules() -> list[str]:
    """Dotted names of every module and package under :data:`PACKAGES` (``__main__`` excluded:
    importing it runs the command line)."""
    names = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join(parts))
    return sorted(names)


def _import_alone(module: str) -> tuple[str, str | None]:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if result.returncode == 0:
        return module, None
    return module, result.stderr.strip().splitlines()[-1] if result.stderr else "no output"


def test_the_module_list_covers_the_packages() -> None:
    modules = project_modules()
    assert {
        "device.learning.nn",
        "device.model",
        "device.node.node",
        "broker",
        "dataset_stream",
    } <= set(modules)
    assert len(modules) > 50


def _import_each_forked(modules: list[str]) -> dict[str, str | None]:
    script = f"PRELOAD = {PRELOAD!r}\nPACKAGES = {PACKAGES!r}\n{FORKER}"
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(modules)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    results: dict[str, str | None] = json.loads(result.stdout.strip().splitlines()[-1])
    return results


def test_every_module_imports_with_no_other_project_module_loaded() -> None:
    modules = project_modules()
    halves = [modules[0::2], modules[1::2]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = {k: v for part in pool.map(_import_each_forked, halves) for k, v in part.items()}
    assert sorted(results) == modules
    failures = {module: error for module, error in results.items() if error is not None}
    assert not failures, "\n".join(f"{m}: {e}" for m, e in failures.items())


def test_the_entry_points_import_in_a_fresh_interpreter() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_import_alone, ENTRY_POINTS))
    failures = {module: error for module, error in results if error is not None}
    assert not failures, "\n".join(f"{m}: {e}" for m, e in failures.items())


def test_a_cycle_is_found(tmp_path: Path) -> None:
    """The forking importer reports a module whose import fails (here: a cycle) with its error."""
    package = tmp_path / "device"  # a package name the forker counts as the project's
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from device.b import B\nA = 1\n")
    (package / "b.py").write_text("from device.a import A\nB = 2\n")
    script = f"PRELOAD = ()\nPACKAGES = {PACKAGES!r}\n{FORKER}"
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(["device.a", "device.b"])],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout)
    assert "ImportError" in errors["device.a"] and "circular" in errors["device.a"], errors
