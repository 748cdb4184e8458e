"""Options shared by ``vega-emu node`` and ``vega-emu up``: the model and the learning settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from device.cli._runtime import console, fail

if TYPE_CHECKING:
    from device.fleet.spec import DeviceClass
    from device.model.bundle import ModelBundle
    from device.node.settings import NodeSettings


ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Model bundle directory (vega-emu model ...), or 'default': the cached default "
        "digits model, built on first use (also what no --model means).",
        file_okay=False,
    ),
]
LrSizeOpt = Annotated[int, typer.Option("--lr-size", help="Latent replays kept (N_LR).", min=0)]
LrBitsOpt = Annotated[
    int, typer.Option("--lr-bits", help="Bits per stored LR value: 32 (FP32), 8, 7, 6, 5 or 4.")
]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Epochs per learning event.", min=1)]
MbOpt = Annotated[int, typer.Option("--mb", help="Mini-batch size (new + replays).", min=1)]
NewPerMbOpt = Annotated[
    int, typer.Option("--new-per-mb", help="New latents per mini-batch; the rest are replays.")
]
LearningRateOpt = Annotated[
    float | None,
    typer.Option(
        "--learning-rate",
        help="SGD learning rate (momentum 0.9, weight decay 5e-4). Default: the model's "
        "recommended rate (\\[train] learning_rate in model.toml), else the paper's 0.001.",
    ),
]
#: ``--lr``, the old spelling of ``--learning-rate``: still accepted, hidden from --help.
OldLearningRateOpt = Annotated[
    float | None,
    typer.Option("--lr", hidden=True, help="Deprecated: use --learning-rate."),
]
ProfileOpt = Annotated[
    str, typer.Option("--profile", help="Energy profile: vega, stm32l4 or a TOML file.")
]
BalancedOpt = Annotated[
    bool,
    typer.Option("--class-balanced", help="Replace replays of the most represented class first."),
]

NodeRadioOpt = Annotated[
    str | None,
    typer.Option(
        "--radio",
        help="Radio the node charges its telemetry, predictions and downlinks to: none (the "
        "paper's case, the default), ble, lorawan-sf7..lorawan-sf12, ltem, nbiot or a TOML file.",
    ),
]
NodeBatteryOpt = Annotated[
    str | None,
    typer.Option(
        "--battery",
        help="Battery chemistry of the profile's capacity: ideal (the paper's, the default), "
        "li-socl2, lipo, alkaline or a chemistry TOML file.",
    ),
]
NodeTemperatureOpt = Annotated[
    float | None,
    typer.Option(
        "--temperature", help="Cell temperature (degrees C) for self-discharge. Default 20."
    ),
]
NodePolicyOpt = Annotated[
    str | None,
    typer.Option(
        "--policy",
        help="Energy-aware learning policy: always (learn every event, the default), "
        "soc-threshold:X (below state of charge X an event is not learned; answered "
        "energy_policy), low-soc:X (below X a reduced event: half the epochs and replays) or "
        "defer-to-sun (needs --harvest: a batch arriving while the harvest does not cover the "
        "load is held, answered deferred, and learned when the sun comes).",
    ),
]
NodeHarvestOpt = Annotated[
    str | None,
    typer.Option(
        "--harvest",
        help="A harvester that recharges the battery between events, on the simulated clock: "
        "solar:FILE.csv (an irradiance trace), solar:clear-sky[:LAT[:DAY]] or constant:W. "
        "Default: none.",
    ),
]

NodeBatchesOverRadioOpt = Annotated[
    bool,
    typer.Option(
        "--batches-over-radio",
        help="The batches arrive over the radio: each one's reception is charged at its real "
        "size (default: captured locally, the paper's case; needs a --radio).",
    ),
]

NodeEvalEveryOpt = Annotated[
    int,
    typer.Option(
        "--eval-every",
        help="Measure accuracy on the eval set every K learned events (K, 2K, ...; the factory "
        "model always); in between, telemetry carries the last measurement and says when it "
        "was made (accuracy_events). Default 1: after every event.",
    ),
]


@dataclass(frozen=True, slots=True)
class LearningOptions:
    """The learning flags as typed on the command line."""

    lr_size: int = 1500
    lr_bits: int = 8
    epochs: int = 4
    mb: int = 128
    new_per_mb: int = 21
    learning_rate: float | None = None
    profile: str = "vega"
    class_balanced: bool = False
    radio: str | None = None
    battery: str | None = None
    temperature_c: float | None = None
    policy: str | None = None
    harvest: str | None = None
    batches_over_radio: bool = False
    eval_every: int = 1

    def settings(
        self, device_id: str, state_dir: Path, bundle: ModelBundle, *, seed: int = 0
    ) -> NodeSettings:
        """Checked :class:`NodeSettings`; a bad flag exits with status 2 and names it."""
        from device.energy import EnergyError

        try:
            return self.device_class().settings(device_id, state_dir, bundle, seed=seed)
        except (ValueError, EnergyError) as exc:
            raise fail(str(exc), code=2) from exc

    def device_class(self, name: str = "default", count: int = 1) -> DeviceClass:
        """These flags as one class of a fleet spec (:mod:`device.fleet.spec`); a bad
        ``--radio``, ``--battery``, ``--temperature``, ``--policy``, ``--harvest`` or
        ``--eval-every`` exits with
        status 2 and names it."""
        from device.fleet.spec import DeviceClass

        device_class = DeviceClass(
            name=name,
            count=count,
            profile=self.profile,
            lr_size=self.lr_size,
            lr_bits=self.lr_bits,
            epochs=self.epochs,
            mb=self.mb,
            new_per_mb=self.new_per_mb,
            learning_rate=self.learning_rate,
            class_balanced=self.class_balanced,
            radio=self.radio,
            battery=self.battery,
            temperature_c=self.temperature_c,
            policy=self.policy,
            harvest=self.harvest,
            batches_over_radio=self.batches_over_radio,
            eval_every=self.eval_every,
        )
        flags = {
            "radio": "--radio",
            "battery": "--battery",
            "temperature_c": "--temperature",
            "policy": "--policy",
            "harvest": "--harvest",
            "eval_every": "--eval-every",
        }
        for problem in device_class.problems():
            field, _, text = problem.partition(": ")
            if field in flags:
                raise fail(f"{flags[field]}: {text}", code=2)
        return device_class


def learning_rate_flag(learning_rate: float | None, old_lr: float | None) -> float | None:
    """The rate of ``--learning-rate``, or of the deprecated ``--lr`` with a one-line notice on
    stderr; both at once exit with status 2."""
    if old_lr is None:
        return learning_rate
    if learning_rate is not None:
        raise fail("give --learning-rate only (--lr is its deprecated spelling)", code=2)
    console.print(
        "[yellow]deprecated:[/] --lr is now --learning-rate; --lr will go away", highlight=False
    )
    return old_lr


def load_model(path: Path | None, *, seed: int = 0, dataset: str = "digits") -> ModelBundle:
    """:func:`device.app.load_model` (the default bundle of ``dataset``), announcing a first
    build on the console; a bundle that cannot be loaded, or a data set the default bundle
    cannot be trained from, exits with status 2."""
    from dataset_stream.errors import SourceError
    from device.app.models import load_model as load
    from device.model.errors import ModelError

    try:
        return load(path, seed=seed, announce=console.print, dataset=dataset)
    except (ModelError, SourceError) as exc:
        raise fail(str(exc), code=2) from exc
