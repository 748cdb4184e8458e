"""The Sequential head: end-to-end gradients, parameters round trip, training converges."""

from __future__ import annotations

import numpy as np
import pytest

from device.learning import nn

RNG = np.random.default_rng(1)


def _head(rng: np.random.Generator) -> nn.Sequential:
    return nn.Sequential(
        [
            nn.DepthwiseConv2d(4, 3, stride=2, padding=1, name="dw", rng=rng),
            nn.BatchNorm(4, name="bn"),
            nn.ReLU6(name="r0"),
            nn.PointwiseConv2d(4, 6, name="pw", rng=rng),
            nn.ReLU(name="r1"),
            nn.GlobalAvgPool(name="gap"),
            nn.Linear(6, 3, name="fc", rng=rng),
        ]
    )


def test_end_to_end_gradient_matches_finite_differences() -> None:
    head = _head(RNG).astype(np.float64)
    x = RNG.standard_normal((3, 4, 6, 6))
    y = np.array([0, 2, 1])
    _, g = nn.softmax_cross_entropy(head.forward(x, train=True), y)
    gx = head.backward(g, need_input_grad=True)
    assert gx is not None
    grads = {k: v.copy() for k, v in head.grads().items()}
    params = head.params()
    assert set(grads) == {k for k in params if "running" not in k}

    def loss() -> float:
        return nn.softmax_cross_entropy(head.forward(x), y)[0]

    for key in ("dw.weight", "pw.weight", "fc.bias", "bn.weight"):
        arr = params[key]
        idx = tuple(int(RNG.integers(s)) for s in arr.shape)
        old = arr[idx]
        arr[idx] = old + 1e-6
        up = loss()
        arr[idx] = old - 1e-6
        down = loss()
        arr[idx] = old
        assert grads[key][idx] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-8), key


def test_backward_skips_input_gradient_by_default() -> None:
    head = _head(RNG)
    x = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
    _, g = nn.softmax_cross_entropy(head.forward(x, train=True), np.array([0, 1]))
    assert head.backward(g) is None
    assert "dw.weight" in head.grads()


def test_params_roundtrip_and_specs() -> None:
    a, b = _head(np.random.default_rng(2)), nn.build_sequential(_head(RNG).specs(), RNG)
    b.load_params({k: v.copy() for k, v in a.params().items()})
    x = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    assert all(v.dtype == np.float32 for v in b.params().values())
    with pytest.raises(ValueError, match="missing"):
        b.load_params({})
    bad = dict(a.params())
    bad["fc.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"fc\.weight"):
        b.load_params(bad)
    infos = a.layer_infos((4, 6, 6))
    assert [i.kind for i in infos][:4] == ["depthwise", "batchnorm", "relu", "pointwise"]
    assert infos[0].macs == 4 * 9 * 3 * 3 and infos[-1].macs == 18


def test_sgd_training_learns_a_separable_problem() -> None:
    rng = np.random.default_rng(3)
    head = nn.Sequential([nn.Linear(5, 3, name="fc", rng=rng)])
    centers = rng.standard_normal((3, 5)) * 3
    y = rng.integers(0, 3, 300)
    x = (centers[y] + rng.standard_normal((300, 5))).astype(np.float32)
    opt = nn.SGD(nn.SGDConfig(learning_rate=0.05, momentum=0.9, weight_decay=5e-4))
    for _ in range(50):
        _, g = nn.softmax_cross_entropy(head.forward(x, train=True), y)
        head.backward(g)
        opt.step(head.params(), head.grads())
    assert (head.predict(x) == y).mean() > 0.95
    assert set(opt.state()) == {"fc.weight", "fc.bias"}
