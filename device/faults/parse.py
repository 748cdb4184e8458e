"""The ``[[fault]]`` tables of a fleet spec, read once at the edge into a :class:`FaultPlan`.

::

    seed = 7                      # the spec's seed (default 0)

    [[fault]]
    kind = "capacity_loss"
    classes = ["vega"]            # or class = "vega"; every class when absent
    fraction = 0.01               # or ids = ["node-0003"]
    at_s = 3600                   # or rate_per_hour = 0.5
    capacity_fraction = 0.33

    [[fault]]
    kind = "network"
    fraction = 0.02
    at_s = 0                      # no duration_s: for the rest of the run
    loss = 0.05
    duplicate = 0.05

Every problem is returned, led by ``fault #i``, for the spec loader to report with its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from device.faults.kinds import FaultSpec, NetworkImpairment
from device.faults.schedule import FaultPlan

__all__ = ["FAULT_KEYS", "parse_faults"]

_NETWORK_KEYS: Final = ("latency_s", "jitter_s", "loss", "duplicate", "reorder")
_NUMBERS: Final = ("fraction", "at_s", "rate_per_hour", "duration_s", "capacity_fraction", "jump_s")
#: Keys a ``[[fault]]`` table may hold.
FAULT_KEYS: Final = frozenset({"kind", "class", "classes", "ids", *_NUMBERS, *_NETWORK_KEYS})


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def parse_faults(doc: Mapping[str, Any], class_names: Sequence[str]) -> tuple[FaultPlan, list[str]]:
    """The plan of ``doc``'s ``seed`` and ``[[fault]]`` tables, and every problem with them
    (with problems, the plan holds the faults that were good)."""
    problems: list[str] = []
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(f"seed must be an int >= 0, not {seed!r}")
        seed = 0
    tables = doc.get("fault", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        return FaultPlan((), seed), [*problems, "write each fault as [[fault]]"]
    faults = []
    for i, table in enumerate(tables, 1):
        spec, bad = _parse_one(table, class_names)
        problems += [f"fault #{i}: {p}" for p in bad]
        if spec is not None:
            faults.append(spec)
    return FaultPlan(tuple(faults), seed), problems


def _parse_one(
    table: Mapping[str, Any], class_names: Sequence[str]
) -> tuple[FaultSpec | None, list[str]]:
    problems = []
    unknown = sorted(set(table) - FAULT_KEYS)
    if unknown:
        known = ", ".join(sorted(FAULT_KEYS))
        problems.append(f"unknown key(s) {', '.join(unknown)}; known: {known}")
    for key in (*_NUMBERS, *_NETWORK_KEYS):
        if key in table and not _number(table[key]):
            problems.append(f"{key} must be a number, not {table[key]!r}")
    classes: list[str] = []
    if "class" in table and "classes" in table:
        problems.append("give class or classes, not both")
    elif "class" in table:
        if not isinstance(table["class"], str):
            problems.append(f"class must be a class name, not {table['class']!r}")
        else:
            classes = [table["class"]]
    elif "classes" in table:
        if not _strings(table["classes"]):
            problems.append(f"classes must be a list of class names, not {table['classes']!r}")
        else:
            classes = list(table["classes"])
    missing = [c for c in classes if c not in class_names]
    if missing:
        problems.append(f"no class named {', '.join(map(repr, missing))} in this spec")
    ids = table.get("ids", [])
    if not _strings(ids):
        problems.append(f"ids must be a list of device ids, not {ids!r}")
        ids = []
    if not isinstance(table.get("kind"), str):
        problems.append("kind is missing" if "kind" not in table else "kind must be a string")
    if problems:
        return None, problems
    numbers = {k: float(table[k]) for k in _NUMBERS if k in table}
    network_values = {k: float(table[k]) for k in _NETWORK_KEYS if k in table}
    try:
        network = NetworkImpairment(**network_values) if network_values else None
        spec = FaultSpec(
            kind=table["kind"], classes=tuple(classes), ids=tuple(ids), network=network, **numbers
        )
    except ValueError as exc:
        return None, [str(exc)]
    if network is not None and spec.kind != "network":
        return None, [f"{', '.join(network_values)} belong to a network fault, not {spec.kind}"]
    return spec, []
