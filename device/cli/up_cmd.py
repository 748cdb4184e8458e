"""``vega-emu up``: the zero-setup main job -- broker, stream and a fleet in one process."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from device.cli._logs import configure_logging
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
    NodeBatchesOverRadioOpt,
    NodeBatteryOpt,
    NodeEvalEveryOpt,
    NodeHarvestOpt,
    NodePolicyOpt,
    NodeRadioOpt,
    NodeTemperatureOpt,
    OldLearningRateOpt,
    ProfileOpt,
    learning_rate_flag,
    load_model,
)
from device.cli._pacing import refused
from device.cli._runtime import console, creatable, fail, run_async, until_stopped
from device.cli._tables import Col, fit_table
from device.cli._units import DASH, count, hours, optional, si

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rich.table import Table

    from dataset_stream.protocol import RunSummary
    from device.app.up import Up, UpConfig
    from device.fleet.spec import FleetSpec
    from device.observe.accounting import DeviceRecord


def up(
    devices: Annotated[
        int | None,
        typer.Option(
            help="Number of nodes (node-0000, ...; default 4); with --spec, the spec's classes "
            "scaled to this many in all.",
            min=1,
        ),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="Fleet spec TOML (docs/fleet.md): device classes with distributions of their "
            "settings and availability; its classes set the learning options, model, dataset "
            "and scenario.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    dataset: Annotated[
        str,
        typer.Option(
            help="Data source: digits (bundled), watch (pip install 'vega-emu\\[watch]'), or "
            "another source with --model, e.g. your csv:FILE with the model vega-emu model "
            "build made for it (docs/own-data.md)."
        ),
    ] = "digits",
    scenario: Annotated[str, typer.Option(help="nic, nc or ni.")] = "nic",
    events: Annotated[
        int | None,
        typer.Option(
            help="Learning events per device (default: all the scenario has); past its last "
            "event, events are generated (docs/datasets.md, endless scenarios).",
            min=1,
        ),
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
    radio: NodeRadioOpt = None,
    battery: NodeBatteryOpt = None,
    temperature: NodeTemperatureOpt = None,
    policy: NodePolicyOpt = None,
    harvest: NodeHarvestOpt = None,
    eval_every: NodeEvalEveryOpt = 1,
    batches_over_radio: NodeBatchesOverRadioOpt = False,
    seed: Annotated[int, typer.Option(help="Seed of the scenario and the default model.")] = 0,
    same_order: Annotated[
        bool, typer.Option("--same-order", help="All devices get the same event order.")
    ] = False,
    eval_per_device: Annotated[
        bool,
        typer.Option(
            "--eval-per-device",
            help="Retain the whole eval set on every device's eval topic (the wire contract's "
            "first form) instead of once, shared by reference (1.1 MB a device for digits).",
        ),
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
    from dataset_stream import DatasetStreamError, ScenarioError, SourceError
    from dataset_stream.endless import EndlessScenario
    from dataset_stream.pacing import Pacing, PacingError, parse_speed
    from dataset_stream.protocol import fleet_ids
    from device.app.owndata import scenario_for
    from device.app.up import UpConfig
    from device.errors import DeviceError
    from device.model.errors import DataMismatchError

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
    configure_logging(logging.WARNING, console)
    fleet = None
    if spec is not None:
        fleet = _load_spec(spec, devices)
        logging.getLogger("asyncio").addFilter(_VanishedClientNoise())
        first = fleet.classes[0]
        # a class without a model of its own runs --model (default: the dataset's default)
        model, dataset, scenario = first.model or model, first.dataset, first.scenario
        devices = fleet.size
    bundle = load_model(model, seed=seed, dataset=dataset)
    try:  # with the factory classes the model records, checked against the data's
        plan = scenario_for(dataset, scenario, seed=seed, bundle=bundle)
        if events is not None:  # may go past the finite events: generated ones follow
            plan = EndlessScenario.of(plan)
    except (ScenarioError, SourceError, DataMismatchError) as exc:
        raise fail(str(exc), code=2) from exc
    devices = devices or 4
    ids = fleet_ids(devices) if fleet is None else fleet.device_ids()
    options = LearningOptions(
        lr_size,
        lr_bits,
        epochs,
        mb,
        new_per_mb,
        rate,
        profile,
        class_balanced,
        radio,
        battery,
        temperature,
        policy=policy,
        harvest=harvest,
        batches_over_radio=batches_over_radio,
        eval_every=eval_every,
    )

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
        if fleet is None:
            settings = {d: options.settings(d, where, bundle, seed=seed) for d in ids}
            extra = {}
        else:
            try:
                settings = {
                    m.device_id: m.device_class.for_device(fleet.seed, m.device_id).settings(
                        m.device_id, where, bundle, seed=seed
                    )
                    for m in fleet.members()
                }
            except ValueError as exc:
                raise fail(str(exc), code=2) from exc
            extra = _fleet_extra(fleet)
            described |= {"spec": str(spec), "spec_seed": fleet.seed}
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
            eval_by_reference=not eval_per_device,
            recording=recording,
            described=described,
            **extra,
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


def _load_spec(path: Path, devices: int | None) -> FleetSpec:
    """The spec of ``--spec``, scaled to ``--devices``; ``up`` runs one model, dataset and
    scenario, so its classes must agree on them."""
    from device.fleet.errors import FleetSpecError
    from device.fleet.spec import FleetSpec

    try:
        fleet = FleetSpec.load(path)
        if devices is not None:
            fleet = fleet.scaled(devices)
    except FleetSpecError as exc:
        raise fail(str(exc), code=2) from exc
    first = fleet.classes[0]
    for c in fleet.classes[1:]:
        for key in ("model", "dataset", "scenario"):
            if getattr(c, key) != getattr(first, key):
                raise fail(
                    f"fleet spec {path}: class {c.name!r}: {key} {getattr(c, key)!r} differs "
                    f"from class {first.name!r}'s {getattr(first, key)!r}; vega-emu up runs "
                    "one model, dataset and scenario (run vega-emu fleet and vega-emu stream "
                    "for a spec that mixes them)",
                    code=2,
                )
    return fleet


def _fleet_extra(fleet: FleetSpec) -> dict[str, Any]:
    """The :class:`UpConfig` fields that ``fleet`` sets: offline windows, who misses batches,
    the injected faults, the availability speed, and the devices' facts for the recording."""
    windows = fleet.offline_windows()
    class_of = {m.device_id: m.device_class for m in fleet.members()}
    return {
        "offline": windows,
        "faults": fleet.faults.by_device([(d, c.name) for d, c in class_of.items()]),
        "miss": frozenset(d for d in windows if class_of[d].offline_batches == "miss"),
        "availability_speed": fleet.availability.speed,
        "fleet": {
            "seed": fleet.seed,
            "class": {d: c.name for d, c in class_of.items()},
            "drawn": fleet.drawn(),
            "offline": {d: [[w.start_s, w.end_s] for w in ws] for d, ws in windows.items()},
        },
    }


class _VanishedClientNoise(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for amqtt's delivery to a client
    that vanished (a device gone offline): the embedded broker leaves its PUBACK timeout in a
    task nobody awaits, and the delivery is retried when the client is back."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (
            "ProtocolHandler.mqtt_publish()" in text and "Timeout waiting for PUBACK" in text
        )


async def _run(stop: asyncio.Event, config: UpConfig, quiet: bool) -> RunSummary | None:
    """Run ``config`` with a live table (unless ``quiet``) until it ends or ``stop`` is set."""
    from rich.live import Live

    from device.app.up import Up

    async with Up(config) as up:
        away = f", {len(config.offline)} go offline at times" if config.offline else ""
        console.print(
            f"[green]up[/]: {len(up.device_ids)} nodes on {up.broker.url}, model "
            f"{config.bundle.name}, {up.stream.per_device} events each{away}"
        )
        work = up.run()
        if quiet:
            return await until_stopped(work, stop)
        # The loop builds the table; rich's refresh thread draws the latest one. The loop never
        # takes the live display's lock, which that thread holds while it writes: a terminal
        # slow to take the output (a remote session, a full pseudo-terminal) must not hold up
        # the nodes.
        latest = [_table(up)]
        with Live(get_renderable=lambda: latest[0], console=console, refresh_per_second=4):
            task = asyncio.ensure_future(until_stopped(work, stop))
            while not task.done():
                latest[0] = _table(up)
                await asyncio.wait({task}, timeout=0.25)  # the table's refresh
            latest[0] = _table(up)  # drawn once more when the display stops
            return task.result()


def _write_report(recording: Path, where: Path) -> Path:
    from device.observe.recorder import RecordError
    from device.observe.report import render_report

    try:
        page = render_report(recording, where)
    except (RecordError, OSError) as exc:
        raise fail(f"the run is recorded in {recording}, but its report failed: {exc}") from exc
    return page


def _table(up: Up) -> Table:
    stream = up.stream
    return live_table(
        up.monitor.devices, stream.acked, stream.total, console.width, faults=up.monitor.faults
    )


def live_table(
    devices: Mapping[str, DeviceRecord],
    acked: int,
    total: int,
    width: int,
    *,
    faults: Mapping[str, int] | None = None,
) -> Table:
    """The live table of ``up``: one row per device, fitted to ``width`` columns; its title
    counts the devices offline and the faults injected so far."""
    cols = (
        Col("device", "name"),
        Col("state", "name", hide=2),
        Col("events"),
        Col("acc"),
        Col("energy", hide=3),
        Col("SoC", hide=1),
        Col("life h"),
        Col("LRs", hide=4),
    )
    rows = []
    for dev in sorted(devices):
        rec = devices[dev]
        tel = rec.telemetry
        rows.append(
            (
                escape(dev),
                rec.state,
                count(rec.events),
                optional(tel.accuracy if tel is not None else None, ".3f"),
                si(rec.energy_j, "J"),
                optional(tel.battery.soc if tel is not None else None, ".4%"),
                hours(tel.lifetime_h if tel is not None else None),
                count(tel.replay.size) if tel is not None else DASH,
            )
        )
    offline = sum(1 for rec in devices.values() if rec.state == "offline")
    injected = sum((faults or {}).values())
    title = (
        f"vega-emu fleet: {acked}/{total} events learned"
        + (f", {offline} offline" if offline else "")
        + (f", {injected} fault{'' if injected == 1 else 's'} injected" if injected else "")
    )
    return fit_table(cols, rows, width, title=title)


def summary_table(summary: RunSummary, width: int) -> Table:
    """The end-of-run table of ``up``: one row per device, fitted to ``width`` columns; the
    prequential columns only when something was scored."""
    scored = any(d.prequential_n for d in summary.devices)
    cols = [
        Col("device", "name"),
        Col("events"),
        Col("acc", legend="acc: final accuracy"),
        Col("acc 1st", hide=5, legend="acc 1st: after the first event"),
        Col("factory", hide=3, legend="factory: on the factory classes"),
        Col("new cls", hide=3, legend="new cls: on the classes learned on the device"),
    ]
    if scored:
        cols += [
            Col("preq", hide=1, legend="preq: prequential accuracy (test, then train)"),
            Col("n", hide=1, legend="n: predictions scored"),
        ]
    cols += [Col("energy", hide=4), Col("life h")]
    rows = []
    for d in summary.devices:
        cells = [
            escape(d.device),
            count(d.events),
            optional(d.accuracy, ".3f"),
            optional(d.accuracy_first_event, ".3f"),
            optional(d.accuracy_factory_classes, ".3f"),
            optional(d.accuracy_new_classes, ".3f"),
        ]
        if scored:
            cells += [optional(d.prequential_accuracy, ".3f"), count(d.prequential_n)]
        cells += [si(d.energy_j, "J"), hours(d.lifetime_h)]
        rows.append(cells)
    return fit_table(cols, rows, width, title="summary")


def _print_summary(summary: RunSummary) -> None:
    from dataset_stream.outcome import answers_text

    console.print()
    console.print(summary_table(summary, console.width))
    s = summary.stream
    answers = answers_text(
        sent=s.sent,
        learned=s.acked - s.duplicates,
        duplicates=s.duplicates,
        refused=s.rejected - s.lost - s.skipped,
        lost=s.lost,
        unanswered=s.unanswered,
        skipped=s.skipped,
        deferred=s.deferred,
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
