"""Splitting ONNX models, MobileNet-V1 bundles and the ``vega-emu model`` commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from device.cli import app
from device.model.bundle import ModelBundle
from device.model.errors import UnsupportedModelError
from device.model.export import FROZEN_FP32, run_onnx
from device.model.frozen import FrozenStage
from device.model.info import lr_bytes
from device.model.onnx_read import load_onnx
from device.model.quantize import COMPUTE_OPS, quantized_ops
from device.model.split import split_onnx

RNG = np.random.default_rng(0)


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def user_model(path: Path, extra_op: str | None = None) -> Path:
    """A small CNN with a residual block (frozen) and a MobileNet-style tail (adaptive)."""
    inits = {
        "w0": _w(8, 3, 3, 3), "b0": _w(8), "w1": _w(8, 8, 3, 3), "b1": _w(8),
        "wd": _w(8, 1, 3, 3), "bd": _w(8),
        "g": 1 + _w(8), "beta": _w(8), "mu": _w(8), "var": 1 + np.abs(_w(8)),
        "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
        "wp": _w(16, 8, 1, 1), "bp": _w(16), "wm": _w(16, 5), "bm": _w(5),
        "shape": np.array([0, -1], np.int64),
    }  # fmt: skip
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Add", ["c1", "r0"], ["res"], name="residual"),
        n("Relu", ["res"], ["feat"], name="relu1"),
        n("Conv", ["feat", "wd", "bd"], ["d"], name="dw", group=8, strides=[2, 2], pads=[1] * 4),
        n("BatchNormalization", ["d", "g", "beta", "mu", "var"], ["bn"], name="bn"),
        n("Clip", ["bn", "lo", "hi"], ["r6"], name="relu6"),
        n("Conv", ["r6", "wp", "bp"], ["p"], name="pw"),
        n("Relu", ["p"], ["rp"], name="relu2"),
        n("GlobalAveragePool", ["rp"], ["gap"], name="gap"),
        n("Reshape", ["gap", "shape"], ["flat"], name="flatten"),
        n("MatMul", ["flat", "wm"], ["mm"], name="fc"),
        n("Add", ["mm", "bm"], ["logits"], name="fc_bias"),
    ]
    if extra_op:
        nodes.insert(10, n(extra_op, ["rp"], ["rq"], name="odd"))
        nodes[11].input[0] = "rq"
    graph = helper.make_graph(
        nodes,
        "user",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_split_equals_original(tmp_path: Path) -> None:
    src = user_model(tmp_path / "user.onnx")
    bundle = split_onnx(src, "feat", tmp_path / "b")
    assert bundle.lr_shape == (8, 16, 16) and bundle.num_classes == 5
    x = RNG.standard_normal((6, 3, 16, 16)).astype(np.float32)
    original = run_onnx(src, x)
    latents = run_onnx(bundle.path / FROZEN_FP32, x)
    np.testing.assert_allclose(bundle.build_head().forward(latents), original, atol=1e-4)
    assert COMPUTE_OPS & quantized_ops(load_onnx(bundle.frozen_path)).keys()
    int8 = FrozenStage.shared(bundle).run(x).ravel()
    assert np.dot(int8, latents.ravel()) / np.linalg.norm(int8) / np.linalg.norm(latents) > 0.99
    frozen = [la for la in bundle.layers() if not la.adaptive]
    assert [la.kind for la in frozen] == ["conv", "relu", "conv", "add", "relu"]
    assert frozen[0].macs == 8 * 3 * 9 * 16 * 16
    head_kinds = [la.kind for la in bundle.layers() if la.adaptive]
    assert head_kinds == ["depthwise", "batchnorm", "relu", "pointwise", "relu", "pool", "linear"]


def test_split_errors_name_operator_and_node(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"Sigmoid.*'odd'"):
        split_onnx(user_model(tmp_path / "s.onnx", "Sigmoid"), "feat", tmp_path / "b1")
    with pytest.raises(UnsupportedModelError, match="chain"):
        split_onnx(user_model(tmp_path / "u.onnx"), "r0", tmp_path / "b2")
    with pytest.raises(UnsupportedModelError, match="nope"):
        split_onnx(user_model(tmp_path / "v.onnx"), "nope", tmp_path / "b3")


def test_cli_mobilenet_info_and_split(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "m"
    args = ["model", "mobilenet-v1", "--res", "32", "--width", "0.25", "--lr-layer", "23"]
    result = runner.invoke(app, [*args, "--classes", "7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["model", "info", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["lr"]["shape"] == [128, 2, 2]
    numel = math.prod(report["lr"]["shape"])
    assert {int(b): n for b, n in report["lr"]["bytes"].items()} == {
        b: lr_bytes(numel, b) for b in (32, 8, 7, 6)
    }
    adaptive = [la["name"] for la in report["layers"] if la["stage"] == "adaptive"]
    assert adaptive[0] == "dw23" and adaptive[-1] == "fc27"
    bundle = ModelBundle.load(out)
    z = FrozenStage.shared(bundle).run(np.zeros((2, 3, 32, 32), np.uint8))
    assert bundle.build_head().forward(z).shape == (2, 7)
    assert runner.invoke(app, ["model", "info", str(out)]).exit_code == 0

    src = user_model(tmp_path / "user.onnx")
    np.savez(tmp_path / "calib.npz", x=RNG.standard_normal((16, 3, 16, 16)).astype(np.float32))
    split = ["model", "split", str(src), "--at", "feat", "--out", str(tmp_path / "s")]
    result = runner.invoke(app, [*split, "--calib", str(tmp_path / "calib.npz")])
    assert result.exit_code == 0, result.output
    assert "calibration_samples = 16" in (tmp_path / "s" / "model.toml").read_text()
    bad = runner.invoke(
        app, ["model", "split", str(src), "--at", "nope", "--out", str(tmp_path / "t")]
    )
    assert bad.exit_code == 1 and "nope" in bad.output


def test_mobilenet_weights_from_onnx(tmp_path: Path) -> None:
    """--weights: an exported MobileNet-V1 ONNX split at paper layer 25."""
    from device.model.mobilenet_build import build_mobilenet_v1, mobilenet_v1_network
    from device.model.onnx_build import layers_to_onnx

    net = mobilenet_v1_network(np.random.default_rng(3), width=0.25, classes=4)
    model = layers_to_onnx(net.specs(), net.params(), (3, 32, 32), output_name="logits")
    onnx.save(model, str(tmp_path / "mnv1.onnx"))
    bundle = build_mobilenet_v1(tmp_path / "b", lr_layer=25, weights=tmp_path / "mnv1.onnx")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    z = run_onnx(bundle.path / FROZEN_FP32, x)
    np.testing.assert_allclose(bundle.build_head().forward(z), net.forward(x), atol=1e-4)


def test_docs_mention_every_model_command() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "model-bundle.md").read_text()
    for cmd in ("build-default", "mobilenet-v1", "split", "info"):
        assert f"vega-emu model {cmd}" in doc
