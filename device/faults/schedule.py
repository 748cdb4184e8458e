"""When each device's faults happen: pure, seeded, in simulated time.

A device's fault times are a function of (spec seed, device id, fault index) only: the same spec
and seed give the same faults at the same simulated times, whatever else the fleet holds and
however fast the run goes. Which devices a fault with a ``fraction`` targets is a seeded choice
over the devices of its classes (exactly ``round(fraction x count)`` of them).

Simulated time is counted from the device's first batch: a fault ``at_s = 600`` happens when the
node handles the first batch whose ``t`` is at least 600 s after the ``t`` of its first one. A
``rate_per_hour`` fault is a Poisson process: exponential gaps of mean ``3600 / rate`` seconds
from ``at_s`` (or 0) on, drawn from the device's own generator.
"""

from __future__ import annotations

import hashlib
import heapq
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from device.faults.kinds import FaultSpec

__all__ = ["DeviceFaults", "Fault", "FaultPlan", "occurrences"]


@dataclass(frozen=True, slots=True)
class Fault:
    """One occurrence of a fault on one device: the ``n``-th of the spec's fault ``index``, at
    ``at_s`` simulated seconds after the device's first batch."""

    index: int
    n: int
    at_s: float
    spec: FaultSpec

    @property
    def kind(self) -> str:
        return self.spec.kind


def _generator(seed: int, device_id: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(device_id.encode()), index, stream])


def occurrences(spec: FaultSpec, index: int, seed: int, device_id: str) -> Iterator[Fault]:
    """Every occurrence of fault ``index`` on ``device_id``, in time order (endless for a rate)."""
    if spec.rate_per_hour is None:
        yield Fault(index, 0, spec.start_s, spec)
        return
    rng = _generator(seed, device_id, index, 0)
    mean_gap_s = 3600.0 / spec.rate_per_hour
    at_s, n = spec.start_s, 0
    while True:
        at_s += float(rng.exponential(mean_gap_s))
        yield Fault(index, n, at_s, spec)
        n += 1


class DeviceFaults:
    """One device's faults, merged in time order; :meth:`due` hands out those whose time has
    come (each once). Pure: no clock, no I/O; the node asks with its simulated time."""

    def __init__(self, device_id: str, faults: Sequence[tuple[int, FaultSpec]], seed: int) -> None:
        self.device_id = device_id
        self.seed = seed
        self.specs = tuple(faults)
        self._streams = [occurrences(spec, index, seed, device_id) for index, spec in faults]
        self._next: list[tuple[float, int, int, Fault]] = []
        for k, stream in enumerate(self._streams):
            self._push(k, stream)

    def _push(self, k: int, stream: Iterator[Fault]) -> None:
        fault = next(stream, None)
        if fault is not None:
            heapq.heappush(self._next, (fault.at_s, fault.index, k, fault))

    def due(self, now_s: float) -> list[Fault]:
        """The faults at or before ``now_s`` not handed out yet, in time order."""
        out = []
        while self._next and self._next[0][0] <= now_s:
            _, _, k, fault = heapq.heappop(self._next)
            out.append(fault)
            self._push(k, self._streams[k])
        return out

    def generator(self, index: int, stream: int) -> np.random.Generator:
        """The device's generator for fault ``index``'s own draws (e.g. its network's)."""
        return _generator(self.seed, self.device_id, index, stream)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A fleet's faults (its spec's ``[[fault]]`` tables, in order) and the spec's seed."""

    faults: tuple[FaultSpec, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"the spec seed must be an int >= 0, got {self.seed!r}")

    def targets(self, index: int, members: Sequence[tuple[str, str]]) -> frozenset[str]:
        """The ids fault ``index`` targets among ``members`` (``(device id, class name)``)."""
        spec = self.faults[index]
        if spec.ids:
            return frozenset(spec.ids) & {device for device, _ in members}
        pool = [d for d, c in members if not spec.classes or c in spec.classes]
        if spec.fraction is None:
            return frozenset(pool)
        count = round(spec.fraction * len(pool))
        ranked = sorted(pool, key=lambda d: _rank(self.seed, index, d))
        return frozenset(ranked[:count])

    def by_device(self, members: Sequence[tuple[str, str]]) -> Mapping[str, DeviceFaults]:
        """Each member's faults (members without any are left out)."""
        chosen: dict[str, list[tuple[int, FaultSpec]]] = {}
        for index, spec in enumerate(self.faults):
            for device in sorted(self.targets(index, members)):
                chosen.setdefault(device, []).append((index, spec))
        return {d: DeviceFaults(d, specs, self.seed) for d, specs in chosen.items()}


def _rank(seed: int, index: int, device_id: str) -> bytes:
    """A seeded order of devices, the same on every platform and Python."""
    return hashlib.blake2b(f"{seed}/{index}/{device_id}".encode(), digest_size=8).digest()
