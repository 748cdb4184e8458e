"""The exception trees: every exception class lives in an ``errors`` module, and the trees drawn
in their docstrings are the real ones.

Each package has one root (:class:`device.errors.DeviceError`, :class:`broker.BrokerError`,
:class:`dataset_stream.DatasetStreamError`) whose module draws the whole tree; every other
``errors`` module draws its own classes. A drawing is the literal block of box-drawing lines::

    RootError                   what it means
    ├── ChildError (ValueError) what it means
    │   └── GrandchildError     ...
    └── OtherError              ...

A private class (``_Name``) used as control flow inside one module is no part of any tree.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest

from broker.errors import BrokerError
from dataset_stream.errors import DatasetStreamError
from device.errors import DeviceError

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = ("device", "broker", "dataset_stream")
ROOTS: Final[dict[str, type[Exception]]] = {
    "device.errors": DeviceError,
    "broker.errors": BrokerError,
    "dataset_stream.errors": DatasetStreamError,
}
#: A line of a drawing: a root at the block's indentation, or a branch (``├── ``, ``└── ``).
_DRAWN: Final = re.compile(r"^(?P<lead>    (?:[ │]*[├└]── )?)(?P<name>[A-Za-z_]\w*)")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def errors_modules() -> list[str]:
    return [m for m in modules() if m.rsplit(".", 1)[-1] == "errors"]


def exceptions_of(module: ModuleType) -> list[type[BaseException]]:
    """The exception classes ``module`` defines (not those it imports)."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
    ]


def project_exceptions() -> dict[str, type[BaseException]]:
    return {
        cls.__name__: cls
        for name in errors_modules()
        for cls in exceptions_of(importlib.import_module(name))
    }


def drawing(doc: str) -> list[tuple[str, str | None]]:
    """``(class, drawn parent)`` for each class drawn in ``doc`` (parent None for a root)."""
    known = project_exceptions()
    stack: list[tuple[int, str]] = []
    drawn = []
    for line in doc.splitlines():
        match = _DRAWN.match(line)
        if match is None or match["name"] not in known:
            continue
        column = len(match["lead"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        drawn.append((match["name"], stack[-1][1] if stack else None))
        stack.append((column, match["name"]))
    return drawn


def test_the_drawing_reader_reads_a_tree() -> None:
    doc = """Errors::

    DeviceError                 root
    ├── NodeError               a node
    │   └── NodeGaveUp          refused
    │                           NodeError in prose is not drawn
    └── StoreError              store
"""
    assert drawing(doc) == [
        ("DeviceError", None),
        ("NodeError", "DeviceError"),
        ("NodeGaveUp", "NodeError"),
        ("StoreError", "DeviceError"),
    ]


def test_exception_classes_live_in_errors_modules() -> None:
    """Read from the source, so that no module has to be imported: a class is an exception if
    a base of it is a built-in exception or, transitively, a class found to be one."""
    classes = []
    for module, path in modules().items():
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases}
                bases = {b.rsplit(".", 1)[-1] for b in bases}
                classes.append((module, node.name, bases))
    exceptions = {
        name
        for name in dir(builtins)
        if isinstance(getattr(builtins, name), type)
        and issubclass(getattr(builtins, name), BaseException)
    } | {"MqttError", "MqttCodeError"}
    while True:
        grown = exceptions | {name for _, name, bases in classes if bases & exceptions}
        if grown == exceptions:
            break
        exceptions = grown
    misplaced = [
        f"{module}.{name}"
        for module, name, bases in classes
        if bases & exceptions and not name.startswith("_") and module.rsplit(".", 1)[-1] != "errors"
    ]
    assert not misplaced, f"exception classes outside an errors.py: {misplaced}"


@pytest.mark.parametrize("name", errors_modules())
def test_each_errors_module_draws_and_exports_its_classes(name: str) -> None:
    module = importlib.import_module(name)
    defined = {cls.__name__ for cls in exceptions_of(module)}
    drawn = dict(drawing(module.__doc__ or ""))
    assert defined <= set(drawn), f"{name} does not draw {sorted(defined - set(drawn))}"
    assert defined <= set(module.__all__), f"{name}.__all__ lacks {defined - set(module.__all__)}"


@pytest.mark.parametrize("name", errors_modules())
def test_each_drawn_parent_is_the_real_one(name: str) -> None:
    known = project_exceptions()
    wrong = [
        f"{child} is drawn under {parent}, derives from "
        f"{', '.join(b.__name__ for b in known[child].__bases__)}"
        for child, parent in drawing(importlib.import_module(name).__doc__ or "")
        if parent is not None and parent not in {b.__name__ for b in known[child].__bases__}
    ]
    assert not wrong, f"{name}: " + "; ".join(wrong)


@pytest.mark.parametrize("name", sorted(ROOTS))
def test_each_root_draws_its_whole_tree(name: str) -> None:
    root = ROOTS[name]
    tree = {cls.__name__ for cls in project_exceptions().values() if issubclass(cls, root)}
    drawn = dict(drawing(importlib.import_module(name).__doc__ or ""))
    assert tree <= set(drawn), f"{name} does not draw {sorted(tree - set(drawn))}"
    assert drawn[root.__name__] is None, f"{name} draws {root.__name__} under something"
