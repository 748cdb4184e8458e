"""Every layer's backward pass against central finite differences (in float64)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from device.learning import nn
from device.learning.nn.base import Layer

RNG = np.random.default_rng(0)


def _numeric(f: Callable[[], float], arr: np.ndarray, idx: tuple[int, ...], eps: float) -> float:
    old = arr[idx]
    arr[idx] = old + eps
    up = f()
    arr[idx] = old - eps
    down = f()
    arr[idx] = old
    return (up - down) / (2 * eps)


def check_layer(layer: Layer, x: np.ndarray, n_probe: int = 12, eps: float = 1e-6) -> None:
    layer.astype(np.float64)
    for p in layer.params.values():  # non-trivial values for biases / BN statistics
        p += RNG.normal(0, 0.3, p.shape)
    if "running_var" in layer.params:
        layer.params["running_var"][...] = np.abs(layer.params["running_var"]) + 0.5
    x = x.astype(np.float64)
    y = layer.forward(x, train=True)
    g = RNG.standard_normal(y.shape)
    gx = layer.backward(g)
    assert gx is not None and gx.shape == x.shape
    grads = {k: v.copy() for k, v in layer.grads.items()}
    assert set(grads) == set(layer.trainable)

    def loss() -> float:
        return float((layer.forward(x, train=False) * g).sum())

    targets = [("x", x, gx)] + [(k, layer.params[k], grads[k]) for k in layer.trainable]
    for name, arr, analytic in targets:
        assert analytic.shape == arr.shape, name
        for _ in range(n_probe):
            idx = tuple(int(RNG.integers(s)) for s in arr.shape)
            num = _numeric(loss, arr, idx, eps)
            assert analytic[idx] == pytest.approx(num, rel=1e-5, abs=1e-6), (layer.name, name, idx)


def _img(n: int, c: int, h: int, w: int | None = None) -> np.ndarray:
    return RNG.standard_normal((n, c, h, h if w is None else w))


@pytest.mark.parametrize(
    ("stride", "padding", "kernel", "hw"),
    [(1, 0, 3, 6), (1, 1, 3, 5), (2, 1, 3, 7), (2, 0, 3, 8), (1, 2, 5, 6)],
)
def test_conv2d(stride: int, padding: int, kernel: int, hw: int) -> None:
    layer = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, name="c", rng=RNG)
    check_layer(layer, _img(2, 3, hw, hw + 1))


@pytest.mark.parametrize(("stride", "padding", "hw"), [(1, 1, 5), (2, 1, 7), (2, 1, 8), (1, 0, 6)])
def test_depthwise(stride: int, padding: int, hw: int) -> None:
    layer = nn.DepthwiseConv2d(5, 3, stride=stride, padding=padding, name="dw", rng=RNG)
    check_layer(layer, _img(3, 5, hw))


def test_pointwise() -> None:
    check_layer(nn.PointwiseConv2d(6, 4, name="pw", rng=RNG), _img(3, 6, 4, 3))


def test_linear() -> None:
    check_layer(nn.Linear(7, 5, name="fc", rng=RNG), RNG.standard_normal((4, 7)))


@pytest.mark.parametrize("shape", [(4, 6), (3, 6, 4, 5)])
def test_batchnorm(shape: tuple[int, ...]) -> None:
    check_layer(nn.BatchNorm(6, name="bn"), RNG.standard_normal(shape))


def test_relu_relu6_flatten_pools() -> None:
    check_layer(nn.ReLU(name="r"), _img(2, 3, 4))
    check_layer(nn.ReLU6(name="r6"), _img(2, 3, 4) * 5)
    check_layer(nn.Flatten(name="f"), _img(2, 3, 4))
    check_layer(nn.AvgPool(2, name="p"), _img(2, 3, 6, 4))
    check_layer(nn.AvgPool(3, 2, name="p3"), _img(2, 3, 7))
    check_layer(nn.GlobalAvgPool(name="gap"), _img(2, 3, 5))


def test_conv_matches_direct_formula() -> None:
    """The im2col convolution equals a naive sum over kernel offsets and channels."""
    layer = nn.Conv2d(2, 3, 3, stride=2, padding=1, name="c", rng=RNG)
    x = _img(2, 2, 5).astype(np.float32)
    y = layer.forward(x, train=False)
    w, b = layer.params["weight"], layer.params["bias"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros_like(y)
    for oh in range(y.shape[2]):
        for ow in range(y.shape[3]):
            patch = xp[:, :, 2 * oh : 2 * oh + 3, 2 * ow : 2 * ow + 3]
            ref[:, :, oh, ow] = np.einsum("ncij,ocij->no", patch, w) + b
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    dw = nn.DepthwiseConv2d(2, 3, stride=2, padding=1, name="d", rng=RNG)
    yd = dw.forward(x, train=False)
    wd = dw.params["weight"][:, 0]
    ref_d = np.zeros_like(yd)
    for oh in range(yd.shape[2]):
        for ow in range(yd.shape[3]):
            patch = xp[:, :, 2 * oh : 2 * oh + 3, 2 * ow : 2 * ow + 3]
            ref_d[:, :, oh, ow] = np.einsum("ncij,cij->nc", patch, wd) + dw.params["bias"]
    np.testing.assert_allclose(yd, ref_d, rtol=1e-5, atol=1e-5)
    assert y.dtype == np.float32 and yd.dtype == np.float32


def test_softmax_cross_entropy_gradient() -> None:
    logits = RNG.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    loss, grad = nn.softmax_cross_entropy(logits, labels)
    for _ in range(10):
        idx = (int(RNG.integers(5)), int(RNG.integers(4)))
        num = _numeric(lambda: nn.softmax_cross_entropy(logits, labels)[0], logits, idx, 1e-6)
        assert grad[idx] == pytest.approx(num, rel=1e-5, abs=1e-7)
    assert loss > 0
    with pytest.raises(ValueError, match="labels"):
        nn.softmax_cross_entropy(logits, np.array([0, 1, 2, 3, 4]))
