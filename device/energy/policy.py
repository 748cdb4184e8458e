"""Energy-aware learning policies, and a node running one on harvested energy.

A policy decides, at each step of the simulation, what happens to the learning events that
arrived (:class:`Policy`, parsed from ``--policy``):

- ``always``: learn every event (what a node does today);
- ``soc-threshold:X``: learn only while the state of charge is above ``X``; an event arriving
  below it is not learned (dropped);
- ``low-soc:X``: below ``X`` learn a reduced event: half the epochs and half the replays per
  mini-batch (:func:`reduced_config`), which costs less and learns less;
- ``defer-to-sun``: learn only while the harvest covers the node's load; events arriving in the
  dark wait (up to ``hold_events``, the oldest dropped beyond) for the next such step.

:func:`run_policy` simulates a node doing so, step by step (a state-dependent load is a
recursion; an hourly year is 8,760 steps, milliseconds). A depleted node is off (it learns
nothing and its events are lost) until the harvest brings it back to ``restart_soc``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from device.energy.config import CostConfig
from device.energy.errors import PolicyError
from device.energy.harvest import Harvester
from device.energy.simulate import YEAR_S, Storage

#: The state of charge at which a depleted node that harvests comes back on.
RESTART_SOC = 0.05

POLICIES: tuple[str, ...] = ("always", "soc-threshold:X", "low-soc:X", "defer-to-sun")


@dataclass(frozen=True, slots=True)
class Policy:
    """One policy: ``kind`` (``always``, ``soc-threshold``, ``low-soc``, ``defer-to-sun``) and
    its state-of-charge threshold ``soc`` (0..1) where it has one."""

    kind: str = "always"
    soc: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("always", "soc-threshold", "low-soc", "defer-to-sun"):
            raise PolicyError(f"unknown policy {self.kind!r}: one of {', '.join(POLICIES)}")
        if not 0 <= self.soc < 1:
            raise PolicyError(f"policy {self.kind}: the state of charge must be in [0, 1)")

    @classmethod
    def parse(cls, text: str) -> Policy:
        """``always``, ``soc-threshold:X``, ``low-soc:X`` (X in 0..1) or ``defer-to-sun``."""
        kind, _, value = text.strip().partition(":")
        if kind in ("always", "defer-to-sun"):
            if value:
                raise PolicyError(f"policy {text!r}: {kind} takes no value")
            return cls(kind)
        if kind in ("soc-threshold", "low-soc"):
            try:
                soc = float(value)
            except ValueError:
                raise PolicyError(f"policy {text!r}: {kind}:X needs a state of charge") from None
            if not math.isfinite(soc):
                raise PolicyError(f"policy {text!r}: X must be finite")
            return cls(kind, soc)
        raise PolicyError(f"unknown policy {text!r}: one of {', '.join(POLICIES)}")

    def describe(self) -> str:
        return (
            f"{self.kind}:{self.soc:g}" if self.kind in ("soc-threshold", "low-soc") else self.kind
        )


def reduced_config(config: CostConfig) -> CostConfig:
    """The event ``low-soc`` learns below its threshold: half the epochs (at least 1) and half
    the replays in each mini-batch (the new latents per mini-batch unchanged)."""
    replays = (config.mb_size - config.new_per_mb) // 2
    return replace(config, epochs=max(1, config.epochs // 2), mb_size=config.new_per_mb + replays)


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """What a node spends: ``base_w`` always while on (sleep, inference, radio idle) and, per
    learning event, ``event_j`` (its compute and telemetry) or ``reduced_j`` (a reduced
    one), at ``events_per_hour``."""

    base_w: float
    events_per_hour: float
    event_j: float
    reduced_j: float | None = None

    @property
    def mean_w(self) -> float:
        return self.base_w + self.events_per_hour * self.event_j / 3600.0


@dataclass(frozen=True, slots=True)
class PolicyRun:
    """What a policy did over ``horizon_s``: ``uptime`` (share of the time the node was on),
    events that arrived, were learned (``reduced`` of them reduced), were lost (node off or
    policy dropped them); the first depletion (None: energy-neutral) and the last SoC."""

    policy: Policy
    horizon_s: float
    uptime: float
    arrived: int
    learned: int
    reduced: int
    depleted_at_s: float | None
    final_soc: float

    @property
    def neutral(self) -> bool:
        return self.depleted_at_s is None

    @property
    def learned_share(self) -> float:
        return self.learned / self.arrived if self.arrived else 0.0


def run_policy(
    policy: Policy,
    load: NodeLoad,
    storage: Storage,
    harvester: Harvester | None = None,
    *,
    horizon_s: float = YEAR_S,
    step_s: float = 3600.0,
    restart_soc: float = RESTART_SOC,
    hold_events: int = 24,
) -> PolicyRun:
    """Simulate a node running ``policy`` (module docstring)."""
    if not (step_s > 0 and horizon_s >= step_s):
        raise PolicyError(f"need 0 < step_s <= horizon_s, got {step_s!r}, {horizon_s!r}")
    storage.check_chargeable(harvester)
    steps = math.ceil(horizon_s / step_s)
    t = np.arange(steps, dtype=np.float64) * step_s
    harvest_w = (np.zeros_like(t) if harvester is None else harvester.power_w(t)).tolist()
    self_w = storage.self_discharge_w(t).tolist()
    cap0 = storage.capacity_j
    fade = storage.chemistry.fade_per_cycle
    reduced_j = load.event_j if load.reduced_j is None else load.reduced_j
    per_step = load.events_per_hour * step_s / 3600.0
    energy = storage.initial_soc * cap0
    on, pending, due = True, 0.0, 0  # due: events held by defer-to-sun
    arrived = learned = reduced = on_steps = 0
    charged = 0.0
    depleted_at: float | None = None
    for i in range(steps):
        pending += per_step
        new = int(pending)
        pending -= new
        arrived += new
        gain = harvest_w[i] * step_s
        spent = self_w[i] * step_s
        capacity = cap0 * max(0.0, 1.0 - fade * charged / cap0)
        if on:
            on_steps += 1
            spent += load.base_w * step_s
            soc = energy / cap0
            learn, cost = new, load.event_j
            if policy.kind == "defer-to-sun":
                due += new
                if harvest_w[i] > load.mean_w:
                    learn, due = due, 0
                else:
                    learn, due = 0, min(due, hold_events)
            elif policy.kind == "soc-threshold" and soc <= policy.soc:
                learn = 0
            elif policy.kind == "low-soc" and soc < policy.soc:
                cost = reduced_j
                reduced += learn
            spent += learn * cost
            learned += learn
        else:
            due = 0
        net = gain - spent
        charged += max(0.0, net)
        energy = min(capacity, energy + net)
        if energy <= 0:
            energy = 0.0
            if on and depleted_at is None:
                depleted_at = float(t[i]) + step_s
            on = False
        elif not on and energy >= restart_soc * cap0:
            on = True
    return PolicyRun(
        policy=policy,
        horizon_s=steps * step_s,
        uptime=on_steps / steps,
        arrived=arrived,
        learned=learned,
        reduced=reduced,
        depleted_at_s=depleted_at,
        final_soc=energy / cap0,
    )


__all__ = [
    "POLICIES",
    "RESTART_SOC",
    "NodeLoad",
    "Policy",
    "PolicyRun",
    "reduced_config",
    "run_policy",
]
