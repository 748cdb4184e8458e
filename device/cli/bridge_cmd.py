"""``vega-emu bridge``: live samples (a file, standard input, an MQTT topic) -> batches and
inference requests for the fleet's devices (``docs/live-data.md``)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from device.cli._nodeopts import ModelOpt, load_model
from device.cli._runtime import (
    DEFAULT_GIVE_UP_S,
    GiveUpOpt,
    StartPolicy,
    console,
    fail,
    reached,
    run_async,
)
from device.cli._tables import Col, fit_table
from device.cli._units import DASH, count

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from rich.table import Table

    from dataset_stream.bridge import BridgeReport, Fields, Format, Record, SampleSpec, Source
    from dataset_stream.reconnect import ReconnectPolicy

BROKER_HELP = (
    "MQTT broker of the fleet, mqtt://\\[user@]host:port or mqtts://...; give the password with "
    "--password-file or VEGA_EMU_MQTT_PASSWORD."
)
FROM_HELP = (
    "Where samples come from: a file (JSON lines, or CSV with a header: .csv or --format csv), "
    "'-' for standard input, or an MQTT topic filter of your broker, "
    "mqtt://host:port/sensors/+/reading (JSON or raw float32 payloads; the level under the "
    "first '+' names the device)."
)


def bridge(
    source: Annotated[str, typer.Option("--from", help=FROM_HELP, show_default=False)],
    broker: Annotated[str, typer.Option(help=BROKER_HELP)] = "mqtt://127.0.0.1:1883",
    password_file: Annotated[
        Path | None, typer.Option(help="Read the fleet broker's password from this file.")
    ] = None,
    source_password_file: Annotated[
        Path | None, typer.Option(help="Read the source broker's password from this file.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Send every sample to this one device id.")
    ] = None,
    device_field: Annotated[
        str | None, typer.Option(help="The field (CSV: column) holding each sample's device id.")
    ] = None,
    window_s: Annotated[
        float,
        typer.Option("--window", help="Seconds per learning window: one batch per device each."),
    ] = 60.0,
    x_field: Annotated[
        str, typer.Option(help="The sample's field; CSV: the prefix of columns x0, x1, ...")
    ] = "x",
    label_field: Annotated[
        str, typer.Option(help="The label's field (absent, null or empty: unlabelled).")
    ] = "y",
    time_field: Annotated[
        str, typer.Option(help="The capture time's field, unix seconds (optional).")
    ] = "t",
    fmt: Annotated[
        str, typer.Option("--format", help="auto | json | csv (files) | raw (MQTT float32).")
    ] = "auto",
    model: ModelOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep reading the file as it grows (tail -f).")
    ] = False,
    prefix: Annotated[str, typer.Option(help="Topic prefix of the fleet.")] = "vega",
    status_wait_s: Annotated[
        float,
        typer.Option(
            "--status-wait", help="Seconds to wait for the devices' retained status (last seq)."
        ),
    ] = 2.0,
    from_seq: Annotated[
        int | None,
        typer.Option(
            "--from-seq",
            help="First batch seq of every device. Default: each device continues after the "
            "last seq its retained status names (1 without one).",
            min=1,
            show_default=False,
        ),
    ] = None,
    max_outage_s: Annotated[
        float,
        typer.Option("--max-outage", help="Seconds without a broker the bridge waits through."),
    ] = 300.0,
    give_up_after_s: GiveUpOpt = DEFAULT_GIVE_UP_S,
    report_every_s: Annotated[
        float,
        typer.Option(
            "--report-every", help="Seconds between progress lines (one per active device)."
        ),
    ] = 60.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final summary as JSON to stdout.")
    ] = False,
    drain_timeout_s: Annotated[
        float | None,
        typer.Option(
            "--drain-timeout",
            help="Seconds to wait, once the input ended, for the answers still outstanding "
            "(batches without an answer are published again meanwhile). Default: three "
            "windows, at least 10 s.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Forward live samples to devices: labelled ones as one learning batch per device per
    window, unlabelled ones as inference requests (one per device per second).

    Each device's batches continue after the last seq its node committed (its retained
    status), so a bridge follows a stream or its own earlier run; --from-seq N starts at N.

    Every batch stays outstanding until its node answers it (telemetry or an error for its seq),
    and is published again after a reconnect or when no answer comes in time.

    Exit status: 0 when every batch was answered by its node (and some were learned), or the
    bridge was stopped (SIGINT, SIGTERM: it does not wait for the last answers); 3 when the
    input ended and some batches got no answer within --drain-timeout (one line names the
    devices and seqs); 4 when the fleet learned nothing: --from-seq names seqs a device learned
    before (one line names it; nothing more is sent), or none of the batches sent was learned;
    1 on an error; 2 on bad options.
    """
    from broker.errors import BrokerURLError
    from broker.url import parse_broker_url
    from dataset_stream.bridge import Bridge, BridgeSettings, Format
    from dataset_stream.errors import DatasetStreamError, SeqsRefused
    from dataset_stream.outcome import NOTHING_LEARNED_EXIT_STATUS
    from dataset_stream.protocol import ProtocolError
    from dataset_stream.reconnect import ReconnectPolicy

    for value, option in ((window_s, "--window"), (max_outage_s, "--max-outage")):
        if not (math.isfinite(value) and value > 0):
            raise typer.BadParameter(f"{value} is not a positive number", param_hint=option)
    if not (math.isfinite(report_every_s) and report_every_s > 0):
        raise typer.BadParameter(f"{report_every_s} is not positive", param_hint="--report-every")
    if not (math.isfinite(status_wait_s) and status_wait_s >= 0):
        raise typer.BadParameter(f"{status_wait_s} is not >= 0", param_hint="--status-wait")
    if drain_timeout_s is not None and not (
        math.isfinite(drain_timeout_s) and drain_timeout_s >= 0
    ):
        raise typer.BadParameter(f"{drain_timeout_s} is not >= 0", param_hint="--drain-timeout")
    try:
        form = Format(fmt)
    except ValueError:
        text = f"{fmt!r} is not auto, json, csv or raw"
        raise typer.BadParameter(text, param_hint="--format") from None
    try:
        url = parse_broker_url(broker, password_file=password_file)
    except BrokerURLError as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker") from exc
    where = _source(source, follow, source_password_file)
    fields = _fields(where, device, device_field, x_field, label_field, time_field)
    try:
        settings = BridgeSettings(
            prefix=prefix,
            window_s=window_s,
            status_wait_s=status_wait_s,
            report_every_s=report_every_s,
            reconnect=ReconnectPolicy(max_outage_s=max_outage_s),
            source=f"bridge:{type(where).__name__.removesuffix('Source').lower()}",
            drain_timeout_s=drain_timeout_s,
            from_seq=from_seq,
        )
    except (ValueError, ProtocolError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--prefix") from exc
    _log_to_console()
    spec = _spec(model)
    console.print(
        f"bridge: samples {list(spec.shape)} {spec.dtype}, {spec.num_classes} classes; "
        f"{window_s:g} s windows -> {url} under {prefix}/",
        highlight=False,
    )

    start = StartPolicy(give_up_s=give_up_after_s, max_wait_s=max_outage_s)

    async def main(stop: asyncio.Event) -> BridgeReport:
        records = _records(where, form, spec, fields, settings.reconnect)
        bridge = Bridge(url, spec, fields, settings)
        async with reached(bridge, start, who="bridge", broker=url, stop=stop) as running:
            return await running.run(records, replay=_replays(where), stop=stop)

    try:
        report = run_async(main)
    except SeqsRefused as exc:
        raise fail(str(exc), code=NOTHING_LEARNED_EXIT_STATUS) from exc
    except DatasetStreamError as exc:
        raise fail(str(exc)) from exc
    _print_report(report)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    delivery = report.delivery
    if not delivery.exit_status:
        return
    if report.stopped and not delivery.complete:
        console.print(
            f"[yellow]stopped[/] before {delivery.unanswered_count} batch(es) were answered "
            "(not waited for)",
            highlight=False,
        )
        return
    raise fail(delivery.failure_line(), code=delivery.exit_status)


def _source(text: str, follow: bool, password_file: Path | None) -> Source:
    from broker.errors import BrokerURLError
    from broker.url import mask_url, parse_broker_url
    from dataset_stream.bridge import FileSource, MqttSource, StdinSource, split_source_url

    if text.startswith(("mqtt://", "mqtts://")):
        if follow:
            raise typer.BadParameter("--follow is for files", param_hint="--follow")
        try:
            head, topic_filter = split_source_url(text)
            return MqttSource(parse_broker_url(head, password_file=password_file), topic_filter)
        except (ValueError, BrokerURLError) as exc:  # BrokerURLError is a ValueError too
            raise typer.BadParameter(str(exc), param_hint="--from") from exc
    if password_file is not None:
        raise typer.BadParameter("only an MQTT source has a password", param_hint="--from")
    if text == "-":
        if follow:
            raise typer.BadParameter(
                "standard input is read until it closes", param_hint="--follow"
            )
        return StdinSource()
    path = Path(text)
    if not path.is_file():
        if "@" in text or text.startswith("mqtt"):  # a mistyped URL: it may hold a password
            raise typer.BadParameter(
                f"{mask_url(text)} is neither a file nor an mqtt:// or mqtts:// URL",
                param_hint="--from",
            )
        raise typer.BadParameter(f"{path} is not a file", param_hint="--from")
    return FileSource(path, follow=follow)


def _fields(
    where: Source,
    device: str | None,
    device_field: str | None,
    x_field: str,
    label_field: str,
    time_field: str,
) -> Fields:
    from dataset_stream.bridge import Fields, MqttSource

    by_topic = isinstance(where, MqttSource) and where.device_level is not None
    if device is not None and device_field is not None:
        raise typer.BadParameter("give --device or --device-field, not both", param_hint="--device")
    if device is None and device_field is None and not by_topic:
        raise typer.BadParameter(
            "say which device each sample is for: --device ID or --device-field FIELD "
            "(or an MQTT filter with a '+' level)",
            param_hint="--device",
        )
    try:
        return Fields(x_field, label_field, time_field, device_field, device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from exc


def _spec(model: Path | None) -> SampleSpec:
    from dataset_stream.bridge import SampleSpec

    bundle = load_model(model)
    return SampleSpec(tuple(bundle.input_shape), bundle.input.dtype, bundle.num_classes)


def _replays(where: Source) -> bool:
    """A file read once is windowed by its samples' own time; everything else is live."""
    from dataset_stream.bridge import FileSource

    return isinstance(where, FileSource) and not where.follow


def _records(
    where: Source, form: Format, spec: SampleSpec, fields: Fields, policy: ReconnectPolicy
) -> AsyncGenerator[Record, None]:
    from dataset_stream.bridge import MqttSource, check_csv_header, file_records, mqtt_records

    if isinstance(where, MqttSource):
        return mqtt_records(where, form, policy=policy)
    return file_records(where, form, on_header=lambda cols: check_csv_header(cols, spec, fields))


def _log_to_console() -> None:
    """Warnings, and the bridge's progress lines (INFO), in the commands' one format."""
    from device.cli._logs import configure_logging

    configure_logging(logging.WARNING, console, verbose=("dataset_stream.bridge",))


def _print_report(report: BridgeReport) -> None:
    from rich.markup import escape

    console.print(report_table(report, console.width))
    delivery = report.delivery
    style = "" if delivery.complete else "[yellow]"
    waited = f" (waited {report.drain_s:.1f} s at the end)" if report.drain_s >= 0.05 else ""
    console.print(f"{style}{escape(delivery.summary_line())}{waited}", highlight=False)
    if report.resent or report.republished:
        console.print(
            f"published again: {report.resent} batch(es) after no answer came in time, "
            f"{report.republished} after a reconnect or a device's return",
            highlight=False,
        )


#: The columns of the bridge's table, the least important with the highest ``hide``.
REPORT_COLUMNS: Final = (
    Col("device", "name"),
    Col("batches"),
    Col("samples", hide=2),
    Col("seqs"),
    Col("answered"),
    Col("infer", hide=4),
    Col("infer samples", hide=5),
    Col("dropped", hide=1),
    Col("why dropped", "text", hide=3),
)


def report_table(report: BridgeReport, width: int) -> Table:
    """What the bridge sent each device and what its node answered, fitted to ``width``."""
    from rich.markup import escape

    from dataset_stream.bridge import NO_DEVICE

    rows = []
    for device, row in sorted(report.devices.items(), key=lambda i: (i[0] == NO_DEVICE, i[0])):
        seqs = DASH if row.first_seq is None else f"{row.first_seq}..{row.last_seq}"
        why = ", ".join(f"{r} {n}" for r, n in row.dropped.items())
        answered = DASH if row.delivery is None else f"{row.delivery.answered}/{row.delivery.sent}"
        rows.append(
            (
                escape(device),
                count(row.batches),
                count(row.learn_samples),
                seqs,
                answered,
                count(row.infers),
                count(row.infer_samples),
                count(row.dropped_total),
                escape(why),
            )
        )
    title = f"bridge: {report.records} records in {report.elapsed_s:.1f} s"
    return fit_table(REPORT_COLUMNS, rows, width, title=title)


def register(app: typer.Typer) -> None:
    app.command("bridge")(bridge)
