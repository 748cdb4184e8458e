"""What a fleet's retained eval sets cost the broker: memory, and CPU for saving them.

Every device's held-out set is a retained message (docs/protocol.md). This starts Mosquitto as
``vega-emu broker --engine mosquitto`` configures it (persistence on, ``autosave_interval 60``),
publishes ``--devices`` retained eval sets of the bundled digits scenario (the stream's own
payload, 1.1 MB), then reads the broker's resident memory and CPU time over ``--seconds`` while
nothing else happens: what it spends holding and saving them.

    python benchmarks/broker_retained.py --devices 2000 --seconds 130 \\
        --out benchmarks/results/broker_retained.json
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


async def measure(devices: int, seconds: float, persistence: bool) -> dict[str, Any]:
    import aiomqtt

    from broker import Mosquitto, MosquittoConfig
    from dataset_stream import build_scenario
    from dataset_stream.payloads import eval_payload
    from dataset_stream.protocol import fleet_ids, topic

    payload = eval_payload(build_scenario("digits", "nic", seed=0))
    with tempfile.TemporaryDirectory(prefix="vega-retained-") as tmp:
        config = MosquittoConfig(data_dir=Path(tmp) / "mq", persistence=persistence)
        async with Mosquitto(config) as broker:
            async with aiomqtt.Client(**broker.url.client_kwargs()) as client:
                for device in fleet_ids(devices):
                    where = topic("vega", device, "eval")
                    await client.publish(where, payload, qos=1, retain=True)
            cpu0, started = cpu_s(broker.pid), time.monotonic()
            await asyncio.sleep(seconds)
            cpu = cpu_s(broker.pid) - cpu0
            elapsed = time.monotonic() - started
            rss = rss_kib(broker.pid) / 1024
    return {
        "devices": devices,
        "persistence": persistence,
        "eval_payload_bytes": len(payload),
        "seconds": round(elapsed, 1),
        "broker_rss_mib": round(rss, 1),
        "broker_cpu_s_per_minute": round(cpu / elapsed * 60, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=130.0, help="idle time measured")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from broker import MosquittoNotFound, find_mosquitto

    try:
        find_mosquitto()
    except MosquittoNotFound as exc:
        sys.exit(f"error: {exc}")
    rows = [asyncio.run(measure(args.devices, args.seconds, p)) for p in (True, False)]
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.out:
        result = {"args": vars(args) | {"out": str(args.out)}, "machine": host(), "runs": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    on, off = rows
    print(
        f"| {args.devices:,} retained eval sets of {on['eval_payload_bytes']:,} B | Mosquitto "
        f"RSS {on['broker_rss_mib']:,.0f} MiB | CPU {on['broker_cpu_s_per_minute']} core-s/min "
        f"with persistence, {off['broker_cpu_s_per_minute']} without |"
    )


if __name__ == "__main__":
    main()
