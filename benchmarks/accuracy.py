"""Final accuracy on a data set's NIC benchmark by LR bits and LR memory size.

Runs the node's own learning engine (frozen INT8 stage, AR1* training with quantized replays,
SQLite state) over every learning event of one device, for each seed (the seed picks the
factory split, hence the default model, and the event order), and reports the mean final
accuracy on the held-out test sessions. The model is the one ``vega-emu up --dataset D --seed S``
uses: the default digits CNN, or the watch 1-D CNN for ``--dataset watch``.

    python benchmarks/accuracy.py --readme                   # digits: 32, 8, 7, 6 bits
    python benchmarks/accuracy.py --dataset watch --readme   # watch: 32, 8, 7, 6, 5, 4 bits

``--readme`` writes the table into README.md (between the data set's ``accuracy`` markers) and
the raw runs into ``benchmarks/results/accuracy.json`` (``accuracy-watch.json``) unless
``--out`` names another file; ``--table-from FILE`` prints (and with ``--readme`` writes) the
table of an earlier run's JSON without running anything.

Takes about 15 minutes (digits) and 10 minutes (watch) on 2 cores. The table is printed at the end.
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
from device.app.models import load_watch_default
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.model.default import load_default
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings, ReplaySettings

T0 = 1_764_000_000.0


DATASETS = ("digits", "watch")
DEFAULT_BITS = {"digits": [32, 8, 7, 6], "watch": [32, 8, 7, 6, 5, 4]}


def load_bundle(dataset: str, seed: int) -> ModelBundle:
    """The cached default model of ``vega-emu up --dataset dataset --seed seed``."""
    if dataset == "watch":
        return load_watch_default(seed)
    return load_default(seed, factory=partial(factory_split, "digits", "nic", seed))


def run_one(
    bundle: ModelBundle,
    seed: int,
    lr_size: int,
    bits: int,
    events: int | None,
    dataset: str = "digits",
    learning_rate: float | None = None,
) -> float:
    scenario = build_scenario(dataset, "nic", seed=seed)
    device = "node-0000"
    with tempfile.TemporaryDirectory() as tmp:
        settings = NodeSettings(
            device,
            Path(tmp),
            replay=ReplaySettings(lr_size, bits),
            seed=seed,
            # what `vega-emu up` uses unless told otherwise
            sgd=SGDConfig(learning_rate=learning_rate or bundle.recommended_learning_rate),
        )
        engine = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
        ex, ey = scenario.eval_set
        engine.set_eval(EvalSet(ex, ey, dataset))
        stream = scenario.events(device)[:events]
        for i, event in enumerate(stream, 1):
            engine.apply(Batch(event.x, event.y, seq=i, t=T0 + 60 * i, source=dataset))
        evaluation = engine.evaluate()
        engine.close()
    assert evaluation is not None
    return evaluation.accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=None, help="default: by data set")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 100, 500, 1500])
    parser.add_argument("--events", type=int, default=None, help="events per run (default: all)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="on-device SGD rate (default: the model's own)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--table-from", type=Path, default=None, help="a results JSON: no run")
    args = parser.parse_args()
    if args.table_from is not None:
        done = json.loads(args.table_from.read_text())
        text = table(done["runs"], done["args"]["bits"], done["args"]["sizes"])
        finish(text, args.readme, done["args"].get("dataset", "digits"))
        return
    if args.bits is None:
        args.bits = DEFAULT_BITS[args.dataset]
    if args.out is None and args.readme:
        args.out = RESULTS / RESULT_FILES[args.dataset]

    results: list[dict[str, Any]] = []
    for seed in args.seeds:
        # the cached default model of `vega-emu up --seed`
        bundle = load_bundle(args.dataset, seed)
        for lr_size in args.sizes:
            for bits in args.bits if lr_size else [8]:
                start = time.perf_counter()
                acc = run_one(
                    bundle, seed, lr_size, bits, args.events, args.dataset, args.learning_rate
                )
                took = time.perf_counter() - start
                print(f"seed {seed} size {lr_size:5d} bits {bits:2d}: {acc:.4f} ({took:.1f} s)")
                results.append({"seed": seed, "lr_size": lr_size, "lr_bits": bits, "accuracy": acc})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = vars(args) | {"out": str(args.out)}
        args.out.write_text(json.dumps({"args": meta, "runs": results}, indent=1))
    print()
    finish(table(results, args.bits, args.sizes), args.readme, args.dataset)


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
RESULT_FILES = {"digits": "accuracy.json", "watch": "accuracy-watch.json"}
MARKERS = ("<!-- accuracy:start -->", "<!-- accuracy:end -->")
WATCH_MARKERS = ("<!-- accuracy-watch:start -->", "<!-- accuracy-watch:end -->")


def markers(dataset: str) -> tuple[str, str]:
    """The README markers around ``dataset``'s table."""
    return WATCH_MARKERS if dataset == "watch" else MARKERS


def table(results: list[dict[str, Any]], bits: list[int], sizes: list[int]) -> str:
    """The README table: mean ± std (over seeds) of the final accuracy, in %."""
    head = [f"{b} bits (FP32)" if b == 32 else f"{b} bits" for b in bits]
    lines = ["| LR size | " + " | ".join(head) + " |", "|---|" + "---|" * len(bits)]
    for size in sizes:
        cells = []
        for i, b in enumerate(bits):
            if size == 0 and i:  # no replays: the bits do not matter, one column says it
                cells.append("-")
                continue
            want = b if size else 8
            accs = [r["accuracy"] for r in results if (r["lr_size"], r["lr_bits"]) == (size, want)]
            cells.append(f"{100 * np.mean(accs):.1f} ± {100 * np.std(accs):.1f}" if accs else "-")
        label = "0 (no replays)" if size == 0 else str(size)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finish(text: str, readme: bool, dataset: str = "digits") -> None:
    if readme:
        doc = README.read_text("utf-8")
        start, end = markers(dataset)
        head, rest = doc.split(start, 1)
        README.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
