"""Fleet capacity: the largest fleet this machine runs in real time, and its memory per node.

For each fleet size N, on Mosquitto: the real ``vega-emu fleet -n N`` (worker processes, one MQTT
connection per node), a stream at ``--speed 1`` (one learning event per node per minute, every
node's event of a minute sent at the same instant: the worst case) and a fleet monitor, for K
events. A size *holds real time* when every event is learned and the p99 event lag (telemetry
arrival minus the batch's time, i.e. how long after it was sent the node answered) stays under
the cadence (60 s): the fleet keeps up and no backlog grows.

Also measured: the fleet's resident memory (parent + workers, VmRSS, once every node has learned
its first events) and the CPU seconds its processes spent per event.

    python benchmarks/fleet_capacity.py --devices 500 1000 2000 --events 3 \\
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _host import host

CADENCE_S = 60.0


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out = [pid]
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for text in child.read_text().split():
            out += tree(int(text))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def fleet_rss_mib(pid: int) -> float:
    return sum(rss_kib(p) for p in tree(pid)) / 1024


def fleet_cpu_s(pid: int) -> float:
    return sum(cpu_s(p) for p in tree(pid))


async def one_size(n: int, events: int, workers: int, speed: float) -> dict[str, Any]:
    from broker import Mosquitto, MosquittoConfig
    from dataset_stream import StreamPublisher, build_scenario
    from dataset_stream.protocol import Telemetry, fleet_ids
    from device.monitor import FleetMonitor

    scenario = build_scenario("digits", "nic", seed=0)
    ids = fleet_ids(n)
    lags: list[float] = []
    t0 = 0.0  # the stream's start: a batch of time t is sent at t0 + (t - t0) / speed

    def on_message(device: str, message: object, received: float) -> None:
        if isinstance(message, Telemetry):
            lags.append(received - (t0 + (message.t - t0) / speed))

    with tempfile.TemporaryDirectory(prefix="vega-capacity-") as tmp:
        async with Mosquitto(MosquittoConfig(data_dir=Path(tmp) / "mq")) as broker:
            log = (Path(tmp) / "fleet.log").open("wb")
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
                stdout=log,
                stderr=subprocess.STDOUT,
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
                    t0 = time.time()
                    async with StreamPublisher(
                        broker.url,
                        scenario,
                        ids,
                        speed=speed,
                        cadence=CADENCE_S,
                        events=events,
                        t0=t0,
                        wait_for_answers=True,
                        ack_timeout=1800,
                        max_in_flight=256,
                    ) as stream:
                        began = time.perf_counter()
                        stats = await stream.run()
                        wall = time.perf_counter() - began
                    rss = fleet_rss_mib(fleet.pid)
                    cpu = fleet_cpu_s(fleet.pid) - cpu0
                    await asyncio.sleep(1.0)
            finally:
                fleet.terminate()
                await fleet.wait()
                log.close()
    lags.sort()

    def pct(q: float) -> float | None:
        return round(lags[min(len(lags) - 1, int(q * len(lags)))], 2) if lags else None

    p99 = pct(0.99)
    learned = stats.acked
    holds = learned == n * events and p99 is not None and p99 < CADENCE_S / speed
    return {
        "devices": n,
        "workers": workers,
        "events_per_device": events,
        "speed": speed,
        "connect_s": round(connect_s, 1),
        "events_learned": learned,
        "events_expected": n * events,
        "stream_wall_s": round(wall, 1),
        "lag_p50_s": pct(0.5),
        "lag_p99_s": p99,
        "lag_max_s": round(lags[-1], 2) if lags else None,
        "holds_real_time": holds,
        "fleet_rss_mib": round(rss, 1),
        "fleet_cpu_s_per_event": round(cpu / learned, 4) if learned else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--events", type=int, default=3, help="events per node (>= 2)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from broker import MosquittoNotFound, find_mosquitto

    try:
        find_mosquitto()
    except MosquittoNotFound as exc:
        sys.exit(f"error: {exc}")
    rows = []
    for n in args.devices:
        row = asyncio.run(one_size(n, args.events, args.workers, args.speed))
        print(json.dumps(row), flush=True)
        rows.append(row)
    for prev, row in itertools.pairwise(rows):
        row["rss_mib_per_extra_node"] = round(
            (row["fleet_rss_mib"] - prev["fleet_rss_mib"]) / (row["devices"] - prev["devices"]), 2
        )
    machine = host()
    holding = [r["devices"] for r in rows if r["holds_real_time"]]
    result = {"args": vars(args) | {"out": str(args.out)}, "machine": machine, "runs": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        "\n| nodes | workers | learned | lag p50 s | lag p99 s | real time | fleet RSS MiB "
        "| MiB per extra node | CPU s per event |\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['devices']} | {r['workers']} | {r['events_learned']}/{r['events_expected']} "
            f"| {r['lag_p50_s']} | {r['lag_p99_s']} | {'yes' if r['holds_real_time'] else 'no'} "
            f"| {r['fleet_rss_mib']} | {r.get('rss_mib_per_extra_node', '-')} "
            f"| {r['fleet_cpu_s_per_event']} |"
        )
    best = max(holding) if holding else None
    print(
        f"\nlargest fleet in real time on {machine['cores']} cores ({machine['cpu']}): "
        f"{best if best is not None else 'none of the sizes tried'} nodes"
        + ("" if args.speed == 1 else f" (at --speed {args.speed:g}: NOT a real-time result)")
    )


if __name__ == "__main__":
    main()
