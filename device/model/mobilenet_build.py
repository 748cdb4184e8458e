"""Build a MobileNet-V1 bundle: He-initialised numpy weights or weights from an ONNX file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from device.learning.nn import (
    Conv2d,
    DepthwiseConv2d,
    GlobalAvgPool,
    Layer,
    Linear,
    PointwiseConv2d,
    ReLU6,
    Sequential,
)
from device.model.bundle import InputSpec, ModelBundle
from device.model.errors import ModelError, UnsupportedModelError
from device.model.export import write_bundle
from device.model.mobilenet import CLASSIFIER, conv_steps
from device.model.onnx_build import layers_to_onnx
from device.model.onnx_read import load_onnx
from device.model.split import split_onnx

CALIB_SAMPLES = 8


def mobilenet_v1_network(
    rng: np.random.Generator, *, width: float = 1.0, classes: int = 50
) -> Sequential:
    """MobileNet-V1 with BN folded away, He-initialised: layers ``conv0``, ``relu0``, ``dw1``, ...
    ``pw26``, ``relu26``, ``pool``, ``fc27``. Input ``[N, 3, res, res]`` float32."""
    layers: list[Layer] = []
    for st in conv_steps(width):
        i = st.index
        if st.kind == "conv":
            layers.append(Conv2d(3, st.out_ch, 3, stride=2, padding=1, name=f"conv{i}", rng=rng))
        elif st.kind == "depthwise":
            layers.append(DepthwiseConv2d(st.in_ch, 3, stride=st.stride, name=f"dw{i}", rng=rng))
        else:
            layers.append(PointwiseConv2d(st.in_ch, st.out_ch, name=f"pw{i}", rng=rng))
        layers.append(ReLU6(name=f"relu{i}"))
    channels = conv_steps(width)[-1].out_ch
    layers.append(GlobalAvgPool(name="pool"))
    layers.append(Linear(channels, classes, name=f"fc{CLASSIFIER}", rng=rng))
    return Sequential(layers)


def lr_cut(net: Sequential, lr_layer: int) -> int:
    """Position in ``net`` of paper layer ``lr_layer`` (its input is the LR)."""
    if not 1 <= lr_layer <= CLASSIFIER:
        raise ModelError(f"lr_layer must be in 1..{CLASSIFIER}, got {lr_layer}")
    for pos, layer in enumerate(net.layers):
        match = re.fullmatch(r"[a-z]+(\d+)", layer.name)
        if layer.trainable and match and int(match.group(1)) == lr_layer:
            return pos
    raise ModelError(f"no layer {lr_layer} in the network")  # pragma: no cover


def build_mobilenet_v1(
    out_dir: Path,
    *,
    res: int = 128,
    width: float = 1.0,
    lr_layer: int = 27,
    classes: int = 50,
    seed: int = 0,
    weights: Path | None = None,
) -> ModelBundle:
    """Write a MobileNet-V1 bundle split at paper layer ``lr_layer`` into ``out_dir``.

    Without ``weights`` the model is He-initialised (BN folded, biases zero), takes uint8
    ``[3, res, res]`` images normalised as ``(x - 127.5) / 127.5``, and the INT8 frozen stage is
    calibrated on ``CALIB_SAMPLES`` uniform-random images (the weights are random too, so no
    real data would be more representative). With ``weights`` (an ONNX MobileNet-V1 with 27
    convolutions then one Gemm/MatMul), the model is split at the input of its ``lr_layer``-th
    compute node, keeping its own float32 input.
    """
    rng = np.random.default_rng(seed)
    if weights is not None:
        model = load_onnx(weights)
        compute = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        if len(compute) != CLASSIFIER + 1:
            raise UnsupportedModelError(
                f"{weights}: expected {CLASSIFIER + 1} Conv/Gemm/MatMul nodes (MobileNet-V1), "
                f"found {len(compute)}"
            )
        at = compute[lr_layer].input[0]
        return split_onnx(weights, at, out_dir, calib_samples=CALIB_SAMPLES, seed=seed)
    from device.model.mobilenet import mobilenet_v1_layers

    mobilenet_v1_layers(res, width, classes, lr_layer)  # validates the arguments
    net = mobilenet_v1_network(rng, width=width, classes=classes)
    cut = lr_cut(net, lr_layer)
    frozen, head = Sequential(net.layers[:cut]), Sequential(net.layers[cut:])
    shape = (3, res, res)
    model = layers_to_onnx(
        frozen.specs(), frozen.params(), shape, output_name="lr", graph_name="mobilenet-frozen"
    )
    calib = rng.integers(0, 256, (CALIB_SAMPLES, *shape), dtype=np.uint8)
    return write_bundle(
        out_dir,
        name=f"mobilenet-v1-{width:g}-{res}",
        input_spec=InputSpec(shape, "uint8", (127.5,), (127.5,)),
        frozen_fp32=model,
        calibration=calib,
        frozen_layers=frozen.layer_infos(shape, adaptive=False),
        head=head,
        num_classes=classes,
        meta={
            "description": f"MobileNet-V1 {width:g}/{res}, He-initialised, LR layer {lr_layer}",
            "source": f"mobilenet-v1 seed={seed} (random weights; calibration on "
            f"{CALIB_SAMPLES} uniform-random images)",
        },
    )


__all__ = ["build_mobilenet_v1", "lr_cut", "mobilenet_v1_network"]
