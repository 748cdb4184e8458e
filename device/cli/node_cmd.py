"""``vega-emu node``: run one emulated device against a broker until SIGINT or SIGTERM.

The node waits for a broker that is down (forever) and for one that refuses it for good
(``--give-up-after``, then exit status 1). SIGINT or SIGTERM stops it cleanly in any state
(exit status 0); a second one, or a clean stop still running after
:data:`~device.cli._runtime.STOP_GRACE_S`, stops it at once (130 or 143).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

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
from device.cli._runtime import (
    DEFAULT_BROKER,
    BrokerOpt,
    PasswordFileOpt,
    console,
    creatable,
    fail,
    run_async,
    until_stopped,
)
from device.cli._units import count, hours, optional, si

if TYPE_CHECKING:
    from dataset_stream.protocol import Telemetry
    from device.errors import NodeGaveUp


def node(
    device_id: Annotated[str, typer.Option("--id", help="Device id, \\[A-Za-z0-9_-]{1,64}.")],
    state_dir: Annotated[
        Path, typer.Option(help="Directory of the node's SQLite state file.", file_okay=False)
    ],
    broker: BrokerOpt = DEFAULT_BROKER,
    password_file: PasswordFileOpt = None,
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
    prefix: Annotated[str, typer.Option(help="Topic prefix.")] = "vega",
    seed: Annotated[int, typer.Option(help="Seed of the node's replay and shuffling draws.")] = 0,
    hold_s: Annotated[
        float,
        typer.Option(
            "--hold",
            help="Seconds a batch that arrived early waits for the missing seqs before they are "
            "skipped as a gap (reported on {prefix}/{id}/error).",
            min=0,
        ),
    ] = 30.0,
    give_up_after_s: Annotated[
        float,
        typer.Option(
            "--give-up-after",
            help="Seconds to keep trying when the broker refuses the node for good (wrong "
            "password, unknown host, rejected certificate) before exiting with an error.",
            min=0,
        ),
    ] = 180.0,
) -> None:
    """Run one VEGA node: learn from every batch on {prefix}/{id}/batch, publish telemetry."""
    from dataclasses import replace

    from broker import BrokerError, parse_broker_url
    from device.errors import DeviceError
    from device.node.node import Node
    from device.node.settings import ConnectSettings, DeliverySettings

    rate = learning_rate_flag(learning_rate, old_lr)
    configure_logging(logging.INFO, console)
    try:
        url = parse_broker_url(broker, password_file=password_file)
        url.ssl_context()  # a CA file that cannot be used fails here, not in every reconnect
    except BrokerError as exc:
        raise fail(str(exc), code=2) from exc
    creatable(state_dir, "--state-dir")
    bundle = load_model(model)
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
    try:
        settings = replace(
            options.settings(device_id, state_dir, bundle, seed=seed),
            prefix=prefix,
            delivery=DeliverySettings(hold_s=hold_s),
            connect=ConnectSettings(give_up_s=give_up_after_s),
        )
    except ValueError as exc:
        raise fail(str(exc), code=2) from exc

    def show(t: Telemetry) -> None:
        console.print(event_line(t), highlight=False, soft_wrap=True)  # one line per event

    async def main(stop: asyncio.Event) -> NodeGaveUp | None:
        async with Node(settings, bundle, url, on_telemetry=show) as node:
            console.print(f"node {device_id} on {url}, state in {state_dir}; Ctrl-C stops it")
            await until_stopped(node.stopped.wait(), stop)
            return node.gave_up

    try:
        gave_up = run_async(main)
        if gave_up is not None:
            raise gave_up
    except (DeviceError, BrokerError) as exc:
        raise fail(str(exc)) from exc
    console.print(f"node {device_id} stopped")


def event_line(t: Telemetry) -> str:
    """What the node prints after an event: its figures in SI units (``18.7 mJ in 302 ms``,
    ``60.7 uJ``), a lifetime as tables write it (``34.7k h``), never ``0.0000 J`` nor
    ``5,268,051 h``."""
    accuracy = optional(t.accuracy, ".3f")
    gaps = f", {t.gaps} seqs skipped" if t.gaps else ""
    return (
        f"seq {t.seq}: {t.state}, {t.samples} samples, accuracy {accuracy}, "
        f"{si(t.energy_j['total'], 'J')} in {si(t.latency_s['total'], 's')} (emulated), "
        f"SoC {t.battery.soc:.4%}, lifetime {hours(t.lifetime_h)}, "
        f"{count(t.replay.size)} LRs, host {si(t.host_s, 's')}{gaps}"
    )


def register(app: typer.Typer) -> None:
    app.command("node")(node)
