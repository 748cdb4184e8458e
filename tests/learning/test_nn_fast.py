"""The fast depthwise, pointwise and pooling kernels against straightforward references.

The references below are the plain algorithms the layers used before the GEMM kernels: k x k
shifted multiply-adds over a zero-padded copy (depthwise, pooling) and a transpose-GEMM
(pointwise). They run in float64; the layers run in float32 and must agree to 1e-5 of the
largest reference value, forward and backward (input, weight and bias gradients), on the shapes
of the default head and on odd ones (stride 2, no or wide padding, batch 1, non-square maps, and
maps large enough for the layers' offset-loop path).
"""

from __future__ import annotations

import numpy as np
import pytest

from device.learning import nn
from device.learning.nn.planar import is_small

RNG = np.random.default_rng(1)


def _pad(x: np.ndarray, p: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def _window(i: int, j: int, s: int, oh: int, ow: int) -> tuple[slice, ...]:
    return (
        slice(None),
        slice(None),
        slice(i, i + s * (oh - 1) + 1, s),
        slice(j, j + s * (ow - 1) + 1, s),
    )


def ref_depthwise(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, g: np.ndarray, k: int, s: int, p: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(y, gx, gweight, gbias)`` of a per-channel k x k convolution."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    xp = _pad(x, p)
    y = np.zeros((n, c, oh, ow)) + bias[None, :, None, None]
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(weight)
    for i in range(k):
        for j in range(k):
            idx = _window(i, j, s, oh, ow)
            y += xp[idx] * weight[None, :, 0, i, j, None, None]
            gw[:, 0, i, j] = (g * xp[idx]).sum(axis=(0, 2, 3))
            gxp[idx] += g * weight[None, :, 0, i, j, None, None]
    return y, gxp[:, :, p : p + h, p : p + w], gw, g.sum(axis=(0, 2, 3))


def ref_pointwise(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n, c, h, w = x.shape
    o = weight.shape[0]
    xt = x.transpose(1, 0, 2, 3).reshape(c, -1)
    y = (weight.reshape(o, c) @ xt + bias[:, None]).reshape(o, n, h, w).transpose(1, 0, 2, 3)
    gt = g.transpose(1, 0, 2, 3).reshape(o, -1)
    gx = (weight.reshape(o, c).T @ gt).reshape(c, n, h, w).transpose(1, 0, 2, 3)
    return y, gx, (gt @ xt.T).reshape(weight.shape), gt.sum(axis=1)


def ref_avgpool(x: np.ndarray, g: np.ndarray, k: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    y = np.zeros((n, c, oh, ow))
    gx = np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            y += x[_window(i, j, s, oh, ow)] / (k * k)
            gx[_window(i, j, s, oh, ow)] += g / (k * k)
    return y, gx


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= 1e-5 * scale, f"{what}: max error {err} (scale {scale})"


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


DEPTHWISE = [  # (n, c, h, w, kernel, stride, padding)
    (128, 32, 4, 4, 3, 1, 1),  # the default head (training batch)
    (512, 32, 4, 4, 3, 1, 1),  # the default head (evaluation batch)
    (1, 32, 4, 4, 3, 1, 1),
    (3, 5, 7, 6, 3, 2, 1),
    (2, 4, 6, 5, 3, 1, 0),
    (2, 3, 5, 5, 5, 1, 2),
    (1, 3, 4, 4, 3, 2, 0),
    (4, 6, 10, 10, 3, 1, 1),  # large map: the offset-loop path
    (1, 3, 13, 11, 3, 2, 1),
    (2, 3, 12, 12, 5, 1, 2),
]


@pytest.mark.parametrize(("n", "c", "h", "w", "k", "s", "p"), DEPTHWISE)
def test_depthwise_matches_reference(
    n: int, c: int, h: int, w: int, k: int, s: int, p: int
) -> None:
    layer = nn.DepthwiseConv2d(c, k, stride=s, padding=p, name="dw", rng=RNG)
    layer.params["bias"][...] = _f32(c)
    x = _f32(n, c, h, w)
    y = layer.forward(x, train=True)
    g = _f32(*y.shape)
    gx = layer.backward(g)
    assert gx is not None
    weight, bias = layer.params["weight"], layer.params["bias"]
    ry, rgx, rgw, rgb = ref_depthwise(
        x.astype(np.float64), weight.astype(np.float64), bias.astype(np.float64),
        g.astype(np.float64), k, s, p,
    )  # fmt: skip
    assert_close(y, ry, "y")
    assert_close(gx, rgx, "input grad")
    assert_close(layer.grads["weight"], rgw, "weight grad")
    assert_close(layer.grads["bias"], rgb, "bias grad")


@pytest.mark.parametrize("hw", [4, 10])
def test_depthwise_inference_between_forward_and_backward(hw: int) -> None:
    """An evaluation pass (other batch, same shape) leaves the training pass's gradients alone."""
    layer = nn.DepthwiseConv2d(4, 3, padding=1, name="dw", rng=RNG)
    x, other = _f32(2, 4, hw, hw), _f32(2, 4, hw, hw)
    g = _f32(2, 4, hw, hw)
    layer.forward(x, train=True)
    want = layer.backward(g)
    want_w = layer.grads["weight"].copy()
    layer.forward(x, train=True)
    layer.forward(other, train=False)
    got = layer.backward(g)
    assert got is not None and want is not None
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(layer.grads["weight"], want_w)


def test_depthwise_shapes_cover_both_paths() -> None:
    small = [is_small(h, w, k, s, p) for _, _, h, w, k, s, p in DEPTHWISE]
    assert any(small) and not all(small)


@pytest.mark.parametrize(
    ("n", "c", "o", "h", "w"),
    [(128, 32, 64, 4, 4), (512, 32, 64, 4, 4), (1, 6, 4, 4, 3), (3, 5, 7, 9, 9)],
)
def test_pointwise_matches_reference(n: int, c: int, o: int, h: int, w: int) -> None:
    layer = nn.PointwiseConv2d(c, o, name="pw", rng=RNG)
    layer.params["bias"][...] = _f32(o)
    x = _f32(n, c, h, w)
    y = layer.forward(x, train=True)
    g = _f32(*y.shape)
    gx = layer.backward(g)
    assert gx is not None
    ry, rgx, rgw, rgb = ref_pointwise(
        x.astype(np.float64),
        layer.params["weight"].astype(np.float64),
        layer.params["bias"].astype(np.float64),
        g.astype(np.float64),
    )
    assert_close(y, ry, "y")
    assert_close(gx, rgx, "input grad")
    assert_close(layer.grads["weight"], rgw, "weight grad")
    assert_close(layer.grads["bias"], rgb, "bias grad")


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "k", "s"),
    [
        (128, 64, 4, 4, 2, 2),  # the default head
        (1, 64, 4, 4, 2, 2),
        (2, 3, 5, 5, 2, 2),  # odd size: the last row and column are dropped
        (2, 3, 7, 6, 3, 2),  # overlapping windows
        (2, 3, 6, 6, 3, 1),
        (2, 3, 16, 16, 2, 2),  # large map: the offset-loop path
        (1, 2, 17, 15, 3, 2),
    ],
)
def test_avgpool_matches_reference(n: int, c: int, h: int, w: int, k: int, s: int) -> None:
    layer = nn.AvgPool(k, s, name="p")
    x = _f32(n, c, h, w)
    y = layer.forward(x, train=True)
    g = _f32(*y.shape)
    gx = layer.backward(g)
    assert gx is not None
    ry, rgx = ref_avgpool(x.astype(np.float64), g.astype(np.float64), k, s)
    assert_close(y, ry, "y")
    assert_close(gx, rgx, "input grad")


def test_default_head_stays_float32() -> None:
    """A training step of the default head's layers keeps every array float32."""
    from device.model.default import default_network

    net = nn.Sequential(default_network(np.random.default_rng(0)).layers[9:])
    x = _f32(128, 32, 4, 4)
    logits = net.forward(x, train=True)
    assert logits.dtype == np.float32
    _, grad = nn.softmax_cross_entropy(logits, RNG.integers(0, 10, 128))
    net.backward(grad)
    for key, value in [*net.grads().items(), *net.params().items()]:
        assert value.dtype == np.float32, key
