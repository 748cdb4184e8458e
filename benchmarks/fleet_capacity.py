"""Fleet capacity: the largest fleet this machine runs in real time, and its memory per node.

For each fleet size N, each ``--connection`` mode and each kind of ``--arrivals``, on
Mosquitto: the real ``vega-emu fleet -n N`` (worker processes; one MQTT connection per node, or
one per worker), a stream at ``--speed 1`` (one learning event per node per minute) and a fleet
monitor, for K events. Arrivals ``burst``: every node's event of a minute is sent at the same
instant (the worst case: the last node waits for all the others); ``staggered``: spread over
the minute (``vega-emu stream --stagger``), as independent devices would send them. A size
*holds real time* when every event is learned and the p99 event lag (telemetry arrival minus
the batch's time, i.e. how long after it was sent the node answered) stays under the cadence
(60 s): the fleet keeps up and no backlog grows (``lag_p99_by_event_s`` shows the trend, and
``machine_busy`` the share of the machine's CPU the fleet, stream, monitor and broker took).

Also measured: the fleet's resident memory (parent + workers, VmRSS, once every node has learned
its events) and its peak (the sum of each process's VmHWM: the eval sets arriving at every node
at once are the usual high point), the CPU seconds per event spent by the fleet's processes, by
this process (the stream and the monitor) and by Mosquitto, over the whole run and over the
events after the first minute (the first minute also takes in every node's eval set), and the p99
lag of each event. ``worker_cpu_s_per_event_parts`` splits the workers' CPU per event after the
first minute: the frozen stage, training, evaluation, the rest of the event, and what the
workers spend outside events (MQTT, the event loop); each worker records the CPU time of its
events' parts (``device.node.cputime``) in a file the benchmark names in its environment.

    python benchmarks/fleet_capacity.py --devices 1000 2000 --events 3 \\
        --connection node shared --arrivals burst staggered \\
        --out benchmarks/results/fleet_capacity.json

Each size takes about (K - 1) minutes plus the time to learn the last burst. ``--speed S``
compresses time for a quick look (S times the load per node: not a real-time result).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _host import host

CADENCE_S = 60.0
CORES = os.cpu_count() or 1


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out = [pid]
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for text in child.read_text().split():
            out += tree(int(text))
    return out


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` now (``VmRSS``) or at its highest so far (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def own_cpu_s() -> float:
    """CPU seconds of this process (the stream and the monitor)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fleet_rss_mib(pid: int, field: str = "VmRSS") -> float:
    return sum(rss_kib(p, field) for p in tree(pid)) / 1024


def fleet_cpu_s(pid: int) -> float:
    return sum(cpu_s(p) for p in tree(pid))


def worker_parts(directory: Path) -> dict[str, float]:
    """The fleet's workers' CPU seconds per part of their events, summed over the workers
    (``device.node.cputime``: each worker rewrites its file every 2 s), with ``events`` their
    count and ``process`` the workers' own CPU."""
    total: dict[str, float] = {}
    for path in sorted(directory.glob("worker-*.json")):
        parts = json.loads(path.read_text())["parts"]
        for part, got in parts.items():
            total[part] = total.get(part, 0.0) + got["s"]
        total["events"] = total.get("events", 0.0) + parts["event"]["n"]
    return total


def split_per_event(before: dict[str, float], after: dict[str, float]) -> dict[str, float] | None:
    """CPU seconds per event of each part between two :func:`worker_parts`: the frozen stage,
    training, evaluation, the rest of the event (LR memory, commit, bookkeeping) and the
    workers' CPU outside events (MQTT, the event loop, decoding, telemetry)."""
    if not before or not after:
        return None
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    n = d.get("events", 0.0)
    if n <= 0:
        return None
    rest = d["event"] - d["frozen"] - d["training"] - d["eval"]
    out = {
        "frozen": d["frozen"],
        "training": d["training"],
        "eval": d["eval"],
        "rest_of_event": rest,
        "outside_events": d["process"] - d["event"],
    }
    return {k: round(v / n, 4) for k, v in out.items()}


def pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` (nearest rank), rounded to 10 ms."""
    return round(values[min(len(values) - 1, int(q * len(values)))], 2) if values else None


async def one_size(
    n: int,
    events: int,
    workers: int,
    speed: float,
    connection: str,
    arrivals: str,
    eval_every: int = 1,
) -> dict[str, Any]:
    from broker import Mosquitto, MosquittoConfig
    from dataset_stream import StreamPublisher, build_scenario
    from dataset_stream.protocol import Telemetry, fleet_ids
    from device.observe.monitor import FleetMonitor

    scenario = build_scenario("digits", "nic", seed=0)
    ids = fleet_ids(n)
    lags: list[float] = []
    by_event: dict[int, list[float]] = {}
    t0 = 0.0  # the stream's start: a batch of time t is sent at t0 + (t - t0) / speed

    def on_message(device: str, message: object, received: float) -> None:
        if isinstance(message, Telemetry):
            lag = received - (t0 + (message.t - t0) / speed)
            lags.append(lag)
            by_event.setdefault(message.seq, []).append(lag)

    with tempfile.TemporaryDirectory(prefix="vega-capacity-") as tmp:
        async with Mosquitto(MosquittoConfig(data_dir=Path(tmp) / "mq")) as broker:
            log = (Path(tmp) / "fleet.log").open("wb")
            parts_dir = Path(tmp) / "cpu-parts"
            parts_dir.mkdir()
            started = time.perf_counter()
            fleet = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "device.cli",
                "fleet",
                "-n",
                str(n),
                "--workers",
                str(workers),
                "--state-dir",
                str(Path(tmp) / "state"),
                "--broker",
                str(broker.url),
                "--connection",
                connection,
                "--eval-every",
                str(eval_every),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ | {"VEGA_EMU_CPU_PARTS_DIR": str(parts_dir)},
            )
            try:
                async with FleetMonitor(broker.url, on_message=on_message) as monitor:
                    async with asyncio.timeout(600):  # every node online (retained status)
                        while sum(r.status is not None for r in monitor.devices.values()) < n:
                            if fleet.returncode is not None:
                                raise RuntimeError(f"the fleet exited: see {log.name}")
                            monitor.activity.clear()
                            await monitor.activity.wait()
                    connect_s = time.perf_counter() - started
                    cpu0 = fleet_cpu_s(fleet.pid)
                    own0, broker0 = own_cpu_s(), cpu_s(broker.pid)
                    wall0 = time.perf_counter()
                    t0 = time.time()
                    async with StreamPublisher(
                        broker.url,
                        scenario,
                        ids,
                        speed=speed,
                        cadence_s=CADENCE_S,
                        events=events,
                        t0=t0,
                        wait_for_answers=True,
                        ack_timeout_s=1800,
                        max_in_flight=256,
                        stagger=arrivals == "staggered",
                    ) as stream:
                        began = time.perf_counter()
                        after_first: list[float] = []  # CPU of all three, a cadence in
                        parts_first: dict[str, float] = {}  # the workers' parts, then

                        async def mark() -> None:
                            await asyncio.sleep(CADENCE_S / speed)
                            after_first.extend(
                                (fleet_cpu_s(fleet.pid), own_cpu_s(), cpu_s(broker.pid))
                            )
                            parts_first.update(worker_parts(parts_dir))

                        marker = asyncio.ensure_future(mark())
                        try:
                            stats = await stream.run()
                        finally:
                            marker.cancel()
                        wall = time.perf_counter() - began
                    rss = fleet_rss_mib(fleet.pid)
                    peak = fleet_rss_mib(fleet.pid, "VmHWM")
                    cpu = fleet_cpu_s(fleet.pid) - cpu0
                    own, broker_cpu = own_cpu_s() - own0, cpu_s(broker.pid) - broker0
                    busy = (cpu + own + broker_cpu) / ((time.perf_counter() - wall0) * CORES)
                    # the events after the first minute (the first also takes in the eval sets)
                    later = None
                    if len(after_first) == 3 and stats.acked > n:
                        now = (fleet_cpu_s(fleet.pid), own_cpu_s(), cpu_s(broker.pid))
                        spent = [b - a for a, b in zip(after_first, now, strict=True)]
                        later = [round(x / (stats.acked - n), 4) for x in spent]
                    await asyncio.sleep(2.5)  # each worker's parts written once more
                    parts = split_per_event(parts_first, worker_parts(parts_dir))
            finally:
                fleet.terminate()
                await fleet.wait()
                log.close()
    lags.sort()
    p99 = pct(lags, 0.99)
    learned = stats.acked
    holds = learned == n * events and p99 is not None and p99 < CADENCE_S / speed
    return {
        "devices": n,
        "workers": workers,
        "connection": connection,
        "arrivals": arrivals,
        "events_per_device": events,
        "eval_every": eval_every,
        "speed": speed,
        "connect_s": round(connect_s, 1),
        "events_learned": learned,
        "events_expected": n * events,
        "stream_wall_s": round(wall, 1),
        "lag_p50_s": pct(lags, 0.5),
        "lag_p99_s": p99,
        "lag_p99_by_event_s": [pct(sorted(by_event[k]), 0.99) for k in sorted(by_event)],
        "lag_max_s": round(lags[-1], 2) if lags else None,
        "holds_real_time": holds,
        "fleet_rss_mib": round(rss, 1),
        "fleet_peak_rss_mib": round(peak, 1),  # sum of each process's highest (VmHWM)
        "fleet_cpu_s_per_event": round(cpu / learned, 4) if learned else None,
        "stream_monitor_cpu_s_per_event": round(own / learned, 4) if learned else None,
        "broker_cpu_s_per_event": round(broker_cpu / learned, 4) if learned else None,
        "machine_busy": round(busy, 3),  # all three's CPU over the run / (wall x cores)
        # fleet, stream + monitor, broker: CPU s per event after the first minute / (events - n)
        "cpu_s_per_event_after_first_minute": later,
        # the fleet's workers after the first minute, per event: where their CPU goes
        "worker_cpu_s_per_event_parts": parts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--events", type=int, default=3, help="events per node (>= 2)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--connection",
        nargs="+",
        choices=["node", "shared"],
        default=["node", "shared"],
        help="the fleet's --connection modes to measure (each at every size)",
    )
    parser.add_argument(
        "--arrivals",
        nargs="+",
        choices=["burst", "staggered"],
        default=["burst", "staggered"],
        help="burst: every node's event of a minute sent at the same instant (the worst case); "
        "staggered: spread over the minute (vega-emu stream --stagger)",
    )
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument(
        "--eval-every",
        type=int,
        default=1,
        help="the fleet's --eval-every: each node measures its accuracy every K learned events",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from broker import MosquittoNotFound, find_mosquitto

    try:
        find_mosquitto()
    except MosquittoNotFound as exc:
        sys.exit(f"error: {exc}")
    rows = []
    for connection, arrivals in itertools.product(args.connection, args.arrivals):
        mode: list[dict[str, Any]] = []
        for n in args.devices:
            one = one_size(
                n, args.events, args.workers, args.speed, connection, arrivals, args.eval_every
            )
            row = asyncio.run(one)
            mode.append(row)
            print(json.dumps(row), flush=True)
        for prev, row in itertools.pairwise(mode):
            if row["devices"] == prev["devices"]:  # the same size again (a repeat)
                continue
            extra = (row["fleet_rss_mib"] - prev["fleet_rss_mib"]) / (
                row["devices"] - prev["devices"]
            )
            row["rss_mib_per_extra_node"] = round(extra, 2)
        rows += mode
    machine = host()
    result = {"args": vars(args) | {"out": str(args.out)}, "machine": machine, "runs": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        "\n| connection | arrivals | nodes | learned | lag p50 s | lag p99 s | real time "
        "| fleet RSS MiB (peak) | MiB per extra node | CPU s per event: fleet / all "
        "| machine busy |\n" + "|---" * 11 + "|"
    )
    for r in rows:
        every = sum(
            r[k] or 0
            for k in (
                "fleet_cpu_s_per_event",
                "stream_monitor_cpu_s_per_event",
                "broker_cpu_s_per_event",
            )
        )
        print(
            f"| {r['connection']} | {r['arrivals']} | {r['devices']} "
            f"| {r['events_learned']}/{r['events_expected']} "
            f"| {r['lag_p50_s']} | {r['lag_p99_s']} | {'yes' if r['holds_real_time'] else 'no'} "
            f"| {r['fleet_rss_mib']} ({r['fleet_peak_rss_mib']}) "
            f"| {r.get('rss_mib_per_extra_node', '-')} "
            f"| {r['fleet_cpu_s_per_event']} / {every:.4f} | {r['machine_busy']:.0%} |"
        )
    for connection, arrivals in itertools.product(args.connection, args.arrivals):
        holding = [
            r["devices"]
            for r in rows
            if r["holds_real_time"] and (r["connection"], r["arrivals"]) == (connection, arrivals)
        ]
        best = max(holding) if holding else None
        print(
            f"largest fleet in real time on {machine['cores']} cores ({machine['cpu']}), "
            f"--connection {connection}, {arrivals} arrivals, {args.workers} workers: "
            f"{best if best is not None else 'none of the sizes tried'} nodes"
            + ("" if args.speed == 1 else f" (at --speed {args.speed:g}: NOT a real-time result)")
        )


if __name__ == "__main__":
    main()
