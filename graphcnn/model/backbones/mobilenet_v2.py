"""MobileNetV2's convolutional base (Sandler et al., 2018), as ``keras.applications.MobileNetV2``
builds it with ``include_top=False`` and ``alpha=1.0``: a 3x3/2 convolution (32 filters), 17
inverted residual blocks and a 1x1 convolution to 1280 channels. A block expands its input
6x with a 1x1 convolution (not block 0), filters it with a 3x3 depthwise convolution (stride
2 in blocks 1, 3, 6 and 13, after Keras's ``correct_pad`` zero padding) and projects it with a
linear 1x1 convolution (16, 24, 32, 64, 96, 160, 320 filters); the input is added back where
the shapes allow (stride 1, as many channels in as out). Every convolution has batch norm
(epsilon 1e-3) and no biases, every activation is ReLU6. 2.3M parameters.

Scopes: ``mobilenet_v2/conv1`` (Keras ``Conv1``, ``bn_Conv1``), ``mobilenet_v2/block0/
{depthwise,project}`` (Keras ``expanded_conv_depthwise``, ``expanded_conv_project``, with
``_BN``), ``mobilenet_v2/block<i>/{expand,depthwise,project}`` for i = 1..16 (Keras
``block_<i>_expand`` etc., with ``_BN``), ``mobilenet_v2/conv_last`` (Keras ``Conv_1``,
``Conv_1_bn``).
"""

from __future__ import annotations

import tensorflow as tf

from graphcnn.model.backbones.ops import Builder, pad

v1 = tf.compat.v1

NAME = "mobilenet_v2"
PREPROCESSING = "tf"
MIN_SIZE = 32
DEFAULT_SIZE = 160  # the TensorFlow transfer-learning tutorial's input size
TOP_BLOCKS = ("mobilenet_v2/block16", "mobilenet_v2/conv_last")  # what the second transfer stage unfreezes
KERAS_APPLICATION = "MobileNetV2"

# (expansion, projected filters, stride) of blocks 0..16
BLOCKS = ((1, 16, 1),
          (6, 24, 2), (6, 24, 1),
          (6, 32, 2), (6, 32, 1), (6, 32, 1),
          (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
          (6, 96, 1), (6, 96, 1), (6, 96, 1),
          (6, 160, 2), (6, 160, 1), (6, 160, 1),
          (6, 320, 1))
FIRST_FILTERS = 32
LAST_FILTERS = 1280
EPSILON = 1e-3


def _correct_pad(x: tf.Tensor, kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's ``imagenet_utils.correct_pad``: the zero padding before a stride-2 VALID convolution
    (one less before than after an even dimension; (0, 1) when the size is not known)."""
    height, width = x.shape[1], x.shape[2]
    adjust = (1, 1) if height is None else (1 - height % 2, 1 - width % 2)
    half = kernel_size // 2
    return (half - adjust[0], half), (half - adjust[1], half)


def _block(x: tf.Tensor, builder: Builder, expansion: int, filters: int, strides: int, block: int) -> tf.Tensor:
    """Keras's ``_inverted_res_block``: [B, H, W, C] -> [B, H/strides, W/strides, filters]."""
    prefix = f"block_{block}_" if block else "expanded_conv_"
    in_channels = int(x.shape[-1])
    y = x
    if block:
        y = builder.conv(y, expansion * in_channels, 1, "expand", keras=f"{prefix}expand", use_bias=False,
                         bn=f"{prefix}expand_BN", epsilon=EPSILON, activation=tf.nn.relu6)
    if strides == 2:
        y = pad(y, *_correct_pad(y, 3), name="pad")
    y = builder.depthwise(y, 3, "depthwise", keras=f"{prefix}depthwise", strides=strides,
                          padding="SAME" if strides == 1 else "VALID", bn=f"{prefix}depthwise_BN", epsilon=EPSILON,
                          activation=tf.nn.relu6)
    y = builder.conv(y, filters, 1, "project", keras=f"{prefix}project", use_bias=False, bn=f"{prefix}project_BN",
                     epsilon=EPSILON)
    return x + y if in_channels == filters and strides == 1 else y


def connect(x: tf.Tensor, builder: Builder) -> tf.Tensor:
    """x: [-1, 1]-preprocessed [B, H, W, 3] -> [B, H/32, W/32, 1280] (the output of conv_last)."""
    x = builder.conv(x, FIRST_FILTERS, 3, "conv1", keras="Conv1", strides=2, use_bias=False, bn="bn_Conv1",
                     epsilon=EPSILON, activation=tf.nn.relu6)
    for block, (expansion, filters, strides) in enumerate(BLOCKS):
        with v1.variable_scope(f"block{block}"):
            y = _block(x, builder, expansion, filters, strides, block)
        x = builder.end_point(f"block{block}", y)
    return builder.conv(x, LAST_FILTERS, 1, "conv_last", keras="Conv_1", use_bias=False, bn="Conv_1_bn",
                        epsilon=EPSILON, activation=tf.nn.relu6)
