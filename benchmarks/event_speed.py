"""Core-seconds of CPU per learning event of the default model, and where they go.

One NodeEngine (the default model, LR memory of 1500 8-bit latents, the model's recommended
SGD rate) learns the bundled digits ``nic`` scenario over a temporary state directory, with the
held-out eval set loaded as a fleet node has it. BLAS is limited to one thread, as in a fleet.
Each event is timed by the engine itself (``device.node.cputime``: the CPU seconds of the thread
that runs it, core-seconds; here all of the event's work, as BLAS and onnxruntime run in that
thread), and split into the frozen stage (onnxruntime), training (``train_event``), evaluation
(accuracy on the eval set, the emulator's own measurement) and the rest (LR memory update, SQLite
commit, energy bookkeeping). The median is taken over the events after ``--warmup``.

    python benchmarks/event_speed.py --events 30 --out benchmarks/results/event_speed.json

``--profile`` prints the top of a cProfile of the measured events (sorted by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _host import git_commit

PARTS = ("frozen", "training", "eval", "rest")


def measure(events: int, warmup: int, lr_size: int, profile: bool) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from dataset_stream import build_scenario
    from dataset_stream.protocol import Batch, EvalSet
    from dataset_stream.scenarios import factory_split
    from device.learning.nn import SGDConfig
    from device.model.default import load_default
    from device.model.frozen import FrozenStage
    from device.node import cputime
    from device.node.engine import NodeEngine
    from device.node.settings import NodeSettings, ReplaySettings

    # the cached default model, as `vega-emu node` loads it (built on first use, about 10 s)
    bundle = load_default(0, factory=lambda: factory_split("digits", "nic", 0))
    scenario = build_scenario("digits", "nic", seed=0)
    stream = scenario.events("node-0000", True)
    if warmup + events > len(stream):
        raise SystemExit(f"error: the scenario has {len(stream)} events, asked {warmup + events}")
    profiler = cProfile.Profile()
    rows: list[dict[str, float]] = []
    samples: list[int] = []
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1, user_api="blas"):
        settings = NodeSettings(
            "node-0000",
            Path(tmp),
            replay=ReplaySettings(lr_size, 8),
            sgd=SGDConfig(learning_rate=bundle.recommended_learning_rate),
        )
        engine = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
        ex, ey = scenario.eval_set
        engine.set_eval(EvalSet(ex, ey, "digits"))
        try:
            for seq, event in enumerate(stream[: warmup + events], 1):
                batch = Batch(event.x, event.y, seq=seq, t=1.764e9 + 60 * seq, source="digits")
                measured = seq > warmup
                if measured and profile:
                    profiler.enable()
                before = cputime.totals()
                engine.apply(batch)
                after = cputime.totals()
                if measured and profile:
                    profiler.disable()
                if measured:
                    spent = {p: after[p]["s"] - before[p]["s"] for p in after}
                    parts = {p: spent[p] for p in PARTS[:-1]}
                    parts["rest"] = spent["event"] - sum(parts.values())
                    rows.append({"total": spent["event"], **parts})
                    samples.append(len(event.y))
        finally:
            engine.close()
    median = {k: statistics.median(r[k] for r in rows) for k in ("total", *PARTS)}
    result: dict[str, Any] = {
        "events": events,
        "warmup": warmup,
        "lr_size": lr_size,
        "samples_per_event_median": statistics.median(samples),
        "core_s_per_event": round(median["total"], 4),
        "split_core_s": {p: round(median[p], 4) for p in PARTS},
        "core_s_per_event_all": [round(r["total"], 4) for r in rows],
        "commit": git_commit(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if profile:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
        result["profile"] = text.getvalue()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30, help="measured events")
    parser.add_argument("--warmup", type=int, default=3, help="events run before measuring")
    parser.add_argument("--lr-size", type=int, default=1500)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the events")
    parser.add_argument("--label", default="", help="name of this run in the --out file")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to add this run to")
    args = parser.parse_args()
    if args.events < 1 or args.warmup < 0:
        parser.error("--events must be >= 1 and --warmup >= 0")
    result = measure(args.events, args.warmup, args.lr_size, args.profile)
    if args.profile:
        print(result.pop("profile"))
    split = result["split_core_s"]
    print(
        f"| default model, digits nic | {result['core_s_per_event']:.3f} core-s/event "
        f"(median of {args.events}) | frozen {split['frozen']:.3f}, training "
        f"{split['training']:.3f}, eval {split['eval']:.3f}, rest {split['rest']:.3f} |"
    )
    if args.out:
        runs: dict[str, Any] = {}
        if args.out.is_file():
            runs = json.loads(args.out.read_text()).get("runs", {})
        runs[args.label or result["commit"]] = result
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
