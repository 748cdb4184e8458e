"""``vega-emu energy`` and ``vega-emu plan``: analytical latency, energy, memory and lifetime."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from device.cli._runtime import fail
from device.learning.layers import lr_layer_of

if TYPE_CHECKING:
    from device.app.energy import AnalysedModel
    from device.energy import CostConfig, PlanRow
    from device.learning.layers import LayerInfo

ModelDir = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Model bundle directory (its layers and LR layer), or 'default': the default "
        "bundle vega-emu up runs.",
    ),
]
MobileNet = Annotated[
    bool,
    typer.Option("--mobilenet-v1", help="Analytical MobileNet-V1 (the default without --model)."),
]
Res = Annotated[int, typer.Option(help="MobileNet-V1 input resolution.")]
Width = Annotated[float, typer.Option(help="MobileNet-V1 width multiplier.")]
Classes = Annotated[int, typer.Option(help="Classifier outputs.")]
ProfileOpt = Annotated[
    str, typer.Option("--profile", help="vega, vega-hw, stm32l4 or a profile TOML file.")
]
NewPerEvent = Annotated[
    int | None,
    typer.Option(
        help="New samples per learning event. Default: with --model default, the mean of the "
        "events vega-emu up streams to it; else the paper's 300."
    ),
]
MbSize = Annotated[int, typer.Option("--mb", help="Mini-batch size.")]
NewPerMb = Annotated[int, typer.Option(help="New latents per mini-batch (the rest are replays).")]
Epochs = Annotated[int, typer.Option(help="Epochs per learning event.")]
RadioOpt = Annotated[
    str | None,
    typer.Option(
        "--radio",
        help="Radio carrying telemetry and predictions: none (the paper's case), ble, "
        "lorawan-sf7..lorawan-sf12, ltem, nbiot or a radio TOML file.",
    ),
]
BatteryOpt = Annotated[
    str | None,
    typer.Option(
        "--battery",
        help="Battery chemistry of the profile's capacity: ideal (the paper's), li-socl2, "
        "lipo, alkaline or a chemistry TOML file.",
    ),
]
TemperatureOpt = Annotated[
    str | None,
    typer.Option(
        "--temperature",
        help="Cell temperature for self-discharge: degrees C, or a CSV trace (time_s or "
        "time, temp_c). Default 20.",
    ),
]
TelemetryBytes = Annotated[
    int | None,
    typer.Option(
        help="Bytes of one telemetry message over the radio (default 387, the protocol's example)."
    ),
]
InferenceRate = Annotated[
    float,
    typer.Option(
        "--inference-rate",
        help="Samples classified per second between learning events (each: the frozen stage "
        "at INT8 + the adaptive stage's forward pass), included in the lifetime. Default 0.",
    ),
]


@dataclass(frozen=True, slots=True)
class _Choice:
    """The model to cost: a function LR layer -> layers (``None``: the bundle's own / the
    default 27), which model it is, and the new samples per event to charge."""

    layers_for: Callable[[int | None], list[LayerInfo]]
    model: AnalysedModel
    new_per_event: int
    fixed: bool  # a bundle, cut at one LR layer


def _choose(
    model: Path | None,
    mobilenet: bool,
    res: int,
    width: float,
    classes: int,
    new_per_event: int | None,
) -> _Choice:
    from device.app.energy import PAPER_NEW_PER_EVENT, AnalysedModel, cost_bundle

    if model is not None and mobilenet:
        raise fail("give either --model DIR or --mobilenet-v1, not both", code=2)
    if model is not None:
        costed = cost_bundle(
            model, new_per_event=new_per_event, announce=lambda text: typer.echo(text, err=True)
        )
        bundle_layers = list(costed.layers)

        def from_bundle(lr_layer: int | None) -> list[LayerInfo]:
            if lr_layer is not None and lr_layer != lr_layer_of(bundle_layers):
                raise fail(f"--model {model} is cut at one LR layer; drop --lr-layer(s)", code=2)
            return bundle_layers

        return _Choice(from_bundle, costed.model, costed.new_per_event, fixed=True)
    from device.model.mobilenet import mobilenet_v1_layers

    def analytical(lr_layer: int | None) -> list[LayerInfo]:
        layer = 27 if lr_layer is None else lr_layer
        return mobilenet_v1_layers(res=res, width=width, classes=classes, lr_layer=layer)

    given = new_per_event is not None
    described = AnalysedModel(
        f"MobileNet-V1 {width}/{res}, {classes} classes",
        new_per_event_from="option" if given else "paper",
    )
    count = new_per_event if new_per_event is not None else PAPER_NEW_PER_EVENT
    return _Choice(analytical, described, count, fixed=False)


def _config(**values: Any) -> CostConfig:
    from device.energy import CostConfig

    return CostConfig(**values)


def energy(
    model: ModelDir = None,
    mobilenet_v1: MobileNet = False,
    res: Res = 128,
    width: Width = 1.0,
    classes: Classes = 50,
    lr_layer: Annotated[
        int | None, typer.Option(help="MobileNet-V1 LR layer, 19..27 in the paper (default 27).")
    ] = None,
    profile: ProfileOpt = "vega",
    lr_size: Annotated[int, typer.Option(help="LRs in memory (assumed full).")] = 1500,
    lr_bits: Annotated[int, typer.Option(help="Bits per stored LR value (32 = FP32).")] = 8,
    new_per_event: NewPerEvent = None,
    mb: MbSize = 128,
    new_per_mb: NewPerMb = 21,
    epochs: Epochs = 4,
    events_per_hour: Annotated[float, typer.Option(help="Learning events per hour.")] = 1.0,
    inference_rate: InferenceRate = 0.0,
    radio: RadioOpt = None,
    battery: BatteryOpt = None,
    temperature: TemperatureOpt = None,
    telemetry_bytes: TelemetryBytes = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Latency, energy, memory map and battery lifetime of one learning event (and of one
    inference, with --inference-rate in the lifetime).

    With --radio, --battery or --temperature: the power budget with the radio's and
    self-discharge's shares, and the lifetime of that cell."""
    from device.app.energy import EnergyReport
    from device.energy import (
        EnergyError,
        Temperature,
        load_chemistry,
        load_profile,
        load_radio,
    )
    from device.model.errors import ModelError

    try:
        prof = load_profile(profile)
        choice = _choose(model, mobilenet_v1, res, width, classes, new_per_event)
        config = _config(
            lr_size=lr_size,
            lr_bits=lr_bits,
            new_per_event=choice.new_per_event,
            mb_size=mb,
            new_per_mb=new_per_mb,
            epochs=epochs,
            events_per_hour=events_per_hour,
        )
        layers = choice.layers_for(lr_layer)
        if telemetry_bytes is not None and telemetry_bytes < 0:
            raise ValueError(f"--telemetry-bytes must be >= 0, got {telemetry_bytes}")
        report = EnergyReport.compute(
            layers,
            prof,
            config,
            inference_per_s=_rate(inference_rate),
            model=choice.model,
            radio=None if radio is None else load_radio(radio),
            chemistry=None if battery is None else load_chemistry(battery, prof),
            temperature=None if temperature is None else Temperature.parse(temperature),
            telemetry_bytes=telemetry_bytes,
        )
    except (EnergyError, ModelError, ValueError, OSError) as exc:
        raise fail(str(exc), code=2) from exc
    if as_json:
        typer.echo(report.to_json())
        return
    from device.cli import _energy_view

    _energy_view.show_energy(report)


def _rate(inference_rate: float) -> float:
    if not (math.isfinite(inference_rate) and inference_rate >= 0):
        raise ValueError(f"--inference-rate must be a finite number >= 0, got {inference_rate!r}")
    return inference_rate


def _numbers(text: str, kind: type[int] | type[float], option: str) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise fail(f"{option}: expected comma-separated numbers, got {text!r}", code=2) from None
    if not values:
        raise fail(f"{option}: no values", code=2)
    return values


def plan(
    model: ModelDir = None,
    mobilenet_v1: MobileNet = False,
    res: Res = 128,
    width: Width = 1.0,
    classes: Classes = 50,
    profile: ProfileOpt = "vega",
    lr_layers: Annotated[
        str | None, typer.Option(help="MobileNet-V1 LR layers to sweep (default 19,21,23,25,27).")
    ] = None,
    lr_sizes: Annotated[str, typer.Option(help="LR counts to sweep.")] = "375,750,1500,3000",
    lr_bits: Annotated[str, typer.Option(help="LR bits to sweep (32 = FP32).")] = "6,7,8,32",
    rates: Annotated[str, typer.Option(help="Learning events per hour to sweep.")] = "0.25,1,4",
    new_per_event: NewPerEvent = None,
    mb: MbSize = 128,
    new_per_mb: NewPerMb = 21,
    epochs: Epochs = 4,
    summary: Annotated[
        list[Path] | None,
        typer.Option("--summary", help="Run summary JSON with measured accuracy (repeatable)."),
    ] = None,
    inference_rate: InferenceRate = 0.0,
    harvest: Annotated[
        str | None,
        typer.Option(
            "--harvest",
            help="Simulate each configuration forward with a harvester: solar:FILE (irradiance "
            "CSV: time_s or time, irradiance_w_m2), solar:clear-sky[:LAT[:DAY]] or constant:W.",
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="Energy-aware learning policy: always, soc-threshold:X, low-soc:X or "
            "defer-to-sun.",
        ),
    ] = None,
    radio: RadioOpt = None,
    battery: BatteryOpt = None,
    temperature: TemperatureOpt = None,
    telemetry_bytes: TelemetryBytes = None,
    panel_cm2: Annotated[float, typer.Option(help="Solar panel area, cm2.")] = 10.0,
    panel_efficiency: Annotated[
        float, typer.Option(help="Solar panel efficiency, charger included.")
    ] = 0.15,
    horizon_days: Annotated[
        float, typer.Option(help="Days simulated forward (a shorter trace repeats).")
    ] = 365.0,
    seed: Annotated[int, typer.Option(help="Seed of the clear-sky model's clouds.")] = 0,
    csv_path: Annotated[Path, typer.Option("--csv", help="CSV output.")] = Path("plan.csv"),
    plot_path: Annotated[Path, typer.Option("--plot", help="PNG output.")] = Path("plan.png"),
) -> None:
    """Sweep LR layer x LR count x LR bits x event rate: memory against lifetime (CSV, PNG);
    every lifetime includes --inference-rate samples classified per second.

    With --harvest, --policy, --radio, --battery or --temperature each configuration is
    simulated forward over --horizon-days: energy-neutral, or the days until its cell is first
    empty (with a policy, the share of the events learned)."""
    from dataset_stream.protocol import ProtocolError, RunSummary
    from device.energy import EnergyError, attach_accuracy, load_profile, sweep
    from device.model.errors import ModelError

    summaries: list[RunSummary] = []
    for path in summary or []:
        try:
            summaries.append(RunSummary.from_json(path.read_text("utf-8")))
        except (OSError, ProtocolError) as exc:
            raise fail(f"--summary {path}: {exc}", code=2) from exc
    try:
        prof = load_profile(profile)
        choice = _choose(model, mobilenet_v1, res, width, classes, new_per_event)
        base = _config(
            new_per_event=choice.new_per_event, mb_size=mb, new_per_mb=new_per_mb, epochs=epochs
        )
        layers_for = choice.layers_for
        fixed: list[LayerInfo] | None = None  # a bundle is cut at one LR layer
        if choice.fixed:
            if lr_layers is not None:
                raise fail(f"--model {model} is cut at one LR layer; drop --lr-layers", code=2)
            fixed = layers_for(None)
            layer_list = [lr_layer_of(fixed)]
        else:
            layer_list = _numbers(lr_layers or "19,21,23,25,27", int, "--lr-layers")
        rows: list[PlanRow] = sweep(
            lambda layer: fixed if fixed is not None else layers_for(layer),
            prof,
            base,
            lr_layers=layer_list,
            lr_sizes=_numbers(lr_sizes, int, "--lr-sizes"),
            lr_bits=_numbers(lr_bits, int, "--lr-bits"),
            rates=_numbers(rates, float, "--rates"),
            inference_per_s=_rate(inference_rate),
        )
        rows = attach_accuracy(rows, summaries)
        forward = (harvest, policy, radio, battery, temperature)
        harvested = None
        if any(option is not None for option in forward):
            from device.app.energy import ForwardOptions, plan_forward

            harvested = plan_forward(
                lambda layer: fixed if fixed is not None else layers_for(layer),
                prof,
                base,
                layer_list,
                _numbers(lr_sizes, int, "--lr-sizes"),
                _numbers(lr_bits, int, "--lr-bits"),
                _numbers(rates, float, "--rates"),
                ForwardOptions(
                    harvest,
                    policy,
                    radio,
                    battery,
                    temperature,
                    telemetry_bytes,
                    panel_cm2,
                    panel_efficiency,
                    horizon_days,
                    seed,
                ),
                _rate(inference_rate),
            )
    except (EnergyError, ModelError, ValueError, OSError) as exc:
        raise fail(str(exc), code=2) from exc
    from device.cli import _energy_view

    if harvested is not None:
        try:
            _energy_view.write_harvest_csv(harvested.rows, csv_path)
            _energy_view.write_plot(rows, plot_path, prof.name)
        except OSError as exc:
            raise fail(f"cannot write output: {exc}") from exc
        line = choice.model.describe(choice.new_per_event)
        _energy_view.show_harvest_plan(
            harvested.rows, prof.name, harvested.describe, csv_path, plot_path, model_line=line
        )
        return

    try:
        _energy_view.write_csv(rows, csv_path)
        _energy_view.write_plot(rows, plot_path, prof.name)
    except OSError as exc:
        raise fail(f"cannot write output: {exc}") from exc
    line = choice.model.describe(choice.new_per_event)
    _energy_view.show_plan(rows, prof.name, csv_path, plot_path, model_line=line)


def register(app: typer.Typer) -> None:
    app.command("energy")(energy)
    app.command("plan")(plan)


__all__ = ["energy", "plan", "register"]
