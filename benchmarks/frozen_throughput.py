"""Images per second of the frozen stage inside a running fleet, against onnxruntime's best here.

Fleet: a real in-process ``device.fleet.fleet.Fleet`` of ``--nodes`` nodes of the default model (the
bundle fleets use, one shared onnxruntime session with one intra-op thread) on an embedded
broker, fed by a closed-loop ``StreamPublisher`` (each node gets its next batch as soon as it
acknowledged the last). The benchmark installs a probe on the shared ``FrozenStage`` object
that times every ``run`` call (wall and thread CPU time) and counts its images, summed across
the worker threads. The one call that computes the shared eval-set latents is left out: it is
not part of learning.

Limit: onnxruntime alone (``InferenceSession.run`` on normalised input, nothing else; the graph
the stage runs, i.e. after ``fast_graph``'s exact rewrite, or with ``--plain-graph`` the file as
stored) with every
batch size 1, 2, 4 .. 1024, intra-op threads 1..cores and as many sessions, each in its own
Python thread, as the cores allow (sessions x threads <= cores).

The fraction reported is images per CPU second: the fleet's (images over the summed CPU seconds
of the ``run`` calls, on the calling threads) over onnxruntime's best configuration's (images
over the process CPU seconds while it ran). CPU seconds, not wall seconds, because the machine
is shared: a core taken by another process or by the fleet's own training threads is not the
frozen stage's doing, and wall-clock throughput of configurations using both cores falls apart
when the other core is busy. Also reported: the stage's images per second of wall time while
at least one call was in flight, over the most images per second onnxruntime reached.

    python benchmarks/frozen_throughput.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _host import host

RESULT = Path(__file__).parent / "results" / "frozen_throughput.json"
BATCH_SIZES = tuple(2**k for k in range(11))  # 1 .. 1024


class StageProbe:
    """Stands in for ``FrozenStage.run`` on one stage object: times and counts every call.

    ``cpu_s`` sums the calling threads' CPU time (onnxruntime with one intra-op thread computes
    on the caller's thread); ``busy_s`` is the wall time during which at least one call was in
    flight, so concurrent calls are not counted twice.
    """

    def __init__(self, run: Any, skip_images: int) -> None:
        self._run = run
        self._skip = skip_images  # calls of this many images (the eval set) are not counted
        self._lock = threading.Lock()
        self._in_flight = 0
        self._busy_since = 0.0
        self.images = 0
        self.calls = 0
        self.cpu_s = 0.0
        self.busy_s = 0.0

    def __call__(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        if len(x) == self._skip:
            result: np.ndarray = self._run(x, batch_size)
            return result
        with self._lock:
            if not self._in_flight:
                self._busy_since = time.perf_counter()
            self._in_flight += 1
        cpu = time.thread_time()
        try:
            out: np.ndarray = self._run(x, batch_size)
        finally:
            cpu = time.thread_time() - cpu
            with self._lock:
                self._in_flight -= 1
                if not self._in_flight:
                    self.busy_s += time.perf_counter() - self._busy_since
                self.images += len(x)
                self.calls += 1
                self.cpu_s += cpu
        return out


async def fleet_run(nodes: int, events: int, lr_size: int) -> dict[str, Any]:
    from broker import EmbeddedBroker
    from dataset_stream import StreamPublisher, build_scenario
    from dataset_stream.protocol import fleet_ids
    from dataset_stream.scenarios import factory_split
    from device.fleet.fleet import Fleet
    from device.learning.nn import SGDConfig
    from device.model.default import load_default
    from device.model.frozen import FrozenStage
    from device.node.settings import NodeSettings, ReplaySettings

    bundle = load_default(0, factory=partial(factory_split, "digits", "nic", 0))
    scenario = build_scenario("digits", "nic", seed=0)
    stage = FrozenStage.shared(bundle)  # the object the fleet's nodes will share
    probe = StageProbe(stage.run, skip_images=len(scenario.eval_set[1]))
    stage.run = probe  # type: ignore[method-assign]
    ids = fleet_ids(nodes)
    try:
        with tempfile.TemporaryDirectory(prefix="frozen-throughput-") as tmp:

            def settings(device: str) -> NodeSettings:
                return NodeSettings(
                    device,
                    Path(tmp) / "state",
                    replay=ReplaySettings(lr_size, 8),
                    sgd=SGDConfig(learning_rate=bundle.recommended_learning_rate),
                )

            async with (
                EmbeddedBroker(port=0) as broker,
                Fleet(ids, settings, bundle, broker.url),
                StreamPublisher(
                    broker.url, scenario, ids, speed=None, events=events, ack_timeout_s=3600
                ) as stream,
            ):
                start, cpu = time.perf_counter(), time.process_time()
                stats = await stream.run()
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        del stage.run  # the class's method again
    return {
        "nodes": nodes,
        "events_per_node": events,
        "events_learned": stats.acked,
        "stream_wall_s": round(wall, 2),
        "process_cpu_s": round(cpu, 2),
        "frozen_calls": probe.calls,
        "frozen_images": probe.images,
        "frozen_cpu_s": round(probe.cpu_s, 4),
        "frozen_busy_s": round(probe.busy_s, 4),
        "images_per_cpu_s": round(probe.images / probe.cpu_s, 1),
        "images_per_busy_s": round(probe.images / probe.busy_s, 1),
        "frozen_share_of_process_cpu": round(probe.cpu_s / cpu, 3),
        "input_shape": list(bundle.input_shape),
        "frozen_onnx": str(bundle.frozen_path),
    }


def ort_rate(
    graph: str | bytes, feed: np.ndarray, threads: int, sessions: int, seconds: float
) -> tuple[float, float]:
    """Images per wall second and per CPU second of ``sessions`` sessions (``threads`` intra-op
    threads each), each run back to back on ``feed`` from its own Python thread for ``seconds``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    made = [
        ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        for _ in range(sessions)
    ]
    name = made[0].get_inputs()[0].name
    for s in made:
        s.run(None, {name: feed})  # warm-up
    counts = [0] * sessions
    barrier = threading.Barrier(sessions + 1)
    stop = threading.Event()

    def loop(i: int) -> None:
        barrier.wait()
        while not stop.is_set():
            made[i].run(None, {name: feed})
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    for w in workers:
        w.start()
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    # both include finishing the last call of each session
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    images = sum(counts) * len(feed)
    return images / elapsed, images / cpu


def ort_limit(seconds: float, *, plain_graph: bool = False) -> dict[str, Any]:
    """The best images/s of onnxruntime alone over batch sizes, threads and sessions."""
    from dataset_stream.scenarios import factory_split
    from device.model.default import load_default
    from device.model.frozen import frozen_graph

    bundle = load_default(0, factory=partial(factory_split, "digits", "nic", 0))
    graph = str(bundle.frozen_path) if plain_graph else frozen_graph(bundle)
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    if bundle.input_dtype.kind == "u":
        raw = rng.integers(0, 256, (max(BATCH_SIZES), *bundle.input_shape)).astype(np.uint8)
    else:
        raw = rng.random((max(BATCH_SIZES), *bundle.input_shape)).astype(bundle.input_dtype)
    normalised = bundle.input.normalize(raw)
    rows = []
    for batch, threads in itertools.product(BATCH_SIZES, range(1, cores + 1)):
        for sessions in range(1, cores // threads + 1):
            ips, per_cpu_s = ort_rate(graph, normalised[:batch], threads, sessions, seconds)
            rows.append(
                {
                    "batch": batch,
                    "threads": threads,
                    "sessions": sessions,
                    "images_per_s": round(ips, 1),
                    "images_per_cpu_s": round(per_cpu_s, 1),
                }
            )
    return {
        "cores": cores,
        "graph": "plain" if plain_graph else "fast",
        "best_per_cpu_s": max(rows, key=lambda r: r["images_per_cpu_s"]),
        "best_per_s": max(rows, key=lambda r: r["images_per_s"]),
        "grid": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--events", type=int, default=6, help="events per node")
    parser.add_argument("--lr-size", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=1.5, help="per limit configuration")
    parser.add_argument("--quick", action="store_true", help="20 nodes x 5 events, 0.4 s each")
    parser.add_argument(
        "--plain-graph",
        action="store_true",
        help="limit: run frozen.onnx as stored, not the rewritten graph the stage runs",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON result (default: {RESULT.name} for a full run; a --quick run writes none)",
    )
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.events, args.seconds = 20, 5, 0.4
    if args.nodes < 1 or args.events < 1 or args.seconds <= 0:
        parser.error("--nodes, --events and --seconds must be > 0")
    limit = ort_limit(args.seconds, plain_graph=args.plain_graph)
    best, fastest = limit["best_per_cpu_s"], limit["best_per_s"]
    print(
        f"onnxruntime alone: best {best['images_per_cpu_s']:.0f} images per CPU second "
        f"(batch {best['batch']}, {best['threads']} thread(s) x {best['sessions']} "
        f"session(s)); most images per second: {fastest['images_per_s']:.0f} (batch "
        f"{fastest['batch']}, {fastest['threads']} x {fastest['sessions']})",
        flush=True,
    )
    fleet = asyncio.run(fleet_run(args.nodes, args.events, args.lr_size))
    fraction = fleet["images_per_cpu_s"] / best["images_per_cpu_s"]
    fraction_busy = fleet["images_per_busy_s"] / fastest["images_per_s"]
    print(
        f"fleet of {fleet['nodes']} nodes x {fleet['events_per_node']} events: "
        f"{fleet['frozen_images']} images in {fleet['frozen_calls']} calls, "
        f"{fleet['images_per_cpu_s']:.0f} images per CPU second of the stage, "
        f"{fleet['images_per_busy_s']:.0f} per second while it was busy"
    )
    print(
        f"fraction of the practical limit: {fraction:.1%} per CPU second (target 70 %); "
        f"{fraction_busy:.1%} of the most images per second"
    )
    h = host()
    print(
        f"| frozen stage in a fleet of {fleet['nodes']} (default model) | "
        f"{fleet['images_per_cpu_s']:.0f} images per CPU second = {fraction:.0%} of "
        f"onnxruntime's best ({best['images_per_cpu_s']:.0f}) | {h['cores']} cores, {h['cpu']} |"
    )
    result = {
        "fraction_of_limit": round(fraction, 4),
        "fraction_of_fastest_while_busy": round(fraction_busy, 4),
        "fleet": fleet,
        "limit": limit,
        "quick": args.quick,
        "host": h,
    }
    out = args.out if args.out is not None else None if args.quick else RESULT
    if out is not None:  # a quick look never overwrites the full run the README quotes
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
