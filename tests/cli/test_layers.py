"""Which layer may import which: the import rules of ``docs/architecture.md``, checked.

Every module's imports are read with :mod:`ast` -- at the top, inside functions and under
``TYPE_CHECKING`` alike: an import the type checker needs is a dependency all the same -- and
each one is checked against :data:`MAY_IMPORT`. Layers, lowest first::

    device base      device (the package), device.errors, device.aio, device.clock, device.logs,
                     device.private
    learning         the numeric core: numpy and device.errors only, no I/O of any kind
    energy, model    what the work costs, and the model bundles; both build on learning
    faults           which injected faults hit which device, when: pure, seeded
    node             one node: session, delivery, engine, store
    fleet            many nodes: spec, shards, supervisor, gateway
    observe          the monitor, exporter, recorder and report: they read the wire, not the node
    app              compositions of the layers below (what ``up`` wires together)
    cli              the command line: anything

    broker                   imports nothing of device or dataset_stream
    dataset_stream.errors    imports nothing of the project
    dataset_stream.protocol  the wire contract: dataset_stream.errors only
    dataset_stream           the producer side: its protocol, its errors, broker

``device`` imports only :mod:`dataset_stream.protocol` of the producer side (the protocol
re-exports its errors), except the app and the command line, which compose everything.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = ("device", "broker", "dataset_stream")

BASE: Final = "device base"
#: Modules of the base layer; any other module belongs to the layer of its longest prefix below.
BASE_MODULES: Final = frozenset(
    {"device", "device.errors", "device.aio", "device.clock", "device.logs", "device.private"}
)
LAYERS: Final = (
    "device.learning",
    "device.energy",
    "device.model",
    "device.faults",
    "device.node",
    "device.fleet",
    "device.observe",
    "device.app",
    "device.cli",
    "broker",
    "dataset_stream.errors",
    "dataset_stream.protocol",
    "dataset_stream",
)
_BELOW_NODE: Final = frozenset(
    {
        BASE,
        "device.learning",
        "device.energy",
        "device.model",
        "device.faults",
        "broker",
        "dataset_stream.protocol",
    }
)
#: The layers each layer may import, besides its own.
MAY_IMPORT: Final[dict[str, frozenset[str]]] = {
    BASE: frozenset(),
    "device.learning": frozenset({BASE}),
    # the plan sweep reads run summaries (RunSummary only: NAMES_ONLY)
    "device.energy": frozenset({BASE, "device.learning", "dataset_stream.protocol"}),
    "device.model": frozenset({BASE, "device.learning"}),
    "device.faults": frozenset({BASE}),
    "device.node": _BELOW_NODE,
    "device.fleet": _BELOW_NODE | {"device.node"},
    "device.observe": frozenset({BASE, "broker", "dataset_stream.protocol"}),
    "device.app": frozenset(LAYERS) - {"device.cli", "device.app"} | {BASE},
    "device.cli": frozenset(LAYERS) | {BASE},
    "broker": frozenset(),
    "dataset_stream.errors": frozenset(),
    "dataset_stream.protocol": frozenset({"dataset_stream.errors"}),
    "dataset_stream": frozenset({"dataset_stream.errors", "dataset_stream.protocol", "broker"}),
}
#: Layer pairs allowed for some names only.
NAMES_ONLY: Final = {("device.energy", "dataset_stream.protocol"): frozenset({"RunSummary"})}
#: The learning core may import only these project modules: not device.aio (asyncio),
#: device.private (files) nor device.clock (the wall clock; the core is given times as numbers).
LEARNING_PROJECT_MODULES: Final = frozenset({"device", "device.errors"})
#: Third-party packages the learning core may import.
LEARNING_THIRD_PARTY: Final = frozenset({"numpy"})
#: Standard-library modules the learning core must not import: files, sockets, processes,
#: threads, storage, clocks and global randomness (a ``np.random.Generator`` is passed in).
LEARNING_FORBIDDEN_STDLIB: Final = frozenset(
    {
        "asyncio",
        "concurrent",
        "glob",
        "gzip",
        "http",
        "importlib",
        "io",
        "mmap",
        "multiprocessing",
        "os",
        "pathlib",
        "pickle",
        "random",
        "select",
        "selectors",
        "shelve",
        "shutil",
        "signal",
        "socket",
        "socketserver",
        "sqlite3",
        "ssl",
        "subprocess",
        "tarfile",
        "tempfile",
        "threading",
        "time",
        "tomllib",
        "urllib",
        "zipfile",
    }
)

#: Imports that break a rule today, each with the reason and the way out. An entry that no
#: longer matches an import fails :func:`test_the_allow_list_has_no_stale_entry`: delete it then.
ALLOWED_EXCEPTIONS: Final[dict[tuple[str, str], str]] = {}


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's dependency: ``module`` imports ``target`` (``names`` of it)."""

    module: str
    target: str
    names: tuple[str, ...]
    line: int

    def __str__(self) -> str:
        taken = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.module}:{self.line} imports {self.target}{taken}"


def project_modules() -> dict[str, Path]:
    """Every module and package of :data:`PACKAGES` by dotted name."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def read_imports(module: str, source: str, known: frozenset[str], *, package: bool) -> list[Import]:
    """The imports of ``module`` (its ``source``), wherever they are in it.

    ``from a import b`` imports the module ``a.b`` when that is one of the ``known`` modules, else
    names of ``a``. Relative imports are resolved against ``module`` (a ``package`` or not).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if package else module.split(".")[:-1]
                head = here[: len(here) - node.level + 1]
                base = ".".join([*head, base] if base else head)
            names = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.append(Import(module, sub, (), node.lineno))
                else:
                    names.append(alias.name)
            if names:
                found.append(Import(module, base, tuple(names), node.lineno))
    return found


def all_imports() -> Iterator[Import]:
    modules = project_modules()
    known = frozenset(modules)
    for name, path in modules.items():
        yield from read_imports(
            name, path.read_text("utf-8"), known, package=path.name == "__init__.py"
        )


def layer_of(module: str) -> str | None:
    """The layer of a project module, None for a module of no project package."""
    if module in BASE_MODULES:
        return BASE
    for layer in LAYERS:
        if module == layer or module.startswith(f"{layer}."):
            return layer
    return None


def is_project(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def broken_rule(imp: Import) -> str | None:
    """Why ``imp`` breaks the layering, or None if it may be."""
    if not is_project(imp.target):
        return None
    source, target = layer_of(imp.module), layer_of(imp.target)
    if target is None:
        return f"{imp.target} belongs to no layer"
    if source is None or source == target:
        return None
    if target not in MAY_IMPORT[source]:
        return f"{source} may not import {target}"
    only = NAMES_ONLY.get((source, target))
    if only is not None and not set(imp.names) <= only:
        return f"{source} may import only {', '.join(sorted(only))} of {target}"
    return None


def test_the_parser_sees_every_kind_of_import() -> None:
    source = """
from __future__ import annotations
import numpy as np
from typing import TYPE_CHECKING
from device.errors import DeviceError
from device.fleet import gateway, FleetSpec
from . import sibling
from ..store import NodeStore
if TYPE_CHECKING:
    from device.observe.monitor import FleetMonitor
def late():
    import sqlite3
    from broker.url import BrokerURL
"""
    known = frozenset(
        {"device.fleet", "device.fleet.gateway", "device.node.x.sibling", "device.node.store"}
    )
    got = {
        (i.target, i.names) for i in read_imports("device.node.x.mod", source, known, package=False)
    }
    assert got == {
        ("__future__", ("annotations",)),
        ("numpy", ()),
        ("typing", ("TYPE_CHECKING",)),
        ("device.errors", ("DeviceError",)),
        ("device.fleet.gateway", ()),
        ("device.fleet", ("FleetSpec",)),
        ("device.node.x.sibling", ()),
        ("device.node.store", ("NodeStore",)),
        ("device.observe.monitor", ("FleetMonitor",)),
        ("sqlite3", ()),
        ("broker.url", ("BrokerURL",)),
    }
    package = read_imports("device.node", "from .store import NodeStore", known, package=True)
    assert [i.target for i in package] == ["device.node.store"]


def test_the_rules_say_what_they_should() -> None:
    def rule(module: str, target: str, *names: str) -> str | None:
        return broken_rule(Import(module, target, names, 1))

    assert rule("device.node.engine", "device.learning.learner") is None
    assert rule("device.learning.learner", "device.node.engine") == (
        "device.learning may not import device.node"
    )
    assert rule("device.observe.monitor", "device.node.settings") is not None
    assert rule("device.observe.monitor", "device.fleet.spec") is not None
    assert rule("device.energy.plan", "dataset_stream.protocol", "RunSummary") is None
    assert rule("device.energy.plan", "dataset_stream.protocol", "Telemetry") is not None
    assert rule("device.node.node", "dataset_stream.publisher") is not None
    assert rule("device.node.node", "dataset_stream.errors") is not None
    assert rule("device.cli.up_cmd", "dataset_stream.publisher") is None
    assert rule("device.app.up", "device.cli.up_cmd") is not None
    assert rule("broker.session", "device.errors") is not None
    assert rule("dataset_stream.publisher", "device.errors") is not None
    assert rule("dataset_stream.protocol.codec", "broker.url") is not None
    assert rule("device.node.node", "device.unplaced") == "device.unplaced belongs to no layer"


def test_every_module_belongs_to_a_layer() -> None:
    homeless = [m for m in project_modules() if layer_of(m) is None]
    assert not homeless, f"add these to a layer in {Path(__file__).name}: {homeless}"


def test_imports_follow_the_layers() -> None:
    broken = [
        f"{imp}: {why}"
        for imp in all_imports()
        if (why := broken_rule(imp)) is not None
        and (imp.module, imp.target) not in ALLOWED_EXCEPTIONS
    ]
    assert not broken, "imports against the layering:\n" + "\n".join(broken)


def test_the_allow_list_has_no_stale_entry() -> None:
    still = {(i.module, i.target) for i in all_imports() if broken_rule(i) is not None}
    stale = sorted(set(ALLOWED_EXCEPTIONS) - still)
    assert not stale, f"these imports are gone or allowed now: delete them from the list: {stale}"


def test_the_learning_core_imports_no_io() -> None:
    """The core's modules, and the project modules it may import (which the core loads with
    it), import numpy and no standard-library module that does I/O."""
    wrong = []
    for imp in all_imports():
        if layer_of(imp.module) != "device.learning" and imp.module not in LEARNING_PROJECT_MODULES:
            continue
        top = imp.target.split(".")[0]
        if is_project(imp.target):
            ok = layer_of(imp.target) == "device.learning" or imp.target in LEARNING_PROJECT_MODULES
        elif top in sys.stdlib_module_names:
            ok = top not in LEARNING_FORBIDDEN_STDLIB
        else:
            ok = top in LEARNING_THIRD_PARTY
        if not ok:
            wrong.append(str(imp))
    assert not wrong, "the learning core must do no I/O:\n" + "\n".join(wrong)


def packages() -> list[str]:
    return [m for m, path in project_modules().items() if path.name == "__init__.py"]


@pytest.mark.parametrize("package", packages())
def test_every_package_names_its_public_api(package: str) -> None:
    path = project_modules()[package]
    tree = ast.parse(path.read_text("utf-8"))
    declared = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id == "__all__"
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
    ]
    assert declared, f"{path.relative_to(ROOT)} has no __all__"
    assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} says nothing of its package"
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"
