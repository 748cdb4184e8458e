"""MAC counts: MobileNet-V1 vs the published count and an independent count of its ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from device.learning.layers import total_macs
from device.model.info import lr_bytes
from device.model.mobilenet import mobilenet_v1_layers
from device.model.mobilenet_build import lr_cut, mobilenet_v1_network
from device.model.onnx_build import layers_to_onnx
from device.model.onnx_read import layer_infos


def test_mobilenet_v1_matches_published_counts() -> None:
    # Howard et al. 2017, table 7: 1.0/224 569 M MACs, 4.2 M params; 1.0/128 186 M MACs.
    assert total_macs(mobilenet_v1_layers(224, classes=1000)) == pytest.approx(569e6, rel=0.01)
    full = mobilenet_v1_layers(128, classes=1000)
    assert total_macs(full) == pytest.approx(186e6, rel=0.02)
    assert sum(la.params for la in full) == pytest.approx(4.2e6, rel=0.02)
    # 50 classes: the classifier shrinks from 1024x1000 to 1024x50 MACs
    assert total_macs(full) - total_macs(mobilenet_v1_layers(128)) == 1024 * 950


def test_mobilenet_numbering_and_adaptive_split() -> None:
    layers = mobilenet_v1_layers(128, lr_layer=20)
    names = [la.name for la in layers]
    assert names[:4] == ["conv0", "dw1", "pw2", "dw3"] and names[-2:] == ["pool", "fc27"]
    kinds = {la.name: la.kind for la in layers}
    assert all(kinds[f"dw{i}"] == "depthwise" for i in range(1, 27, 2))
    assert all(kinds[f"pw{i}"] == "pointwise" for i in range(2, 27, 2))
    assert next(la.name for la in layers if la.adaptive) == "pw20"
    assert sum(la.adaptive and la.kind != "pool" for la in layers) == 8
    by = {la.name: la for la in layers}
    # independent formulas: k*k*Cin*Cout*H*W (dense), k*k*C*H*W (depthwise)
    assert by["conv0"].macs == 3 * 3 * 3 * 32 * 64 * 64
    assert by["dw1"].macs == 3 * 3 * 32 * 64 * 64
    assert by["pw2"].macs == 32 * 64 * 64 * 64
    assert by["dw23"].out_shape == (512, 4, 4) and by["dw23"].macs == 9 * 512 * 16
    assert by["fc27"].macs == 1024 * 50
    assert [la.name for la in mobilenet_v1_layers(lr_layer=27) if la.adaptive] == ["fc27"]


@pytest.mark.parametrize(("res", "width"), [(32, 0.25), (64, 0.5)])
def test_onnx_graph_count_equals_formula(res: int, width: float) -> None:
    net = mobilenet_v1_network(np.random.default_rng(0), width=width, classes=10)
    model = layers_to_onnx(net.specs(), net.params(), (3, res, res), output_name="logits")
    from_graph = [la for la in layer_infos(model) if la.macs]
    from_formula = [la for la in mobilenet_v1_layers(res, width, 10) if la.macs]
    assert [la.macs for la in from_graph] == [la.macs for la in from_formula]
    assert [la.kind for la in from_graph] == [la.kind for la in from_formula]
    assert total_macs(net.layer_infos((3, res, res))) == total_macs(from_formula)
    assert lr_cut(net, 27) == len(net.layers) - 1


def test_lr_bytes() -> None:
    assert lr_bytes(512, 32) == 2048
    assert lr_bytes(512, 8) == 512 + 8
    assert lr_bytes(512, 7) == 448 + 8
    assert lr_bytes(1000, 6) == 750 + 8 and lr_bytes(3, 7) == 3 + 8
    with pytest.raises(ValueError, match="bits"):
        lr_bytes(10, 0)


def test_saved_onnx_is_valid(tmp_path: Path) -> None:
    net = mobilenet_v1_network(np.random.default_rng(0), width=0.25, classes=5)
    model = layers_to_onnx(net.specs(), net.params(), (3, 32, 32), output_name="y")
    onnx.save(model, str(tmp_path / "m.onnx"))
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
