"""One worker process of ``vega-emu fleet``: a shard of the fleet's nodes, until told to stop.

Started by :class:`device.fleet.supervisor.FleetSupervisor` as ``python -m device.fleet.shard``.
The first
line on standard input is the shard's plan, as JSON (:class:`ShardPlan`: no pickle crosses the
process boundary); the MQTT password comes in the environment (``VEGA_EMU_MQTT_PASSWORD``),
never on the command line. The worker keeps reading standard input: end of file means the
supervisor is gone (even killed with SIGKILL), and the worker stops its nodes cleanly, as it
does on SIGTERM or SIGINT.

The nodes of a shard share one onnxruntime session per model bundle (:class:`Fleet`). When
every node is connected the worker writes ``{"ready": N}`` on standard output. Until then it
waits for its broker as a node does: a broker that is down is waited for, a refusal that
retrying cannot fix is retried for ``give_up_s`` (then exit status :data:`EXIT_CONFIG`), and a
stop is obeyed at once, connecting or not. A clean stop that takes longer than
:data:`STOP_GRACE_S`, or a second signal, ends the worker at once (:class:`device.aio.Stopper`).

Each node's settings are its class's with the values drawn for its id from the spec's seed
(:meth:`~device.fleet.spec.DeviceClass.for_device`); the devices with ``offline`` windows go
off the network and back on them, from the moment the shard is ready, at ``availability_speed``
simulated seconds per wall second (:mod:`device.fleet.availability`), and the devices with
injected faults carry them out (``faults``: each device's ``[[fault]]`` tables of the spec, with
their indices, so the times are those ``up --spec`` gives; docs/faults.md).

With ``credentials`` each node logs in as its device id; with ``shared`` too, the shard's one
connection logs in as its gateway id (:attr:`ShardPlan.gateway_id`, the gateway user of the
broker's ACL).

Exit status: 0 after a clean stop; :data:`EXIT_CONFIG` (2) when the plan, a model or the
broker's answer (wrong password, unknown host, a refused subscription) means that starting
again would fail the same way -- the supervisor then gives up instead of restarting it; 128 + N
when stopped at once by signal N; anything else is a crash, and the supervisor restarts the
shard (its nodes resume from their databases).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from broker.acl import read_credentials
from broker.errors import BrokerError
from broker.url import BrokerURL, parse_broker_url
from device.aio import Stopper
from device.errors import DeviceError
from device.faults import DeviceFaults, FaultSpec
from device.faults.kinds import fault_from_dict, fault_to_dict
from device.fleet import heap
from device.fleet.availability import Follower, Window
from device.fleet.fleet import Fleet
from device.fleet.gateway import Gateway
from device.fleet.spec import DeviceClass
from device.logs import one_line_logging
from device.model.bundle import ModelBundle
from device.model.errors import ModelError
from device.node import cputime
from device.node.node import Node
from device.node.presence import Presence
from device.node.settings import ConnectSettings, DeliverySettings, NodeSettings

log = logging.getLogger("vega_emu.shard")

EXIT_CONFIG: Final = 2
EXIT_CRASH: Final = 1  # the supervisor restarts the worker
#: Seconds a worker's clean stop may take before it ends at once (its supervisor waits a little
#: longer, then kills it: the whole fleet stops within 5 s).
STOP_GRACE_S: Final = 3.0


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """What one worker runs: its devices (id -> class name), the classes, where and how."""

    worker: int
    broker: str  # the URL without its password
    ca_file: str | None
    state_dir: Path
    devices: tuple[tuple[str, str], ...]
    classes: tuple[DeviceClass, ...]
    topic_prefix: str = "vega"
    seed: int = 0
    hold_s: float = 30.0
    give_up_s: float = 180.0
    connect_timeout_s: float | None = None  # None: wait for the broker until stopped
    threads: int = 1  # threads that run the nodes' learning events
    credentials: str | None = None  # a user:password file: each node logs in as its device id
    shared: bool = False  # one MQTT connection for the shard's nodes (device.fleet.gateway)
    spec_seed: int = 0  # what the devices' drawn values and availability come from
    offline: tuple[tuple[str, tuple[Window, ...]], ...] = ()  # device -> its offline windows
    availability_speed: float = 1.0  # simulated seconds per wall second, for ``offline``
    #: device -> its injected faults, each with its index in the spec (docs/faults.md)
    faults: tuple[tuple[str, tuple[tuple[int, FaultSpec], ...]], ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "worker": self.worker,
                "broker": self.broker,
                "ca_file": self.ca_file,
                "state_dir": str(self.state_dir),
                "devices": [list(d) for d in self.devices],
                "classes": [c.to_dict() for c in self.classes],
                "topic_prefix": self.topic_prefix,
                "seed": self.seed,
                "hold_s": self.hold_s,
                "give_up_s": self.give_up_s,
                "connect_timeout_s": self.connect_timeout_s,
                "threads": self.threads,
                "credentials": self.credentials,
                "shared": self.shared,
                "spec_seed": self.spec_seed,
                "offline": [
                    [d, [[w.start_s, w.end_s] for w in windows]] for d, windows in self.offline
                ],
                "availability_speed": self.availability_speed,
                "faults": [
                    [d, [[i, fault_to_dict(spec)] for i, spec in specs]] for d, specs in self.faults
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ShardPlan:
        data: Mapping[str, Any] = json.loads(text)
        return cls(
            worker=int(data["worker"]),
            broker=str(data["broker"]),
            ca_file=data.get("ca_file"),
            state_dir=Path(data["state_dir"]),
            devices=tuple((str(d), str(c)) for d, c in data["devices"]),
            classes=tuple(DeviceClass.from_dict(c) for c in data["classes"]),
            topic_prefix=str(data["topic_prefix"]),
            seed=int(data["seed"]),
            hold_s=float(data["hold_s"]),
            give_up_s=float(data["give_up_s"]),
            connect_timeout_s=_seconds_or_none(data.get("connect_timeout_s")),
            threads=int(data["threads"]),
            credentials=data.get("credentials"),
            shared=bool(data.get("shared", False)),
            spec_seed=int(data.get("spec_seed", 0)),
            offline=tuple(
                (str(d), tuple(Window(float(a), float(b)) for a, b in windows))
                for d, windows in data.get("offline", [])
            ),
            availability_speed=float(data.get("availability_speed", 1.0)),
            faults=tuple(
                (str(d), tuple((int(i), fault_from_dict(spec)) for i, spec in specs))
                for d, specs in data.get("faults", [])
            ),
        )

    def device_faults(self) -> dict[str, DeviceFaults]:
        """Each of this worker's devices with injected faults: its schedule."""
        return {d: DeviceFaults(d, specs, self.spec_seed) for d, specs in self.faults}

    @property
    def gateway_id(self) -> str:
        """The shared connection's client id: stable while the shard holds the same devices
        (its persistent session, with any unacknowledged batches, is found again on restart);
        on a broker with an ACL, the gateway user of those devices (:mod:`broker.acl`)."""
        return gateway_id(self.devices[0][0], len(self.devices))

    def presences(self) -> dict[str, Presence]:
        """A :class:`Presence` for each device that goes offline (``miss`` from its class)."""
        by_name = {c.name: c for c in self.classes}
        class_of = dict(self.devices)
        return {
            device: Presence(miss=by_name[class_of[device]].offline_batches == "miss")
            for device, _ in self.offline
        }

    def follower(self) -> Follower | None:
        """What switches :meth:`presences` (None: no device goes offline)."""
        if not self.offline:
            return None
        return Follower(dict(self.offline), self.availability_speed)

    def node_settings(self, bundles: Mapping[str, ModelBundle]) -> dict[str, NodeSettings]:
        by_name = {c.name: c for c in self.classes}
        return {
            device: replace(
                by_name[name]
                .for_device(self.spec_seed, device)
                .settings(device, self.state_dir, bundles[name], seed=self.seed),
                prefix=self.topic_prefix,
                delivery=DeliverySettings(hold_s=self.hold_s),
                connect=ConnectSettings(give_up_s=self.give_up_s),
            )
            for device, name in self.devices
        }


def gateway_id(first_device: str, count: int) -> str:
    """The id of the gateway of ``count`` devices from ``first_device`` on, as
    :func:`broker.acl.gateway_devices` reads it back."""
    return f"gw-{first_device}-{count}"[:64]


def _seconds_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _bundles(plan: ShardPlan) -> dict[str, ModelBundle]:
    """Class name -> its bundle; classes with the same model directory share one object."""
    loaded: dict[str, ModelBundle] = {}
    out: dict[str, ModelBundle] = {}
    for c in plan.classes:
        if c.model is None:
            raise ModelError(f"class {c.name!r}: the supervisor must resolve its model")
        key = str(c.model.resolve())
        if key not in loaded:
            # the supervisor loaded it before planning and gave any notice about it then
            loaded[key] = ModelBundle.load(c.model, warn_old_keys=False)
        out[c.name] = loaded[key]
    return out


def _raise_fd_limit(nodes: int) -> None:
    """Each node holds a socket and its database (+ WAL + shared memory): lift the soft limit
    on open files to the hard one, and say so if even that is too low for this shard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 5 * nodes + 64
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < need:
        log.warning(
            "this worker may run out of file descriptors: %d nodes need about %d, the hard "
            "limit is %d (raise it with ulimit -n, or use more --workers)",
            nodes,
            need,
            hard,
        )


async def run_shard(plan: ShardPlan, url: BrokerURL, stop: asyncio.Event) -> int:
    """Run the shard's nodes until ``stop``; the exit status. Errors that stop the shard
    before its nodes are connected are raised (:class:`~device.errors.DeviceError`, ...)."""
    _raise_fd_limit(len(plan.devices))
    async with contextlib.AsyncExitStack() as stack:
        starting = asyncio.ensure_future(_start(stack, plan, url))
        waiting = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            if not starting.done():
                starting.cancel()
            await asyncio.gather(starting, waiting, return_exceptions=True)
        if starting.cancelled():
            log.debug("worker %d: stopped before its nodes connected", plan.worker)
            return 0
        gateway, nodes = starting.result()
        sys.stdout.write(json.dumps({"ready": len(nodes)}) + "\n")
        sys.stdout.flush()
        class_of = dict(plan.devices)
        log.info(
            "worker %d: %d nodes (%s) on %s",
            plan.worker,
            len(nodes),
            ", ".join(sorted({class_of[n.settings.device_id] for n in nodes})),
            url,
        )
        all_gave_up: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(n.stopped.wait() for n in nodes))
        )
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        watched = {all_gave_up, stopped}
        if gateway is not None:  # its loop died: a crash, and a restart serves the nodes again
            watched.add(asyncio.ensure_future(gateway.failed.wait()))
        trimmer: asyncio.Future[None] = asyncio.ensure_future(heap.trim_every())
        watched.add(trimmer)  # it never ends: if it does, it failed (a bug), said below
        parts_dir = os.environ.get(CPU_PARTS_ENV)  # a benchmark asks where the CPU goes
        recorder = asyncio.ensure_future(
            _cpu_parts_every(Path(parts_dir), plan.worker) if parts_dir else asyncio.sleep(0)
        )
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*watched, recorder):
                task.cancel()
            await asyncio.gather(*watched, recorder, return_exceptions=True)
        if trimmer.done() and not trimmer.cancelled() and trimmer.exception() is not None:
            log.error("worker %d: heap trimming failed", plan.worker, exc_info=trimmer.exception())
            return EXIT_CRASH
        if gateway is not None and gateway.failed.is_set():
            log.error("worker %d: gateway failed (%s); exiting", plan.worker, gateway.failure)
            return EXIT_CRASH
        gave_up = [n.gave_up for n in nodes if n.gave_up is not None]
    if gave_up and not stop.is_set():
        log.error("worker %d: every node gave up; first: %s", plan.worker, gave_up[0])
        return EXIT_CONFIG
    return 0


async def _start(
    stack: contextlib.AsyncExitStack, plan: ShardPlan, url: BrokerURL
) -> tuple[Gateway | None, list[Node]]:
    """Enter the shard's gateway (shared mode) and fleets into ``stack``: its nodes, connected."""
    bundles = _bundles(plan)
    settings = plan.node_settings(bundles)
    groups: dict[int, tuple[ModelBundle, list[str]]] = {}
    for device, name in plan.devices:
        bundle = bundles[name]
        groups.setdefault(id(bundle), (bundle, []))[1].append(device)
    logins = read_credentials(Path(plan.credentials)) if plan.credentials is not None else None
    broker_for = None
    gateway = None
    if plan.shared:
        gateway_url = url
        if logins is not None:  # the gateway is a user of its own: its devices' topics only
            gateway_url = url.with_credentials(plan.gateway_id, logins[plan.gateway_id])
        gateway = await stack.enter_async_context(
            Gateway(
                gateway_url,
                plan.gateway_id,
                plan.topic_prefix,
                [d for d, _ in plan.devices],
                give_up_s=plan.give_up_s,
            )
        )
    elif logins is not None:
        known = logins

        def broker_for(device: str) -> BrokerURL:
            return url.with_credentials(device, known[device])

    presences = plan.presences()
    follower = plan.follower()
    faults = plan.device_faults()
    fleets = []
    for bundle, ids in groups.values():
        mine = {d: presences[d] for d in ids if d in presences}
        fleet = Fleet(
            ids,
            settings.__getitem__,
            bundle,
            url,
            connect_timeout_s=plan.connect_timeout_s,
            broker_for=broker_for,
            gateway=gateway,
            presences=mine,
            follower=None if follower is None or not mine else follower,
            faults_for=faults.get if faults else None,
        )
        fleets.append(await stack.enter_async_context(fleet))
    return gateway, [n for f in fleets for n in f.nodes.values()]


#: The environment variable naming a directory where each worker writes, every
#: :data:`CPU_PARTS_EVERY_S`, the CPU time of its events' parts (``worker-{k}.json``).
CPU_PARTS_ENV = "VEGA_EMU_CPU_PARTS_DIR"
CPU_PARTS_EVERY_S = 2.0


async def _cpu_parts_every(directory: Path, worker: int) -> None:
    """:func:`device.node.cputime.write_totals` every :data:`CPU_PARTS_EVERY_S`, and once more
    when cancelled (the worker stops); a file that cannot be written is said once and the
    worker goes on serving without it."""
    path = directory / f"worker-{worker}.json"
    try:
        while True:
            cputime.write_totals(path)
            await asyncio.sleep(CPU_PARTS_EVERY_S)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):
            cputime.write_totals(path)
        raise
    except OSError as exc:
        log.warning("worker %d: cannot write %s (%s); no CPU parts recorded", worker, path, exc)
    except Exception:  # a bug here must not stop the nodes: said, and recording ends
        log.exception("worker %d: CPU parts not recorded", worker)


async def _main(plan: ShardPlan, url: BrokerURL, stopper: Stopper) -> int:
    loop = asyncio.get_running_loop()
    # The nodes' events run in these threads. One per worker process (and one process per
    # core) beats more: with the default pool (6 threads here) a 300-node fleet on 2 cores
    # used 1.46x the memory (concurrent events each hold a mini-batch's activations) and 7 %
    # more CPU per event (benchmarks/fleet_capacity.py).
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=plan.threads, thread_name_prefix="node-events")
    )

    def watch_stdin() -> None:  # end of file: the supervisor is gone
        sys.stdin.read()
        if not stopper.stopping:
            log.warning("worker %d: the supervisor is gone; stopping", plan.worker)
        stopper.request(signal.SIGTERM, "end of standard input")

    # A daemon thread, so that shutdown never waits for it (an executor thread would).
    threading.Thread(target=watch_stdin, name="supervisor watch", daemon=True).start()
    return await stopper.run(lambda stop: run_shard(plan, url, stop))


def main() -> None:
    one_line_logging(logging.INFO)
    line = sys.stdin.readline()
    try:
        plan = ShardPlan.from_json(line)
        url = parse_broker_url(plan.broker, ca_file=plan.ca_file)
    except (ValueError, KeyError, TypeError, BrokerError) as exc:
        log.error("worker: unusable plan: %s", exc)
        sys.exit(EXIT_CONFIG)
    who = f"worker {plan.worker}: "
    with Stopper(
        grace_s=STOP_GRACE_S, who=who, on_stop=lambda why: log.debug("%s%s: stopping", who, why)
    ) as stopper:
        try:
            code = asyncio.run(_main(plan, url, stopper))
        except (DeviceError, ValueError, BrokerError) as exc:  # a model, a login, an ACL
            log.error("%s%s", who, exc)
            code = EXIT_CONFIG
        except Exception as exc:  # a bug: its traceback, and a restart
            log.error("%scrashed: %s", who, exc, exc_info=exc)
            code = EXIT_CRASH
    sys.exit(code)


if __name__ == "__main__":
    main()


__all__ = ["EXIT_CONFIG", "STOP_GRACE_S", "ShardPlan", "gateway_id", "run_shard"]
