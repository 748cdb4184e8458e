"""Time compression: simulated hours one node lives through per wall-clock minute at --speed max.

One real node (the default model, LR memory of 1500 8-bit latents) on a real broker learns every
event of the bundled digits ``nic`` scenario from a closed-loop stream (``--speed max``: the next
batch is sent as soon as the previous one is answered), one simulated minute per event. The
figure is simulated time covered per wall-clock minute, everything included: encoding and
publishing the batch, MQTT both ways, validation, the frozen stage, training, the SQLite commit,
telemetry. Repeated with a fresh node each time; the median is reported.

    python benchmarks/time_compression.py --repeats 3 --out benchmarks/results/time_compression.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from _host import host

CADENCE_S = 60.0


async def one_run(engine: str, index: int, events: int | None) -> dict[str, Any]:
    from broker import EmbeddedBroker, Mosquitto, MosquittoConfig
    from dataset_stream import StreamPublisher, build_scenario
    from dataset_stream.scenarios import factory_split
    from device.model.default import load_default
    from device.node.node import Node
    from device.node.settings import NodeSettings

    bundle = load_default(0, factory=partial(factory_split, "digits", "nic", 0))
    scenario = build_scenario("digits", "nic", seed=0)
    device = f"node-{index:04d}"
    with tempfile.TemporaryDirectory(prefix="vega-compression-") as tmp:
        broker: Any = (
            EmbeddedBroker(port=0)
            if engine == "embedded"
            else Mosquitto(MosquittoConfig(data_dir=Path(tmp) / "mq"))
        )
        async with broker:
            settings = NodeSettings(device, Path(tmp) / "state")
            async with (
                Node(settings, bundle, broker.url),
                StreamPublisher(
                    broker.url, scenario, [device], speed=None, cadence_s=CADENCE_S, events=events
                ) as stream,
            ):
                cpu0, began = time.process_time(), time.perf_counter()
                stats = await stream.run()
                wall = time.perf_counter() - began
                cpu = time.process_time() - cpu0
    simulated_h = stats.acked * CADENCE_S / 3600
    return {
        "engine": engine,
        "events": stats.acked,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "simulated_h": round(simulated_h, 3),
        "simulated_h_per_wall_min": round(simulated_h / wall * 60, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=None, help="default: all (77)")
    parser.add_argument("--engine", choices=["mosquitto", "embedded"], default="mosquitto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.engine == "mosquitto":
        from broker import MosquittoNotFound, find_mosquitto

        try:
            find_mosquitto()
        except MosquittoNotFound as exc:
            sys.exit(f"error: {exc}")
    runs = []
    for i in range(args.repeats):
        row = asyncio.run(one_run(args.engine, i, args.events))
        print(json.dumps(row), flush=True)
        runs.append(row)
    median = statistics.median(r["simulated_h_per_wall_min"] for r in runs)
    machine = host()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "args": vars(args) | {"out": str(args.out)},
            "machine": machine,
            "runs": runs,
            "median_simulated_h_per_wall_min": median,
        }
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    events_per_s = statistics.median(r["events"] / r["wall_s"] for r in runs)
    print(
        f"\none node at --speed max on {args.engine}: {median:g} simulated hours per wall-clock "
        f"minute ({events_per_s:.1f} events/s, one event per simulated minute; median of "
        f"{len(runs)}; {machine['cores']} cores, {machine['cpu']})"
    )


if __name__ == "__main__":
    main()
