"""``vega-emu rollout``: a new head pushed to a fleet in stages, soaked, halted by a rule.

A rollout (:func:`run_rollout`) publishes the head, retained, on its head topic, then for each
stage (a percent of the fleet, cumulative: 5 % -> 25 % -> 100 %):

1. **stage**: the stage's devices (:func:`stage_devices`: a seeded, deterministic order of the
   fleet, so a rerun picks the same devices) get desired ``head`` = the new head (next desired
   version, ``by = "rollout:{name}"``); the rollout waits until they report it;
2. **soak**: it watches their telemetry against the rest of the fleet's for ``soak_s`` of
   *simulated* time (telemetry ``t``) -- :class:`Soak` turns it into the metrics of the halt
   rule (:mod:`device.app.haltrule`): ``accuracy`` (the stage's mean), ``accuracy_drop`` (the
   rest's mean minus the stage's; with no rest, the stage's own mean before it moved),
   ``error_count`` and ``errors`` (the stage's errors other than ``duplicate`` and ``gap``,
   refusals included, per event);
3. when the rule trips (or a device refuses the head, or does not report it in time, or the
   soak stalls), the rollout **halts**: every device it moved goes back to head ``own``, it waits
   for them, and ends ``rolled_back`` with the reason in one line.

Each step is published, retained, as a :class:`~dataset_stream.protocol.RolloutState` on the
rollout's topic, and said through ``say`` (the terminal).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from dataset_stream.protocol import OWN_HEAD, ErrorMessage, RolloutState, Telemetry
from device.app.errors import LinkError, RolloutError
from device.app.haltrule import HaltRule
from device.app.link import Convergence, FleetLink

__all__ = [
    "FleetHistory",
    "RolloutOutcome",
    "RolloutPlan",
    "Soak",
    "parse_duration",
    "parse_stages",
    "run_rollout",
    "stage_devices",
]

#: Error codes that are no fault of the head: redeliveries and skipped seqs.
NOT_FAULTS: Final = frozenset({"duplicate", "gap"})
#: Telemetry kept per device (accuracy and time), enough for any soak of a test fleet.
HISTORY_PER_DEVICE: Final = 10_000
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*")
_UNIT_S: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"30m"`` -> 1800.0; ``s``, ``m``, ``h`` or none (seconds). ValueError naming it."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30m, 90s or 2h")
    return float(match[1]) * _UNIT_S[match[2]]


def parse_stages(text: str) -> tuple[float, ...]:
    """``"5,25,100"`` -> ``(5.0, 25.0, 100.0)``: percents, rising, each in (0, 100]."""
    try:
        stages = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"stages {text!r}: want percents such as 5,25,100") from None
    if not stages or any(not (math.isfinite(s) and 0 < s <= 100) for s in stages):
        raise ValueError(f"stages {text!r}: each a percent in (0, 100]")
    if any(b <= a for a, b in itertools.pairwise(stages)):
        raise ValueError(f"stages {text!r}: each larger than the one before")
    return stages


def stage_devices(devices: Sequence[str], stages: Sequence[float], seed: int) -> list[list[str]]:
    """The devices of each stage, cumulative: stage ``k`` holds ``ceil(stages[k] % of the
    fleet)`` devices (at least one), the first ones of a seeded order of the fleet (the same
    for the same seed and fleet, whatever the order ``devices`` come in)."""
    order = sorted(
        set(devices),
        key=lambda d: hashlib.blake2b(f"{seed}:{d}".encode(), digest_size=8).digest(),
    )
    counts = [max(1, math.ceil(len(order) * p / 100 - 1e-9)) for p in stages]
    return [order[: min(n, len(order))] for n in counts]


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """What to roll out and how: ``head`` (its name on the wire) with its ``weights`` (the
    bundle's ``adaptive.safetensors`` bytes), ``stages`` (percents), ``soak_s`` (simulated
    seconds per stage), the halt ``rule``, ``report_s`` (wall seconds the devices have to
    report a new desired version) and ``stall_s`` (wall seconds a soak may go without
    telemetry of the stage before it halts as stalled)."""

    name: str
    weights: bytes
    stages: tuple[float, ...]
    soak_s: float
    rule: HaltRule
    seed: int = 0
    report_s: float = 60.0
    stall_s: float = 120.0
    min_events: int = 3

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.weights).hexdigest()

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("a head of no bytes")
        if not (math.isfinite(self.soak_s) and self.soak_s >= 0):
            raise ValueError(f"soak must be >= 0 s, not {self.soak_s}")


@dataclass
class FleetHistory:
    """Every device's telemetry (``t``, accuracy) and errors, as they arrive during a rollout.

    Errors carry no simulated time: each is stamped with the number of messages seen before it
    (``tick``), so a soak counts those that came after its stage moved.
    """

    telemetry: dict[str, deque[tuple[float, float | None]]] = field(default_factory=dict)
    errors: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    tick: int = 0

    def add(self, device: str, message: Telemetry | ErrorMessage) -> None:
        self.tick += 1
        if isinstance(message, Telemetry):
            seen = self.telemetry.setdefault(device, deque(maxlen=HISTORY_PER_DEVICE))
            seen.append((message.t, message.accuracy))
        elif message.code not in NOT_FAULTS:
            self.errors.setdefault(device, []).append((self.tick, message.code))

    def latest_t(self, device: str) -> float | None:
        seen = self.telemetry.get(device)
        return seen[-1][0] if seen else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class Soak:
    """The soak of one stage: ``starts`` is each stage device's simulated time when it started
    running the head (its reported ``t``); the rest of the fleet is compared over the same
    time, from the earliest start on. ``baseline``: the stage's own mean accuracy before it
    moved, what ``accuracy_drop`` compares to when the stage is the whole fleet."""

    history: FleetHistory
    stage: frozenset[str]
    others: frozenset[str]
    starts: Mapping[str, float]
    soak_s: float
    since_tick: int
    baseline: float | None = None

    def _stage_events(self) -> list[tuple[str, float, float | None]]:
        out = []
        for device in self.stage:
            start = self.starts[device]
            for t, accuracy in self.history.telemetry.get(device, ()):
                if t > start:
                    out.append((device, t, accuracy))
        return out

    @property
    def events(self) -> int:
        return len(self._stage_events())

    @property
    def done(self) -> bool:
        """Every stage device ran the head for ``soak_s`` of simulated time."""
        for device in self.stage:
            latest = self.history.latest_t(device)
            if latest is None or latest - self.starts[device] < self.soak_s:
                return False
        return True

    def values(self) -> dict[str, float | None]:
        events = self._stage_events()
        stage = _mean([a for _, _, a in events if a is not None])
        start = min(self.starts.values(), default=0.0)
        rest = _mean(
            [
                a
                for device in self.others
                for t, a in self.history.telemetry.get(device, ())
                if t > start and a is not None
            ]
        )
        reference = rest if rest is not None else self.baseline
        count = sum(
            1
            for device in self.stage
            for tick, _ in self.history.errors.get(device, ())
            if tick > self.since_tick
        )
        return {
            "accuracy": stage,
            "accuracy_drop": None if stage is None or reference is None else reference - stage,
            "error_count": float(count),
            "errors": count / len(events) if events else (float(count) if count else None),
        }


@dataclass(frozen=True, slots=True)
class RolloutOutcome:
    """How a rollout ended: ``state`` ``done`` or ``rolled_back`` (``reason`` says why)."""

    state: str
    stage: int
    devices: tuple[str, ...]
    reason: str = ""
    values: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "done"


Say = Callable[[str], None]


class _Halt(Exception):
    """Control flow inside :func:`run_rollout`: the rollout halts for ``reason``."""

    def __init__(self, reason: str, values: Mapping[str, float | None] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.values = dict(values or {})


@dataclass
class _Run:
    link: FleetLink
    plan: RolloutPlan
    history: FleetHistory
    say: Say
    stage: int = 0
    moved: list[str] = field(default_factory=list)
    moved_at: dict[str, float] = field(default_factory=dict)  # simulated t each device moved

    async def publish(self, state: str, reason: str = "") -> None:
        await self.link.publish_rollout(
            RolloutState(
                self.plan.name,
                self.plan.name,
                state,
                self.stage,
                list(self.plan.stages),
                devices=list(self.moved),
                reason=reason,
                ts=time.time(),
            )
        )

    async def move(self, devices: Sequence[str], head: str) -> Convergence:
        sha = None if head == OWN_HEAD else self.plan.sha256
        states = await self.link.set_desired(
            devices, {"head": head, "head_sha256": sha}, by=f"rollout:{self.plan.name}"
        )
        targets = {d: s.version for d, s in states.items()}
        return await self.link.wait_converged(targets, self.plan.report_s)


async def run_rollout(
    link: FleetLink, plan: RolloutPlan, devices: Sequence[str], history: FleetHistory, say: Say
) -> RolloutOutcome:
    """Roll ``plan`` out to ``devices`` through ``link`` (subscribed to telemetry, feeding
    ``history``); see the module docstring."""
    if not devices:
        raise RolloutError("no devices to roll out to")
    stages = stage_devices(devices, plan.stages, plan.seed)
    if _all_run(link, plan, devices):  # a rollout run again after it was done
        say(f"all {len(devices)} device(s) already run head {plan.name}: nothing to do")
        return RolloutOutcome("done", len(stages) - 1, ())
    run = _Run(link, plan, history, say)
    await link.publish_head(plan.name, plan.weights)
    say(f"head {plan.name} ({len(plan.weights):,} bytes, sha256 {plan.sha256[:12]}) published")
    try:
        for index, chosen in enumerate(stages):
            run.stage = index
            await _stage(run, chosen, [d for d in devices if d not in chosen])
    except _Halt as halt:
        return await _roll_back(run, halt)
    except LinkError as exc:  # the broker away for too long: say what is left to undo
        moved = ", ".join(run.moved[:10]) + (", ..." if len(run.moved) > 10 else "")
        raise LinkError(
            f"{exc}; rollout {plan.name} stopped at stage {run.stage + 1} with "
            f"{len(run.moved)} device(s) on head {plan.name} ({moved or 'none'}): set them "
            f"back with vega-emu ctl set ... head=own"
        ) from exc
    await run.publish("done")
    say(f"rollout {plan.name} done: {len(run.moved)} device(s) run head {plan.name}")
    return RolloutOutcome("done", run.stage, tuple(run.moved))


async def _stage(run: _Run, chosen: list[str], others: list[str]) -> None:
    plan = run.plan
    percent = plan.stages[run.stage]
    new = [d for d in chosen if d not in run.moved]
    run.moved += new
    await run.publish("staging")
    run.say(
        f"stage {run.stage + 1}/{len(plan.stages)} ({percent:g} %): "
        f"{len(new)} more device(s), {len(chosen)} in all"
    )
    since_tick = run.history.tick
    if new:
        result = await run.move(new, plan.name)
        if not result.ok:
            raise _Halt(f"stage {percent:g} %: head {plan.name}: {result.line()}")
    starts = {}
    for device in chosen:
        reported = run.link.book.reported.get(device)
        starts[device] = reported.t if reported is not None else 0.0
        run.moved_at.setdefault(device, starts[device])
    baseline = _mean(  # the stage's accuracy before it left its own head
        [
            a
            for d in chosen
            for t, a in run.history.telemetry.get(d, ())
            if a is not None and t <= run.moved_at[d]
        ]
    )
    soak = Soak(
        run.history,
        frozenset(chosen),
        frozenset(others),
        starts,
        plan.soak_s,
        since_tick,
        baseline,
    )
    await run.publish("soaking")
    run.say(f"soaking {plan.soak_s:g} s of simulated time; halt if {plan.rule.text}")
    await _soak(run, soak, percent)


async def _soak(run: _Run, soak: Soak, percent: float) -> None:
    plan = run.plan
    last_events, last_s = -1, time.monotonic()
    while True:
        events = soak.events
        values = soak.values()
        if events >= max(plan.min_events, 1) and plan.rule.tripped(values):
            raise _Halt(f"stage {percent:g} %: {plan.rule.why(values)}", values)
        if soak.done:
            run.say(f"stage {percent:g} % soaked: {_show(values)}")
            return
        if events != last_events:
            last_events, last_s = events, time.monotonic()
        elif time.monotonic() - last_s > plan.stall_s:
            raise _Halt(f"stage {percent:g} %: no telemetry of the stage for {plan.stall_s:g} s")
        await run.link.changes(1.0)


def _all_run(link: FleetLink, plan: RolloutPlan, devices: Sequence[str]) -> bool:
    """Every device reports running the plan's head (by name, and by digest where it says
    one) and has no other desired version pending."""
    book = link.book
    for device in devices:
        reported, desired = book.reported.get(device), book.desired.get(device)
        if reported is None or reported.settings.get("head") != plan.name:
            return False
        if reported.settings.get("head_sha256", plan.sha256) != plan.sha256:
            return False
        if desired is not None and desired.version > reported.version:
            return False
    return True


def _show(values: Mapping[str, float | None]) -> str:
    """``accuracy 0.9, accuracy_drop 0``: 3 significant digits, float noise (``3e-15``) as 0."""
    return ", ".join(
        f"{k} {'-' if v is None else format(round(v, 6) + 0.0, '.3g')}" for k, v in values.items()
    )


async def _roll_back(run: _Run, halt: _Halt) -> RolloutOutcome:
    run.say(f"halted: {halt.reason}")
    await run.publish("halted", halt.reason)
    if run.moved:
        run.say(f"rolling back {len(run.moved)} device(s) to head {OWN_HEAD}")
        result = await run.move(run.moved, OWN_HEAD)
        run.say(f"rollback: {result.line()}")
    await run.publish("rolled_back", halt.reason)
    return RolloutOutcome("rolled_back", run.stage, tuple(run.moved), halt.reason, halt.values)
