"""``vega-emu up``: the zero-setup main job -- broker, stream and a fleet in one process."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from device.cli._nodeopts import (
    BalancedOpt,
    EpochsOpt,
    LearningOptions,
    LearningRateOpt,
    LrBitsOpt,
    LrSizeOpt,
    MbOpt,
    ModelOpt,
    NewPerMbOpt,
    OldLearningRateOpt,
    ProfileOpt,
    learning_rate_flag,
    load_model,
)
from device.cli._pacing import refused
from device.cli._runtime import console, creatable, fail, run_async, until_stopped

if TYPE_CHECKING:
    from rich.table import Table

    from dataset_stream.protocol import RunSummary
    from device.app.up import Up, UpConfig


def up(
    devices: Annotated[int, typer.Option(help="Number of nodes (node-0000, ...).", min=1)] = 4,
    dataset: Annotated[
        str, typer.Option(help="Data source: digits (bundled) or another source with --model.")
    ] = "digits",
    scenario: Annotated[str, typer.Option(help="nic, nc or ni.")] = "nic",
    events: Annotated[
        int | None, typer.Option(help="Learning events per device (default: all).", min=1)
    ] = None,
    speed: Annotated[
        str, typer.Option(help="max: as fast as the fleet learns; X: X times real time.")
    ] = "max",
    cadence_s: Annotated[
        float, typer.Option("--cadence", help="Simulated seconds between events.")
    ] = 60.0,
    infer_rate: Annotated[
        float,
        typer.Option(
            help="Samples per simulated second each node classifies between events (the next "
            "event's samples, scored when their labels arrive: prequential accuracy).",
            min=0.0,
        ),
    ] = 0.0,
    model: ModelOpt = None,
    lr_size: LrSizeOpt = 1500,
    lr_bits: LrBitsOpt = 8,
    epochs: EpochsOpt = 4,
    mb: MbOpt = 128,
    new_per_mb: NewPerMbOpt = 21,
    learning_rate: LearningRateOpt = None,
    old_lr: OldLearningRateOpt = None,
    profile: ProfileOpt = "vega",
    class_balanced: BalancedOpt = False,
    seed: Annotated[int, typer.Option(help="Seed of the scenario and the default model.")] = 0,
    same_order: Annotated[
        bool, typer.Option("--same-order", help="All devices get the same event order.")
    ] = False,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the nodes' SQLite files here (default: a temporary directory)."),
    ] = None,
    summary_json: Annotated[
        Path | None, typer.Option(help="Write the end-of-run summary as JSON here.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the run's recording (run.sqlite) and HTML report (report/); "
            "default: vega-emu-runs/<date-time> in the current directory.",
            file_okay=False,
        ),
    ] = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Record the run and write its report.")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live table.")] = False,
) -> None:
    """Run an embedded broker, a data stream and a fleet of learning nodes; print a summary."""
    from broker.errors import BrokerError
    from dataset_stream import DatasetStreamError, ScenarioError, SourceError, build_scenario
    from dataset_stream.pacing import Pacing, PacingError, parse_speed
    from dataset_stream.protocol import fleet_ids
    from device.app.up import UpConfig
    from device.errors import DeviceError

    rate = learning_rate_flag(learning_rate, old_lr)
    try:
        pacing = Pacing(cadence_s=cadence_s, speed=parse_speed(speed), infer_per_s=infer_rate)
    except PacingError as exc:
        if exc.field == "cadence_s":  # up words this one as a plain positive number
            raise fail(f"--cadence must be a positive number, not {exc.value!r}", code=2) from exc
        raise refused(exc) from exc
    if summary_json is not None:
        creatable(summary_json, "--summary-json")
    if state_dir is not None:
        creatable(state_dir, "--state-dir")
    run_dir = None
    if report:
        run_dir = out or Path("vega-emu-runs") / time.strftime("%Y%m%d-%H%M%S")
        if (run_dir / "run.sqlite").exists():
            raise fail(f"{run_dir / 'run.sqlite'} exists: give another --out", code=2)
    bundle = load_model(model, seed=seed)
    try:
        plan = build_scenario(dataset, scenario, seed=seed)
    except (ScenarioError, SourceError) as exc:
        raise fail(str(exc), code=2) from exc
    if plan.sample_shape != bundle.input_shape:
        raise fail(
            f"dataset {dataset} gives samples of shape {plan.sample_shape}, the model takes "
            f"{bundle.input_shape}: pass a matching --model",
            code=2,
        )
    ids = fleet_ids(devices)
    options = LearningOptions(
        lr_size, lr_bits, epochs, mb, new_per_mb, rate, profile, class_balanced
    )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    described: dict[str, object] = {
        "devices": devices,
        "dataset": dataset,
        "scenario": scenario,
        "events": events,
        "speed": speed,
        "cadence": cadence_s,
        "infer_rate": infer_rate,
        "model": bundle.name,
    }
    with tempfile.TemporaryDirectory(prefix="vega-emu-up-") as tmp:
        where = state_dir or Path(tmp)
        settings = {d: options.settings(d, where, bundle, seed=seed) for d in ids}
        described |= next(iter(settings.values())).learning_config()
        recording = None if run_dir is None else run_dir / "run.sqlite"
        if recording is not None:  # made now that every flag is known to be good
            creatable(recording, "--out")
        config = UpConfig(
            scenario=plan,
            bundle=bundle,
            settings=settings,
            pacing=pacing,
            events=events,
            same_order=same_order,
            recording=recording,
            described=described,
        )
        try:
            summary = run_async(lambda stop: _run(stop, config, quiet))
        except TimeoutError as exc:  # e.g. the fleet did not connect in time
            raise fail(str(exc) or "timed out waiting for the broker or the fleet") from exc
        except (DatasetStreamError, BrokerError, DeviceError, OSError) as exc:
            raise fail(str(exc) or type(exc).__name__) from exc
    page = None
    if recording is not None and run_dir is not None:
        page = _write_report(recording, run_dir / "report")
    if summary is None:
        console.print("stopped")
    else:
        _print_summary(summary)
        if summary_json is not None:
            try:
                summary_json.write_text(summary.to_json(), encoding="utf-8")
            except OSError as exc:
                raise fail(f"cannot write the summary to {summary_json}: {exc}") from exc
            console.print(f"summary written to {summary_json}")
    if page is not None:
        console.print(f"run recorded in {recording}")
        console.print(f"report: {page}")


async def _run(stop: asyncio.Event, config: UpConfig, quiet: bool) -> RunSummary | None:
    """Run ``config`` with a live table (unless ``quiet``) until it ends or ``stop`` is set."""
    from rich.live import Live

    from device.app.up import Up

    async with Up(config) as up:
        console.print(
            f"[green]up[/]: {len(up.device_ids)} nodes on {up.broker.url}, model "
            f"{config.bundle.name}, {up.stream.per_device} events each"
        )
        work = up.run()
        if quiet:
            return await until_stopped(work, stop)
        with Live(_table(up), console=console, refresh_per_second=4) as live:
            task = asyncio.ensure_future(until_stopped(work, stop))
            while not task.done():
                live.update(_table(up))
                await asyncio.wait({task}, timeout=0.25)  # the table's refresh
            live.update(_table(up))
            return task.result()


def _write_report(recording: Path, where: Path) -> Path:
    from device.observe.recorder import RecordError
    from device.observe.report import render_report

    try:
        page = render_report(recording, where)
    except (RecordError, OSError) as exc:
        raise fail(f"the run is recorded in {recording}, but its report failed: {exc}") from exc
    return page


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(up: Up) -> Table:
    from rich.table import Table

    devices, stream = up.monitor.devices, up.stream
    table = Table(
        title=f"vega-emu fleet: {stream.acked}/{stream.total} events learned", title_justify="left"
    )
    for name in ("device", "state", "events", "acc", "J", "SoC", "life h", "LRs"):
        left = name in ("device", "state")
        table.add_column(
            name, justify="left" if left else "right", no_wrap=left, min_width=9 if left else None
        )
    for dev in sorted(devices):
        rec = devices[dev]
        tel = rec.telemetry
        table.add_row(
            dev,
            rec.state,
            str(rec.events),
            _fmt(tel.accuracy if tel is not None else None, ".3f"),
            _fmt(rec.energy_j, ".3f"),
            _fmt(tel.battery.soc if tel is not None else None, ".4%"),
            _fmt(tel.lifetime_h if tel is not None else None, ",.0f"),
            str(tel.replay.size) if tel is not None else "-",
        )
    return table


def _print_summary(summary: RunSummary) -> None:
    from rich.table import Table

    from dataset_stream.outcome import answers_text

    console.print()
    table = Table(
        title="summary (acc: final accuracy; 1st: after the first event; factory / new cls: on "
        "the factory classes / the classes learned on the device; preq: prequential accuracy, "
        "test-then-train, over n predictions)",
        title_justify="left",
    )
    cols = ("device", "events", "acc", "acc 1st", "factory", "new cls", "preq", "n", "J", "life h")
    for name in cols:
        left = name == "device"
        table.add_column(
            name, justify="left" if left else "right", no_wrap=left, min_width=9 if left else None
        )
    for d in summary.devices:
        table.add_row(
            d.device,
            str(d.events),
            _fmt(d.accuracy, ".3f"),
            _fmt(d.accuracy_first_event, ".3f"),
            _fmt(d.accuracy_factory_classes, ".3f"),
            _fmt(d.accuracy_new_classes, ".3f"),
            _fmt(d.prequential_accuracy, ".3f"),
            str(d.prequential_n),
            _fmt(d.energy_j, ".3f"),
            _fmt(d.lifetime_h, ",.0f"),
        )
    console.print(table)
    s = summary.stream
    answers = answers_text(
        sent=s.sent,
        learned=s.acked - s.duplicates,
        duplicates=s.duplicates,
        refused=s.rejected - s.lost,
        lost=s.lost,
        unanswered=s.unanswered,
    )
    console.print(f"{answers}, in {s.wall_s:.1f} s wall time", highlight=False)
    if s.infer_sent:
        scored = [d for d in summary.devices if d.prequential_n]
        n = sum(d.prequential_n for d in scored)
        right = sum((d.prequential_accuracy or 0.0) * d.prequential_n for d in scored)
        preq = f"; prequential accuracy {right / n:.3f} over {n} scored" if n else ""
        answered = sum(d.predictions for d in summary.devices)
        console.print(f"{s.infer_sent} inference requests sent, {answered} answered{preq}")
    if s.reconnects:
        console.print(
            f"the stream rode out {s.reconnects} broker outage(s): {s.late} event(s) late, "
            f"{s.republished} re-published"
        )


def register(app: typer.Typer) -> None:
    app.command("up")(up)
