"""``vega-emu model ...``: build, split and inspect model bundles."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
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
    help="Model bundles: the default CNN, MobileNet-V1, splitting ONNX models, per-layer costs.",
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
            "smartwatch windows (needs pip install 'vega-emu[watch]')."
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
        typer.Option(help=".npz whose first array is float32 calibration input [N, ...]."),
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
