"""A simulated 3-axis accelerometer for the live-data example (docs/live-data.md).

Two commands:

    python scripts/accelerometer.py model --out bundles/accel
        trains a small model for its windows (float32 [3, 64], 6 motion patterns) on the
        synthetic-sensor factory split and writes a model bundle (about 10 s, no download);

    python scripts/accelerometer.py publish --broker mqtt://127.0.0.1:1883 --devices accel-0
        publishes one window per device per --period seconds as JSON to
        sensors/{device}/reading: {"x": [[...], [...], [...]], "y": label or null, "t": ...};
        one window in --label-every carries its label (the rest are to be classified).

The windows are those of ``vega-emu stream --dataset synthetic-sensor`` (dataset_stream/sources/
sensor.py): its training sessions, drawn at random, so the devices see drifting sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_model(out: Path, seed: int) -> None:
    """Flatten -> Linear 192->64 -> ReLU -> Linear 64->32 -> ReLU (frozen, INT8; LR = 32 values)
    | Linear 32->6 (adaptive), trained on the factory split."""
    from dataset_stream.scenarios import factory_split
    from device.learning.nn import Flatten, Linear, ReLU, Sequential, SGDConfig
    from device.model.bundle import InputSpec
    from device.model.export import write_bundle
    from device.model.onnx_build import layers_to_onnx
    from device.model.train import FitConfig, fit

    x, y = factory_split("synthetic-sensor", "nic", seed)
    rng = np.random.default_rng(seed)
    net = Sequential(
        [
            Flatten(name="flat"),
            Linear(192, 64, name="fc0", rng=rng),
            ReLU(name="r0"),
            Linear(64, 32, name="fc1", rng=rng),
            ReLU(name="r1"),
            Linear(32, 6, name="fc2", rng=rng),
        ]
    )
    mean, std = float(x.mean()), float(x.std() + 1e-3)
    losses = fit(net, x, y, FitConfig(epochs=40, sgd=SGDConfig(0.05, 0.9, 5e-4)), rng,
                 normalize=(mean, std))  # fmt: skip
    frozen, head = Sequential(net.layers[:5]), Sequential(net.layers[5:])
    shape = (3, 64)
    bundle = write_bundle(
        out,
        name="accelerometer-v1",
        input_spec=InputSpec(shape, "float32", (mean,), (std,)),
        frozen_fp32=layers_to_onnx(frozen.specs(), frozen.params(), shape, output_name="lr"),
        calibration=x[rng.permutation(len(x))[:256]],
        frozen_layers=frozen.layer_infos(shape, adaptive=False),
        head=head,
        num_classes=6,
        meta={
            "description": "MLP for float32 [3, 64] accelerometer windows",
            "source": f"accelerometer.py seed={seed} samples={len(x)} loss={losses[-1]:.4f}",
            "train": {"learning_rate": 0.05},
        },
    )
    print(f"bundle {out}: input {list(bundle.input_shape)} float32, LR {bundle.lr_shape}, "
          f"{bundle.num_classes} classes")  # fmt: skip


async def publish(
    broker: str, devices: list[str], period_s: float, label_every: int, count: int | None
) -> None:
    import aiomqtt

    from broker.url import parse_broker_url
    from dataset_stream.sources.sensor import load_sensor_benchmark

    data = load_sensor_benchmark(seed=1)  # another seed than the model's: windows it never saw
    train = data.select(sessions=data.train_sessions)
    rng = np.random.default_rng()
    url = parse_broker_url(broker)
    sent = 0
    async with aiomqtt.Client(**url.client_kwargs()) as client:
        while count is None or sent < count:
            for device in devices:
                i = int(rng.choice(train))
                labelled = rng.integers(label_every) == 0
                message = {
                    "x": data.take(np.array([i]))[0].round(4).tolist(),
                    "y": int(data.y[i]) if labelled else None,
                    "t": time.time(),
                }
                await client.publish(f"sensors/{device}/reading", json.dumps(message), qos=1)
            sent += 1
            await asyncio.sleep(period_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model", help="write the accelerometer model bundle")
    model.add_argument("--out", type=Path, required=True)
    model.add_argument("--seed", type=int, default=0)
    pub = sub.add_parser("publish", help="publish windows as JSON to sensors/{device}/reading")
    pub.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    pub.add_argument("--devices", default="accel-0", help="comma-separated device ids")
    pub.add_argument("--period", type=float, default=0.1, help="seconds between windows")
    pub.add_argument("--label-every", type=int, default=4, help="1 window in N is labelled")
    pub.add_argument("--count", type=int, default=None, help="windows per device (default: ∞)")
    args = parser.parse_args()
    if args.command == "model":
        build_model(args.out, args.seed)
    else:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(publish(args.broker, devices, args.period, args.label_every, args.count))


if __name__ == "__main__":
    main()
