"""``vega-emu ctl get|set|watch``: the desired state of running devices, and what they report.

Devices are chosen the same way by each sub-command: device ids as arguments, ``--devices N``
(the fleet ids ``node-0000`` ...), ``--class C --spec F`` (a class of a fleet spec) or ``--all``
(every device with a retained status or reported state on the broker). The logic is
:mod:`device.app.ctl`; this module parses, prints and sets the exit status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from device.cli._runtime import (
    DEFAULT_BROKER,
    GIVE_UP_HELP,
    BrokerOpt,
    PasswordFileOpt,
    StartPolicy,
    console,
    fail,
    positive,
    reached,
    run_async,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from rich.console import RenderableType

    from broker.url import BrokerURL
    from device.app.link import FleetLink

ctl_app = typer.Typer(
    help="Desired state of running devices: get, set (and wait until they run it), watch.",
    no_args_is_help=True,
)

#: Seconds ``ctl set --wait`` waits for the devices by default.
DEFAULT_TIMEOUT_S: Final = 60.0
REFRESH_S: Final = 0.5

PrefixOpt = Annotated[str, typer.Option("--prefix", help="Topic prefix.")]
CaFileOpt = Annotated[
    Path | None,
    typer.Option("--ca-file", help="CA certificate for mqtts:// (or VEGA_EMU_MQTT_CA_FILE)."),
]
AllOpt = Annotated[
    bool,
    typer.Option("--all", help="Every device with a retained status or reported state."),
]
FleetOpt = Annotated[
    int | None, typer.Option("--devices", help="The fleet ids node-0000 ... of N devices.", min=1)
]
ClassOpt = Annotated[
    str | None, typer.Option("--class", help="The devices of this class of --spec.")
]
SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="Fleet spec (TOML) that --class is read from.")
]
#: ``--give-up-after`` of ``ctl`` and ``rollout``: an operator at a terminal wants a wrong
#: password said at once, so the default is 0 (a broker that is down is still waited for).
GiveUpOpt = Annotated[
    float, typer.Option("--give-up-after", help=GIVE_UP_HELP + " 0: exit at once.", min=0)
]
DEFAULT_GIVE_UP_S: Final = 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """Which devices a sub-command works on: ids, or every device the broker knows of."""

    broker: BrokerURL
    prefix: str
    devices: tuple[str, ...] = ()
    every: bool = False
    give_up_s: float = DEFAULT_GIVE_UP_S

    def link(
        self, who: str, stop: asyncio.Event, **options: Any
    ) -> AbstractAsyncContextManager[FleetLink]:
        """``async with target.link("ctl", stop) as link``: a :class:`FleetLink` (``options``
        go to it) entered once its broker is reached. A broker that is down is waited for as
        ``vega-emu node`` waits (one line per attempt, at most the link's ``max_outage_s``); a
        refused login is retried for ``give_up_s``, then fails with one line."""
        from device.app.link import FleetLink

        link = FleetLink(self.broker, prefix=self.prefix, **options)
        policy = StartPolicy(give_up_s=self.give_up_s, max_wait_s=link.max_outage_s)
        return reached(link, policy, who=who, broker=self.broker, stop=stop)

    async def resolve(self, link: FleetLink) -> list[str]:
        """The devices: those given (after the retained states came), or every one seen. A
        note names the given devices the broker knows nothing of (no status, no reported
        state): a typo, another ``--prefix``, or a device that never ran."""
        if self.every:
            await link.settle()
            found = link.book.devices()
            if not found:
                where = f"under {self.prefix}/ on {self.broker}"
                _note(f"no device has a status or reported state {where}")
            return found
        await link.settle(self.devices)
        book = link.book
        unknown = [d for d in self.devices if d not in book.status and d not in book.reported]
        if unknown:
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            _note(
                f"nothing on {self.broker} under {self.prefix}/ for {', '.join(unknown[:5])}{more} "
                "(no status, no reported state): a typo, or a device that never ran?"
            )
        return list(self.devices)


def _note(text: str) -> None:
    console.print(f"note: {text}", highlight=False, soft_wrap=True)


def target_of(
    broker: str,
    password_file: Path | None,
    ca_file: Path | None,
    prefix: str,
    ids: Sequence[str],
    every: bool,
    fleet: int | None,
    klass: str | None,
    spec: Path | None,
    give_up_s: float = DEFAULT_GIVE_UP_S,
) -> Target:
    """The selector and broker options checked at the edge (exit 2 naming the option)."""
    from broker import BrokerError, parse_broker_url
    from dataset_stream.protocol import fleet_ids, validate_device_id, validate_prefix

    try:
        validate_prefix(prefix)
    except ValueError as exc:
        raise fail(f"--prefix: {exc}", code=2) from exc
    try:
        url = parse_broker_url(broker, ca_file=ca_file, password_file=password_file)
        url.ssl_context()
    except BrokerError as exc:
        raise fail(str(exc), code=2) from exc
    chosen = [bool(ids), every, fleet is not None, klass is not None or spec is not None]
    if sum(chosen) != 1:
        raise fail("choose the devices: ids, --all, --devices N or --class C --spec F", code=2)
    if every:
        return Target(url, prefix, every=True, give_up_s=give_up_s)
    if fleet is not None:
        return Target(url, prefix, tuple(fleet_ids(fleet)), give_up_s=give_up_s)
    if klass is not None or spec is not None:
        return Target(url, prefix, tuple(_class_ids(klass, spec)), give_up_s=give_up_s)
    for device in ids:
        try:
            validate_device_id(device)
        except ValueError as exc:
            raise fail(f"{device!r}: {exc}", code=2) from exc
    return Target(url, prefix, tuple(dict.fromkeys(ids)), give_up_s=give_up_s)


def _class_ids(klass: str | None, spec: Path | None) -> list[str]:
    from device.fleet.errors import FleetSpecError
    from device.fleet.spec import FleetSpec

    if klass is None or spec is None:
        raise fail("--class and --spec go together", code=2)
    try:
        fleet = FleetSpec.load(spec)
    except (FleetSpecError, OSError) as exc:
        raise fail(f"--spec {spec}: {exc}", code=2) from exc
    classes = {c.name: ids for c, ids in fleet.by_class()}
    if klass not in classes:
        raise fail(f"--class {klass}: not in {spec} (classes: {', '.join(classes)})", code=2)
    return classes[klass]


def _run(work: Any) -> Any:
    from broker.errors import SessionError
    from device.app.errors import OperatorError

    try:
        return run_async(work)
    except (OperatorError, SessionError) as exc:
        raise fail(str(exc)) from exc


# -- get -------------------------------------------------------------------------------------


@ctl_app.command("get")
def get(
    devices: Annotated[list[str] | None, typer.Argument(help="Device ids.")] = None,
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
    """Print desired vs reported state per device."""
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

    async def work(stop: asyncio.Event) -> None:
        from device.cli._ctl_view import print_table, state_table, stdout_width

        async with target.link("ctl", stop) as link:
            ids = await target.resolve(link)
            print_table(state_table([link.book.view(d) for d in ids], width=stdout_width()))

    _run(work)


# -- set -------------------------------------------------------------------------------------


@ctl_app.command("set")
def set_(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="Device ids and key=value settings (key= removes a setting)."),
    ] = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", help="Remove this setting (repeatable).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the devices report the new version.")
    ] = False,
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Seconds --wait waits for the devices.")
    ] = DEFAULT_TIMEOUT_S,
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
    """Change settings: publish each device's next desired version (retained)."""
    from dataset_stream.protocol import DESIRED_SETTINGS
    from device.app.ctl import parse_changes
    from device.app.errors import SettingError

    words = args or []
    pairs = [w for w in words if "=" in w]
    ids = [w for w in words if "=" not in w]
    for word in ids:
        if word in DESIRED_SETTINGS:
            raise fail(f"nothing published: {word} is a setting: write {word}=VALUE", code=2)
    positive(timeout_s, "--timeout")
    try:
        changes = parse_changes(pairs, unset or [])
    except SettingError as exc:
        raise fail(f"nothing published: {exc}", code=2) from exc
    target = target_of(
        broker, password_file, ca_file, prefix, ids, every, fleet, klass, spec, give_up_after_s
    )

    async def work(stop: asyncio.Event) -> bool:
        async with target.link("ctl", stop) as link:
            chosen = await target.resolve(link)
            if not chosen:
                raise fail("no devices: none has a status or reported state on the broker")
            try:
                states = await link.set_desired(chosen, changes, by="ctl")
            except SettingError as exc:
                raise fail(f"nothing published: {exc}", code=2) from exc
            versions = sorted({s.version for s in states.values()})
            shown = ", ".join(f"v{v}" for v in versions[:3]) + ("..." if len(versions) > 3 else "")
            console.print(
                f"published desired {shown} to {len(states)} device(s): {_changes(changes)}",
                highlight=False,
            )
            if not wait:
                return True
            targets = {d: s.version for d, s in states.items()}
            result = await link.wait_converged(targets, timeout_s)
            console.print(result.line(), highlight=False)
            for device, refusal in list(result.refused.items())[:10]:
                console.print(f"  {device} refused: {refusal.message}", highlight=False)
            return result.ok

    if not _run(work):
        raise typer.Exit(1)


def _changes(changes: dict[str, Any]) -> str:
    from device.cli._ctl_view import value_text

    return " ".join(f"{k}={'(own)' if v is None else value_text(v)}" for k, v in changes.items())


# -- watch -----------------------------------------------------------------------------------


@ctl_app.command("watch")
def watch(
    devices: Annotated[list[str] | None, typer.Argument(help="Device ids.")] = None,
    every: AllOpt = False,
    fleet: FleetOpt = None,
    klass: ClassOpt = None,
    spec: SpecOpt = None,
    duration_s: Annotated[
        float | None,
        typer.Option("--duration", help="Stop after this many seconds (default: SIGINT)."),
    ] = None,
    broker: BrokerOpt = DEFAULT_BROKER,
    password_file: PasswordFileOpt = None,
    ca_file: CaFileOpt = None,
    prefix: PrefixOpt = "vega",
    give_up_after_s: GiveUpOpt = DEFAULT_GIVE_UP_S,
) -> None:
    """Live table of desired vs reported state and the devices not converged."""
    if duration_s is not None:
        positive(duration_s, "--duration")
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

    async def work(stop: asyncio.Event) -> None:
        async with target.link("ctl", stop) as link:
            await target.resolve(link)
            ends_s = None if duration_s is None else time.monotonic() + duration_s
            if console.is_terminal:
                await _live(link, target, stop, ends_s)
            else:
                await _lines(link, target, stop, ends_s)

    _run(work)


def _chosen(link: FleetLink, target: Target) -> list[str]:
    return link.book.devices() if target.every else list(target.devices)


async def _wait(link: FleetLink, stop: asyncio.Event, ends_s: float | None) -> bool:
    """Until the next message or REFRESH_S; False once stopped or past ``ends_s``."""
    left_s = REFRESH_S if ends_s is None else min(REFRESH_S, ends_s - time.monotonic())
    if stop.is_set() or left_s <= 0:
        return False
    await link.changes(left_s)
    return not stop.is_set()


async def _live(link: FleetLink, target: Target, stop: asyncio.Event, ends_s: float | None) -> None:
    from rich.live import Live

    from device.cli._ctl_view import state_table

    def render() -> RenderableType:
        views = [link.book.view(d) for d in _chosen(link, target)]
        return state_table(views, width=console.width, max_rows=console.size.height - 8)

    with Live(render(), console=console, auto_refresh=False) as live:
        while await _wait(link, stop, ends_s):
            live.update(render(), refresh=True)


async def _lines(
    link: FleetLink, target: Target, stop: asyncio.Event, ends_s: float | None
) -> None:
    """Off a terminal: one line per device whose state changed, and a line of the totals."""
    from device.cli._ctl_view import device_line, not_converged_line, version_of

    seen: dict[str, tuple[Any, ...]] = {}
    last_total = ""
    while True:
        views = [link.book.view(d) for d in _chosen(link, target)]
        for view in views:
            key = (version_of(view, "desired"), version_of(view, "reported"), view.state)
            if seen.get(view.device) != key:
                seen[view.device] = key
                print(device_line(view), flush=True)
        total = not_converged_line(views)
        if total != last_total:
            last_total = total
            print(total, flush=True)
        if not await _wait(link, stop, ends_s):
            return


def register(app: typer.Typer) -> None:
    app.add_typer(ctl_app, name="ctl")


__all__ = ["DEFAULT_GIVE_UP_S", "GiveUpOpt", "Target", "register", "target_of"]
