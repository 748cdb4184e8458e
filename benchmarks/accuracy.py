"""Final accuracy on the default benchmark (digits, NIC) by LR bits and LR memory size.

Runs the node's own learning engine (frozen INT8 stage, AR1* training with quantized replays,
SQLite state) over every learning event of one device, for each seed (the seed picks the
factory split, hence the default model, and the event order), and reports the mean final
accuracy on the held-out test sessions.

    python benchmarks/accuracy.py --out benchmarks/results/accuracy.json

Takes about 15 minutes on 2 cores. The README table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dataset_stream import build_scenario
from dataset_stream.protocol import Batch, EvalSet
from dataset_stream.scenarios import factory_split
from device.engine import NodeEngine
from device.model.bundle import ModelBundle
from device.model.default import load_default
from device.model.frozen import FrozenStage
from device.nn import SGDConfig
from device.settings import NodeSettings, ReplaySettings

T0 = 1_764_000_000.0


def run_one(bundle: ModelBundle, seed: int, size: int, bits: int, events: int | None) -> float:
    scenario = build_scenario("digits", "nic", seed=seed)
    device = "node-0000"
    with tempfile.TemporaryDirectory() as tmp:
        settings = NodeSettings(
            device,
            Path(tmp),
            replay=ReplaySettings(size, bits),
            seed=seed,
            sgd=SGDConfig(lr=bundle.recommended_lr),  # what `vega-emu up` uses
        )
        engine = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
        ex, ey = scenario.eval_set
        engine.set_eval(EvalSet(ex, ey, "digits"))
        stream = scenario.events(device)[:events]
        for i, event in enumerate(stream, 1):
            engine.apply(Batch(event.x, event.y, seq=i, t=T0 + 60 * i, source="digits"))
        evaluation = engine.evaluate()
        engine.close()
    assert evaluation is not None
    return evaluation.accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 8, 7, 6])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 100, 500, 1500])
    parser.add_argument("--events", type=int, default=None, help="events per run (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    for seed in args.seeds:
        # the cached default model of `vega-emu up --seed`
        bundle = load_default(seed, factory=partial(factory_split, "digits", "nic", seed))
        for size in args.sizes:
            for bits in args.bits if size else [8]:
                start = time.perf_counter()
                acc = run_one(bundle, seed, size, bits, args.events)
                took = time.perf_counter() - start
                print(f"seed {seed} size {size:5d} bits {bits:2d}: {acc:.4f} ({took:.1f} s)")
                results.append({"seed": seed, "lr_size": size, "lr_bits": bits, "accuracy": acc})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = vars(args) | {"out": str(args.out)}
        args.out.write_text(json.dumps({"args": meta, "runs": results}, indent=1))
    print("\n| LR size | " + " | ".join(f"{b} bits" for b in args.bits) + " |")
    print("|---|" + "---|" * len(args.bits))
    for size in args.sizes:
        cells = []
        for bits in args.bits:
            want = bits if size else 8
            accs = [r["accuracy"] for r in results if (r["lr_size"], r["lr_bits"]) == (size, want)]
            cells.append(f"{100 * np.mean(accs):.1f} ± {100 * np.std(accs):.1f}" if accs else "-")
        print(f"| {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
