"""Soak: does the emulator stay flat over many events? Memory, database size, time per event.

Two parts, both on the endless digits ``nic`` scenario (events past the 77th generated):

- **node**: one NodeEngine (the default model, 1500 8-bit LRs, the eval set loaded as a node
  has it) driven directly, in this process, for ``--node-events`` events (10,000) at full speed,
  as ``--speed max`` feeds a node: no broker, so what is measured is the node alone.
- **fleet**: a real fleet (``vega-emu fleet -n N --workers W``, its own processes) on Mosquitto,
  fed by a closed-loop stream (``--speed max``) of ``--fleet-events`` events per node (200 nodes
  x 1,000 events).

At three points -- *start* (right after ``--warmup`` events), *middle* and *end* -- each part
reports the resident memory (the node's process; the sum over the fleet's processes), the size
of the state directory (every node's SQLite database with its WAL) and the time per event over
the window of events before the point (node: host seconds of ``apply`` per event; fleet: wall
seconds per event learned, fleet-wide). Growth is end against start (targets: within 5 %);
the databases are compared with the replay memory they hold (1500 LRs x the latent's bytes).

    python benchmarks/soak.py --quick          # small sizes, under 3 minutes
    python benchmarks/soak.py --out benchmarks/results/soak.json
    python benchmarks/soak.py --part node      # only the single node
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _host import host

LR_SIZE = 1500
POINTS = ("start", "middle", "end")


@dataclass(frozen=True, slots=True)
class Point:
    """One measuring point: after ``events`` events (per node)."""

    name: str
    events: int
    rss_mib: float
    db_mib: float
    s_per_event: float
    cpu_s_per_event: float


def dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def tree_usage(pid: int) -> tuple[float, float]:
    """Resident memory (MiB) and CPU seconds (user + system) of process ``pid`` and all its
    descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    rss = cpu = 0.0
    for proc in procs:
        try:
            rss += proc.memory_info().rss
            times = proc.cpu_times()
            cpu += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return rss / 2**20, cpu


def checkpoints(total: int, warmup: int) -> dict[int, str]:
    """The event counts at which each point is taken."""
    return {warmup: "start", warmup + (total - warmup) // 2: "middle", total: "end"}


def growth(points: list[Point]) -> dict[str, float]:
    """End against start, in percent, for every measure."""
    first, last = points[0], points[-1]

    def pct(a: float, b: float) -> float:
        return round(100.0 * (b - a) / a, 1) if a else 0.0

    return {
        "rss_pct": pct(first.rss_mib, last.rss_mib),
        "db_pct": pct(first.db_mib, last.db_mib),
        "s_per_event_pct": pct(first.s_per_event, last.s_per_event),
        "cpu_s_per_event_pct": pct(first.cpu_s_per_event, last.cpu_s_per_event),
    }


def replay_mib(bundle: Any) -> float:
    """What the LR memory holds: ``LR_SIZE`` latents of 8-bit codes plus a scale each."""
    import numpy as np

    values = int(np.prod(bundle.lr_shape))
    return LR_SIZE * (values + 8) / 2**20


# -- one node ------------------------------------------------------------------------------


def soak_node(events: int, warmup: int, window: int) -> dict[str, Any]:
    import psutil
    from threadpoolctl import threadpool_limits

    from dataset_stream.endless import build_endless
    from dataset_stream.protocol import Batch, EvalSet
    from dataset_stream.scenarios import factory_split
    from device.learning.nn import SGDConfig
    from device.model.default import load_default
    from device.model.frozen import FrozenStage
    from device.node.engine import NodeEngine
    from device.node.settings import NodeSettings, ReplaySettings

    bundle = load_default(0, factory=lambda: factory_split("digits", "nic", 0))
    scenario = build_endless("digits", "nic", seed=0)
    stream = scenario.events("node-0000")
    at = checkpoints(events, warmup)
    me = psutil.Process()
    points: list[Point] = []
    spent: list[float] = []
    cpu: list[float] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1, user_api="blas"):
        settings = NodeSettings(
            "node-0000",
            Path(tmp),
            replay=ReplaySettings(LR_SIZE, 8),
            sgd=SGDConfig(learning_rate=bundle.recommended_learning_rate),
        )
        engine = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
        ex, ey = scenario.eval_set
        engine.set_eval(EvalSet(ex, ey, "digits"))
        try:
            for seq in range(1, events + 1):
                event = stream[seq - 1]
                batch = Batch(event.x, event.y, seq=seq, t=1.764e9 + 60 * seq, source="digits")
                start, start_cpu = time.perf_counter(), time.process_time()
                engine.apply(batch)
                spent.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                if seq in at:
                    points.append(
                        Point(
                            at[seq],
                            seq,
                            round(me.memory_info().rss / 2**20, 1),
                            round(dir_mib(Path(tmp)), 2),
                            round(sum(spent[-window:]) / len(spent[-window:]), 4),
                            round(sum(cpu[-window:]) / len(cpu[-window:]), 4),
                        )
                    )
                    print(f"node  {_line(points[-1])}", flush=True)
        finally:
            engine.close()
    return {
        "events": events,
        "warmup": warmup,
        "window": window,
        "wall_s": round(time.monotonic() - started, 1),
        "replay_mib": round(replay_mib(bundle), 2),
        "points": [asdict(p) for p in points],
        "growth": growth(points),
    }


# -- a fleet -------------------------------------------------------------------------------


async def soak_fleet(
    devices: int, events: int, warmup: int, workers: int, fleet_window_s: float
) -> dict[str, Any]:
    from broker import Mosquitto, MosquittoConfig
    from dataset_stream import StreamPublisher
    from dataset_stream.endless import build_endless
    from dataset_stream.protocol import fleet_ids
    from dataset_stream.scenarios import factory_split
    from device.model.default import load_default

    bundle = load_default(0, factory=lambda: factory_split("digits", "nic", 0))
    scenario = build_endless("digits", "nic", seed=0)
    ids = fleet_ids(devices)
    total = devices * events
    at = {devices * k: name for k, name in checkpoints(events, warmup).items()}
    points: list[Point] = []
    taken: set[str] = set()
    # (wall time, answers, the fleet's CPU seconds), about one a second, for the rates
    samples: list[tuple[float, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        async with Mosquitto(MosquittoConfig(data_dir=Path(tmp) / "mq")) as broker:
            fleet = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "device.cli", "fleet", "--broker", str(broker.url)),
                *("-n", str(devices), "--workers", str(workers)),
                *("--state-dir", str(state), "--lr-size", str(LR_SIZE)),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                started = time.monotonic()

                def on_progress(sent: int, acked: int) -> None:
                    now = time.monotonic()
                    marks = [n for m, n in at.items() if acked >= m and n not in taken]
                    if not marks and samples and now - samples[-1][0] < 1.0:
                        return
                    rss, cpu = tree_usage(fleet.pid)
                    samples.append((now, acked, cpu))
                    for name in marks:
                        taken.add(name)
                        base = next(s for s in samples if s[0] >= now - fleet_window_s)
                        events = max(1, acked - base[1])
                        points.append(
                            Point(
                                name,
                                acked // devices,
                                round(rss, 1),
                                round(dir_mib(state), 2),
                                round((now - base[0]) / events, 5),
                                round((cpu - base[2]) / events, 5),
                            )
                        )
                        print(f"fleet {_line(points[-1])}", flush=True)
                    del samples[: max(0, len(samples) - 10_000)]

                async with StreamPublisher(
                    broker.url,
                    scenario,
                    ids,
                    speed=None,
                    events=events,
                    on_progress=on_progress,
                    ack_timeout_s=600,
                    status_wait_s=120,  # goes on once every node has said it is there
                    drain_timeout_s=60,
                ) as stream:
                    stats = await stream.run()
                wall = time.monotonic() - started
            finally:
                fleet.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(60):
                        await fleet.wait()
                except TimeoutError:
                    fleet.kill()
                    await fleet.wait()
    return {
        "devices": devices,
        "events_per_device": events,
        "workers": workers,
        "warmup": warmup,
        "learned": stats.acked - stats.duplicates,
        "planned": total,
        "wall_s": round(wall, 1),
        "replay_mib_per_node": round(replay_mib(bundle), 2),
        "points": [asdict(p) for p in points],
        "growth": growth(points) if len(points) == len(POINTS) else {},
    }


def _line(p: Point) -> str:
    return (
        f"{p.name:>6} after {p.events:>6} events: rss {p.rss_mib:8.1f} MiB, db "
        f"{p.db_mib:8.2f} MiB, {1000 * p.s_per_event:8.2f} ms/event "
        f"({1000 * p.cpu_s_per_event:.2f} ms CPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under 3 minutes)")
    parser.add_argument("--part", choices=("node", "fleet", "both"), default="both")
    parser.add_argument("--node-events", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--fleet-events", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()
    if args.quick:
        args.node_events, args.devices, args.fleet_events = 300, 10, 40
    result: dict[str, Any] = {"host": host(), "quick": args.quick}
    if args.part in ("node", "both"):
        warmup = max(10, args.node_events // 10)
        window = max(10, min(200, args.node_events // 20))
        result["node"] = soak_node(args.node_events, warmup, window)
    if args.part in ("fleet", "both"):
        warmup = max(20, args.fleet_events // 10)  # every WAL at its steady size
        result["fleet"] = asyncio.run(
            soak_fleet(args.devices, args.fleet_events, warmup, args.workers, 60.0)
        )
    for part in ("node", "fleet"):
        if part in result:
            g = result[part]["growth"]
            print(
                f"{part}: growth end vs start: rss {g.get('rss_pct')} %, db {g.get('db_pct')} %, "
                f"time per event {g.get('s_per_event_pct')} % "
                f"(CPU {g.get('cpu_s_per_event_pct')} %)"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
