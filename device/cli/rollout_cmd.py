"""``vega-emu rollout``: a new head to a fleet in stages, halted and rolled back by a rule.

The devices are chosen as for ``vega-emu ctl`` (ids, ``--devices N``, ``--class C --spec F``,
``--all``). The logic is :mod:`device.app.rollout`; this module checks the options (a halt
rule that does not parse, a bundle of another frozen stage: refused before anything is
published), says the progress and sets the exit status: 0 done, 1 rolled back (the reason on
one line), 2 a bad option.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Annotated

import typer

from device.cli._runtime import (
    DEFAULT_BROKER,
    BrokerOpt,
    PasswordFileOpt,
    console,
    fail,
    positive,
    run_async,
)
from device.cli.ctl_cmd import (
    DEFAULT_GIVE_UP_S,
    AllOpt,
    CaFileOpt,
    ClassOpt,
    FleetOpt,
    GiveUpOpt,
    PrefixOpt,
    SpecOpt,
    target_of,
)

DEFAULT_RULE = "accuracy_drop > 0.05 or errors > 1%"


def rollout(
    devices: Annotated[list[str] | None, typer.Argument(help="Device ids.")] = None,
    head: Annotated[
        Path | None,
        typer.Option(
            "--head", help="The head to push: an adaptive.safetensors file.", dir_okay=False
        ),
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Push this bundle's head (its frozen stage must be the fleet's).",
            file_okay=False,
        ),
    ] = None,
    fleet_model: Annotated[
        Path | None,
        typer.Option(
            "--fleet-model",
            help="The fleet's bundle, that --bundle's frozen stage is checked against "
            "(default: the default model).",
            file_okay=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Name of the head and rollout (default: file stem + digest)."),
    ] = None,
    stages: Annotated[
        str, typer.Option("--stages", help="Percents of the fleet, cumulative.")
    ] = "5,25,100",
    soak: Annotated[
        str, typer.Option("--soak", help="Simulated time per stage (telemetry t): 30m, 90s, 2h.")
    ] = "30m",
    halt_if: Annotated[str, typer.Option("--halt-if", help="When to halt and roll back.")] = (
        DEFAULT_RULE
    ),
    seed: Annotated[int, typer.Option("--seed", help="Which devices go first.")] = 0,
    report_timeout_s: Annotated[
        float,
        typer.Option("--timeout", help="Seconds the devices have to report a new head."),
    ] = 60.0,
    stall_s: Annotated[
        float,
        typer.Option("--stall", help="Seconds without stage telemetry before halting."),
    ] = 120.0,
    every: AllOpt = False,
    fleet: FleetOpt = None,
    klass: ClassOpt = None,
    spec: SpecOpt = None,
    broker: BrokerOpt = DEFAULT_BROKER,
    password_file: PasswordFileOpt = None,
    ca_file: CaFileOpt = None,
    prefix: PrefixOpt = "vega",
    give_up_after_s: GiveUpOpt = DEFAULT_GIVE_UP_S,
) -> None:
    """Push a new head to a fleet in stages; soak, halt and roll back on a rule."""
    from broker.errors import SessionError
    from device.app.errors import HaltRuleError, OperatorError, RolloutError
    from device.app.haltrule import parse_rule
    from device.app.rollout import (
        FleetHistory,
        RolloutPlan,
        parse_duration,
        parse_stages,
        run_rollout,
    )

    positive(report_timeout_s, "--timeout")
    positive(stall_s, "--stall")
    try:
        rule = parse_rule(halt_if)
    except HaltRuleError as exc:
        raise fail(f"--halt-if: {exc}", code=2) from exc
    try:
        percents = parse_stages(stages)
    except ValueError as exc:
        raise fail(f"--stages: {exc}", code=2) from exc
    try:
        soak_s = parse_duration(soak)
    except ValueError as exc:
        raise fail(f"--soak: {exc}", code=2) from exc
    weights, stem = _head_bytes(head, bundle, fleet_model)
    digest = hashlib.sha256(weights).hexdigest()
    plan_name = name or f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', stem)[:55]}-{digest[:8]}"
    try:
        plan = RolloutPlan(
            plan_name,
            weights,
            percents,
            soak_s,
            rule,
            seed=seed,
            report_s=report_timeout_s,
            stall_s=stall_s,
        )
        from dataset_stream.protocol import head_topic

        head_topic(prefix, plan_name)
    except ValueError as exc:
        raise fail(f"--name: {exc}", code=2) from exc
    target = target_of(
        broker,
        password_file,
        ca_file,
        prefix,
        devices or [],
        every,
        fleet,
        klass,
        spec,
        give_up_after_s,
    )

    async def work(stop: asyncio.Event) -> bool:
        history = FleetHistory()
        async with target.link("rollout", stop, telemetry=True, on_report=history.add) as link:
            chosen = await target.resolve(link)
            console.print(
                f"rollout {plan.name}: {len(chosen)} device(s), stages "
                f"{', '.join(f'{p:g} %' for p in plan.stages)}",
                highlight=False,
            )
            outcome = await run_rollout(
                link,
                plan,
                chosen,
                history,
                lambda line: console.print(line, highlight=False, soft_wrap=True),
            )
        if not outcome.ok:
            console.print(
                f"[bold red]rolled back:[/] {outcome.reason}", highlight=False, soft_wrap=True
            )
        return outcome.ok

    try:
        ok = run_async(work)
    except RolloutError as exc:
        raise fail(str(exc), code=2) from exc
    except (OperatorError, SessionError) as exc:
        raise fail(str(exc)) from exc
    if not ok:
        raise typer.Exit(1)


def _head_bytes(
    head: Path | None, bundle: Path | None, fleet_model: Path | None
) -> tuple[bytes, str]:
    """The head's bytes and the stem of its name; a bundle of another frozen stage than the
    fleet's is refused (exit 2, saying why)."""
    if (head is None) == (bundle is None):
        raise fail("give --head FILE or --bundle DIR", code=2)
    if head is not None:
        return _read(head, "--head"), head.stem
    assert bundle is not None
    fleet_dir = fleet_model if fleet_model is not None else _default_model()
    mine = hashlib.sha256(_read(bundle / "frozen.onnx", "--bundle")).hexdigest()
    theirs = hashlib.sha256(_read(fleet_dir / "frozen.onnx", "--fleet-model")).hexdigest()
    if mine != theirs:
        raise fail(
            f"--bundle {bundle}: its frozen stage differs from the fleet's ({fleet_dir}): the "
            "devices' replay memory holds latents of their frozen stage, which a head trained "
            "on another one cannot use; push a head trained on the fleet's frozen stage",
            code=2,
        )
    return _read(bundle / "adaptive.safetensors", "--bundle"), bundle.name


def _default_model() -> Path:
    from device.cli._nodeopts import load_model

    return load_model(None).path


def _read(path: Path, option: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise fail(f"{option} {path}: {exc.strerror or exc}", code=2) from exc
    if not data:
        raise fail(f"{option} {path}: empty", code=2)
    return data


def register(app: typer.Typer) -> None:
    app.command("rollout")(rollout)


__all__ = ["register"]
