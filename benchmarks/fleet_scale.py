"""How many emulated nodes one process carries: start-up time, learning throughput, memory.

For each fleet size N, in a fresh subprocess: an embedded broker (or Mosquitto), N nodes of the
default model sharing one onnxruntime session, and a closed-loop stream of K events per node.
Reports the time to connect the fleet, events learned per second of wall time, and the peak
resident memory of the process (ru_maxrss), so memory per node can be read off.

    python benchmarks/fleet_scale.py --devices 10 100 500 --out benchmarks/results/fleet_scale.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any


async def one_run(n: int, events: int, lr_size: int, engine: str) -> dict[str, Any]:
    from broker import EmbeddedBroker, Mosquitto, MosquittoConfig
    from dataset_stream import StreamPublisher, build_scenario
    from dataset_stream.protocol import fleet_ids
    from dataset_stream.scenarios import factory_split
    from device.fleet.fleet import Fleet
    from device.learning.nn import SGDConfig
    from device.model.default import load_default
    from device.node.settings import NodeSettings, ReplaySettings

    bundle = load_default(0, factory=partial(factory_split, "digits", "nic", 0))
    scenario = build_scenario("digits", "nic", seed=0)
    ids = fleet_ids(n)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:

        def settings(device: str) -> NodeSettings:
            return NodeSettings(
                device,
                Path(tmp) / "state",
                replay=ReplaySettings(lr_size, 8),
                sgd=SGDConfig(learning_rate=bundle.recommended_learning_rate),
            )

        broker: Any = (
            EmbeddedBroker(port=0)
            if engine == "embedded"
            else Mosquitto(MosquittoConfig(data_dir=Path(tmp) / "mq"))
        )
        async with broker:
            start = time.perf_counter()
            async with Fleet(ids, settings, bundle, broker.url):
                connected = time.perf_counter() - start
                async with StreamPublisher(
                    broker.url, scenario, ids, speed=None, events=events, ack_timeout_s=3600
                ) as stream:
                    t0 = time.perf_counter()
                    stats = await stream.run()
                    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "devices": n,
        "events_per_device": events,
        "lr_size": lr_size,
        "engine": engine,
        "connect_s": round(connected, 2),
        "events_learned": stats.acked,
        "stream_wall_s": round(wall, 2),
        "events_per_s": round(stats.acked / wall, 2),
        "peak_rss_mib": round(rss / 1024, 1),
        "rss_before_fleet_mib": round(rss_before / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--events", type=int, default=2, help="events per node")
    parser.add_argument("--lr-size", type=int, default=1500)
    parser.add_argument("--engine", choices=["embedded", "mosquitto"], default="embedded")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # the child: one fleet size, JSON on stdout
        result = asyncio.run(one_run(args.one, args.events, args.lr_size, args.engine))
        print(json.dumps(result))
        return
    if args.engine == "mosquitto":
        from broker import MosquittoNotFound, find_mosquitto

        try:
            find_mosquitto()
        except MosquittoNotFound as exc:
            sys.exit(f"error: {exc}")
    rows = []
    for n in args.devices:
        cmd = [sys.executable, __file__, "--one", str(n), "--events", str(args.events)]
        cmd += ["--lr-size", str(args.lr_size), "--engine", args.engine]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"error: the run with {n} nodes failed:\n{out.stderr.strip()}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        rows.append(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": rows}))
    print("\n| nodes | connect s | events/s | peak RSS MiB |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} | {r['connect_s']} | {r['events_per_s']} | {r['peak_rss_mib']} |")


if __name__ == "__main__":
    main()
