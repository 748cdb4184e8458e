"""Planning with harvesting: which configurations of a sweep are energy-neutral.

For every row of :func:`device.energy.plan.sweep` the node's load is simulated forward against
a harvester (:mod:`device.energy.simulate`; with a policy, :func:`device.energy.policy.run_policy`)
in a cell of a chemistry at a temperature, over a horizon (a year by default; a shorter trace
repeats). The load of a row: sleep, inferences and the radio's idle and prediction traffic all
the time, and per learning event the event's energy plus its telemetry over the radio. What the
radio cannot carry is listed with the row, never hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from device.energy.config import CostConfig
from device.energy.cost import event_cost
from device.energy.harvest import Harvester
from device.energy.plan import PlanRow, sweep
from device.energy.policy import NodeLoad, Policy, PolicyRun, reduced_config, run_policy
from device.energy.profile import Profile
from device.energy.radio import TELEMETRY_BYTES, Radio, RadioProblem, Traffic, price_traffic
from device.energy.simulate import YEAR_S, Simulation, Storage, simulate
from device.learning.layers import LayerInfo


@dataclass(frozen=True, slots=True)
class HarvestRow:
    """One configuration: its :class:`PlanRow`, the load simulated, what happened (a
    :class:`Simulation` without a policy, a :class:`PolicyRun` with one) and what the radio
    cannot carry."""

    row: PlanRow
    load: NodeLoad
    outcome: Simulation | PolicyRun
    problems: tuple[RadioProblem, ...] = ()

    @property
    def neutral(self) -> bool:
        return self.outcome.neutral

    @property
    def depleted_at_s(self) -> float | None:
        return self.outcome.depleted_at_s

    @property
    def learned_share(self) -> float | None:
        """Share of the events learned (None without a policy: all, until depleted)."""
        return self.outcome.learned_share if isinstance(self.outcome, PolicyRun) else None


def harvest_sweep(
    layers_for: Callable[[int], Sequence[LayerInfo]],
    profile: Profile,
    base: CostConfig,
    *,
    lr_layers: Iterable[int],
    lr_sizes: Iterable[int],
    lr_bits: Iterable[int],
    rates: Iterable[float],
    storage: Storage,
    harvester: Harvester | None,
    radio: Radio,
    policy: Policy | None = None,
    inference_per_s: float = 0.0,
    telemetry_bytes: int = TELEMETRY_BYTES,
    horizon_s: float = YEAR_S,
    step_s: float = 3600.0,
) -> list[HarvestRow]:
    """:func:`sweep`'s rows, each simulated forward (module docstring)."""
    rows = sweep(
        layers_for,
        profile,
        base,
        lr_layers=lr_layers,
        lr_sizes=lr_sizes,
        lr_bits=lr_bits,
        rates=rates,
        inference_per_s=inference_per_s,
    )
    reduced: dict[tuple[int, int, int], float] = {}
    out: list[HarvestRow] = []
    for row in rows:
        traffic = Traffic(
            row.events_per_hour, telemetry_bytes=telemetry_bytes, predictions_per_s=inference_per_s
        )
        radio_cost = price_traffic(radio, traffic)
        telemetry_j = radio_cost.telemetry_w * 3600.0 / row.events_per_hour
        base_w = (
            profile.sleep_w
            + inference_per_s * row.energy_per_inference_j
            + radio_cost.idle_w
            + radio_cost.predictions_w
            + radio_cost.downlink_w
        )
        reduced_j: float | None = None
        if policy is not None and policy.kind == "low-soc":
            key = (row.lr_layer, row.lr_size, row.lr_bits)
            if key not in reduced:
                config = reduced_config(replace(base, lr_size=row.lr_size, lr_bits=row.lr_bits))
                cost = event_cost(
                    layers_for(row.lr_layer),
                    profile,
                    config,
                    n_new=config.new_per_event,
                    n_replay=row.lr_size,
                )
                reduced[key] = cost.energy_j["total"]
            reduced_j = reduced[key] + telemetry_j
        load = NodeLoad(base_w, row.events_per_hour, row.energy_j + telemetry_j, reduced_j)
        outcome: Simulation | PolicyRun
        if policy is None:
            outcome = simulate(load.mean_w, storage, harvester, horizon_s=horizon_s, step_s=step_s)
        else:
            outcome = run_policy(
                policy, load, storage, harvester, horizon_s=horizon_s, step_s=step_s
            )
        out.append(HarvestRow(row, load, outcome, radio_cost.problems))
    return out


__all__ = ["HarvestRow", "harvest_sweep"]
