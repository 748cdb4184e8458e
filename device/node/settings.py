"""A node's settings: read once at the edge (CLI flags), passed down as one frozen value."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dataset_stream.protocol import Limits, validate_device_id, validate_prefix
from device.energy.errors import PolicyError
from device.energy.harvest import Harvester, parse_harvest
from device.energy.node_power import NodePower, load_node_power
from device.energy.policy import Policy
from device.learning.learner import TrainConfig
from device.learning.nn import SGDConfig
from device.learning.replay import SUPPORTED_BITS


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """Latent-replay memory: ``lr_size`` is N_LR, the most LRs it holds (``--lr-size``); bits
    per value (32 = FP32); class balance."""

    lr_size: int = 1500
    bits: int = 8
    class_balanced: bool = False

    def __post_init__(self) -> None:
        if self.lr_size < 0:
            raise ValueError(f"lr_size must be >= 0, got {self.lr_size}")
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"replay bits must be one of {SUPPORTED_BITS}, got {self.bits}")


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """How a node keeps batches in ``seq`` order (see docs/protocol.md, "Delivery guarantees").

    hold_s: how long (wall seconds) a batch that arrived early is held, unacknowledged, waiting
    for the missing seqs before they are skipped as a gap; max_held: early batches held at most
    (one more forces the gap at once); max_held_bytes: the bytes the held batches may keep in
    memory (payload and decoded arrays, :func:`device.node.sequencer.held_size_bytes`) -- past
    it the gap is forced at once too, so far-ahead batches near the largest valid size cannot
    fill a node's memory before the count does; max_seq_ahead: a seq further than this past
    the last one is refused (``bad_metadata``) instead of making every later batch look stale;
    retry_initial_s / retry_cap_s: backoff between attempts to commit an event the store
    refused (disk full, read-only): the batch is kept and retried, never dropped.
    """

    hold_s: float = 30.0
    max_held: int = 64
    max_held_bytes: int = 64 * 1024 * 1024
    max_seq_ahead: int = 1_000_000
    retry_initial_s: float = 0.5
    retry_cap_s: float = 30.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hold_s) and self.hold_s >= 0):
            raise ValueError(f"hold_s must be a number >= 0, got {self.hold_s}")
        if self.max_held < 1 or self.max_seq_ahead < 1:
            raise ValueError(f"max_held and max_seq_ahead must be >= 1, got {self.max_held}")
        if self.max_held_bytes < 1:
            raise ValueError(f"max_held_bytes must be >= 1, got {self.max_held_bytes}")
        if not 0 < self.retry_initial_s <= self.retry_cap_s:
            raise ValueError("need 0 < retry_initial_s <= retry_cap_s")


@dataclass(frozen=True, slots=True)
class ConnectSettings:
    """give_up_s: how long a node keeps trying when the broker refuses it for good (wrong
    password, unknown host, rejected certificate) before it stops with an error; failures
    that may pass (broker down, network) are retried forever."""

    give_up_s: float = 180.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.give_up_s) and self.give_up_s >= 0):
            raise ValueError(f"give_up_s must be a number of seconds >= 0, got {self.give_up_s}")


@dataclass(frozen=True, slots=True)
class Hardware:
    """How one device differs from its energy profile (a fleet spec draws these per device).

    battery_j: battery capacity (None: the profile's); initial_soc: the charge a new node starts
    with, as a fraction of that capacity; speed_factor: its compute clock over the profile's
    (time, and so active energy, per operation divided by it); drift_ppm: its clock's error, in
    parts per million: the node measures the time between its events with it, which is what it
    projects its event rate and lifetime from (sleep drain follows the true time).
    """

    battery_j: float | None = None
    initial_soc: float = 1.0
    speed_factor: float = 1.0
    drift_ppm: float = 0.0

    def __post_init__(self) -> None:
        if self.battery_j is not None and not (
            math.isfinite(self.battery_j) and self.battery_j > 0
        ):
            raise ValueError(f"battery_j must be > 0, got {self.battery_j}")
        if not (math.isfinite(self.initial_soc) and 0 < self.initial_soc <= 1):
            raise ValueError(f"initial_soc must be in (0, 1], got {self.initial_soc}")
        if not (math.isfinite(self.speed_factor) and self.speed_factor > 0):
            raise ValueError(f"speed_factor must be > 0, got {self.speed_factor}")
        if not (math.isfinite(self.drift_ppm) and abs(self.drift_ppm) < 1e6):
            raise ValueError(f"drift_ppm must be within +-1e6, got {self.drift_ppm}")

    def local_time(self, t: float) -> float:
        """Simulated time ``t`` as this device's drifting clock reads it."""
        return t * (1.0 + self.drift_ppm * 1e-6)


@dataclass(frozen=True, slots=True)
class PowerSettings:
    """What the node charges besides its compute (docs/energy-model.md, "The node's radio and
    cell"): ``radio`` a radio profile (``none``, the paper's case: nothing priced) or a TOML
    file; ``battery`` a chemistry (``ideal``: the profile's battery, nothing lost) or a TOML
    file; ``temperature_c`` the constant temperature of the cell's self-discharge;
    ``telemetry_bytes``, the nominal size of a telemetry (the compact message docs/protocol.md
    shows, as ``vega-emu energy`` prices it): what the node checks its radio against at start
    and the first guess of its pricing (a learned event's telemetry is charged at its real
    encoded size; a paused event's at this one); ``policy``: the energy-aware
    learning policy the node runs (``always``, ``soc-threshold:X``, ``low-soc:X``,
    ``defer-to-sun``, which needs a harvester; :mod:`device.energy.policy`); ``harvest``:
    a harvester that recharges the battery between events (``solar:FILE``,
    ``solar:clear-sky[:LAT[:DAY]]``, ``constant:W``; None: none); ``batches_over_radio``: the
    batches arrive over the radio, each one's reception charged at its payload's real size at
    the radio's downlink cost (off: captured locally, the paper's case); ``hold_events``: the
    most batches ``defer-to-sun`` holds for the sun (the oldest is dropped beyond)."""

    radio: str = "none"
    battery: str = "ideal"
    temperature_c: float = 20.0
    telemetry_bytes: int = 387
    policy: str = "always"
    harvest: str | None = None
    batches_over_radio: bool = False
    hold_events: int = 24

    def __post_init__(self) -> None:
        # a typo or an out-of-range threshold is refused here
        if self.learning_policy().kind == "defer-to-sun" and self.harvest is None:
            raise PolicyError(
                "defer-to-sun needs --harvest: without a harvester the sun never comes"
            )
        if self.hold_events < 1:
            raise ValueError(f"hold_events must be >= 1, got {self.hold_events}")
        if not self.radio or not self.battery:
            raise ValueError("radio and battery must name a profile or a file")
        if not (math.isfinite(self.temperature_c) and self.temperature_c >= -273.15):
            raise ValueError(
                f"temperature_c must be a finite number of degrees C, got {self.temperature_c}"
            )
        if self.telemetry_bytes < 1:
            raise ValueError(f"telemetry_bytes must be >= 1, got {self.telemetry_bytes}")

    def learning_policy(self) -> Policy:
        """The parsed ``policy`` (a :class:`~device.energy.errors.PolicyError` names a bad
        one)."""
        return Policy.parse(self.policy)

    def harvester(self) -> Harvester | None:
        """The parsed ``harvest`` source, None without one (a
        :class:`~device.energy.errors.TraceError` names a bad one)."""
        return None if self.harvest is None else parse_harvest(self.harvest)

    def load(self) -> NodePower:
        """The radio and chemistry these name (an :class:`~device.energy.EnergyError` names a
        bad one); the harvester is read too, so a bad one is refused before the node starts."""
        self.harvester()
        return load_node_power(self.radio, self.battery, self.temperature_c)


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """Everything one node needs besides its model and its broker.

    ``eval_every``: the node measures its accuracy on the eval set after every k-th learned
    event (events k, 2k, ...; the factory model always), carrying the last measurement in
    between (``--eval-every``; 1: after every event).
    """

    device_id: str
    state_dir: Path
    replay: ReplaySettings = field(default_factory=ReplaySettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    sgd: SGDConfig = field(default_factory=SGDConfig)
    profile: str = "vega"  # energy profile: name or TOML path
    events_per_hour: float = 60.0  # nominal rate until two events are seen (one per minute)
    prefix: str = "vega"
    seed: int = 0
    limits: Limits = field(default_factory=Limits)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    connect: ConnectSettings = field(default_factory=ConnectSettings)
    hardware: Hardware = field(default_factory=Hardware)
    power: PowerSettings = field(default_factory=PowerSettings)
    eval_every: int = 1

    def __post_init__(self) -> None:
        validate_device_id(self.device_id)
        validate_prefix(self.prefix)
        check_eval_every(self.eval_every)
        if not (math.isfinite(self.events_per_hour) and self.events_per_hour > 0):
            raise ValueError(f"events_per_hour must be > 0, got {self.events_per_hour}")

    def learning_config(self) -> dict[str, Any]:
        """The settings that shape learning, as recorded in the state file and summaries."""
        return {
            "lr_size": self.replay.lr_size,
            "lr_bits": self.replay.bits,
            "class_balanced": self.replay.class_balanced,
            **asdict(self.train),
            **asdict(self.sgd),
            "profile": self.profile,
            "seed": self.seed,
        }


def check_eval_every(eval_every: object) -> None:
    """Refuse an ``eval_every`` that is not an int >= 1 (``ValueError`` naming it)."""
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(
            f"eval_every must be an integer >= 1 (learned events between accuracy "
            f"measurements), not {eval_every!r}"
        )


__all__ = [
    "ConnectSettings",
    "DeliverySettings",
    "Hardware",
    "NodeSettings",
    "PowerSettings",
    "ReplaySettings",
    "check_eval_every",
]
