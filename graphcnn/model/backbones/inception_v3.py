"""Inception v3's convolutional base (Szegedy et al., 2015), as ``keras.applications.InceptionV3``
builds it with ``include_top=False``: 94 convolutions, each without bias, followed by a batch
norm without scale (gamma 1, epsilon 1e-3) and a ReLU (Keras's ``conv2d_bn``):

- a stem of five convolutions (3x3 stride 2, 3x3, 3x3, 1x1, 3x3; all VALID but the third)
  and two 3x3 stride-2 max pools;
- mixed0-2, 35x35 blocks (256, 288, 288 channels): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1;
- mixed3, a reduction to 17x17 (768): 3x3 stride 2 | 1x1-3x3-3x3 stride 2 | max pool;
- mixed4-7, 17x17 blocks (768) with factorized 7x7s: 1x1 | 1x1-1x7-7x1 |
  1x1-7x1-1x7-7x1-1x7 | avg pool-1x1;
- mixed8, a reduction to 8x8 (1280): 1x1-3x3 stride 2 | 1x1-1x7-7x1-3x3 stride 2 | max pool;
- mixed9-10, 8x8 blocks (2048): 1x1 | 1x1-(1x3 and 3x1) | 1x1-3x3-(1x3 and 3x1) | avg pool-1x1.

The branches are concatenated on the channels in Keras's order; the average pools are 3x3
stride 1 SAME (border windows average the real pixels only). Features [B, 8, 8, 2048] at
299x299, [B, 3, 3, 2048] at 150x150, [B, 1, 1, 2048] at 75x75 (the smallest input). 21.8M
parameters.

Scopes: ``inception_v3/stem/conv1`` .. ``conv5``, pools ``inception_v3/stem/pool1``,
``pool2``; a block ``inception_v3/mixed<i>`` (Keras's concat layer of that name, also the
block's end point), its convs named after the Keras source's variables, numbered along a
branch when the source reassigns the variable: ``branch1x1``, ``branch5x5_1``..``_2``,
``branch3x3dbl_1``..``_3``, ``branch_pool`` (the 1x1 after the pool), ``branch3x3`` (mixed3),
``branch7x7_1``..``_3``, ``branch7x7dbl_1``..``_5``, ``branch3x3_1``..``_2`` and
``branch7x7x3_1``..``_4`` (mixed8). In mixed9 and mixed10 the last two convs of a branch run
side by side (1x3 then 3x1, concatenated): ``branch3x3_1``, ``branch3x3_2a``, ``branch3x3_2b``
and ``branch3x3dbl_1``, ``branch3x3dbl_2``, ``branch3x3dbl_3a``, ``branch3x3dbl_3b`` (the
source's ``branch3x3``, ``branch3x3_1``, ``branch3x3_2`` and twice ``branch3x3dbl``,
``branch3x3dbl_1``, ``branch3x3dbl_2``); those concats are the ops ``<block>/branch3x3`` and
``<block>/branch3x3dbl`` (Keras's ``mixed9_0`` / ``mixed9_1`` and an unnamed one).
Variables: ``inception_v3/mixed0/branch1x1/weights``, ``.../branch1x1/bn/{beta,moving_mean,
moving_variance}``. Keras names the layers ``conv2d``, ``conv2d_1`` .. ``conv2d_93`` and
``batch_normalization`` .. ``batch_normalization_93`` in the order its source creates them,
which is the order :func:`connect` adds them.
"""

from __future__ import annotations

import itertools

import tensorflow as tf

from graphcnn.model.backbones.ops import Builder, avg_pool, max_pool

v1 = tf.compat.v1

NAME = "inception_v3"
PREPROCESSING = "tf"
MIN_SIZE = 75
DEFAULT_SIZE = 150  # the cats-vs-dogs tutorials' input size
TOP_BLOCKS = ("inception_v3/mixed9", "inception_v3/mixed10")  # the top two blocks, as Keras's fine-tuning guide
KERAS_APPLICATION = "InceptionV3"

BLOCKS_35 = (32, 64, 64)  # mixed0-2: filters of the 1x1 after the average pool
BLOCKS_17 = (128, 160, 160, 192)  # mixed4-7: filters inside the 7x7 branches


class _ConvBN:
    """Keras's ``conv2d_bn`` (Conv2D without bias, BatchNormalization without scale, ReLU),
    recording the layers under the names Keras gives them automatically, in creation order."""

    def __init__(self, builder: Builder):
        self.builder = builder
        self.count = itertools.count()

    def __call__(self, x: tf.Tensor, filters: int, rows: int, cols: int, name: str, strides: int = 1,
                 padding: str = "SAME") -> tf.Tensor:
        k = next(self.count)
        suffix = f"_{k}" if k else ""
        return self.builder.conv(x, filters, (rows, cols), name, keras=f"conv2d{suffix}", strides=strides,
                                 padding=padding, use_bias=False, bn=f"batch_normalization{suffix}", scale=False,
                                 activation=tf.nn.relu)


def _stem(x: tf.Tensor, conv: _ConvBN, builder: Builder) -> tf.Tensor:
    x = conv(x, 32, 3, 3, "conv1", strides=2, padding="VALID")
    x = conv(x, 32, 3, 3, "conv2", padding="VALID")
    x = conv(x, 64, 3, 3, "conv3")
    x = builder.end_point("pool1", max_pool(x, 3, 2, name="pool1"))
    x = conv(x, 80, 1, 1, "conv4", padding="VALID")
    x = conv(x, 192, 3, 3, "conv5", padding="VALID")
    return builder.end_point("pool2", max_pool(x, 3, 2, name="pool2"))


def _block_35(x: tf.Tensor, conv: _ConvBN, pool_filters: int) -> tf.Tensor:
    """mixed0-2: [B, 35, 35, C] -> [B, 35, 35, 224 + pool_filters]."""
    branch1x1 = conv(x, 64, 1, 1, "branch1x1")
    branch5x5 = conv(x, 48, 1, 1, "branch5x5_1")
    branch5x5 = conv(branch5x5, 64, 5, 5, "branch5x5_2")
    branch3x3dbl = conv(x, 64, 1, 1, "branch3x3dbl_1")
    branch3x3dbl = conv(branch3x3dbl, 96, 3, 3, "branch3x3dbl_2")
    branch3x3dbl = conv(branch3x3dbl, 96, 3, 3, "branch3x3dbl_3")
    branch_pool = conv(avg_pool(x, 3, 1, "SAME"), pool_filters, 1, 1, "branch_pool")
    return tf.concat([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1, name="concat")


def _reduction_a(x: tf.Tensor, conv: _ConvBN) -> tf.Tensor:
    """mixed3: [B, 35, 35, 288] -> [B, 17, 17, 768]."""
    branch3x3 = conv(x, 384, 3, 3, "branch3x3", strides=2, padding="VALID")
    branch3x3dbl = conv(x, 64, 1, 1, "branch3x3dbl_1")
    branch3x3dbl = conv(branch3x3dbl, 96, 3, 3, "branch3x3dbl_2")
    branch3x3dbl = conv(branch3x3dbl, 96, 3, 3, "branch3x3dbl_3", strides=2, padding="VALID")
    branch_pool = max_pool(x, 3, 2, name="branch_pool")
    return tf.concat([branch3x3, branch3x3dbl, branch_pool], axis=-1, name="concat")


def _block_17(x: tf.Tensor, conv: _ConvBN, c: int) -> tf.Tensor:
    """mixed4-7: [B, 17, 17, 768] -> [B, 17, 17, 768], ``c`` filters inside the 7x7 branches."""
    branch1x1 = conv(x, 192, 1, 1, "branch1x1")
    branch7x7 = conv(x, c, 1, 1, "branch7x7_1")
    branch7x7 = conv(branch7x7, c, 1, 7, "branch7x7_2")
    branch7x7 = conv(branch7x7, 192, 7, 1, "branch7x7_3")
    branch7x7dbl = conv(x, c, 1, 1, "branch7x7dbl_1")
    branch7x7dbl = conv(branch7x7dbl, c, 7, 1, "branch7x7dbl_2")
    branch7x7dbl = conv(branch7x7dbl, c, 1, 7, "branch7x7dbl_3")
    branch7x7dbl = conv(branch7x7dbl, c, 7, 1, "branch7x7dbl_4")
    branch7x7dbl = conv(branch7x7dbl, 192, 1, 7, "branch7x7dbl_5")
    branch_pool = conv(avg_pool(x, 3, 1, "SAME"), 192, 1, 1, "branch_pool")
    return tf.concat([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1, name="concat")


def _reduction_b(x: tf.Tensor, conv: _ConvBN) -> tf.Tensor:
    """mixed8: [B, 17, 17, 768] -> [B, 8, 8, 1280]."""
    branch3x3 = conv(x, 192, 1, 1, "branch3x3_1")
    branch3x3 = conv(branch3x3, 320, 3, 3, "branch3x3_2", strides=2, padding="VALID")
    branch7x7x3 = conv(x, 192, 1, 1, "branch7x7x3_1")
    branch7x7x3 = conv(branch7x7x3, 192, 1, 7, "branch7x7x3_2")
    branch7x7x3 = conv(branch7x7x3, 192, 7, 1, "branch7x7x3_3")
    branch7x7x3 = conv(branch7x7x3, 192, 3, 3, "branch7x7x3_4", strides=2, padding="VALID")
    branch_pool = max_pool(x, 3, 2, name="branch_pool")
    return tf.concat([branch3x3, branch7x7x3, branch_pool], axis=-1, name="concat")


def _block_8(x: tf.Tensor, conv: _ConvBN) -> tf.Tensor:
    """mixed9-10: [B, 8, 8, C] -> [B, 8, 8, 2048]. The convs are created in the source's order
    (a list's items left to right): 1x3 before 3x1."""
    branch1x1 = conv(x, 320, 1, 1, "branch1x1")
    branch3x3 = conv(x, 384, 1, 1, "branch3x3_1")
    branch3x3 = tf.concat([conv(branch3x3, 384, 1, 3, "branch3x3_2a"), conv(branch3x3, 384, 3, 1, "branch3x3_2b")],
                          axis=-1, name="branch3x3")
    branch3x3dbl = conv(x, 448, 1, 1, "branch3x3dbl_1")
    branch3x3dbl = conv(branch3x3dbl, 384, 3, 3, "branch3x3dbl_2")
    branch3x3dbl = tf.concat([conv(branch3x3dbl, 384, 1, 3, "branch3x3dbl_3a"),
                              conv(branch3x3dbl, 384, 3, 1, "branch3x3dbl_3b")], axis=-1, name="branch3x3dbl")
    branch_pool = conv(avg_pool(x, 3, 1, "SAME"), 192, 1, 1, "branch_pool")
    return tf.concat([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1, name="concat")


def connect(x: tf.Tensor, builder: Builder) -> tf.Tensor:
    """x: tf-preprocessed [B, H, W, 3] (H, W >= 75) -> [B, h, w, 2048] (the output of mixed10)."""
    conv = _ConvBN(builder)
    with v1.variable_scope("stem"):
        x = _stem(x, conv, builder)
    blocks = [lambda x, f=f: _block_35(x, conv, f) for f in BLOCKS_35]
    blocks.append(lambda x: _reduction_a(x, conv))
    blocks += [lambda x, c=c: _block_17(x, conv, c) for c in BLOCKS_17]
    blocks.append(lambda x: _reduction_b(x, conv))
    blocks += [lambda x: _block_8(x, conv)] * 2
    for i, block in enumerate(blocks):
        with v1.variable_scope(f"mixed{i}"):
            x = block(x)
        x = builder.end_point(f"mixed{i}", x)
    return x
