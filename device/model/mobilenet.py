"""MobileNet-V1 with the paper's layer numbering, as per-layer cost entries.

Numbering (Ravaglia et al. 2021, after Howard et al. 2017): layer 0 is the first 3x3 convolution
(stride 2), layers 1..26 are the 13 depthwise-separable blocks (odd = depthwise 3x3, even =
pointwise 1x1), layer 27 is the linear classifier after global average pooling. Batch
normalisation and ReLU6 are folded into the convolution they follow (zero extra MACs); the global
average pooling is its own zero-MAC ``pool`` entry between layer 26 and layer 27. Choosing LR layer
``l`` stores the input of layer ``l`` as the latent replay and trains layers ``l..27`` (and the
pooling when ``l <= 26``).
"""

from __future__ import annotations

from dataclasses import dataclass

from device.learning.layers import LayerInfo

# (stride, output channels) of the 13 depthwise-separable blocks at width 1.0.
BLOCKS: tuple[tuple[int, int], ...] = (
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
)
FIRST_CHANNELS = 32
CLASSIFIER = 27


@dataclass(frozen=True, slots=True)
class ConvStep:
    """One numbered convolution of MobileNet-V1 (BN + ReLU6 folded in)."""

    index: int  # paper numbering, 0..26
    kind: str  # "conv" | "depthwise" | "pointwise"
    in_ch: int
    out_ch: int
    kernel: int
    stride: int


def _channels(c: int, width: float) -> int:
    return max(1, int(c * width))


def conv_steps(width: float = 1.0) -> list[ConvStep]:
    """Layers 0..26 of MobileNet-V1 at a width multiplier (Keras rounding: ``int(c * width)``)."""
    if not 0.0 < width <= 4.0:
        raise ValueError(f"width must be in (0, 4], got {width!r}")
    c = _channels(FIRST_CHANNELS, width)
    steps = [ConvStep(0, "conv", 3, c, 3, 2)]
    for b, (stride, out) in enumerate(BLOCKS):
        o = _channels(out, width)
        steps.append(ConvStep(2 * b + 1, "depthwise", c, c, 3, stride))
        steps.append(ConvStep(2 * b + 2, "pointwise", c, o, 1, 1))
        c = o
    return steps


def _out_hw(size: int, stride: int) -> int:
    # 3x3 with padding 1 (or 1x1 without): "same" output size
    return (size + stride - 1) // stride


def mobilenet_v1_layers(
    res: int = 128, width: float = 1.0, classes: int = 50, lr_layer: int = 27
) -> list[LayerInfo]:
    """Per-layer costs of MobileNet-V1 ``width``/``res`` with ``classes`` outputs.

    Returns 29 entries: layers 0..26 (``conv0``, ``dw1``, ``pw2``, ... ``pw26``), ``pool`` and
    ``fc27``. Layer ``l >= lr_layer`` (and the pooling when ``lr_layer <= 26``) is adaptive.
    At 1.0/128 with 1000 classes the forward total is 186.2 M MACs (the published count).
    """
    if res < 8 or res % 2:
        raise ValueError(f"res must be an even integer >= 8, got {res!r}")
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes!r}")
    if not 1 <= lr_layer <= CLASSIFIER:
        raise ValueError(f"lr_layer must be in 1..{CLASSIFIER}, got {lr_layer!r}")
    layers: list[LayerInfo] = []
    shape: tuple[int, int, int] = (3, res, res)
    for st in conv_steps(width):
        c, h, w = shape
        oh, ow = _out_hw(h, st.stride), _out_hw(w, st.stride)
        out = (st.out_ch, oh, ow)
        prefix = {"conv": "conv", "depthwise": "dw", "pointwise": "pw"}[st.kind]
        if st.kind == "depthwise":
            params = c * st.kernel * st.kernel + c
            macs = c * st.kernel * st.kernel * oh * ow
        else:
            params = st.out_ch * c * st.kernel * st.kernel + st.out_ch
            macs = st.out_ch * c * st.kernel * st.kernel * oh * ow
        layers.append(
            LayerInfo(
                name=f"{prefix}{st.index}",
                kind=st.kind,  # type: ignore[arg-type]
                in_shape=shape,
                out_shape=out,
                params=params,
                macs=macs,
                adaptive=st.index >= lr_layer,
            )
        )
        shape = out
    c = shape[0]
    layers.append(LayerInfo("pool", "pool", shape, (c,), params=0, macs=0, adaptive=lr_layer <= 26))
    layers.append(
        LayerInfo(
            f"fc{CLASSIFIER}",
            "linear",
            (c,),
            (classes,),
            params=c * classes + classes,
            macs=c * classes,
            adaptive=True,
        )
    )
    return layers


__all__ = ["BLOCKS", "ConvStep", "conv_steps", "mobilenet_v1_layers"]
