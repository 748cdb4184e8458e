"""Docs kept honest: every command is documented, README commands are the ones CI runs."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pytest
import typer.main

from device.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def command_names() -> list[str]:
    group = typer.main.get_command(app)
    names = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        names.append(name)
        for sub in getattr(command, "commands", {}):
            names.append(f"{name} {sub}")
    return names


def test_every_command_is_in_the_readme() -> None:
    missing = [n for n in command_names() if n.split()[0] not in README]
    assert not missing, f"commands missing from README.md: {missing}"
    for name in command_names():
        if " " in name:
            assert name.split()[1] in README, f"'vega-emu {name}' missing from README.md"


def test_quick_start_is_what_ci_runs() -> None:
    assert "pip install -e . && vega-emu up" in README
    # a virtual environment first: Debian's and Ubuntu's system Python refuse pip install
    venv = "python3 -m venv .venv && . .venv/bin/activate"
    assert venv in README and README.index(venv) < README.index("pip install -e . && vega-emu")
    test_command = "pip install -e '.[test]' && pytest"
    assert test_command in README
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_readme_figure_names_its_command() -> None:
    sections = re.split(r"^### ", README.split("## Results", 1)[1], flags=re.M)[1:]
    assert sections
    for section in sections:
        assert "`vega-emu " in section or "`python benchmarks/" in section, section[:60]


def test_docs_links_exist() -> None:
    for link in re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", README):
        assert (ROOT / link).is_file(), link


def test_lock_file_pins_every_dependency_within_its_range() -> None:
    import tomllib

    from packaging.requirements import Requirement

    lock_text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    regenerate = re.search(r"^#\s+(uv pip compile .*)$", lock_text, flags=re.M)
    assert regenerate and regenerate.group(1) in README, "README must say how to regenerate"
    pins = {}
    for line in lock_text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {text}"


@pytest.mark.parametrize("dataset", ["digits", "watch"])
def test_the_readme_accuracy_table_is_the_benchmarks_table_of_its_results(dataset: str) -> None:
    """Not typed: `benchmarks/accuracy.py [--dataset D] --readme` wrote it from the committed
    results."""
    bench = runpy.run_path(str(ROOT / "benchmarks" / "accuracy.py"))
    results = ROOT / "benchmarks" / "results" / bench["RESULT_FILES"][dataset]
    done = json.loads(results.read_text())
    assert done["args"].get("dataset", "digits") == dataset
    want = bench["table"](done["runs"], done["args"]["bits"], done["args"]["sizes"])
    start, end = bench["markers"](dataset)
    assert README.split(start, 1)[1].split(end, 1)[0].strip("\n") == want
