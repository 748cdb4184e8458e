"""The numpy adaptive stage: layers with forward and backward side by side, loss, optimiser.

Pure numeric code (no I/O): the node trains its head with it, and ``vega-emu model build-default``
trains the whole default CNN with it.
"""

from device.learning.nn.base import OPS, Layer, LayerSpec
from device.learning.nn.conv import Conv2d, DepthwiseConv2d, PointwiseConv2d
from device.learning.nn.conv1d import AvgPool1d, Conv1d
from device.learning.nn.dense import BatchNorm, Flatten, Linear, ReLU, ReLU6
from device.learning.nn.loss import log_softmax, softmax_cross_entropy
from device.learning.nn.optim import SGD, SGDConfig
from device.learning.nn.pool import AvgPool, GlobalAvgPool
from device.learning.nn.sequential import Sequential, build_layer, build_sequential

__all__ = [
    "OPS",
    "SGD",
    "AvgPool",
    "AvgPool1d",
    "BatchNorm",
    "Conv1d",
    "Conv2d",
    "DepthwiseConv2d",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "LayerSpec",
    "Linear",
    "PointwiseConv2d",
    "ReLU",
    "ReLU6",
    "SGDConfig",
    "Sequential",
    "build_layer",
    "build_sequential",
    "log_softmax",
    "softmax_cross_entropy",
]
