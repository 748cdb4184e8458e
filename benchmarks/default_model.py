"""The default model's frozen stage: build time, INT8 fidelity and feature quality.

    python benchmarks/default_model.py

- build: wall time of `build_default` on the digits factory split (what the first
  `vega-emu up` pays once);
- INT8 vs FP32: cosine similarity of the latents of the quantized `frozen.onnx` and the FP32
  `frozen_fp32.onnx` on the held-out eval set;
- head on all classes: the bundle's adaptive stage trained jointly (not continually) on the INT8
  latents of every training event, all 10 classes, 10 epochs of SGD at the bundle's rate, tested
  on the eval set -- the ceiling a continual learner on this frozen stage can reach;
- linear probe: logistic regression on the same flattened latents.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from dataset_stream import build_scenario
from device.learning.nn import SGD, SGDConfig, softmax_cross_entropy
from device.model.bundle import ModelBundle
from device.model.default import build_default
from device.model.export import FROZEN_FP32, run_onnx
from device.model.frozen import FrozenStage


def main() -> None:
    scenario = build_scenario("digits", "nic", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_default(*scenario.factory, Path(tmp) / "bundle")
        build_s = time.perf_counter() - start
        bundle = ModelBundle.load(Path(tmp) / "bundle")
        frozen = FrozenStage(bundle)
        ex, ey = scenario.eval_set
        z8 = frozen.run(ex).reshape(len(ex), -1)
        z32 = run_onnx(bundle.path / FROZEN_FP32, bundle.input.normalize(ex)).reshape(len(ex), -1)
    cos = (z8 * z32).sum(1) / (np.linalg.norm(z8, axis=1) * np.linalg.norm(z32, axis=1) + 1e-12)

    events = scenario.events("node-0000")
    x = np.concatenate([e.x for e in events])
    y = np.concatenate([e.y for e in events])
    z = frozen.run(x)
    zt = frozen.run(ex)
    head = bundle.build_head()
    opt = SGD(SGDConfig(learning_rate=bundle.recommended_learning_rate))
    rng = np.random.default_rng(0)
    for _ in range(10):
        order = rng.permutation(len(z))
        for i in range(0, len(z), 128):
            idx = order[i : i + 128]
            _, grad = softmax_cross_entropy(head.forward(z[idx], train=True), y[idx])
            head.backward(grad)
            opt.step(head.params(), head.grads())
    head_acc = float((head.predict(zt) == ey).mean())
    probe = LogisticRegression(max_iter=3000).fit(z.reshape(len(z), -1), y)
    probe_acc = float(probe.score(zt.reshape(len(zt), -1), ey))
    print(
        json.dumps(
            {
                "build_s": round(build_s, 1),
                "int8_fp32_cosine_mean": round(float(cos.mean()), 4),
                "int8_fp32_cosine_min": round(float(cos.min()), 4),
                "head_all_classes_accuracy": round(head_acc, 3),
                "linear_probe_accuracy": round(probe_acc, 3),
                "train_samples": len(y),
                "eval_samples": len(ey),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
