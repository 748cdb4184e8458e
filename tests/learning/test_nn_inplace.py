"""The cheaper ways the adaptive stage computes: in-place ReLU, layout helpers, loss, evaluation.

Each one must give the same numbers, bit for bit, as the plain numpy it replaced (written out
below as the reference): a node's training is chaotic enough that a difference in the last bit
of one step grows to a visible difference in accuracy within twenty events. And the in-place
work must never touch an array the caller passed in.
"""

from __future__ import annotations

import numpy as np
import pytest

from device.learning import nn
from device.learning.learner import evaluate
from device.learning.nn.conv import add_channel_bias, channel_sum, swap_leading_axes
from device.learning.nn.planar import pool_matrix, pool_matrix_t

RNG = np.random.default_rng(7)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _default_head(seed: int = 0) -> nn.Sequential:
    """The default head's layers (depthwise, ReLU, pointwise, ReLU, pool, flatten, linear)."""
    rng = np.random.default_rng(seed)
    head = nn.Sequential(
        [
            nn.DepthwiseConv2d(32, 3, padding=1, name="dw", rng=rng),
            nn.ReLU(name="r1"),
            nn.PointwiseConv2d(32, 64, name="pw", rng=rng),
            nn.ReLU(name="r2"),
            nn.AvgPool(2, name="p"),
            nn.Flatten(name="f"),
            nn.Linear(256, 10, name="fc", rng=rng),
        ]
    )
    for key, value in head.params().items():
        if key.endswith("bias"):
            value[...] = rng.standard_normal(value.shape)
    return head


class _Reference:
    """The layer code before the in-place and layout changes, for bitwise comparison."""

    @staticmethod
    def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = x > 0
        return x * mask, mask

    @staticmethod
    def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        n = len(labels)
        rows = np.arange(n)
        loss = float(-logp[rows, labels].mean()) if n else 0.0
        grad = np.exp(logp)
        grad[rows, labels] -= 1.0
        grad /= max(n, 1)
        return loss, grad


# -- layout helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: _f32(128, 64, 16),
        lambda: _f32(3, 5, 1),
        lambda: _f32(2, 7, 9).astype(np.float64),
        lambda: _f32(10, 8, 6)[:, ::2, :],  # rows still contiguous
        lambda: _f32(10, 8, 6)[:, :, ::2],  # rows strided: the plain copy
        lambda: _f32(6, 4, 5).transpose(1, 0, 2),
        lambda: _f32(0, 4, 5),
        lambda: _f32(4, 0, 5),
    ],
)
def test_swap_leading_axes_is_the_transposed_copy(make: object) -> None:
    a = make()  # type: ignore[operator]
    got = swap_leading_axes(a)
    want = np.ascontiguousarray(a.transpose(1, 0, 2))
    assert got.flags.c_contiguous and got.dtype == a.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(128, 64, 16), (5, 3, 4, 4), (2, 3, 1, 1), (4, 6)])
def test_add_channel_bias_is_the_broadcast_add(shape: tuple[int, ...]) -> None:
    y, bias = _f32(*shape), _f32(shape[1])
    want = y + bias.reshape((shape[1],) + (1,) * (len(shape) - 2))
    add_channel_bias(y, bias)
    np.testing.assert_array_equal(y, want)
    strided = _f32(shape[1], shape[0], *shape[2:]).swapaxes(0, 1)  # not C-contiguous
    want = strided + bias.reshape((shape[1],) + (1,) * (len(shape) - 2))
    add_channel_bias(strided, bias)
    np.testing.assert_array_equal(strided, want)


def test_pool_matrix_t_is_the_contiguous_transpose() -> None:
    for h, w, k, s in [(4, 4, 2, 2), (7, 6, 3, 2), (6, 6, 3, 1)]:
        for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
            got = pool_matrix_t(h, w, k, s, dtype)
            assert got.flags.c_contiguous and not got.flags.writeable
            np.testing.assert_array_equal(got, pool_matrix(h, w, k, s, dtype).T)


# -- layers against the code they replaced ------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 21, 128, 512, 53])
def test_pointwise_weight_grad_is_the_tensordot(n: int) -> None:
    layer = nn.PointwiseConv2d(32, 64, name="pw", rng=RNG)
    x = _f32(n, 32, 4, 4)
    layer.forward(x, train=True)
    g = _f32(n, 64, 4, 4)
    layer.backward(g)
    want = np.tensordot(g.reshape(n, 64, 16), x.reshape(n, 32, 16), axes=([0, 2], [0, 2]))
    np.testing.assert_array_equal(layer.grads["weight"], want.reshape(64, 32, 1, 1))
    np.testing.assert_array_equal(layer.grads["bias"], channel_sum(g))


@pytest.mark.parametrize("n", [1, 2, 3, 21, 107, 128, 512, 53])
def test_depthwise_forward_is_the_transposed_view_product(n: int) -> None:
    layer = nn.DepthwiseConv2d(32, 3, padding=1, name="dw", rng=RNG)
    layer.params["bias"][...] = _f32(32)
    x = _f32(n, 32, 4, 4)
    got = layer.forward(x, train=False)
    sel = layer._selection(4, 4, np.dtype(np.float32))
    plane = (layer.params["weight"].reshape(32, 9) @ sel.reshape(9, -1)).reshape(32, 16, 16)
    want = np.empty((n, 32, 4, 4), np.float32)
    x3 = x.reshape(n, 32, 16).transpose(1, 0, 2)
    np.matmul(x3, plane.transpose(0, 2, 1), out=want.reshape(n, 32, 16).transpose(1, 0, 2))
    want += layer.params["bias"][:, None, None]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [1, 64, 128])
def test_avgpool_backward_is_the_transposed_view_product(n: int) -> None:
    layer = nn.AvgPool(2, name="p")
    layer.forward(_f32(n, 64, 4, 4), train=True)
    g = _f32(n, 64, 2, 2)
    got = layer.backward(g)
    want = (g.reshape(n * 64, 4) @ pool_matrix(4, 4, 2, 2, np.dtype(np.float32)).T).reshape(
        n, 64, 4, 4
    )
    assert got is not None
    np.testing.assert_array_equal(got, want)


# -- in-place ReLU -------------------------------------------------------------------------------


def test_relu_in_place_gives_the_same_values() -> None:
    x = _f32(6, 5, 4, 4)
    want, mask = _Reference.relu_forward(x)
    layer = nn.ReLU(name="r")
    buf = x.copy()
    got = layer.forward(buf, train=True, inplace=True)
    assert got is buf
    np.testing.assert_array_equal(got, want)
    g = _f32(6, 5, 4, 4)
    gbuf = g.copy()
    gx = layer.backward(gbuf, inplace=True)
    assert gx is gbuf
    np.testing.assert_array_equal(gx, g * mask)
    relu6 = nn.ReLU6(name="r6")
    buf = x * 4
    want6 = np.clip(buf, 0, 6)
    np.testing.assert_array_equal(relu6.forward(buf, train=True, inplace=True), want6)


def test_relu_backward_keeps_the_gradient_dtype() -> None:
    """The mask is kept in the input's dtype; a gradient of another dtype keeps its own."""
    x = _f32(4, 3)
    layer = nn.ReLU(name="r")
    layer.forward(x, train=True)
    g = RNG.standard_normal((4, 3))  # float64
    got = layer.backward(g)
    assert got is not None and got.dtype == np.float64
    np.testing.assert_array_equal(got, g * (x > 0))
    relu6 = nn.ReLU6(name="r6")
    relu6.forward(x * 8, train=True)
    got = relu6.backward(g)
    assert got is not None
    np.testing.assert_array_equal(got, g * ((x * 8 > 0) & (x * 8 < 6)))


@pytest.mark.parametrize("first_relu", [False, True])
def test_sequential_never_overwrites_what_the_caller_passed(first_relu: bool) -> None:
    head = _default_head()
    if first_relu:  # a ReLU that receives the caller's own array first
        head = nn.Sequential([nn.ReLU(name="r0"), *head.layers])
    x = _f32(9, 32, 4, 4)
    x_before = x.copy()
    logits = head.forward(x, train=True)
    np.testing.assert_array_equal(x, x_before)
    g = _f32(*logits.shape)
    g_before = g.copy()
    head.backward(g, need_input_grad=True)
    np.testing.assert_array_equal(g, g_before)
    head.predict(x, batch_size=4)
    np.testing.assert_array_equal(x, x_before)


def test_sequential_with_in_place_relus_matches_a_copying_chain() -> None:
    """The whole default head, forward and backward, against the same layers run one by one
    on fresh arrays (nothing in place)."""
    head = _default_head(3)
    x = _f32(128, 32, 4, 4)
    labels = RNG.integers(0, 10, 128)
    logits = head.forward(x, train=True)
    loss, grad = nn.softmax_cross_entropy(logits, labels)
    gx = head.backward(grad, need_input_grad=True)
    grads = {k: v.copy() for k, v in head.grads().items()}

    ref = _default_head(3)
    acts = [x]
    for layer in ref.layers:
        acts.append(layer.forward(acts[-1].copy(), train=True))
    np.testing.assert_array_equal(logits, acts[-1])
    want_loss, g = _Reference.softmax_cross_entropy(acts[-1], labels)
    assert loss == want_loss
    for layer in reversed(ref.layers):
        out = layer.backward(g.copy())
        assert out is not None
        g = out
    assert gx is not None
    np.testing.assert_array_equal(gx, g)
    for key, value in ref.grads().items():
        np.testing.assert_array_equal(grads[key], value, err_msg=key)


# -- loss and evaluation --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(128, 10), (1, 10), (21, 3), (7, 1)])
def test_softmax_cross_entropy_is_bitwise_the_old_one(n: int, k: int) -> None:
    for dtype in (np.float32, np.float64):
        logits = (_f32(n, k) * 4).astype(dtype)
        labels = RNG.integers(0, k, n)
        loss, grad = nn.softmax_cross_entropy(logits, labels)
        want_loss, want_grad = _Reference.softmax_cross_entropy(logits, labels)
        assert loss == want_loss
        assert grad.dtype == want_grad.dtype
        np.testing.assert_array_equal(grad, want_grad)


def test_softmax_cross_entropy_of_non_contiguous_logits() -> None:
    logits = np.asfortranarray(_f32(12, 5))
    labels = RNG.integers(0, 5, 12)
    for view in (logits, _f32(5, 12).T, _f32(12, 10)[:, ::2]):
        loss, grad = nn.softmax_cross_entropy(view, labels)
        want_loss, want_grad = _Reference.softmax_cross_entropy(view, labels)
        assert loss == want_loss
        np.testing.assert_array_equal(grad, want_grad)


def test_softmax_cross_entropy_of_an_empty_batch() -> None:
    loss, grad = nn.softmax_cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert loss == 0.0 and grad.shape == (0, 4)


def test_evaluate_per_class_is_the_mean_of_each_class_hits() -> None:
    head = _default_head(5)
    latents = _f32(300, 32, 4, 4)
    labels = RNG.choice([0, 2, 3, 7, 9], size=300)  # some classes absent
    got = evaluate(head, latents, labels)
    hit = head.predict(latents) == labels
    assert got.accuracy == float(hit.mean())
    want = {int(c): float(hit[labels == c].mean()) for c in np.unique(labels)}
    assert got.per_class == want
    assert list(got.per_class) == sorted(want)
