"""What a fleet's retained eval sets cost the broker: memory, and CPU for saving them.

A fleet's held-out sets are retained messages (docs/protocol.md, "Eval sets shared by
reference"). This starts Mosquitto as ``vega-emu broker --engine mosquitto`` configures it
(persistence on, ``autosave_interval 60``), publishes the eval sets of ``--devices`` devices of
the bundled digits scenario as the stream does, then reads the broker's resident memory and CPU
time over ``--seconds`` while nothing else happens: what it spends holding and saving them.

- ``ref`` (the stream's default): the set once, retained on ``vega/evalsets/{sha256}/set``,
  and a small retained reference (:class:`~dataset_stream.protocol.EvalRef`) per device;
- ``device`` (``vega-emu stream --eval-per-device``): the whole set (1.1 MB) per device.

    python benchmarks/broker_retained.py --devices 500 2000 5000 --modes ref device \\
        --device-max 2000 --seconds 70 --out benchmarks/results/broker_retained.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _host import host
from fleet_capacity import cpu_s, rss_kib


async def measure(devices: int, mode: str, seconds: float, persistence: bool) -> dict[str, Any]:
    from broker import Mosquitto, MosquittoConfig
    from broker.session import Session, publish
    from dataset_stream import build_scenario
    from dataset_stream.payloads import eval_payload, eval_ref
    from dataset_stream.protocol import fleet_ids, topic

    scenario = build_scenario("digits", "nic", seed=0)
    payload = eval_payload(scenario)
    ref = eval_ref(scenario, payload)
    per_device = payload if mode == "device" else ref.to_json()
    with tempfile.TemporaryDirectory(prefix="vega-retained-") as tmp:
        config = MosquittoConfig(data_dir=Path(tmp) / "mq", persistence=persistence)
        async with Mosquitto(config) as broker:
            empty_rss = rss_kib(broker.pid) / 1024
            session = Session(broker.url, "bench-retained", timeout_s=60.0)
            async with session.client() as client:
                if mode == "ref":
                    await publish(client, ref.topic("vega"), payload, retain=True)
                for device in fleet_ids(devices):
                    await publish(client, topic("vega", device, "eval"), per_device, retain=True)
            cpu0, started = cpu_s(broker.pid), time.monotonic()
            await asyncio.sleep(seconds)
            cpu = cpu_s(broker.pid) - cpu0
            elapsed = time.monotonic() - started
            rss = rss_kib(broker.pid) / 1024
    return {
        "devices": devices,
        "mode": mode,
        "persistence": persistence,
        "eval_payload_bytes": len(payload),
        "per_device_bytes": len(per_device),
        "seconds": round(elapsed, 1),
        "broker_rss_empty_mib": round(empty_rss, 1),
        "broker_rss_mib": round(rss, 1),
        "broker_cpu_s_per_minute": round(cpu / elapsed * 60, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[500, 2000, 5000])
    parser.add_argument("--modes", nargs="+", choices=("ref", "device"), default=["ref", "device"])
    parser.add_argument(
        "--device-max",
        type=int,
        default=2000,
        help="largest fleet measured with a set per device (5,000 of them take 5.5 GB)",
    )
    parser.add_argument("--seconds", type=float, default=70.0, help="idle time measured")
    parser.add_argument(
        "--no-persistence", action="store_true", help="also measure without persistence"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from broker import MosquittoNotFound, find_mosquitto

    try:
        find_mosquitto()
    except MosquittoNotFound as exc:
        sys.exit(f"error: {exc}")
    rows = []
    for persistence in (True, False) if args.no_persistence else (True,):
        for mode in args.modes:
            for devices in args.devices:
                if mode == "device" and devices > args.device_max:
                    continue
                row = asyncio.run(measure(devices, mode, args.seconds, persistence))
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.out:
        result = {"args": vars(args) | {"out": str(args.out)}, "machine": host(), "runs": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in rows:
        what = "one shared set + a reference each" if row["mode"] == "ref" else "a set each"
        print(
            f"| {row['devices']:,} devices, {what} | Mosquitto RSS {row['broker_rss_mib']:,.0f} "
            f"MiB (empty {row['broker_rss_empty_mib']:,.0f}) | CPU "
            f"{row['broker_cpu_s_per_minute']} core-s/min, persistence "
            f"{'on' if row['persistence'] else 'off'} |"
        )


if __name__ == "__main__":
    main()
