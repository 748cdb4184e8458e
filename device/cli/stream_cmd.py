"""``vega-emu stream``: publish a continual-learning scenario to a fleet (or dump it to files)."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from device.cli._endless import (
    DriftClassesOpt,
    DriftName,
    DriftOpt,
    DriftPeriodOpt,
    DriftStrengthOpt,
    ForeverOpt,
    HoursOpt,
    RecurAbsentOpt,
    RecurCycleOpt,
    RunLength,
    describe,
    endless_options,
    run_length,
)
from device.cli._pacing import STAGGER_REFUSED, pacing
from device.cli._runtime import (
    DEFAULT_BROKER,
    DEFAULT_GIVE_UP_S,
    BrokerOpt,
    GiveUpOpt,
    PasswordFileOpt,
    StartPolicy,
    console,
    creatable,
    fail,
    reached,
    run_async,
    until_stopped,
)

CLIENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # what every broker takes, and safe to print
NUMBER = re.compile(r"[+-]?\d+")

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rich.progress import Progress, TaskID

    from broker.url import BrokerURL
    from dataset_stream import Scenario, StreamStats
    from dataset_stream.endless import EndlessOptions
    from dataset_stream.pacing import Pacing
    from dataset_stream.reconnect import ReconnectPolicy
    from device.model.bundle import ModelBundle


class ScenarioName(StrEnum):
    nic = "nic"
    nc = "nc"
    ni = "ni"


def stream(
    broker: BrokerOpt = DEFAULT_BROKER,
    password_file: PasswordFileOpt = None,
    devices: Annotated[
        str,
        typer.Option(help="N fleet devices ({prefix}0000, ...) or a comma-separated list of ids."),
    ] = "1",
    prefix: Annotated[str, typer.Option(help="Device id prefix used with --devices N.")] = "node-",
    start_index: Annotated[
        int, typer.Option(help="Index of the first device id with --devices N.", min=0)
    ] = 0,
    spec: Annotated[
        Path | None,
        typer.Option(
            help="Fleet spec TOML (as given to vega-emu fleet): the devices and each class's "
            "dataset and scenario, in place of the device, dataset and scenario options.",
            dir_okay=False,
        ),
    ] = None,
    dataset: Annotated[
        str,
        typer.Option(
            help="digits | synthetic-sensor | watch | core50:PATH | core50-cat:PATH | npz:PATH "
            "| csv:PATH, options before the path: csv\\[window=50;stride=25]:PATH "
            "(docs/datasets.md)"
        ),
    ] = "digits",
    scenario: Annotated[
        ScenarioName,
        typer.Option(help="nic: new instances and classes; nc: new classes; ni: new instances."),
    ] = ScenarioName.nic,
    model: Annotated[
        Path | None,
        typer.Option(
            help="The model bundle the fleet runs: the scenario's factory classes are the ones "
            "it records (vega-emu model build), so the events teach the others; a model built "
            "for other classes or another sample shape is refused. Default: the seed's pick, "
            "what the default model is trained on.",
            file_okay=False,
        ),
    ] = None,
    cadence_s: Annotated[
        float,
        typer.Option(
            "--cadence", help="Simulated seconds between two learning events of a device."
        ),
    ] = 60.0,
    speed: Annotated[
        str,
        typer.Option(
            help="1: real time; X: X times faster; max: closed loop (wait for telemetry)."
        ),
    ] = "1",
    events: Annotated[
        int | None,
        typer.Option(
            help="Learning events per device, generated past the scenario's last event "
            "(default: the scenario's events that are left).",
            min=1,
        ),
    ] = None,
    forever: ForeverOpt = False,
    hours: HoursOpt = None,
    drift: DriftOpt = DriftName.none,
    drift_period: DriftPeriodOpt = 200,
    drift_strength: DriftStrengthOpt = 1.0,
    drift_classes: DriftClassesOpt = None,
    recur_cycle: RecurCycleOpt = 300,
    recur_absent: RecurAbsentOpt = 100,
    from_seq: Annotated[
        int | None,
        typer.Option(
            "--from-seq",
            help="First seq (and scenario event) of every device. Default: each device "
            "continues after the last seq its retained status names (1 without one).",
            min=1,
            show_default=False,
        ),
    ] = None,
    status_wait_s: Annotated[
        float,
        typer.Option(
            "--status-wait",
            help="Seconds to wait at the start for the devices' retained status (last seq); "
            "the stream goes on once every device's has come.",
        ),
    ] = 2.0,
    eval_per_device: Annotated[
        bool,
        typer.Option(
            "--eval-per-device",
            help="Retain the whole eval set on every device's eval topic (the wire contract's "
            "first form) instead of once, shared by reference (1.1 MB a device for digits).",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Scenario seed: factory split, events, order.")] = 0,
    same_order: Annotated[
        bool, typer.Option("--same-order", help="Every device gets the events in the same order.")
    ] = False,
    stagger: Annotated[
        bool,
        typer.Option(
            "--stagger",
            help="Spread the devices' events over each cadence (each device at its own phase, "
            "from a hash of its id), as independent devices would send them, instead of every "
            "device's event at the same instant. For paced streams, and not with --infer-rate "
            "requests.",
        ),
    ] = False,
    dump: Annotated[
        Path | None,
        typer.Option(
            help="Write DIR/{device}/{seq:06d}.safetensors and eval.safetensors; no broker.",
            file_okay=False,
        ),
    ] = None,
    max_outage_s: Annotated[
        float,
        typer.Option(
            "--max-outage",
            help="Seconds without a broker the stream waits through before it fails.",
        ),
    ] = 300.0,
    give_up_after_s: GiveUpOpt = DEFAULT_GIVE_UP_S,
    client_id: Annotated[
        str | None,
        typer.Option(help="MQTT client id (default: one of its own per run; must be unique)."),
    ] = None,
    infer_rate: Annotated[
        float,
        typer.Option(
            help="Unlabelled samples per simulated second sent to each device's infer topic "
            "between events (the next event's samples, one message per simulated second).",
            min=0.0,
        ),
    ] = 0.0,
    drain_timeout_s: Annotated[
        float | None,
        typer.Option(
            "--drain-timeout",
            help="Seconds to wait at the end for the answers still outstanding (batches without "
            "an answer are published again meanwhile). Default: three cadences in wall time "
            "(3 x cadence / speed), at least 10 s; 10 s with --speed max.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Stream a dataset as continual-learning events to a fleet of devices over MQTT.

    Seq k is the scenario's event k. Each device continues after the last seq its node
    committed (its retained status), so a second run goes on where the first one ended;
    --from-seq N starts every device at N instead. With --events, --hours or --forever the
    scenario never runs dry: past its last event, events are generated (new recordings of the
    training data, drifting classes, classes that leave and come back).

    Every batch stays outstanding until its node answers it (telemetry or an error for its seq),
    and is published again after a reconnect or when no answer comes in time.

    Exit status: 0 when every batch was answered by its node (learned, duplicate, refused or
    lost in a gap: all said in the summary) and some were learned; 3 when some were not
    answered (one line names the devices and seqs); 4 when the fleet learned nothing: nothing
    was sent (what the stream would send was learned before, or no events are left; one line
    names the devices), or none of the batches sent was learned; 1 on an error (no broker);
    2 on bad options.
    """
    from broker.errors import BrokerURLError
    from broker.url import parse_broker_url
    from dataset_stream import (
        DatasetStreamError,
        Scenario,
        ScenarioError,
        SeqsRefused,
        SourceError,
    )
    from dataset_stream.outcome import NOTHING_LEARNED_EXIT_STATUS, default_drain_s, finite_drain
    from dataset_stream.reconnect import ReconnectPolicy
    from device.app.owndata import scenario_for
    from device.model.errors import DataMismatchError

    device_ids = parse_devices(devices, prefix, start_index)
    pace = pacing(speed, cadence_s, infer_rate, stagger)
    length = run_length(events, forever, hours, pace.cadence_s)
    generated = endless_options(
        drift, drift_period, drift_strength, drift_classes, recur_cycle, recur_absent
    )
    if forever and dump is not None:
        raise fail("--dump writes files: give --events or --hours, not --forever", code=2)
    if not (math.isfinite(status_wait_s) and status_wait_s >= 0):
        raise typer.BadParameter(f"{status_wait_s} is not >= 0", param_hint="--status-wait")
    if dump is not None and from_seq is not None:
        raise fail("--dump writes every device's events from seq 1; drop --from-seq", code=2)
    if not (math.isfinite(max_outage_s) and max_outage_s > 0):
        raise typer.BadParameter(
            f"{max_outage_s} is not a positive number of seconds", param_hint="--max-outage"
        )
    if drain_timeout_s is not None and not finite_drain(drain_timeout_s):
        raise typer.BadParameter(
            f"{drain_timeout_s} is not a number of seconds >= 0", param_hint="--drain-timeout"
        )
    drain_s = (
        default_drain_s(pace.cadence_s, pace.speed) if drain_timeout_s is None else drain_timeout_s
    )
    if client_id is not None and not CLIENT_ID.fullmatch(client_id):
        raise typer.BadParameter(
            f"{client_id!r} is not a client id ([A-Za-z0-9_.-]{{1,64}})", param_hint="--client-id"
        )
    if stagger and dump is not None:
        raise fail(STAGGER_REFUSED, code=2)
    if dump is not None:
        creatable(dump, "--dump")
        if infer_rate:
            raise fail("--dump writes learning events only, not --infer-rate requests", code=2)
    url = None
    link = _Link(
        ReconnectPolicy(max_outage_s=max_outage_s),
        client_id,
        StartPolicy(give_up_s=give_up_after_s, max_wait_s=max_outage_s),
        drain_s,
        from_seq,
        status_wait_s,
        not eval_per_device,
    )
    try:
        url = parse_broker_url(broker, password_file=password_file)
    except BrokerURLError as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker") from exc
    plan: Scenario | dict[str, Scenario]
    if spec is not None and model is not None:
        raise fail("--model names the model of one data set; a fleet spec names its own", code=2)
    try:
        if spec is not None:
            device_ids, plan = _spec_scenarios(spec, seed)
        else:
            plan = scenario_for(dataset, scenario.value, seed=seed, bundle=_bundle(model))
    except (SourceError, ScenarioError, DataMismatchError) as exc:
        hint = (
            "--spec" if spec else "--model" if isinstance(exc, DataMismatchError) else "--dataset"
        )
        raise typer.BadParameter(str(exc), param_hint="--spec" if spec else hint) from exc
    try:
        plan = _lengthened(plan, length, generated)
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc), param_hint="--drift-classes") from exc
    if isinstance(plan, Scenario):
        built: Scenario | None = plan
        scenarios = [plan]
    else:
        built = None
        scenarios = list({id(s): s for s in plan.values()}.values())
    finite = [s.finite_events for s in scenarios]
    for one, count in zip(scenarios, finite, strict=True):
        console.print(
            f"{one.source} / {one.name}: {len(one.classes)} classes, sample "
            f"{list(one.sample_shape)} {one.dtype}, {count} events",
            highlight=False,
        )
    if length.endless:
        console.print(describe(generated, min(finite)), highlight=False)
    first = 1 if dump is not None else from_seq  # files start at seq 1
    console.print(length.plan_line(min(finite), len(device_ids), first), highlight=False)
    if dump is not None and built is None:
        raise fail("--dump writes one scenario; this fleet spec has several", code=2)
    try:
        if dump is not None:
            assert built is not None
            stats = _run_dump(built, device_ids, dump, length.events, same_order, pace.cadence_s)
        else:
            _log_to_console()
            stats = _run_publish(url, plan, device_ids, pace, length, same_order, link)
    except OSError as exc:
        where = f"--dump {dump}: " if dump is not None else ""
        raise fail(f"{where}{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc
    except SeqsRefused as exc:
        raise fail(str(exc), code=NOTHING_LEARNED_EXIT_STATUS) from exc
    except DatasetStreamError as exc:
        raise fail(str(exc)) from exc
    if stats is None:
        console.print("stopped")
        return
    _report(stats, dump, length.forever)
    if stats.delivery is not None and stats.delivery.exit_status:
        raise fail(stats.delivery.failure_line(), code=stats.delivery.exit_status)


@dataclass(frozen=True, slots=True)
class _Link:
    """How the stream talks to its broker: reconnect policy, client id, the wait at start, how
    long it waits at the end for the last answers, the first seq (None: continue after each
    device's last seq), how long it waits for the devices' statuses, and whether eval sets go
    by reference (one retained set per distinct content) or whole to every device."""

    policy: ReconnectPolicy
    client_id: str | None
    start: StartPolicy
    drain_s: float
    from_seq: int | None = None
    status_wait_s: float = 2.0
    eval_by_reference: bool = True


def _lengthened(
    plan: Scenario | dict[str, Scenario], length: RunLength, options: EndlessOptions
) -> Scenario | dict[str, Scenario]:
    """``plan`` made endless with ``options`` when the run goes past the finite events (each
    distinct scenario of a fleet spec once)."""
    from dataset_stream.endless import EndlessScenario

    if not length.endless:
        return plan
    if not isinstance(plan, dict):
        return EndlessScenario.of(plan, options)
    made: dict[int, Scenario] = {}
    for one in plan.values():
        if id(one) not in made:
            made[id(one)] = EndlessScenario.of(one, options)
    return {device: made[id(one)] for device, one in plan.items()}


def _log_to_console() -> None:
    """Warnings (lost broker, reconnects, rejected batches) above the progress bars."""
    from device.cli._logs import configure_logging

    configure_logging(logging.WARNING, console)


def _bundle(model: Path | None) -> ModelBundle | None:
    """The bundle ``--model`` names (None without one); exits with status 2 if it is unusable."""
    from device.model.bundle import ModelBundle
    from device.model.errors import ModelError

    if model is None:
        return None
    try:
        return ModelBundle.load(model)
    except ModelError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from exc


def _spec_scenarios(path: Path, seed: int) -> tuple[list[str], dict[str, Scenario]]:
    """The devices of a fleet spec and each one's scenario (one object per distinct scenario,
    with the factory classes its class's model records); a spec with problems, its classes'
    data among them, fails with all of them."""
    from dataset_stream import ScenarioError, SourceError
    from device.app.owndata import scenario_for
    from device.fleet.errors import FleetSpecError
    from device.fleet.spec import DeviceClass, FleetSpec
    from device.model.bundle import ModelBundle
    from device.model.errors import ModelError

    built: dict[tuple[str, str, Path | None], Scenario | str] = {}

    def data_problems(device_class: DeviceClass) -> list[str]:
        key = (device_class.dataset, device_class.scenario, device_class.model)
        if key not in built:
            try:
                bundle = None if key[2] is None else ModelBundle.load(key[2])
                built[key] = scenario_for(key[0], key[1], seed=seed, bundle=bundle)
            except SourceError as exc:
                built[key] = f"dataset: {exc}"
            except ScenarioError as exc:
                built[key] = f"scenario: {exc}"
            except ModelError as exc:
                built[key] = f"model: {exc}"
        made = built[key]
        return [made] if isinstance(made, str) else []

    try:
        spec = FleetSpec.load(path, check=data_problems)
    except FleetSpecError as exc:
        raise fail(str(exc), code=2) from exc
    out: dict[str, Scenario] = {}
    for device_class, ids in spec.by_class():
        scenario = built[(device_class.dataset, device_class.scenario, device_class.model)]
        assert not isinstance(scenario, str)  # a class with a data problem failed the load
        out.update(dict.fromkeys(ids, scenario))
    return list(out), out


def parse_devices(value: str, prefix: str, start: int = 0) -> list[str]:
    """``--devices``: a count N (fleet ids ``{prefix}{start:04d}``..) or ``id,id,...``."""
    from dataset_stream.protocol import fleet_ids, is_device_id

    text = value.strip()
    if NUMBER.fullmatch(text):  # "-3" is a count gone wrong, not a device id
        n = int(text)
        if n < 1:
            raise typer.BadParameter(f"needs at least one device, not {n}", param_hint="--devices")
        try:
            return fleet_ids(n, prefix, start=start)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--prefix") from exc
    ids = [part.strip() for part in text.split(",")]
    bad = [i for i in ids if not is_device_id(i)]
    if bad:
        raise typer.BadParameter(
            f"{bad[0]!r} is not a device id ([A-Za-z0-9_-]{{1,64}})", param_hint="--devices"
        )
    if len(set(ids)) != len(ids):
        raise typer.BadParameter("device ids must be distinct", param_hint="--devices")
    return ids


def _progress() -> tuple[Progress, TaskID, TaskID]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    return (
        progress,
        progress.add_task("sent", total=None),
        progress.add_task("answered", total=None),
    )


def _run_dump(
    built: Scenario,
    device_ids: list[str],
    directory: Path,
    events: int | None,
    same: bool,
    cadence_s: float,
) -> StreamStats | None:
    from dataset_stream import dump_stream

    progress, sent_task, answered_task = _progress()
    progress.remove_task(answered_task)
    total = min(built.num_events, events or built.num_events) * len(device_ids)
    progress.update(sent_task, total=total, description="written")

    async def main(stop: asyncio.Event) -> StreamStats | None:
        work = dump_stream(
            built,
            device_ids,
            directory,
            events=events,
            same_order=same,
            cadence_s=cadence_s,
            on_progress=lambda sent, _: progress.update(sent_task, completed=sent),
        )
        return await until_stopped(work, stop)

    with progress:
        return run_async(main)


def _run_publish(
    broker: BrokerURL,
    built: Scenario | Mapping[str, Scenario],
    device_ids: list[str],
    pace: Pacing,
    length: RunLength,
    same: bool,
    link: _Link,
) -> StreamStats | None:
    from dataset_stream import StreamPublisher

    progress, sent_task, answered_task = _progress()

    def on_progress(sent: int, answered: int) -> None:
        # known once the statuses said where each device continues; none for ever
        total = None if length.forever else publisher.total
        progress.update(sent_task, completed=sent, total=total)
        progress.update(answered_task, completed=answered, total=total)

    publisher = StreamPublisher(
        broker,
        built,
        device_ids,
        cadence_s=pace.cadence_s,
        speed=pace.speed,
        events=length.events,
        same_order=same,
        on_progress=on_progress,
        client_id=link.client_id,
        reconnect=link.policy,
        infer_rate=pace.infer_per_s,
        stagger=pace.stagger,
        drain_timeout_s=link.drain_s,
        from_seq=link.from_seq,
        status_wait_s=link.status_wait_s,
        eval_by_reference=link.eval_by_reference,
    )
    for task in (sent_task, answered_task):
        progress.update(task, total=None if length.forever else publisher.total)

    async def session() -> StreamStats:
        async with reached(publisher, link.start, who="stream", broker=broker):
            return await publisher.run()

    async def main(stop: asyncio.Event) -> StreamStats | None:
        return await until_stopped(session(), stop)

    with progress:
        return run_async(main)


def _report(stats: StreamStats, dump: Path | None, forever: bool = False) -> None:
    from rich.markup import escape

    if dump is not None:
        console.print(
            f"wrote {stats.sent} events and {stats.eval_sent} eval sets under {dump} "
            f"in {stats.elapsed_s:.1f} s",
            highlight=False,
        )
        return
    waited = (
        f" ({stats.drain_s:.1f} s of it waiting for the last answers)"
        if stats.drain_s >= 0.05
        else ""
    )
    seqs = f" ({stats.plan.seqs_text()})" if stats.plan is not None else ""
    planned = "" if forever else f"/{stats.total}"  # a run for ever ends only if it must
    console.print(
        f"sent {stats.sent}{planned} events to {stats.devices} devices{seqs} in "
        f"{stats.elapsed_s:.1f} s{waited}",
        highlight=False,
    )
    if stats.delivery is not None:
        style = "" if stats.delivery.complete else "[yellow]"
        console.print(f"{style}{escape(stats.delivery.summary_line())}", highlight=False)
    if stats.infer_sent:
        console.print(f"sent {stats.infer_sent} inference requests", highlight=False)
    link = stats.link
    if link.resent or link.republished:
        console.print(
            f"published again: {link.resent} batch(es) after no answer came in time, "
            f"{link.republished} after a reconnect or a device's return",
            highlight=False,
        )
    if link.reconnects:
        console.print(
            f"broker outages: {link.reconnects} reconnect(s), {link.outage_s:.1f} s without a "
            f"broker; {link.late} event(s) published late (up to {link.max_late_s:.1f} s), "
            f"{link.republished} re-published",
            highlight=False,
        )
    ignored = stats.ignored
    if ignored.total:
        parts = [f"{getattr(ignored, n)} {n}" for n in _IGNORED if getattr(ignored, n)]
        console.print(f"messages ignored: {', '.join(parts)}", highlight=False)


_IGNORED = ("invalid", "foreign", "repeated", "unattributed", "store_failed", "infer")


def register(app: typer.Typer) -> None:
    app.command("stream")(stream)
