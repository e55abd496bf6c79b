"""ResNet50's convolutional base (He et al., 2015), as ``keras.applications.ResNet50`` builds
it with ``include_top=False``: a 7x7/2 convolution (64 filters) and a 3x3/2 max pool, then four
stages of bottleneck residual blocks (3, 4, 6, 3 blocks; 64, 128, 256, 512 bottleneck filters,
4x as many out). A block is 1x1 (stride 2 in the first block of stages 3-5), 3x3 and 1x1
convolutions, each with biases and batch norm (epsilon 1.001e-5), ReLU after the first two;
the sum with the shortcut (identity, or in each stage's first block a 1x1 convolution with
batch norm) goes through a ReLU. 23.6M parameters.

Scopes: ``resnet50/conv1`` (Keras ``conv1_conv``, ``conv1_bn``), the pool ``resnet50/pool1``,
the blocks ``resnet50/conv<s>/block<i>`` (s = 2..5; Keras ``conv<s>_block<i>``) with the
convolutions ``conv1``, ``conv2``, ``conv3`` (Keras ``conv<s>_block<i>_1_conv`` ..
``_3_conv``, batch norms ``_1_bn`` .. ``_3_bn``) and ``shortcut`` (``_0_conv``, ``_0_bn``).
"""

from __future__ import annotations

import tensorflow as tf

from graphcnn.model.backbones.ops import Builder, max_pool, pad

v1 = tf.compat.v1

NAME = "resnet50"
PREPROCESSING = "caffe"
MIN_SIZE = 32
DEFAULT_SIZE = 224  # the ImageNet input size
TOP_BLOCKS = ("resnet50/conv5",)  # what the second transfer stage unfreezes
KERAS_APPLICATION = "ResNet50"

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (bottleneck filters, blocks, first stride)
EPSILON = 1.001e-5


def _block(x: tf.Tensor, builder: Builder, filters: int, strides: int, shortcut: bool, keras: str) -> tf.Tensor:
    """Keras's ``residual_block_v1``: [B, H, W, C] -> [B, H/strides, W/strides, 4 * filters]."""
    def conv(y: tf.Tensor, out: int, size: int, name: str, i: int, **kw) -> tf.Tensor:
        return builder.conv(y, out, size, name, keras=f"{keras}_{i}_conv", bn=f"{keras}_{i}_bn", epsilon=EPSILON, **kw)

    short = conv(x, 4 * filters, 1, "shortcut", 0, strides=strides, padding="VALID") if shortcut else x
    y = conv(x, filters, 1, "conv1", 1, strides=strides, padding="VALID", activation=tf.nn.relu)
    y = conv(y, filters, 3, "conv2", 2, activation=tf.nn.relu)
    y = conv(y, 4 * filters, 1, "conv3", 3, padding="VALID")
    return tf.nn.relu(short + y)


def connect(x: tf.Tensor, builder: Builder) -> tf.Tensor:
    """x: caffe-preprocessed [B, H, W, 3] -> [B, H/32, W/32, 2048] (the last block's output)."""
    x = builder.conv(pad(x, (3, 3), (3, 3), name="conv1_pad"), 64, 7, "conv1", keras="conv1_conv", strides=2,
                     padding="VALID", bn="conv1_bn", epsilon=EPSILON, activation=tf.nn.relu)
    x = builder.end_point("pool1", max_pool(pad(x, (1, 1), (1, 1), name="pool1_pad"), 3, 2, name="pool1"))
    for s, (filters, blocks, strides) in enumerate(STAGES, start=2):
        with v1.variable_scope(f"conv{s}"):
            for i in range(1, blocks + 1):
                with v1.variable_scope(f"block{i}"):
                    y = _block(x, builder, filters, strides if i == 1 else 1, i == 1, f"conv{s}_block{i}")
                x = builder.end_point(f"block{i}", y)
    return x
