"""What a node's retained status after every event costs the broker: memory and publish rate.

A node publishes its retained ``{prefix}/{id}/status`` after every event (docs/protocol.md). This
starts Mosquitto (persistence on), publishes one status of a node's real size for each of
``--devices`` devices (QoS 1, retained: the first event of a fleet), then a second round (every
device's next event: each retained message is replaced), and reads the broker's resident memory
after each round and the rounds' publish rates (one publishing client, so the rate is a floor of
what the broker takes).

    python benchmarks/broker_status.py --devices 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import tempfile
import time
from pathlib import Path

from dataset_stream.protocol import BatteryState, ReplayStats, Status


def status(i: int, seq: int) -> bytes:
    """A status as a node publishes it after event ``seq`` (every field a node sends)."""
    return Status(
        state="idle",
        device=f"node-{i:06d}",
        t=1796624616.7542737,
        last_seq=seq,
        events=seq,
        gaps=0,
        battery=BatteryState(soc=0.9999914235856002, remaining_j=39203.66377024987),
        lifetime_h=4899.597837505564,
        replay=ReplayStats(861, 1500, 8, 447720),
        model="default-v1-c247582c33ba07d7",
        accuracy=0.22841225626740946,
        online_since=1796624483.281444,
    ).to_json()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def one_round(port: int, devices: int, seq: int) -> float:
    import aiomqtt

    started = time.monotonic()
    async with aiomqtt.Client("127.0.0.1", port, max_queued_outgoing_messages=0) as client:
        for first in range(0, devices, 1000):
            await asyncio.gather(
                *(
                    client.publish(f"vega/node-{i:06d}/status", status(i, seq), qos=1, retain=True)
                    for i in range(first, min(devices, first + 1000))
                )
            )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--port", type=int, default=18950)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # aiomqtt's "pending publish calls" notes
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {args.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {tmp}/\nautosave_interval 60\n"
        )
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)
            before = rss_kib(broker.pid)
            first_s = asyncio.run(one_round(args.port, args.devices, 1))
            after_first = rss_kib(broker.pid)
            second_s = asyncio.run(one_round(args.port, args.devices, 2))
            after_second = rss_kib(broker.pid)
        finally:
            broker.terminate()
            broker.wait()
    result = {
        "devices": args.devices,
        "status_bytes": len(status(args.devices - 1, 12345)),
        "rss_kib": [before, after_first, after_second],
        "retained_bytes_per_device": round((after_first - before) * 1024 / args.devices),
        "publish_per_s": [round(args.devices / first_s), round(args.devices / second_s)],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
