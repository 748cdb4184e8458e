"""Accuracy over the first learning events of a fleet: overall and on the factory classes.

Runs the node's own engine (frozen INT8 stage, AR1* training with quantized replays, SQLite
state) for ``--devices`` devices of the default benchmark (digits, NIC, seed 0), each over its
first ``--events`` events, and prints the fleet's mean accuracy after each event (event 0: the
factory model). A bundle with factory replays starts each memory from them; one without them
(an older cached default model, ``model split``) starts empty, which gives the "before" curve::

    python benchmarks/first_events.py                          # the cached default model
    python benchmarks/first_events.py --model OLD_BUNDLE_DIR   # a bundle without replays

About 20 s per device on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from dataset_stream import build_scenario
from dataset_stream.protocol import Batch, EvalSet
from device.app.models import load_model
from device.learning.nn import SGDConfig
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings

T0 = 1_764_000_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundle directory (default: the default)")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=None)
    args = parser.parse_args()
    bundle = load_model(args.model)
    rate = args.learning_rate or bundle.recommended_learning_rate
    factory = [int(c) for c in bundle.meta.get("factory_classes", [])]
    scenario = build_scenario("digits", "nic", seed=0)
    ex, ey = scenario.eval_set
    overall = np.zeros((args.devices, args.events + 1))
    known = np.zeros_like(overall)
    for d in range(args.devices):
        device = f"node-{d:04d}"
        with tempfile.TemporaryDirectory() as tmp:
            settings = NodeSettings(device, Path(tmp), sgd=SGDConfig(learning_rate=rate))
            engine = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
            engine.set_eval(EvalSet(ex, ey, "digits"))
            for i, event in enumerate([None, *scenario.events(device)[: args.events]]):
                if event is not None:
                    engine.apply(Batch(event.x, event.y, seq=i, t=T0 + 60 * i, source="digits"))
                ev = engine.evaluate()
                assert ev is not None
                overall[d, i] = ev.accuracy
                known[d, i] = np.mean([ev.per_class[c] for c in factory])
            engine.close()
    print(f"{bundle.path} ({bundle.name}), learning rate {rate}, {args.devices} devices")
    print("event | accuracy | factory classes")
    for i in range(args.events + 1):
        print(f"{i:5d} | {100 * overall[:, i].mean():8.1f} | {100 * known[:, i].mean():6.1f}")


if __name__ == "__main__":
    main()
