"""A node's settings: read once at the edge (CLI flags), passed down as one frozen value."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dataset_stream.protocol import Limits, validate_device_id, validate_prefix
from device.learner import TrainConfig
from device.nn import SGDConfig
from device.replay import SUPPORTED_BITS


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """Latent-replay memory: capacity N_LR, bits per value (32 = FP32), class balance."""

    size: int = 1500
    bits: int = 8
    class_balanced: bool = False

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"replay size must be >= 0, got {self.size}")
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"replay bits must be one of {SUPPORTED_BITS}, got {self.bits}")


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """Everything one node needs besides its model and its broker."""

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

    def __post_init__(self) -> None:
        validate_device_id(self.device_id)
        validate_prefix(self.prefix)
        if not (math.isfinite(self.events_per_hour) and self.events_per_hour > 0):
            raise ValueError(f"events_per_hour must be > 0, got {self.events_per_hour}")

    def learning_config(self) -> dict[str, Any]:
        """The settings that shape learning, as recorded in the state file and summaries."""
        return {
            "lr_size": self.replay.size,
            "lr_bits": self.replay.bits,
            "class_balanced": self.replay.class_balanced,
            **asdict(self.train),
            **asdict(self.sgd),
            "profile": self.profile,
            "seed": self.seed,
        }


__all__ = ["NodeSettings", "ReplaySettings"]
