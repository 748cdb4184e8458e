"""A node's injected faults carried out: each one published, then done to the node.

:class:`NodeFaults` follows the node's simulated time (the ``t`` of its batches, counted from the
first one it sees) and asks the device's pure schedule (:class:`~device.faults.DeviceFaults`)
which faults are due. For each, :meth:`NodeFaults.fire` publishes a
:class:`~dataset_stream.protocol.FaultReport` on ``{prefix}/{id}/fault`` first (so a recording
holds it even when the fault is a crash), then acts:

- ``battery_death``, ``capacity_loss``: the engine commits the new battery at once;
- ``brownout``: the next learning event loses power before its commit
  (:class:`~device.node.errors.PowerLost`), and the device restarts;
- ``crash``: :class:`~device.node.errors.DeviceRestart` is raised: the batch in hand is not
  acknowledged, the supervisor reopens the engine from its state file;
- ``storage_full``: every commit fails as on a full disk for ``duration_s`` of the node's clock
  (the sequencer reports ``store_failed`` and retries; nothing half-written is kept);
- ``clock_jump``: the node's clock (:class:`JumpClock`) jumps by ``jump_s``;
- ``network``: the inbox goes through a :class:`~device.faults.NetworkFilter` while the fault
  holds (``duration_s`` simulated seconds, or the rest of the run).

It belongs to the emulator, not to the device: it outlives the engine across restarts, so a fault
happens once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import aiomqtt

from broker.session import publish
from dataset_stream.protocol import FaultReport, topic
from device.clock import Clock
from device.faults import DeviceFaults, Fault, NetworkFilter
from device.node.engine import NodeEngine
from device.node.errors import DeviceRestart
from device.node.worker import finish_in_thread

log = logging.getLogger(__name__)

__all__ = ["JumpClock", "NodeFaults"]

#: Kinds that end the event in hand: carried out after the others due at the same time.
_RESTARTS = ("brownout", "crash")


class JumpClock:
    """A node's clock that an injected ``clock_jump`` moves: another clock plus an offset."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.offset_s = 0.0

    def monotonic_s(self) -> float:
        return self.base.monotonic_s() + self.offset_s

    def time_s(self) -> float:
        return self.base.time_s() + self.offset_s

    async def sleep(self, delay_s: float) -> None:
        await self.base.sleep(delay_s)


@dataclass(slots=True)
class _Window:
    """A network fault that holds until ``until_s`` simulated seconds (``inf``: the run)."""

    until_s: float
    filter: NetworkFilter[aiomqtt.Message]


class NodeFaults:
    """One node's injected faults; see the module docstring."""

    def __init__(self, schedule: DeviceFaults, clock: Clock) -> None:
        self.schedule = schedule
        self.clock = JumpClock(clock)
        self.origin_t: float | None = None  # ``t`` of the first batch: simulated time 0
        self.now_s = 0.0  # the node's simulated time, seconds after ``origin_t``
        self.fired: dict[str, int] = {}  # by kind
        self._storage_until_s = -math.inf  # on the base clock
        self._window: _Window | None = None

    # -- what the node asks -----------------------------------------------------------------

    def attach(self, engine: NodeEngine) -> None:
        """Hook into a (re)opened engine: its store refuses writes while storage is full."""
        engine.store.refuse_writes = self._storage_full

    def _storage_full(self) -> bool:
        return self.clock.base.monotonic_s() < self._storage_until_s

    def network(self) -> NetworkFilter[aiomqtt.Message] | None:
        """The inbox's filter while a network fault holds, else None."""
        window = self._window
        if window is not None and self.now_s >= window.until_s:
            log.info("%s: injected network fault over", self.schedule.device_id)
            self._window = window = None
        return None if window is None else window.filter

    def due(self, t: float) -> list[Fault]:
        """The faults due once a batch of simulated time ``t`` arrived (restarts last)."""
        if self.origin_t is None:
            self.origin_t = t
        self.now_s = max(self.now_s, t - self.origin_t)
        faults = self.schedule.due(self.now_s)
        return sorted(faults, key=lambda f: f.kind in _RESTARTS)

    # -- carrying one out ---------------------------------------------------------------------

    async def fire(
        self, client: aiomqtt.Client, engine: NodeEngine, fault: Fault, seq: int
    ) -> None:
        """Publish ``fault``, then do it to the node (a restart raises)."""
        spec, device = fault.spec, self.schedule.device_id
        params = {
            k: float(v)
            for k, v in (
                ("capacity_fraction", spec.capacity_fraction),
                ("jump_s", spec.jump_s),
                ("rate_per_hour", spec.rate_per_hour),
            )
            if v is not None
        }
        if spec.network is not None:
            net = spec.network
            params |= {
                "latency_s": net.latency_s,
                "jitter_s": net.jitter_s,
                "loss": net.loss,
                "duplicate": net.duplicate,
                "reorder": net.reorder,
            }
        report = FaultReport(
            device,
            fault.kind,
            fault.index,
            fault.n,
            at_s=fault.at_s,
            fired_s=self.now_s,
            seq=seq,
            duration_s=spec.duration_s,
            ts=time.time(),
            params=params,
        )
        prefix = engine.settings.prefix
        await publish(client, topic(prefix, device, "fault"), report.to_json())
        self.fired[fault.kind] = self.fired.get(fault.kind, 0) + 1
        log.warning(
            "%s: injected %s (fault #%d, occurrence %d) at %.1f s",
            device,
            fault.kind,
            fault.index,
            fault.n,
            self.now_s,
        )
        await self._act(engine, fault)

    async def _act(self, engine: NodeEngine, fault: Fault) -> None:
        spec = fault.spec
        match fault.kind:
            case "crash":
                raise DeviceRestart(f"injected crash (fault #{fault.index})")
            case "brownout":
                engine.cut_power_in_next_event()
            case "battery_death":
                await finish_in_thread(engine.set_battery, engine.battery.capacity_j, 0.0)
            case "capacity_loss":
                kept = 1.0 - (spec.capacity_fraction or 0.0)
                battery = engine.battery
                await finish_in_thread(
                    engine.set_battery, battery.capacity_j * kept, battery.remaining_j * kept
                )
            case "storage_full":
                self._storage_until_s = self.clock.base.monotonic_s() + (spec.duration_s or 0.0)
            case "clock_jump":
                self.clock.offset_s += spec.jump_s or 0.0
            case "network":
                assert spec.network is not None  # checked by FaultSpec
                until_s = math.inf if spec.duration_s is None else fault.at_s + spec.duration_s
                rng = self.schedule.generator(fault.index, 1 + fault.n)
                self._window = _Window(until_s, NetworkFilter(spec.network, rng))
