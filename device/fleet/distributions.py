"""Seeded distributions of a device class's numeric settings: heterogeneity in a fleet spec.

In a fleet spec any varying setting of a class is a constant or a table naming a distribution::

    battery_j = {dist = "normal", mean = 39204, std = 4000, min = 20000}
    speed_factor = {dist = "uniform", low = 0.8, high = 1.2}
    drift_ppm = {dist = "lognormal", mu = 2.0, sigma = 0.5, max = 100}
    lr_size = {dist = "choice", values = [500, 1000, 1500], weights = [1, 1, 2]}

``normal`` and ``lognormal`` (``mu``/``sigma`` of the underlying normal) are clipped to their
optional ``min``/``max``; ``uniform`` draws in ``[low, high)``; ``choice`` draws one of ``values``
(``weights`` optional, relative). Every device's value comes from :func:`device_rng` -- the
spec's seed, the device id and the setting's name only -- so the same seed gives every device the
same values whatever the order, the worker or the shard it runs in, and adding a setting to a
spec leaves the others' draws as they were.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np

from device.fleet.errors import DistributionError


@dataclass(frozen=True, slots=True)
class Uniform:
    """Uniform in ``[low, high)``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _finite(self, "low", "high")
        if not self.low <= self.high:
            raise DistributionError(f"uniform needs low <= high, got {self.low} and {self.high}")

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high)) if self.high > self.low else self.low

    @property
    def bounds(self) -> tuple[float, float]:
        return self.low, self.high


@dataclass(frozen=True, slots=True)
class Normal:
    """Normal with ``mean`` and ``std``, clipped to ``[min, max]``."""

    mean: float
    std: float
    min: float = -math.inf
    max: float = math.inf

    def __post_init__(self) -> None:
        _finite(self, "mean", "std")
        _clip_checked(self.min, self.max)
        if self.std < 0:
            raise DistributionError(f"std must be >= 0, got {self.std}")

    def draw(self, rng: np.random.Generator) -> float:
        return _clip(float(rng.normal(self.mean, self.std)), self.min, self.max)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.min, self.max


@dataclass(frozen=True, slots=True)
class LogNormal:
    """``exp(N(mu, sigma))``, clipped to ``[min, max]``."""

    mu: float
    sigma: float
    min: float = 0.0
    max: float = math.inf

    def __post_init__(self) -> None:
        _finite(self, "mu", "sigma")
        _clip_checked(self.min, self.max)
        if self.sigma < 0:
            raise DistributionError(f"sigma must be >= 0, got {self.sigma}")

    def draw(self, rng: np.random.Generator) -> float:
        return _clip(float(rng.lognormal(self.mu, self.sigma)), self.min, self.max)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.min, self.max


@dataclass(frozen=True, slots=True)
class Choice:
    """One of ``values``, with relative ``weights`` (equal when empty)."""

    values: tuple[float, ...]
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.values:
            raise DistributionError("choice needs at least one value")
        if not all(_number(v) for v in self.values):
            raise DistributionError(f"choice values must be numbers, got {list(self.values)}")
        if self.weights:
            if len(self.weights) != len(self.values):
                raise DistributionError(
                    f"choice needs one weight per value: {len(self.values)} values, "
                    f"{len(self.weights)} weights"
                )
            if not all(_number(w) and w >= 0 for w in self.weights) or sum(self.weights) <= 0:
                raise DistributionError(f"choice weights must be >= 0, not all 0: {self.weights}")

    def draw(self, rng: np.random.Generator) -> float:
        p = None
        if self.weights:
            total = sum(self.weights)
            p = [w / total for w in self.weights]
        return self.values[int(rng.choice(len(self.values), p=p))]

    @property
    def bounds(self) -> tuple[float, float]:
        return min(self.values), max(self.values)


Distribution: TypeAlias = Uniform | Normal | LogNormal | Choice

#: ``dist`` name -> (class, required keys, optional keys).
KINDS: Final[dict[str, tuple[type[Any], tuple[str, ...], tuple[str, ...]]]] = {
    "uniform": (Uniform, ("low", "high"), ()),
    "normal": (Normal, ("mean", "std"), ("min", "max")),
    "lognormal": (LogNormal, ("mu", "sigma"), ("min", "max")),
    "choice": (Choice, ("values",), ("weights",)),
}


def parse_distribution(table: Mapping[str, Any]) -> Distribution:
    """The distribution of a spec table (``{dist = "normal", ...}``); a
    :class:`DistributionError` names the bad or missing key."""
    kind = table.get("dist")
    if kind not in KINDS:
        raise DistributionError(
            f"dist must be one of {', '.join(KINDS)}, not {kind!r}"
            if "dist" in table
            else f"a distribution table needs dist = one of {', '.join(KINDS)}"
        )
    cls, required, optional = KINDS[kind]
    unknown = sorted(set(table) - {"dist", *required, *optional})
    if unknown:
        raise DistributionError(
            f"{kind}: unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join((*required, *optional))}"
        )
    missing = [k for k in required if k not in table]
    if missing:
        raise DistributionError(f"{kind}: {', '.join(missing)} missing")
    args: dict[str, Any] = {}
    for key in (*required, *optional):
        if key not in table:
            continue
        value = table[key]
        if key in ("values", "weights"):
            if not isinstance(value, list):
                raise DistributionError(f"{kind}: {key} must be a list of numbers")
            args[key] = tuple(value)
        elif not _number(value):
            raise DistributionError(f"{kind}: {key} must be a number, not {value!r}")
        else:
            args[key] = float(value)
    return cls(**args)


def to_table(dist: Distribution) -> dict[str, Any]:
    """The spec table of ``dist`` (what :func:`parse_distribution` reads back)."""
    kind = next(name for name, (cls, _, _) in KINDS.items() if isinstance(dist, cls))
    out: dict[str, Any] = {"dist": kind}
    for name in KINDS[kind][1] + KINDS[kind][2]:
        value = getattr(dist, name)
        if isinstance(value, tuple):
            if value:
                out[name] = list(value)
        elif math.isfinite(value):
            out[name] = value
    return out


def device_rng(seed: int, device_id: str, setting: str) -> np.random.Generator:
    """The generator of one device's draw of one setting: from these three only."""
    return np.random.default_rng(
        [seed & 0xFFFFFFFF, zlib.crc32(device_id.encode()), zlib.crc32(setting.encode())]
    )


def draw(dist: Distribution, seed: int, device_id: str, setting: str) -> float:
    """``device_id``'s value of ``setting`` under ``dist`` and the spec's ``seed``."""
    return dist.draw(device_rng(seed, device_id, setting))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _finite(dist: object, *names: str) -> None:
    for name in names:
        if not _number(getattr(dist, name)):
            raise DistributionError(f"{name} must be a finite number, got {getattr(dist, name)!r}")


def _clip_checked(low: float, high: float) -> None:
    if math.isnan(low) or math.isnan(high) or low > high:
        raise DistributionError(f"need min <= max, got {low} and {high}")


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


__all__ = [
    "Choice",
    "Distribution",
    "DistributionError",
    "LogNormal",
    "Normal",
    "Uniform",
    "device_rng",
    "draw",
    "parse_distribution",
    "to_table",
]
