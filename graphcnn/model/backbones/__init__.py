"""Pretrained backbones: the convolutional bases of ``keras.applications`` as TF1 graphs.

Each backbone is a function ``connect(images, builder) -> features`` in a module of its own,
built from ``tf.nn`` ops and ``get_variable`` under graphcnn's naming contract (one scope per
block: ``vgg16/conv5/conv5_3/weights``), with ``include_top`` false: a model config puts
its own head (``model.layers``) and ``logits`` on top. The layers are Keras's, one for one,
so ``--init-from keras:<file>`` (:mod:`graphcnn.train.keras_init`) loads the weights files
Keras applications use, and the features equal Keras's (tests/test_backbones.py).

The backbone's preprocessing runs inside the graph, on ``input/images`` (RGB, pixels / 255,
as for every graphcnn model): ``caffe`` (VGG, ResNet) is pixels in BGR order minus the
ImageNet mean, ``tf`` (Inception, MobileNet) is [-1, 1], as ``keras.applications.<net>.
preprocess_input`` does. So ``predict``, ``explain``, the exported SavedModel and a plain
TensorFlow script feed the same [0, 1] images as for any other graphcnn model;
``preprocessing.json`` records which it was.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Callable, NamedTuple

import tensorflow as tf

from graphcnn.model.backbones import inception_v3, mobilenet_v2, resnet50, vgg16
from graphcnn.model.backbones.ops import BackboneOutput, Builder, KerasLayer
from graphcnn.registry import lookup

v1 = tf.compat.v1

__all__ = ["BACKBONES", "Backbone", "BackboneOutput", "KerasLayer", "PREPROCESSING", "connect_backbone",
           "get_backbone", "keras_file_order", "preprocessing_record"]

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# mode -> float32 [B, H, W, 3] RGB in [0, 1] -> what the backbone's first layer expects
PREPROCESSING: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "caffe": lambda x: tf.reverse(x * 255.0, axis=[-1]) - tf.constant(_CAFFE_MEAN_BGR, x.dtype),
    "tf": lambda x: x * 2.0 - 1.0,
}

PREPROCESSING_TEXT = {
    "caffe": "inside the graph: pixels (0-255) in BGR order minus the ImageNet mean (103.939, 116.779, 123.68)",
    "tf": "inside the graph: pixels / 127.5 - 1, in [-1, 1]",
}


class Backbone(NamedTuple):
    """A pretrained convolutional base, as its module describes it."""

    name: str  # also its variable scope
    connect: Callable[[tf.Tensor, Builder], tf.Tensor]  # preprocessed images -> features
    preprocessing: str  # a key of PREPROCESSING
    min_size: int  # the smallest input height/width Keras accepts
    default_size: int  # the input size its preset uses
    top_blocks: tuple[str, ...]  # the scopes the second transfer stage unfreezes (``vgg16/conv5``)
    keras_application: str  # the ``keras.applications`` constructor (``VGG16``)


def _backbone(module, **kw) -> Backbone:
    return Backbone(name=module.NAME, connect=module.connect, preprocessing=module.PREPROCESSING,
                    min_size=module.MIN_SIZE, default_size=module.DEFAULT_SIZE, top_blocks=module.TOP_BLOCKS,
                    keras_application=module.KERAS_APPLICATION, **kw)


BACKBONES: dict[str, Backbone] = {b.name: b for b in map(_backbone, (vgg16, resnet50, inception_v3, mobilenet_v2))}


def get_backbone(name: str) -> Backbone:
    """The backbone called ``name``; the error lists the choices."""
    return lookup(BACKBONES, name, "backbone")


def connect_backbone(name: str, images: tf.Tensor, is_training: tf.Tensor,
                     bn_trains: Callable[[str], bool] = lambda scope: True,
                     compute_dtype: tf.DType = tf.float32) -> BackboneOutput:
    """Connect backbone ``name`` under the variable scope of its name.

    ``images``: float32 [B, H, W, 3], RGB in [0, 1] (``input/images``); the backbone's own
    preprocessing is applied first, in float32, then the layers compute in ``compute_dtype``.
    ``bn_trains(scope)``: False for batch-norm layers to keep in inference mode (frozen).
    Returns the features [B, h, w, C] and what :class:`~graphcnn.model.backbones.ops.Builder`
    recorded.
    """
    backbone = get_backbone(name)
    if images.shape[-1] != 3:
        raise ValueError(f"backbone {name} takes RGB images (model.channels = 3), got {images.shape[-1]} channel(s)")
    builder = Builder(is_training, bn_trains)
    with v1.variable_scope(backbone.name):
        with tf.name_scope("preprocess"):
            x = tf.cast(PREPROCESSING[backbone.preprocessing](tf.cast(images, tf.float32)), compute_dtype)
        features = backbone.connect(x, builder)
    return builder.output(features)


def preprocessing_record(name: str) -> tuple[str, str]:
    """(backbone, what its preprocessing does) for ``preprocessing.json``; ("", "") without one."""
    if not name:
        return "", ""
    return name, f"{get_backbone(name).preprocessing}: {PREPROCESSING_TEXT[get_backbone(name).preprocessing]}"


def keras_file_order(name: str) -> list[tuple[str, str]]:
    """(Keras layer name, kind) of each weighted layer of backbone ``name``, in the order of the
    Keras model's ``layers``, which is the order of a weights file (see ``scripts/keras_layer_order.py``)."""
    text = resources.files(__package__).joinpath(f"{name}_keras_layers.json").read_text()
    return [tuple(entry) for entry in json.loads(text)]
