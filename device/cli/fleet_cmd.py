"""``vega-emu fleet``: N nodes (or a mixed fleet spec) in worker processes, until SIGINT/SIGTERM.

SIGINT or SIGTERM stops the fleet cleanly in any state, its nodes connected or still waiting for
the broker (exit status 0); a second signal, or a clean stop that has not ended within
:data:`~device.cli._runtime.STOP_GRACE_S`, kills the workers and exits at once (130 or 143).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from enum import StrEnum
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
)

if TYPE_CHECKING:
    from device.fleet.shard import ShardPlan
    from device.fleet.supervisor import FleetSupervisor


class Connection(StrEnum):
    NODE = "node"
    SHARED = "shared"


def fleet(
    state_dir: Annotated[
        Path,
        typer.Option(help="Directory of the nodes' SQLite state files.", file_okay=False),
    ],
    devices: Annotated[
        int | None,
        typer.Option(
            "-n",
            "--devices",
            help="Number of nodes, ids {prefix}{start-index:04d}, ... (or use --spec).",
            min=1,
        ),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            help="Fleet spec TOML: device classes with count, model, profile and learning "
            "settings (docs/fleet.md). Replaces -n and the learning flags.",
            dir_okay=False,
        ),
    ] = None,
    broker: BrokerOpt = DEFAULT_BROKER,
    password_file: PasswordFileOpt = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="A user:password file (the one given to vega-emu broker --passwords): each node "
            "logs in as its own device id with its own password (with --connection shared, each "
            "worker's connection logs in as its gateway id, gw-{first device}-{count}), as a "
            "broker that binds client ids to user names requires. Without it every node uses "
            "the --broker login.",
            dir_okay=False,
        ),
    ] = None,
    connection: Annotated[
        Connection,
        typer.Option(
            help="'node': an MQTT session per node, each with its own last will (the broker "
            "sees a real fleet). 'shared': one session per worker for all its nodes, as a "
            "gateway would (fewer sockets and broker sessions; one last will per worker, on "
            "{topic-prefix}/gateway/{id}/status). Both learn every batch exactly once.",
        ),
    ] = Connection.NODE,
    prefix: Annotated[str, typer.Option(help="Device id prefix.")] = "node-",
    start_index: Annotated[int, typer.Option(help="Index of the first device id.", min=0)] = 0,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (default: the number of cores).", min=1),
    ] = None,
    threads: Annotated[
        int,
        typer.Option(help="Threads per worker that run the nodes' learning events.", min=1),
    ] = 1,
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
    topic_prefix: Annotated[str, typer.Option(help="Topic prefix.")] = "vega",
    seed: Annotated[int, typer.Option(help="Seed of the nodes' replay and shuffling draws.")] = 0,
    hold_s: Annotated[
        float,
        typer.Option(
            "--hold", help="Seconds a batch that arrived early waits for the missing seqs.", min=0
        ),
    ] = 30.0,
    give_up_after_s: Annotated[
        float,
        typer.Option(
            "--give-up-after",
            help="Seconds a node keeps trying when the broker refuses it for good (wrong "
            "password, unknown host, rejected certificate); a broker that is down is waited for.",
            min=0,
        ),
    ] = 180.0,
) -> None:
    """Run a fleet of learning nodes in worker processes; restart a worker that dies.

    Every node has its own MQTT connection (the broker sees a real fleet), or with --connection
    shared each worker has one for all its nodes; the nodes of a worker share one onnxruntime
    session per model. SIGINT or SIGTERM stops every node cleanly, connected or not; a second
    one stops them at once.
    """
    from dataclasses import replace

    from broker import BrokerError, parse_broker_url
    from device.fleet.errors import FleetSpecError
    from device.fleet.plan import shard_plans
    from device.fleet.spec import FleetSpec

    rate = learning_rate_flag(learning_rate, old_lr)
    if (devices is None) == (spec is None):
        raise fail("give the fleet as -n N or as --spec FILE (one of them)", code=2)
    try:
        url = parse_broker_url(broker, password_file=password_file)
        url.ssl_context()
    except BrokerError as exc:
        raise fail(str(exc), code=2) from exc
    creatable(state_dir, "--state-dir")
    try:
        if spec is not None:
            plan = FleetSpec.load(spec)
        else:
            assert devices is not None
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
            one = replace(options.device_class(count=devices), model=model)
            plan = FleetSpec((one,), prefix, start_index)
        n_workers = min(workers or os.cpu_count() or 1, plan.size)
        if connection is Connection.SHARED and credentials is None:
            _one_login_per_worker(url, n_workers)
        plans = shard_plans(
            plan,
            n_workers,
            load_model=load_model,
            broker=url,
            state_dir=state_dir,
            topic_prefix=topic_prefix,
            seed=seed,
            hold_s=hold_s,
            give_up_s=give_up_after_s,
            threads=threads,
            shared=connection is Connection.SHARED,
        )
        if credentials is not None:
            plans = _with_credentials(plans, credentials, url)
    except (FleetSpecError, ValueError) as exc:
        raise fail(str(exc), code=2) from exc
    configure_logging(logging.INFO, console)
    from device.fleet.supervisor import FleetSupervisor

    supervisor = FleetSupervisor(plans, password=url.password)
    run_async(lambda stop: _run(stop, supervisor, plan.size), on_force=supervisor.kill)


def _one_login_per_worker(url: object, n_workers: int) -> None:
    """Refuse shared workers that would all log in as the one user of ``--broker``: a broker
    that binds client ids to user names gives them one client id, and each connection then
    takes it from the others. Without a user name the broker is open (or the user comes from
    nowhere the fleet can see) and the workers' gateway ids stay apart."""
    from broker.url import BrokerURL

    assert isinstance(url, BrokerURL)
    if n_workers > 1 and url.username is not None:
        raise fail(
            f"--connection shared with {n_workers} workers would log every worker in as "
            f"{url.username!r}, and a broker that binds client ids to users makes them one "
            "client that keeps kicking itself off: give each worker its own gateway login with "
            "--credentials FILE (docs/fleet.md, Secured shared fleets), or use --workers 1",
            code=2,
        )


def _with_credentials(plans: list[ShardPlan], path: Path, url: object) -> list[ShardPlan]:
    """Check that ``path`` has a login for every device (shared connections: for every
    worker's gateway), and hand it to the workers."""
    from dataclasses import replace

    from broker import BrokerError
    from broker.acl import read_credentials
    from broker.url import BrokerURL

    assert isinstance(url, BrokerURL)
    if url.username is not None:
        raise fail("give the logins once: a user in --broker or --credentials, not both", code=2)
    try:
        logins = read_credentials(path)
    except BrokerError as exc:
        raise fail(str(exc), code=2) from exc
    shared = plans[0].shared
    users = [p.gateway_id for p in plans] if shared else [d for p in plans for d, _ in p.devices]
    missing = [u for u in users if u not in logins]
    if missing:
        what = "gateway(s)" if shared else "device(s)"
        raise fail(
            f"--credentials {path} has no password for {len(missing)} {what}, e.g. {missing[0]}",
            code=2,
        )
    return [replace(p, credentials=str(path.resolve())) for p in plans]


async def _run(stop: asyncio.Event, sup: FleetSupervisor, n: int) -> None:
    from device.cli._runtime import until_stopped
    from device.fleet.errors import FleetError

    plans = [w.plan for w in sup.workers]
    console.print(f"starting {n} nodes in {len(plans)} worker(s) ...")
    try:
        async with contextlib.AsyncExitStack() as stack:
            # the workers wait for the broker as long as it is down: a signal ends that wait
            if await until_stopped(stack.enter_async_context(sup), stop) is None:
                console.print("fleet stopped before its nodes connected")
                return
            gateways = ""
            if plans[0].shared:
                gateways = f" behind gateway(s) {', '.join(p.gateway_id for p in plans)}"
            console.print(
                f"[green]fleet[/]: {n} nodes in {len(plans)} worker(s) on {plans[0].broker}"
                f"{gateways}; Ctrl-C stops them"
            )
            await until_stopped(sup.failed.wait(), stop)
            if sup.failed.is_set():
                raise fail(sup.failure or "a fleet worker failed")
    except FleetError as exc:
        raise fail(str(exc)) from exc
    console.print("fleet stopped")


def register(app: typer.Typer) -> None:
    app.command("fleet")(fleet)
