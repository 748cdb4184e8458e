"""Node messages built for tests: wire payloads and typed values a real node would send.

:func:`telemetry` and :func:`report` are the bytes a node publishes (what the stream, the
monitor and the exporter are fed); :func:`draining_telemetry` is a typed ``Telemetry`` of a
device whose battery drains at a chosen rate (what recordings and reports are made of).
"""

from __future__ import annotations

import json
from typing import Any, Final

from dataset_stream.protocol import BatteryState, ReplayStats, Telemetry
from tests.support.times import T0

__all__ = ["BATTERY_J", "draining_telemetry", "report", "telemetry"]

#: the battery of :func:`draining_telemetry`'s devices when full
BATTERY_J: Final = 39_204.0


def telemetry(device: str, seq: int) -> bytes:
    """The telemetry ``device`` publishes after learning ``seq`` (fixed figures, ``t`` = T0)."""
    return json.dumps(
        {
            "device": device,
            "seq": seq,
            "t": T0,
            "state": "learning",
            "samples": 140,
            "accuracy": None,
            "latency_s": {"frozen": 0.5, "adaptive": 0.1, "total": 0.6},
            "energy_j": {
                "frozen": 0.03,
                "adaptive": 0.01,
                "memory": 0.0,
                "idle": 0.0,
                "total": 0.04,
            },
            "battery": {"soc": 1.0, "remaining_j": 39000.0},
            "lifetime_h": 1000.0,
            "replay": {"size": 0, "capacity": 1500, "bits": 8, "bytes": 0},
            "host_s": 0.01,
        }
    ).encode()


def report(device: str, seq: int, **changes: Any) -> bytes:
    """A :func:`telemetry` of ``device``, ``seq`` with fields replaced (``energy_j`` merged)."""
    obj = json.loads(telemetry(device, seq))
    obj["energy_j"] = {**obj["energy_j"], **changes.pop("energy_j", {})}
    obj.update(changes)
    return json.dumps(obj).encode()


def draining_telemetry(
    device: str,
    seq: int,
    *,
    drain_j: float = 5.0,
    accuracy: float | None = 0.5,
    state: str = "learning",
) -> Telemetry:
    """Event ``seq`` of ``device``, which spends ``drain_j`` per event (60 s apart)."""
    remaining = max(0.0, BATTERY_J - drain_j * (seq + 1))
    return Telemetry(
        device=device,
        seq=seq,
        t=T0 + 60.0 * seq,
        state=state,
        samples=140,
        accuracy=accuracy,
        latency_s={"frozen": 0.5, "adaptive": 0.1, "total": 0.6},
        energy_j={
            "frozen": 0.6 * drain_j,
            "adaptive": 0.2 * drain_j,
            "memory": 0.05 * drain_j,
            "idle": 0.15 * drain_j,
            "total": drain_j,
        },
        battery=BatteryState(soc=remaining / BATTERY_J, remaining_j=remaining),
        lifetime_h=remaining / (drain_j * 60.0),  # drain_j per minute
        replay=ReplayStats(size=min(1500, 140 * (seq + 1)), capacity=1500, bits=8, bytes=1024),
        host_s=0.01,
        events=seq + 1,
        gaps=0,
    )
