"""``vega-emu model ...``: build, split and inspect model bundles."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from rich.markup import escape

from device.cli._runtime import console, creatable, fail
from device.cli._tables import Col, fit_table
from device.cli._units import count

if TYPE_CHECKING:
    from rich.table import Table

    from device.model.bundle import ModelBundle

model_app = typer.Typer(
    help="Model bundles: the default CNN, a model for your own data, MobileNet-V1, splitting "
    "ONNX models, per-layer costs.",
    no_args_is_help=True,
)

OutOpt = Annotated[Path, typer.Option("--out", help="Bundle directory to create (must be new).")]


def _digits_factory() -> tuple[object, object]:
    from dataset_stream.scenarios import factory_split

    return factory_split(dataset="digits", scenario="nic", seed=0)


def _build_watch(out: Path, lr_layer: str | None, seed: int) -> ModelBundle:
    from dataset_stream.scenarios import factory_split
    from device.model.watch import WATCH_LR_LAYER, build_watch

    if lr_layer not in (None, WATCH_LR_LAYER):
        raise fail(f"the watch model is cut after {WATCH_LR_LAYER} only", code=2)
    x, y = factory_split(dataset="watch", scenario="nc", seed=0)
    return build_watch(x, y, out, seed=seed)


@model_app.command("build-default")
def build_default_cmd(
    out: OutOpt,
    lr_layer: Annotated[
        str | None, typer.Option(help="Layer whose output is the LR (default p2: 32x4x4).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and training.")] = 0,
    dataset: Annotated[
        str,
        typer.Option(
            help="digits: the 2-D CNN for 1x32x32 digits; watch: the 1-D CNN for 6x100 "
            "smartwatch windows (needs pip install 'vega-emu\\[watch]')."
        ),
    ] = "digits",
) -> None:
    """Train a default CNN on its data set's factory split and write its bundle."""
    from dataset_stream.errors import SourceError
    from device.model.default import build_default
    from device.model.errors import ModelError

    if dataset not in ("digits", "watch"):
        raise fail(f"--dataset must be digits or watch, not {dataset!r}", code=2)
    creatable(out, "--out")
    start = time.perf_counter()
    try:
        if dataset == "watch":
            bundle = _build_watch(out, lr_layer, seed)
        else:
            x, y = _digits_factory()
            bundle = build_default(x, y, out, lr_layer=lr_layer, seed=seed)  # type: ignore[arg-type]
    except (ModelError, SourceError) as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"[green]default bundle[/] {out} (LR {bundle.lr_shape}) in "
        f"{time.perf_counter() - start:.1f} s"
    )


class Arch(StrEnum):
    cnn2d = "cnn2d"
    cnn1d = "cnn1d"
    mlp = "mlp"


@model_app.command("build")
def build_cmd(
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="Your data: a .csv of sensor readings or a .npz of arrays, or a dataset spec "
            "csv[...]:PATH / npz[...]:PATH as stream and up take it (docs/datasets.md).",
            show_default=False,
        ),
    ],
    out: OutOpt,
    x: Annotated[
        str | None,
        typer.Option(
            "--x",
            help="CSV: the channel columns, comma-separated (default: every column but the "
            "label, session and a time column). NPZ: the array of samples (default x).",
        ),
    ] = None,
    y: Annotated[
        str | None,
        typer.Option(
            "--y", help="The label column or array (default: label for a CSV, y for an NPZ)."
        ),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            help="The session column or array: subject, recording, day; the test set is held "
            "out by session (default: session)."
        ),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            help="CSV: readings per sample (default 1: each line is a feature vector; W > 1: "
            "windows \\[channels, W] cut inside runs of one session and label).",
            min=1,
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(help="CSV: readings between two window starts (default window // 2).", min=1),
    ] = None,
    factory_classes: Annotated[
        str | None,
        typer.Option(
            "--factory-classes",
            help="The classes the factory model is trained on, by name or label index, "
            "comma-separated (default: 30% of them, picked by --seed); the devices learn the "
            "others.",
        ),
    ] = None,
    arch: Annotated[
        Arch | None,
        typer.Option(
            help="cnn2d for images \\[C, H, W], cnn1d for windows \\[C, L], mlp for feature "
            "vectors \\[F] (default: the one for the data's sample shape)."
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Training epochs (default: about 6400 sample passes, 4 to 30).", min=1),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the factory pick and the training.")] = 0,
    name: Annotated[str, typer.Option(help="The bundle's name (model.toml).")] = "own-model",
) -> None:
    """Train a small factory model on your own data and write its bundle.

    The model is trained in numpy on the factory classes of every training session (never on
    the test sessions), its frozen stage quantized to INT8 with calibration from that data; the
    bundle carries factory replays and records the factory classes and every class's name, so
    that stream and up with --model DIR send the other classes as learning events. Bad data
    stops it with one error naming the line (or index) and the column (or array). It prints
    the --dataset string to give stream and up. Walk-through: docs/own-data.md.
    """
    import shlex

    from dataset_stream.errors import ScenarioError, SourceError
    from dataset_stream.sources.spec import file_spec
    from device.app.owndata import build_own_model
    from device.model.errors import ModelError

    fields = {"x": x, "y": y, "session": session, "window": window, "stride": stride}
    try:
        spec = str(file_spec(data, {k: str(v) for k, v in fields.items() if v is not None}))
    except SourceError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc
    creatable(out, "--out")
    chosen = None
    if factory_classes is not None:
        chosen = [c.strip() for c in factory_classes.split(",") if c.strip()]
    start = time.perf_counter()
    try:
        built = build_own_model(
            spec,
            out,
            arch=None if arch is None else arch.value,
            factory_classes=chosen,
            seed=seed,
            epochs=epochs,
            name=name,
        )
    except ValueError as exc:
        if isinstance(exc, (SourceError, ScenarioError, ModelError)):
            raise fail(str(exc)) from exc
        raise typer.BadParameter(str(exc), param_hint="--factory-classes") from exc
    except ModelError as exc:
        raise fail(str(exc)) from exc
    bundle = built.bundle
    console.print(
        f"[green]model[/] {escape(str(out))}: {built.arch}, input {list(bundle.input_shape)} "
        f"{bundle.input.dtype}, LR {list(bundle.lr_shape)}, {bundle.num_classes} classes; "
        f"trained on {escape(', '.join(built.factory_classes))} ({built.samples} samples) in "
        f"{time.perf_counter() - start:.1f} s",
        highlight=False,
    )
    quoted = shlex.quote(spec)
    console.print(f"dataset: {escape(quoted)}", highlight=False)
    console.print(
        f"run it: vega-emu up --dataset {escape(quoted)} --model {escape(shlex.quote(str(out)))}",
        highlight=False,
        soft_wrap=True,
    )


@model_app.command("mobilenet-v1")
def mobilenet_cmd(
    out: OutOpt,
    res: Annotated[int, typer.Option(help="Input resolution.")] = 128,
    width: Annotated[float, typer.Option(help="Width multiplier.")] = 1.0,
    lr_layer: Annotated[int, typer.Option(help="Paper layer whose input is the LR (1..27).")] = 27,
    classes: Annotated[int, typer.Option(help="Output classes.")] = 50,
    weights: Annotated[
        Path | None, typer.Option(help="ONNX MobileNet-V1 to take weights from.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the He initialisation.")] = 0,
) -> None:
    """Write a MobileNet-V1 bundle (He-initialised unless --weights) split at --lr-layer."""
    from device.model.errors import ModelError
    from device.model.mobilenet_build import build_mobilenet_v1

    creatable(out, "--out")
    try:
        bundle = build_mobilenet_v1(
            out, res=res, width=width, lr_layer=lr_layer, classes=classes, seed=seed,
            weights=weights,
        )  # fmt: skip
    except (ModelError, ValueError) as exc:
        raise fail(str(exc)) from exc
    console.print(f"[green]MobileNet-V1 bundle[/] {out} (LR {bundle.lr_shape})")


@model_app.command("split")
def split_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX model file.", exists=True, dir_okay=False)],
    at: Annotated[str, typer.Option("--at", help="Tensor whose value is the LR.")],
    out: OutOpt,
    calib: Annotated[
        Path | None,
        typer.Option(help=".npz whose first array is float32 calibration input \\[N, ...]."),
    ] = None,
) -> None:
    """Split an ONNX model at a tensor into an INT8 frozen stage and a numpy head."""
    import numpy as np

    from device.model.errors import ModelError
    from device.model.split import split_onnx

    creatable(out, "--out")
    data = None
    if calib is not None:
        try:
            with np.load(calib, allow_pickle=False) as npz:
                data = np.asarray(npz[npz.files[0]], np.float32)
        except (OSError, ValueError, IndexError) as exc:
            raise fail(f"--calib {calib}: cannot read: {exc}") from exc
    try:
        bundle = split_onnx(model, at, out, calibration=data)
    except ModelError as exc:
        raise fail(str(exc)) from exc
    console.print(f"[green]bundle[/] {out} (LR {bundle.lr_shape}, {bundle.num_classes} classes)")


@model_app.command("info")
def info_cmd(
    bundle_dir: Annotated[
        Path | None,
        typer.Argument(
            help="Bundle directory, or 'default' (also without one): the default bundle "
            "vega-emu up runs, built on first use."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """Per-layer kind, output shape, params, forward MACs/sample and stage; LR sizes."""
    from rich.console import Console

    from device.app.models import load_model
    from device.model.errors import ModelError
    from device.model.info import bundle_report

    try:
        bundle = load_model(bundle_dir, announce=lambda text: typer.echo(text, err=True))
        report = bundle_report(bundle)
    except ModelError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(report, indent=2))
        return
    out = Console()
    out.print(info_table(report, str(bundle.path), out.width))
    lr = report["lr"]
    sizes = ", ".join(f"{b} bit: {n:,} B" for b, n in lr["bytes"].items())
    out.print(f"LR {lr['tensor']!r} shape {lr['shape']} ({lr['numel']} values): {sizes}")
    out.print(f"({lr['overhead']}: {lr['overhead_bytes']} B)")
    replays = report["factory_replays"]
    if replays is None:
        out.print("factory replays: none (new nodes start with an empty replay memory)")
    else:
        classes = ", ".join(f"{c}: {n}" for c, n in replays["per_class"].items())
        out.print(
            f"factory replays: {replays['count']} LRs at {replays['bits']} bits "
            f"({replays['bytes']:,} B) in {replays['file']}, per class {classes}"
        )


#: The columns of ``model info``, the least important with the highest ``hide``.
INFO_COLUMNS: Final = (
    Col("layer", "name"),
    Col("kind", "name", hide=1),
    Col("output"),
    Col("params"),
    Col("MACs"),
    Col("stage", "name"),
)


def info_table(report: Mapping[str, Any], where: str, width: int) -> Table:
    """One row per layer of a bundle report (:func:`device.model.info.bundle_report`) and
    the totals, fitted to ``width`` columns."""
    rows = []
    for la in report["layers"]:
        shape = "x".join(str(d) for d in la["out_shape"])
        cells = (la["name"], la["kind"], shape, count(la["params"]), count(la["macs"]), la["stage"])
        rows.append(tuple(escape(str(cell)) for cell in cells))
    t = report["totals"]
    rows.append(("total", "", "", count(t["params"]), count(t["macs"]), ""))
    title = escape(f"{report['name']} ({where})")
    return fit_table(INFO_COLUMNS, rows, width, title=title)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")


__all__ = ["register"]
