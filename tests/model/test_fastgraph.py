"""The frozen stage's fast graph gives the plain graph's bits; what it cannot prove stays as is."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from device.app.models import load_model
from device.cli import app
from device.model.bundle import ModelBundle
from device.model.errors import ExportError
from device.model.fastgraph import PoolScales, fast_graph, near_ties, pool_is_exact
from device.model.frozen import FrozenStage
from device.model.split import split_onnx
from device.model.tiecheck import windows_summing_to
from tests.model.test_model_bundle import digits32
from tests.support.watch import require_watch

RNG = np.random.default_rng(7)


def plain_latents(bundle: ModelBundle, x: np.ndarray) -> np.ndarray:
    """``x`` through the bundle's frozen.onnx exactly as stored (no rewrite)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(bundle.frozen_path), opts, providers=["CPUExecutionProvider"]
    )
    feed = {session.get_inputs()[0].name: bundle.input.normalize(x)}
    out: np.ndarray = session.run([bundle.lr_tensor], feed)[0]
    return out


def pool_count(model: onnx.ModelProto | None) -> int:
    if model is None:
        return 0
    return sum(n.name.endswith(".as_depthwise_conv") for n in model.graph.node)


def fast_of(bundle: ModelBundle) -> onnx.ModelProto | None:
    sample = bundle.input.normalize(np.zeros((1, *bundle.input_shape), bundle.input_dtype))
    return fast_graph(onnx.load(str(bundle.frozen_path)), sample)


def random_inputs(bundle: ModelBundle, n: int) -> np.ndarray:
    shape = (n, *bundle.input_shape)
    if bundle.input_dtype == np.uint8:
        return RNG.integers(0, 256, shape).astype(np.uint8)
    return (RNG.standard_normal(shape) * 3).astype(bundle.input_dtype)


def assert_same_bits(bundle: ModelBundle, x: np.ndarray) -> None:
    fast = FrozenStage(bundle).run(x)
    plain = plain_latents(bundle, x)
    assert fast.dtype == plain.dtype and fast.shape == plain.shape
    np.testing.assert_array_equal(fast.view(np.uint32), plain.view(np.uint32))


def test_default_model_pools_become_convs_with_the_same_bits(default_bundle: ModelBundle) -> None:
    assert pool_count(fast_of(default_bundle)) >= 2
    assert_same_bits(default_bundle, digits32()[0])  # every one of sklearn's 1,797 digits
    assert_same_bits(default_bundle, random_inputs(default_bundle, 2000))
    extremes = np.zeros((4, *default_bundle.input_shape), np.uint8)
    extremes[1], extremes[2, :, ::2], extremes[3, :, :, 1::2] = 255, 255, 255
    assert_same_bits(default_bundle, extremes)


def test_watch_model_1d_pools_keep_their_bits() -> None:
    require_watch()
    bundle = load_model(None, dataset="watch")
    assert pool_count(fast_of(bundle)) >= 1
    assert_same_bits(bundle, random_inputs(bundle, 1500))


def test_mobilenet_bundle_keeps_its_bits(tmp_path: Path) -> None:
    out = tmp_path / "m"
    args = ["model", "mobilenet-v1", "--res", "32", "--width", "0.25", "--lr-layer", "23"]
    result = CliRunner().invoke(app, [*args, "--classes", "7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    bundle = ModelBundle.load(out)
    assert_same_bits(bundle, random_inputs(bundle, 64))


def pooled_user_model(path: Path) -> Path:
    """Conv, ReLU, 2x2 average pool twice, then a linear head: the frozen part holds the pools."""
    w = {
        "w0": RNG.standard_normal((8, 3, 3, 3)) * 0.3,
        "b0": RNG.standard_normal(8) * 0.1,
        "w1": RNG.standard_normal((8, 8, 3, 3)) * 0.2,
        "b1": RNG.standard_normal(8) * 0.1,
        "wm": RNG.standard_normal((8 * 4 * 4, 5)) * 0.1,
        "bm": RNG.standard_normal(5) * 0.1,
        "shape": np.array([0, -1]),
    }
    inits = [
        numpy_helper.from_array(v.astype(np.int64 if k == "shape" else np.float32), k)
        for k, v in w.items()
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("AveragePool", ["r0"], ["p0"], name="pool0", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("AveragePool", ["r1"], ["feat"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        n("Reshape", ["feat", "shape"], ["flat"], name="flatten"),
        n("MatMul", ["flat", "wm"], ["mm"], name="fc"),
        n("Add", ["mm", "bm"], ["logits"], name="fc_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "pooled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_split_onnx_model_keeps_its_bits(tmp_path: Path) -> None:
    bundle = split_onnx(pooled_user_model(tmp_path / "user.onnx"), "feat", tmp_path / "b")
    assert pool_count(fast_of(bundle)) >= 1
    x = RNG.standard_normal((600, 3, 16, 16)).astype(np.float32)
    assert_same_bits(bundle, x)
    assert_same_bits(bundle, x * 40)  # saturating the int8 activations


def q_pool_model(
    *,
    zero_point: int = 0,
    pads: tuple[int, ...] = (0, 0, 0, 0),
    size: int = 8,
    x_scale: float = 0.05,
    y_scale: float = 0.0431,
    ceil_mode: int = 0,
) -> onnx.ModelProto:
    """QuantizeLinear, one QLinearAveragePool 2x2/2, DequantizeLinear: the smallest pool graph."""
    consts = {
        "xs": np.array(x_scale, np.float32),
        "xz": np.array(zero_point, np.uint8),
        "ys": np.array(y_scale, np.float32),
        "yz": np.array(0, np.uint8),
    }
    n = helper.make_node
    nodes = [
        n("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        n(
            "QLinearAveragePool",
            ["xq", "xs", "xz", "ys", "yz"],
            ["yq"],
            domain="com.microsoft",
            kernel_shape=[2, 2],
            strides=[2, 2],
            pads=list(pads),
            ceil_mode=ceil_mode,
        ),
        n("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def run_model(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(["y"], {"x": x})[0]
    return out


def as_images(windows: np.ndarray, x_scale: float) -> np.ndarray:
    """2x2 windows ``[n, 4]`` (quantized values) as float input ``[N, 4, 8, 8]`` of the pool model,
    zero windows after the last."""
    per_image = 4 * 16
    n = -(-len(windows) // per_image) * per_image
    padded = np.zeros((n, 4), np.float32)
    padded[: len(windows)] = windows
    grid = padded.reshape(-1, 4, 4, 4, 2, 2).transpose(0, 1, 2, 4, 3, 5)  # [N, C, i, di, j, dj]
    out: np.ndarray = grid.reshape(-1, 4, 8, 8) * np.float32(x_scale)
    return out


def test_a_matching_pool_is_rewritten_and_exact_on_every_window_sum() -> None:
    model = q_pool_model()
    x = np.zeros((1, 4, 8, 8), np.float32)
    fast = fast_graph(model, x)
    assert pool_count(fast) == 1 and fast is not None
    # Every window sum 0..1020 once: window k holds (a, b, c, d) filled up in turn to sum k.
    sums = np.arange(0, 1021)
    quads = np.clip(sums[:, None] - 255 * np.arange(4), 0, 255)
    assert np.array_equal(quads.sum(1), sums)
    x = as_images(quads, 0.05)
    np.testing.assert_array_equal(run_model(fast, x), run_model(model, x))
    x = RNG.integers(0, 256, (500, 4, 8, 8)).astype(np.float32) * 0.05
    np.testing.assert_array_equal(run_model(fast, x), run_model(model, x))


@pytest.mark.parametrize(
    "changes",
    [
        {"zero_point": 3},
        {"pads": (1, 1, 1, 1)},
        {"ceil_mode": 1, "size": 9},
        {"size": 2},  # the window is the whole image: onnxruntime's global-pool kernel
        {"x_scale": 0.05, "y_scale": 0.05},  # s = 2 gives exactly 0.5: a tie
    ],
)
def test_a_pool_that_does_not_match_exactly_is_left_as_is(changes: dict[str, object]) -> None:
    model = q_pool_model(**changes)  # type: ignore[arg-type]
    size = int(changes.get("size", 8))  # type: ignore[call-overload]
    before = model.SerializeToString()
    assert fast_graph(model, np.zeros((1, 4, size, size), np.float32)) is None
    assert model.SerializeToString() == before


def test_a_graph_the_probe_cannot_run_is_left_as_is() -> None:
    model = q_pool_model()
    assert fast_graph(model, np.zeros((1, 3, 8, 8), np.float32)) is None  # wrong channels
    assert fast_graph(model, np.zeros((1, 4, 8, 8), np.uint8)) is None  # wrong dtype
    two_inputs = q_pool_model()
    two_inputs.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1]))
    assert fast_graph(two_inputs, np.zeros((1, 4, 8, 8), np.float32)) is None


def test_exactness_needs_every_window_sum_away_from_a_tie() -> None:
    assert pool_is_exact(PoolScales(0.05, 0, 0.0431, 0, 4))
    assert not pool_is_exact(PoolScales(0.05, 0, 0.05, 0, 4))  # s/4 hits 0.5, 1.5, ...
    assert not pool_is_exact(PoolScales(0.05, 1, 0.0431, 0, 4))  # input zero point
    assert not pool_is_exact(PoolScales(0.05, 0, 0.0431, 0, 9))  # 3x3: 1/9 is not exact
    assert not pool_is_exact(PoolScales(0.05, 0, 0.0431, 0, 32))  # too long a sum
    with pytest.raises(ValueError, match="window"):
        PoolScales(0.05, 0, 0.0431, 0, 0)


def test_windows_summing_to_lists_every_window_once() -> None:
    pairs = np.concatenate(list(windows_summing_to(300, 2)))
    assert len(pairs) == 211 and np.all(pairs.astype(int).sum(1) == 300)
    quads = np.concatenate(list(windows_summing_to(778, 4)))
    ways = np.ones(1)
    for _ in range(4):
        ways = np.convolve(ways, np.ones(256))  # ways[s]: windows of that sum
    assert len(quads) == round(ways[778]) == len(np.unique(quads, axis=0))
    assert np.all(quads.astype(int).sum(1) == 778)
    assert np.concatenate(list(windows_summing_to(0, 4))).tolist() == [[0, 0, 0, 0]]
    with pytest.raises(ValueError, match="window"):
        next(windows_summing_to(3, 8))


NEAR_TIE_SAME = (0.047146644443273544, 0.039932653307914734)  # window sum 703 near a tie
NEAR_TIE_APART = (0.021228717640042305, 0.017240023240447044)  # sum 778: kernels differ


def test_a_near_tie_the_kernels_agree_on_is_rewritten() -> None:
    x_scale, y_scale = NEAR_TIE_SAME
    suspect = near_ties(PoolScales(x_scale, 0, y_scale, 0, 4))
    assert suspect is not None and suspect.tolist() == [703]
    model = q_pool_model(x_scale=x_scale, y_scale=y_scale)
    fast = fast_graph(model, np.zeros((1, 4, 8, 8), np.float32))
    assert pool_count(fast) == 1 and fast is not None
    x = as_images(np.concatenate(list(windows_summing_to(703, 4))), x_scale)  # all of them
    np.testing.assert_array_equal(run_model(fast, x), run_model(model, x))


def test_a_near_tie_the_kernels_round_apart_keeps_the_pool() -> None:
    x_scale, y_scale = NEAR_TIE_APART
    suspect = near_ties(PoolScales(x_scale, 0, y_scale, 0, 4))
    assert suspect is not None and suspect.tolist() == [778]
    model = q_pool_model(x_scale=x_scale, y_scale=y_scale)
    assert fast_graph(model, np.zeros((1, 4, 8, 8), np.float32)) is None


def test_a_corrupt_frozen_graph_is_an_export_error_naming_the_file(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(default_bundle.path, copy)
    (copy / default_bundle.frozen_path.name).write_bytes(b"\x08\x07not an onnx model" * 64)
    with pytest.raises(ExportError, match=r"frozen\.onnx: onnxruntime cannot load it"):
        FrozenStage(ModelBundle.load(copy))
