"""Every module of the project imports on its own, in a fresh interpreter.

An import cycle hides as long as something else imported the modules in a lucky order first
(``tests/conftest.py`` did, for ``device.learning.nn`` <-> ``device.model``); a new interpreter per
module
takes that luck away.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("device", "broker", "dataset_stream")


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


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(_import_alone, project_modules()))
    failures = {module: error for module, error in results if error is not None}
    assert not failures, "\n".join(f"{m}: {e}" for m, e in failures.items())
