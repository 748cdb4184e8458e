"""What ``vega-emu energy`` reports, as one typed value: a learning event, an inference, a lifetime.

:meth:`EnergyReport.compute` costs one learning event and one inference of a model's layers on a
profile, and the duty of a node that does them at given rates; the terminal view renders the
value, :meth:`EnergyReport.to_json` is the ``--json`` output::

    {"profile", "event", "events_per_hour", "sustainable", "power_w", "battery_j",
     "lifetime_h", "max_events_per_hour",            # null when unbounded
     "inference": {"per_s", "per_sample": {"latency_s", "energy_j"}, "power_w", "power_share",
                   "busy"},
     "frozen_stage": {"int8_mac_per_cycle", "basis"},
     "memory", "layers", "config": {"lr_layer", ...the cost config}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from device.energy import CostConfig, Duty, EventCost, InferenceCost, Profile
    from device.learning.layers import LayerInfo


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class EnergyReport:
    """One learning event and one inference on ``profile``, and a node's duty doing them.

    ``event``: the cost of one learning event with ``config``; ``inference``: the cost of
    classifying one sample; ``duty``: power and lifetime at ``config.events_per_hour`` events
    and ``duty.inference_per_s`` inferences per second; ``lr_layer``: the LR layer's number.
    """

    profile: Profile
    config: CostConfig
    lr_layer: int
    event: EventCost
    inference: InferenceCost
    duty: Duty

    def __post_init__(self) -> None:
        if self.inference.n_samples != 1:
            raise ValueError(
                f"inference must be the cost of one sample, not of {self.inference.n_samples}"
            )

    @classmethod
    def compute(
        cls,
        layers: Sequence[LayerInfo],
        profile: Profile,
        config: CostConfig,
        *,
        inference_per_s: float = 0.0,
    ) -> EnergyReport:
        """Cost ``layers`` on ``profile``: an event of ``config.new_per_event`` new samples
        with ``config.lr_size`` replays, one inference, and the duty at ``config``'s event rate
        plus ``inference_per_s`` (an :class:`~device.energy.EnergyError` for a bad value)."""
        from device.energy import Duty, event_cost, inference_cost
        from device.learning.layers import lr_layer_of

        event = event_cost(
            layers, profile, config, n_new=config.new_per_event, n_replay=config.lr_size
        )
        inference = inference_cost(layers, profile, 1)
        duty = Duty.of_costs(
            event,
            inference,
            profile,
            events_per_hour=config.events_per_hour,
            inference_per_s=inference_per_s,
        )
        return cls(profile, config, lr_layer_of(layers), event, inference, duty)

    @property
    def lifetime_h(self) -> float | None:
        """Hours a full battery lasts at the duty (None: forever, nothing is spent)."""
        return _finite(self.duty.lifetime_h)

    @property
    def max_events_per_hour(self) -> float | None:
        """The largest sustainable event rate beside the inferences (None: unbounded)."""
        return _finite(self.duty.max_events_per_hour)

    @property
    def inference_power_share(self) -> float:
        """The part of the mean power spent classifying (0 when no power is spent)."""
        duty = self.duty
        return duty.inference_power_w / duty.power_w if duty.power_w > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` object (key order included: see the module docstring)."""
        event, inference, duty, profile = self.event, self.inference, self.duty, self.profile
        return {
            "profile": profile.name,
            "event": event.as_dict(),
            "events_per_hour": self.config.events_per_hour,
            "sustainable": duty.sustainable,
            "power_w": duty.power_w,
            "battery_j": profile.battery_j,
            "lifetime_h": self.lifetime_h,
            "max_events_per_hour": self.max_events_per_hour,
            "inference": {
                "per_s": duty.inference_per_s,
                "per_sample": {"latency_s": inference.latency_s, "energy_j": inference.energy_j},
                "power_w": duty.inference_power_w,
                "power_share": self.inference_power_share,
                "busy": duty.inference_busy,
            },
            "frozen_stage": {
                "int8_mac_per_cycle": profile.int8_mac_per_cycle,
                "basis": profile.int8_basis,
            },
            "memory": event.memory.as_dict(),
            "layers": [layer.as_dict() for layer in event.layers],
            "config": {"lr_layer": self.lr_layer, **self.config.as_dict()},
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON, the output of ``vega-emu energy --json``."""
        return json.dumps(self.to_dict(), indent=2)


__all__ = ["EnergyReport"]
