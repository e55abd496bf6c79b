"""VGG16's convolutional base (Simonyan & Zisserman, 2014), as ``keras.applications.VGG16``
builds it with ``include_top=False``: five blocks of 3x3 convolutions (64, 128, 256, 512,
512 filters; 2, 2, 3, 3, 3 per block), each conv with biases and a ReLU, each block ending in
a 2x2 max pool. 14.7M parameters.

Scopes: ``vgg16/conv<b>/conv<b>_<i>`` (Keras ``block<b>_conv<i>``), pools ``vgg16/pool<b>``.
"""

from __future__ import annotations

import tensorflow as tf

from graphcnn.model.backbones.ops import Builder, max_pool

v1 = tf.compat.v1

NAME = "vgg16"
PREPROCESSING = "caffe"
MIN_SIZE = 32
DEFAULT_SIZE = 150  # the cats-vs-dogs tutorials' input size
TOP_BLOCKS = ("vgg16/conv5",)  # what the second transfer stage unfreezes
KERAS_APPLICATION = "VGG16"

BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convs) per block


def connect(x: tf.Tensor, builder: Builder) -> tf.Tensor:
    """x: caffe-preprocessed [B, H, W, 3] -> [B, H/32, W/32, 512] (the output of pool5)."""
    for b, (filters, convs) in enumerate(BLOCKS, start=1):
        with v1.variable_scope(f"conv{b}"):
            for i in range(1, convs + 1):
                x = builder.conv(x, filters, 3, f"conv{b}_{i}", keras=f"block{b}_conv{i}", activation=tf.nn.relu)
        x = builder.end_point(f"pool{b}", max_pool(x, 2, 2, name=f"pool{b}"))
    return x
