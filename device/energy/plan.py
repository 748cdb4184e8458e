"""Planning sweeps: LR layer x LR count x LR bits x event rate -> memory, energy, lifetime.

Every row's lifetime includes an inference duty (``inference_per_s``, default none) at the
cost :func:`~device.energy.inference_cost` gives for the row's LR layer.

Pure: the caller supplies the layers of each LR layer and parsed run summaries
(:class:`~dataset_stream.protocol.RunSummary`, ``RunSummary.from_json``); writing the CSV
and the plot is the command line's job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from device.energy.config import CostConfig
from device.energy.cost import event_cost, inference_cost
from device.energy.lifetime import Duty
from device.energy.profile import Profile
from device.learning.layers import LayerInfo

if TYPE_CHECKING:
    from dataset_stream.protocol import RunSummary

MATCH_KEYS: tuple[str, ...] = ("lr_layer", "lr_size", "lr_bits", "events_per_hour")


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One configuration of a sweep and what it costs."""

    lr_layer: int
    lr_size: int
    lr_bits: int
    events_per_hour: float
    lr_memory_bytes: int
    total_memory_bytes: int
    fits: bool
    latency_s: float
    energy_j: float
    lifetime_h: float
    max_events_per_hour: float
    sustainable: bool  # the rates fit in the time there is
    inference_per_s: float = 0.0  # samples classified per second, in the lifetime
    energy_per_inference_j: float = 0.0  # one sample
    accuracy: float | None = None

    def __post_init__(self) -> None:
        if self.accuracy is not None and not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"accuracy must be in 0..1, got {self.accuracy!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep(
    layers_for: Callable[[int], Sequence[LayerInfo]],
    profile: Profile,
    base: CostConfig,
    *,
    lr_layers: Iterable[int],
    lr_sizes: Iterable[int],
    lr_bits: Iterable[int],
    rates: Iterable[float],
    inference_per_s: float = 0.0,
) -> list[PlanRow]:
    """Cost every combination, with a full LR memory (``n_replay = lr_size``) and a full battery,
    classifying ``inference_per_s`` samples per second besides learning."""
    rate_list = list(rates)
    rows: list[PlanRow] = []
    for layer in lr_layers:
        layers = layers_for(layer)
        inference = inference_cost(layers, profile, 1)
        inference_j = inference.energy_j["total"]
        for size in lr_sizes:
            for bits in lr_bits:
                config = replace(base, lr_size=size, lr_bits=bits)
                cost = event_cost(
                    layers, profile, config, n_new=config.new_per_event, n_replay=size
                )
                latency = cost.latency_s["total"]
                energy = cost.energy_j["total"]
                for rate in rate_list:
                    duty = Duty.of_costs(
                        cost,
                        inference,
                        profile,
                        events_per_hour=rate,
                        inference_per_s=inference_per_s,
                    )
                    rows.append(
                        PlanRow(
                            lr_layer=layer,
                            lr_size=size,
                            lr_bits=bits,
                            events_per_hour=rate,
                            lr_memory_bytes=cost.memory.bytes_of("lr_memory"),
                            total_memory_bytes=sum(p.bytes for p in cost.memory.placements),
                            fits=cost.memory.fits,
                            latency_s=latency,
                            energy_j=energy,
                            lifetime_h=duty.lifetime_h,
                            max_events_per_hour=duty.max_events_per_hour,
                            sustainable=duty.sustainable,
                            inference_per_s=inference_per_s,
                            energy_per_inference_j=inference_j,
                        )
                    )
    return rows


def summary_accuracy(summary: RunSummary) -> tuple[dict[str, float], float] | None:
    """``(config keys to match, mean final accuracy over devices)`` of one run summary.

    The keys are the :data:`MATCH_KEYS` the summary's ``config`` names (``vega-emu up`` records
    ``lr_size`` and ``lr_bits``); devices without an accuracy are skipped; ``None`` if none has
    one. A matching key that is not a number is a ``ValueError``.
    """
    accuracies = [d.accuracy for d in summary.devices if d.accuracy is not None]
    if not accuracies:
        return None
    keys: dict[str, float] = {}
    for key in MATCH_KEYS:
        if key not in summary.config:
            continue
        value = summary.config[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"run summary: config {key} = {value!r} is not a number")
        keys[key] = float(value)
    return keys, math.fsum(accuracies) / len(accuracies)


def attach_accuracy(rows: Sequence[PlanRow], summaries: Iterable[RunSummary]) -> list[PlanRow]:
    """Give each row the mean accuracy of the summaries whose config matches it.

    A summary matches a row when every sweep key it names (lr_layer, lr_size, lr_bits,
    events_per_hour) equals the row's value; keys it does not name match anything.
    """
    measured = [found for s in summaries if (found := summary_accuracy(s)) is not None]
    out: list[PlanRow] = []
    for row in rows:
        values = [
            accuracy
            for keys, accuracy in measured
            if all(math.isclose(getattr(row, k), v) for k, v in keys.items())
        ]
        accuracy = math.fsum(values) / len(values) if values else None
        out.append(replace(row, accuracy=accuracy))
    return out


__all__ = ["MATCH_KEYS", "PlanRow", "attach_accuracy", "summary_accuracy", "sweep"]
