"""Hardware profiles: the numbers the energy model runs on, read from TOML data files.

A profile is data that users copy and edit (``device/energy/profiles/*.toml``). It is read once,
here, into a frozen :class:`Profile`; every error names the file, the table and the key.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from device.energy.errors import ProfileError

PRIMITIVES: tuple[str, ...] = ("conv", "pointwise", "depthwise", "linear")
PHASES: tuple[str, ...] = ("forward", "backward_error", "backward_gradient")
HOLDABLE: tuple[str, ...] = (
    "frozen_weights",
    "adaptive_state",
    "activations",
    "event_latents",
    "lr_memory",
)
BUILTIN: tuple[str, ...] = ("vega", "vega-hw", "stm32l4")
# Where a profile's INT8 frozen-stage rate comes from (``[compute] int8_basis``).
INT8_BASES: tuple[str, ...] = ("paper-derived", "hardware-bounded", "unspecified")


@dataclass(frozen=True, slots=True)
class Rates:
    """FP32 MAC/cycle of one training primitive, per phase (whole device, all cores)."""

    forward: float
    backward_error: float
    backward_gradient: float

    def __post_init__(self) -> None:
        for phase in PHASES:
            value = getattr(self, phase)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{phase} MAC/cycle must be > 0, got {value!r}")

    def of(self, phase: str) -> float:
        """MAC/cycle of ``phase`` (one of :data:`PHASES`)."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        value: float = getattr(self, phase)
        return value


@dataclass(frozen=True, slots=True)
class MemoryRegion:
    """One memory of the device, in the order the allocator tries them."""

    name: str
    capacity_bytes: int
    holds: tuple[str, ...]  # which memory-map items may live here (subset of HOLDABLE)
    pj_per_byte: float  # energy of one byte read or written here

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("memory region name must not be empty")
        if self.capacity_bytes < 0:
            raise ValueError(f"memory region {self.name!r}: capacity must be >= 0")
        if not (math.isfinite(self.pj_per_byte) and self.pj_per_byte >= 0):
            raise ValueError(f"memory region {self.name!r}: pj_per_byte must be >= 0")
        bad = [item for item in self.holds if item not in HOLDABLE]
        if bad:
            raise ValueError(f"memory region {self.name!r}: unknown items {bad}")


@dataclass(frozen=True, slots=True)
class Profile:
    """A device: clock, power, battery, compute rates and memories."""

    name: str
    description: str
    freq_hz: float
    cores: int
    active_w: float  # average power while computing (frozen or adaptive stage)
    sleep_w: float  # retentive sleep between events
    capacity_mah: float
    voltage_v: float
    tiling_overhead: float  # extra cycles, as a fraction, for data movement between memories
    int8_mac_per_cycle: float  # frozen stage, INT8 inference
    fp32: Mapping[str, Rates]  # training primitive -> rates; keys are PRIMITIVES
    memory: tuple[MemoryRegion, ...]
    int8_basis: str = "unspecified"  # one of INT8_BASES: where int8_mac_per_cycle comes from

    def __post_init__(self) -> None:
        if self.int8_basis not in INT8_BASES:
            raise ValueError(
                f"profile {self.name!r}: int8_basis must be one of {list(INT8_BASES)}, "
                f"got {self.int8_basis!r}"
            )
        positive = ("freq_hz", "active_w", "capacity_mah", "voltage_v", "int8_mac_per_cycle")
        for key in positive:
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"profile {self.name!r}: {key} must be > 0, got {value!r}")
        if not (math.isfinite(self.sleep_w) and self.sleep_w >= 0):
            raise ValueError(f"profile {self.name!r}: sleep_w must be >= 0")
        if not (math.isfinite(self.tiling_overhead) and self.tiling_overhead >= 0):
            raise ValueError(f"profile {self.name!r}: tiling_overhead must be >= 0")
        if self.cores < 1:
            raise ValueError(f"profile {self.name!r}: cores must be >= 1")
        missing = [p for p in PRIMITIVES if p not in self.fp32]
        if missing:
            raise ValueError(f"profile {self.name!r}: no FP32 rates for {missing}")
        names = [region.name for region in self.memory]
        if len(set(names)) != len(names):
            raise ValueError(f"profile {self.name!r}: duplicate memory region names {names}")

    @property
    def battery_j(self) -> float:
        """Battery energy: mAh x 3.6 (C per mAh) x V."""
        return self.capacity_mah * 3.6 * self.voltage_v

    def rates(self, kind: str) -> Rates | None:
        """FP32 rates of a layer kind, or ``None`` for kinds the model does not charge."""
        return self.fp32.get(kind)


class _Table:
    """A TOML table being read: every error names the file, the table and the key."""

    def __init__(self, label: str, section: str, data: object) -> None:
        if not isinstance(data, dict):
            raise ProfileError(f"{label}: [{section}] must be a table")
        self.label, self.section, self.data = label, section, data
        self.seen: set[str] = set()

    def _fail(self, key: str, problem: str) -> ProfileError:
        where = f"[{self.section}] " if self.section else ""
        return ProfileError(f"{self.label}: {where}{key} {problem}")

    def get(self, key: str) -> Any:
        self.seen.add(key)
        if key not in self.data:
            raise self._fail(key, "is missing")
        return self.data[key]

    def text(self, key: str, default: str | None = None) -> str:
        if default is not None and key not in self.data:
            self.seen.add(key)
            return default
        value = self.get(key)
        if not isinstance(value, str):
            raise self._fail(key, "must be a string")
        return value

    def number(self, key: str, *, minimum: float = 0.0, strict: bool = True) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, "must be a number")
        bad = value <= minimum if strict else value < minimum
        if not math.isfinite(value) or bad:
            raise self._fail(key, f"must be {'>' if strict else '>='} {minimum:g}")
        return float(value)

    def sub(self, key: str) -> _Table:
        name = f"{self.section}.{key}" if self.section else key
        return _Table(self.label, name, self.get(key))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self._fail(unknown[0], "is not a known key")


def _region(label: str, index: int, data: object) -> MemoryRegion:
    table = _Table(label, f"memory.{index}", data)
    name = table.text("name")
    table.section = f"memory.{name}"
    holds = table.get("holds")
    if not isinstance(holds, list) or not all(isinstance(h, str) for h in holds):
        raise table._fail("holds", "must be a list of strings")
    bad = [h for h in holds if h not in HOLDABLE]
    if bad:
        raise table._fail("holds", f"has unknown items {bad}; known: {list(HOLDABLE)}")
    region = MemoryRegion(
        name=name,
        capacity_bytes=round(table.number("kib", strict=False) * 1024),
        holds=tuple(holds),
        pj_per_byte=table.number("pj_per_byte", strict=False),
    )
    table.seen.add("source")  # free-text provenance, optional
    table.done()
    return region


def parse_profile(data: Mapping[str, Any], label: str) -> Profile:
    """Build a :class:`Profile` from parsed TOML; ``label`` names the file in errors."""
    top = _Table(label, "", dict(data))
    compute, power, battery = top.sub("compute"), top.sub("power"), top.sub("battery")
    fp32_table = top.sub("fp32")
    fp32: dict[str, Rates] = {}
    for primitive in PRIMITIVES:
        rates = fp32_table.sub(primitive)
        values = [rates.number(phase) for phase in PHASES]
        rates.seen.add("source")
        rates.done()
        fp32[primitive] = Rates(*values)
    fp32_table.done()
    cores = compute.number("cores", minimum=1, strict=False)
    if cores != int(cores):
        raise compute._fail("cores", "must be an integer")
    memory_data = top.get("memory")
    if not isinstance(memory_data, list) or not memory_data:
        raise ProfileError(f"{label}: memory must be a non-empty array of tables ([[memory]])")
    try:
        profile = Profile(
            name=top.text("name"),
            description=top.text("description", default=""),
            freq_hz=compute.number("freq_hz"),
            cores=int(cores),
            active_w=power.number("active_w"),
            sleep_w=power.number("sleep_w", strict=False),
            capacity_mah=battery.number("capacity_mah"),
            voltage_v=battery.number("voltage_v"),
            tiling_overhead=compute.number("tiling_overhead", strict=False),
            int8_mac_per_cycle=compute.number("int8_mac_per_cycle"),
            int8_basis=compute.text("int8_basis", default="unspecified"),
            fp32=MappingProxyType(fp32),
            memory=tuple(_region(label, i, region) for i, region in enumerate(memory_data)),
        )
    except ValueError as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"{label}: {exc}") from exc
    for table in (compute, power, battery):
        table.seen.add("source")
        table.done()
    top.done()
    return profile


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (:data:`BUILTIN`) or any profile TOML file by path."""
    key = str(name_or_path)
    if key in BUILTIN:
        label = f"{key}.toml"
        text = resources.files("device.energy.profiles").joinpath(label).read_text("utf-8")
    else:
        path = Path(key)
        label = path.name
        if not path.is_file():
            known = ", ".join(BUILTIN)
            raise ProfileError(f"unknown profile {key!r}: not one of {known} and not a file")
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{label}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{label}: not valid TOML: {exc}") from exc
    return parse_profile(data, label)


__all__ = [
    "BUILTIN",
    "HOLDABLE",
    "INT8_BASES",
    "PHASES",
    "PRIMITIVES",
    "MemoryRegion",
    "Profile",
    "Rates",
    "load_profile",
    "parse_profile",
]
