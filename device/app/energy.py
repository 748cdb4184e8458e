"""What ``vega-emu energy`` reports, as one typed value: a learning event, an inference, a lifetime.

:meth:`EnergyReport.compute` costs one learning event and one inference of a model's layers on a
profile, and the duty of a node that does them at given rates; the terminal view renders the
value, :meth:`EnergyReport.to_json` is the ``--json`` output::

    {"profile", "event", "events_per_hour", "sustainable", "power_w", "battery_j",
     "lifetime_h", "max_events_per_hour",            # null when unbounded
     "inference": {"per_s", "per_sample": {"latency_s", "energy_j"}, "power_w", "power_share",
                   "busy"},
     "frozen_stage": {"int8_mac_per_cycle", "basis"},
     "memory", "layers", "config": {"lr_layer", ...the cost config},
     "model": {"name", "path", "default", "new_per_event_from", "benchmark"},
     "budget": {...}}                                # only with a radio, battery or temperature

``budget`` (:meth:`device.energy.Budget.as_dict`) is there only when a radio, a battery
chemistry or a temperature is given: the default report is the paper's, unchanged.

:func:`plan_forward` is ``vega-emu plan``'s forward simulation of every configuration with a
harvester, a policy, a radio and a cell (:mod:`device.energy.harvest_plan`).

``model`` says which model is costed and where the new samples per event come from
(:class:`AnalysedModel`): ``vega-emu energy --model default`` costs the events ``vega-emu up``
streams to the default model, so both give one lifetime at one event rate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from device.app.models import Benchmark
    from device.energy import (
        Budget,
        Chemistry,
        CostConfig,
        Duty,
        EventCost,
        InferenceCost,
        Profile,
        Radio,
        Temperature,
    )
    from device.energy.harvest_plan import HarvestRow
    from device.learning.layers import LayerInfo


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


#: Where an event's new samples come from: the model's benchmark, the option, the paper's 300.
NEW_PER_EVENT_FROM = ("benchmark", "option", "paper")


@dataclass(frozen=True, slots=True)
class AnalysedModel:
    """The model an energy report costs.

    ``name``: the bundle's name or the analytical network's; ``path``: the bundle directory
    (None: analytical); ``default``: the default bundle, the one ``vega-emu up`` runs;
    ``benchmark``: the scenario the model is run on, when known; ``new_per_event_from``: one of
    :data:`NEW_PER_EVENT_FROM`.
    """

    name: str
    path: str | None = None
    default: bool = False
    benchmark: Benchmark | None = None
    new_per_event_from: str = "paper"

    def __post_init__(self) -> None:
        if self.new_per_event_from not in NEW_PER_EVENT_FROM:
            raise ValueError(f"new_per_event_from must be one of {NEW_PER_EVENT_FROM}")
        if self.new_per_event_from == "benchmark" and self.benchmark is None:
            raise ValueError("new samples per event from a benchmark needs the benchmark")

    def describe(self, new_per_event: int) -> str:
        """One line: which model, and where its ``new_per_event`` samples per event come from."""
        if self.path is None:
            what = f"analytical {self.name} (the paper's; --model default: the model up runs)"
        elif self.default:
            what = f"{self.name}, the default bundle up runs ({self.path})"
        else:
            what = f"{self.name} ({self.path})"
        if self.new_per_event_from == "benchmark" and self.benchmark is not None:
            source = f"the mean of its benchmark, {self.benchmark.describe()}"
        elif self.new_per_event_from == "option":
            source = "--new-per-event"
        elif self.path is None or self.benchmark is not None:
            source = "the paper's"
        else:
            source = "the paper's (the bundle names no benchmark: give --new-per-event)"
        return f"model: {what}; {new_per_event} new samples per event, {source}"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "default": self.default,
            "new_per_event_from": self.new_per_event_from,
            "benchmark": None if self.benchmark is None else self.benchmark.as_dict(),
        }


#: New samples per learning event when nothing else says: the paper's 300 images.
PAPER_NEW_PER_EVENT = 300


@dataclass(frozen=True, slots=True)
class CostedBundle:
    """A bundle's layers as the energy model costs them, which model they are, and the new
    samples per event to charge (``new_per_event``)."""

    layers: tuple[LayerInfo, ...]
    model: AnalysedModel
    new_per_event: int


def cost_bundle(
    path: Path | str | None,
    *,
    new_per_event: int | None = None,
    seed: int = 0,
    announce: Callable[[str], None] | None = None,
) -> CostedBundle:
    """The bundle at ``path`` (None or ``default``: the default bundle for ``seed``, built on
    first use, ``announce`` told before), charged ``new_per_event`` new samples per event, by
    default the mean of the scenario the model is run on (for the default bundle: the events
    ``vega-emu up`` streams), else the paper's 300. A
    :class:`~device.model.errors.ModelError` for a bundle that cannot be loaded."""
    from device.app.models import benchmark_of, is_default_bundle, load_model

    bundle = load_model(path, seed=seed, announce=announce)
    benchmark = benchmark_of(path, seed=seed)
    if new_per_event is not None:
        count, source = new_per_event, "option"
    elif benchmark is not None:
        count, source = benchmark.new_per_event, "benchmark"
    else:
        count, source = PAPER_NEW_PER_EVENT, "paper"
    model = AnalysedModel(
        bundle.name,
        str(bundle.path),
        is_default_bundle(path, seed=seed),
        benchmark,
        new_per_event_from=source,
    )
    return CostedBundle(tuple(bundle.layers()), model, count)


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
    model: AnalysedModel | None = None
    budget: Budget | None = None

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
        model: AnalysedModel | None = None,
        radio: Radio | None = None,
        chemistry: Chemistry | None = None,
        temperature: Temperature | None = None,
        telemetry_bytes: int | None = None,
    ) -> EnergyReport:
        """Cost ``layers`` on ``profile``: an event of ``config.new_per_event`` new samples
        with ``config.lr_size`` replays, one inference, and the duty at ``config``'s event rate
        plus ``inference_per_s`` (an :class:`~device.energy.EnergyError` for a bad value);
        ``model`` says which model ``layers`` are (None: not said). With a ``radio``,
        ``chemistry`` or ``temperature`` the report has a :class:`~device.energy.Budget`
        (telemetry messages of ``telemetry_bytes``, default the protocol's example)."""
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
        extra: Budget | None = None
        if radio is not None or chemistry is not None or temperature is not None:
            from device.energy import NO_RADIO, TELEMETRY_BYTES, Temperature, Traffic, budget, ideal

            traffic = Traffic(
                duty.events_per_hour,
                telemetry_bytes=TELEMETRY_BYTES if telemetry_bytes is None else telemetry_bytes,
                predictions_per_s=duty.inference_per_s,
            )
            extra = budget(
                duty,
                profile,
                radio=radio or NO_RADIO,
                chemistry=chemistry or ideal(profile),
                temperature=temperature or Temperature(),
                traffic=traffic,
            )
        return cls(profile, config, lr_layer_of(layers), event, inference, duty, model, extra)

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
            "model": None if self.model is None else self.model.as_dict(),
        } | ({} if self.budget is None else {"budget": self.budget.as_dict()})

    def describe_model(self) -> str | None:
        """The one line saying which model is costed (None when not said)."""
        return None if self.model is None else self.model.describe(self.config.new_per_event)

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON, the output of ``vega-emu energy --json``."""
        return json.dumps(self.to_dict(), indent=2)


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    """The options of ``vega-emu plan`` that simulate forward, as given on the command line."""

    harvest: str | None
    policy: str | None
    radio: str | None
    battery: str | None
    temperature: str | None
    telemetry_bytes: int | None
    panel_cm2: float
    panel_efficiency: float
    horizon_days: float
    seed: int


@dataclass(frozen=True, slots=True)
class ForwardPlan:
    """The simulated rows of a plan and one line saying what was simulated."""

    rows: list[HarvestRow]
    describe: str


def plan_forward(
    layers_for: Callable[[int], list[LayerInfo]],
    prof: Profile,
    base: CostConfig,
    lr_layers: list[int],
    lr_sizes: list[int],
    lr_bits: list[int],
    rates: list[float],
    options: ForwardOptions,
    inference_per_s: float,
) -> ForwardPlan:
    """Every configuration simulated forward with the harvester, policy, radio and cell."""
    from device.energy import (
        NO_RADIO,
        TELEMETRY_BYTES,
        Panel,
        Policy,
        Storage,
        Temperature,
        ideal,
        load_chemistry,
        load_radio,
        parse_harvest,
    )
    from device.energy.errors import CostConfigError
    from device.energy.harvest_plan import harvest_sweep

    if not (math.isfinite(options.horizon_days) and options.horizon_days > 0):
        raise CostConfigError(f"--horizon-days must be > 0, got {options.horizon_days!r}")
    panel = Panel(options.panel_cm2 / 1e4, options.panel_efficiency)
    harvester = (
        None
        if options.harvest is None
        else parse_harvest(options.harvest, panel, seed=options.seed)
    )
    chosen_policy = None if options.policy is None else Policy.parse(options.policy)
    chemistry = ideal(prof) if options.battery is None else load_chemistry(options.battery, prof)
    temperature = (
        Temperature() if options.temperature is None else Temperature.parse(options.temperature)
    )
    radio = NO_RADIO if options.radio is None else load_radio(options.radio)
    storage = Storage(chemistry, chemistry.usable_j(prof.capacity_mah), temperature)
    rows = harvest_sweep(
        layers_for,
        prof,
        base,
        lr_layers=lr_layers,
        lr_sizes=lr_sizes,
        lr_bits=lr_bits,
        rates=rates,
        storage=storage,
        harvester=harvester,
        radio=radio,
        policy=chosen_policy,
        inference_per_s=inference_per_s,
        telemetry_bytes=TELEMETRY_BYTES
        if options.telemetry_bytes is None
        else options.telemetry_bytes,
        horizon_s=options.horizon_days * 86400.0,
    )
    parts = [
        "no harvest" if harvester is None else harvester.describe(),
        f"{chemistry.name} cell ({storage.capacity_j:,.0f} J) at {temperature.describe()}",
        f"radio {radio.name}",
        f"policy {'always' if chosen_policy is None else chosen_policy.describe()}",
        f"{options.horizon_days:g} days",
    ]
    return ForwardPlan(rows, "; ".join(parts))


__all__ = [
    "NEW_PER_EVENT_FROM",
    "PAPER_NEW_PER_EVENT",
    "AnalysedModel",
    "CostedBundle",
    "EnergyReport",
    "ForwardOptions",
    "ForwardPlan",
    "cost_bundle",
    "plan_forward",
]
