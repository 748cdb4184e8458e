"""The watch 1-D CNN: its layers, its ONNX export, its energy, and a node learning with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataset_stream import build_scenario
from dataset_stream.protocol import Batch
from device.app.models import benchmark_of, load_model
from device.energy import CostConfig, event_cost, load_profile
from device.learning.nn import AvgPool1d, Conv1d, Sequential, build_sequential
from device.learning.nn.optim import SGDConfig
from device.model.bundle import ModelBundle
from device.model.export import run_onnx
from device.model.frozen import FrozenStage
from device.model.onnx_build import layers_to_onnx
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings, ReplaySettings
from tests.support.times import T0
from tests.support.watch import require_watch


def small_net() -> Sequential:
    rng = np.random.default_rng(0)
    return Sequential(
        [
            Conv1d(3, 4, 3, stride=2, padding=1, name="c0", rng=rng),
            AvgPool1d(2, name="p0"),
            Conv1d(4, 2, 2, name="c1", rng=rng),
        ]
    )


def test_conv1d_gradients_match_finite_differences() -> None:
    net = small_net().astype(np.float64)
    x = np.random.default_rng(1).standard_normal((2, 3, 11))
    target = np.random.default_rng(2).standard_normal((2, *net.out_shape((3, 11))))

    def loss(inp: np.ndarray) -> float:
        return float(0.5 * np.sum((net.forward(inp, train=False) - target) ** 2))

    out = net.forward(x, train=True)
    gx = net.backward(out - target, need_input_grad=True)
    assert gx is not None
    eps = 1e-6
    for index in [(0, 0, 0), (1, 2, 5), (0, 1, 10)]:
        bump = np.zeros_like(x)
        bump[index] = eps
        numeric = (loss(x + bump) - loss(x - bump)) / (2 * eps)
        assert gx[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    weight = net.layers[0].params["weight"]
    analytic = net.grads()["c0.weight"][1, 2, 0]
    weight[1, 2, 0] += eps
    up = loss(x)
    weight[1, 2, 0] -= 2 * eps
    down = loss(x)
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-5)


def test_conv1d_exports_to_onnx_and_counts_its_macs() -> None:
    net = small_net()
    rebuilt = build_sequential(net.specs(), np.random.default_rng(5))
    rebuilt.load_params(net.params())
    x = np.random.default_rng(3).standard_normal((4, 3, 11)).astype(np.float32)
    model = layers_to_onnx(net.specs(), net.params(), (3, 11), output_name="lr")
    np.testing.assert_allclose(run_onnx(model, x), net.forward(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(rebuilt.forward(x), net.forward(x))
    c0, p0, c1 = net.layer_infos((3, 11))
    assert (c0.kind, c0.out_shape, c0.macs) == ("conv", (4, 6), 4 * 3 * 3 * 6)
    assert (p0.kind, p0.out_shape, c1.out_shape, c1.macs) == ("pool", (4, 3), (2, 2), 2 * 4 * 2 * 2)


@pytest.fixture(scope="module")
def watch_bundle() -> ModelBundle:
    require_watch()
    return load_model(None, dataset="watch")


def test_the_watch_bundle_is_a_1d_cnn_with_an_int8_frozen_stage(watch_bundle: ModelBundle) -> None:
    bundle = watch_bundle
    assert (bundle.input_shape, bundle.input.dtype, bundle.lr_shape) == (
        (6, 100),
        "float32",
        (32, 12),
    )
    assert bundle.num_classes == 7 and bundle.meta["factory_classes"] == [0, 6]
    macs = {layer.name: layer.macs for layer in bundle.layers()}
    assert macs["c0"] == 16 * 6 * 5 * 100 and macs["c2"] == 32 * 32 * 3 * 25
    assert macs["fc3"] == 384 * 64
    scenario = build_scenario("watch", "nc", seed=0)
    x, y = scenario.eval_set
    seen = np.isin(y, bundle.meta["factory_classes"])
    latents = run_onnx(bundle.frozen_path, bundle.input.normalize(x[seen]))
    accuracy = float(np.mean(bundle.build_head().predict(latents) == y[seen]))
    assert accuracy > 0.85  # factory classes, held-out subjects, INT8 frozen stage


def test_the_watch_bundle_is_costed_on_its_own_benchmark(watch_bundle: ModelBundle) -> None:
    benchmark = benchmark_of(watch_bundle.path)
    assert benchmark is not None and (benchmark.dataset, benchmark.events) == ("watch", 54)
    cost = event_cost(
        watch_bundle.layers(),
        load_profile("vega"),
        CostConfig(),
        n_new=benchmark.new_per_event,
        n_replay=1500,
    )
    frozen = sum(c.joules for c in cost.layers if not c.adaptive)
    assert frozen == pytest.approx(
        252_800 * benchmark.new_per_event / 118.64113152 / 375e6 * 0.062, rel=1e-6
    )


def test_a_node_learns_a_watch_batch(watch_bundle: ModelBundle, tmp_path: Path) -> None:
    settings = NodeSettings(
        "n0", tmp_path, replay=ReplaySettings(300, 8), sgd=SGDConfig(learning_rate=0.05)
    )
    engine = NodeEngine(settings, watch_bundle, FrozenStage.shared(watch_bundle))
    event = build_scenario("watch", "nic", seed=0).events("node-0000")[0]
    before = {k: v.copy() for k, v in engine.head.params().items()}
    telemetry = engine.apply(Batch(event.x, event.y, seq=1, t=T0 + 60, source="watch")).telemetry
    report = telemetry.to_dict()
    assert report["seq"] == 1 and report["samples"] == len(event)
    assert report["replay"]["size"] > 0
    assert report["energy_j"]["total"] > 0
    assert any(not np.array_equal(before[k], v) for k, v in engine.head.params().items())
    engine.close()
