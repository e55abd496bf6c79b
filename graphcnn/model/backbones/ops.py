"""The layers a pretrained backbone is made of, with Keras's semantics and graphcnn's names.

A :class:`Builder` connects one backbone. Each weighted layer it adds (convolution,
depthwise convolution, batch norm) is ``tf.nn`` ops on ``tf.compat.v1.get_variable``
variables named by graphcnn's contract (``<scope>/weights``, ``<scope>/biases``,
``<scope>/depthwise_weights``, ``<scope>/bn/{gamma,beta,moving_mean,moving_variance}``),
and is recorded as a :class:`KerasLayer`: the name the same layer has in the
``keras.applications`` model and the graph variables in the order Keras keeps its weights,
which is what ``--init-from keras:<file>`` maps onto (:mod:`graphcnn.train.keras_init`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import tensorflow as tf

from graphcnn.model import layers as L

v1 = tf.compat.v1

Activation = Callable[[tf.Tensor], tf.Tensor] | None  # tf.nn.relu, tf.nn.relu6 or None (linear)


class KerasLayer(NamedTuple):
    """One weighted layer of a ``keras.applications`` model and where its weights go."""

    keras_name: str  # the layer's name in a freshly built Keras model (``block1_conv1``, ``conv2d_7``)
    kind: str  # conv2d | depthwise_conv2d | batch_normalization
    variables: tuple[str, ...]  # graph variable names, in the order of the Keras layer's weights


class BackboneOutput(NamedTuple):
    """What connecting a backbone adds to the graph."""

    features: tf.Tensor  # [B, h, w, C] in the compute dtype: the last layer's activated output
    end_points: dict[str, tf.Tensor]  # block name (with the backbone scope) -> its output, in order
    updates: tuple[tuple[tf.Variable, tf.Tensor], ...]  # batch-norm (moving average, amount to subtract)
    kernels: dict[str, tf.Variable]  # conv scope -> its weights variable
    keras_layers: tuple[KerasLayer, ...]  # in the order the layers were connected


class Builder:
    """Adds backbone layers to the default graph and records them.

    ``is_training``: bool scalar tensor (batch statistics in batch norm);
    ``bn_trains(scope)``: False for a batch-norm layer that must stay in inference mode
    (its variables are frozen, as Keras does for a layer with ``trainable = False``): it
    then uses its moving averages and has no updates.
    """

    def __init__(self, is_training: tf.Tensor, bn_trains: Callable[[str], bool] = lambda scope: True):
        self.is_training = is_training
        self.bn_trains = bn_trains
        self.end_points: dict[str, tf.Tensor] = {}
        self.updates: list[tuple[tf.Variable, tf.Tensor]] = []
        self.kernels: dict[str, tf.Variable] = {}
        self.keras_layers: list[KerasLayer] = []

    def output(self, features: tf.Tensor) -> BackboneOutput:
        return BackboneOutput(features, dict(self.end_points), tuple(self.updates), dict(self.kernels),
                              tuple(self.keras_layers))

    def end_point(self, name: str, x: tf.Tensor) -> tf.Tensor:
        """Record ``x`` as the output of block ``name`` (prefixed by the current scope)."""
        scope = v1.get_variable_scope().name
        self.end_points[f"{scope}/{name}" if scope else name] = x
        return x

    def _record(self, keras_name: str, kind: str, variables: list[tf.Variable]) -> None:
        self.keras_layers.append(KerasLayer(keras_name, kind, tuple(v.op.name for v in variables)))

    def conv(self, x: tf.Tensor, filters: int, kernel_size: int | tuple[int, int], name: str, keras: str, *,
             strides: int = 1, padding: str = "SAME", use_bias: bool = True, bn: str = "", epsilon: float = 1e-3,
             scale: bool = True, activation: Activation = None) -> tf.Tensor:
        """Conv2D [+ BatchNormalization] [+ activation], all in variable scope ``name``:
        x [B, H, W, Cin] -> [B, H', W', filters].

        Variables ``<name>/weights`` [kh, kw, Cin, filters] (Keras's kernel layout), with
        ``use_bias`` ``<name>/biases``, with ``bn`` ``<name>/bn/...``. ``keras``, ``bn``: the
        Keras layers' names. The output is recorded as end point ``<scope>/<name>``.
        """
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        with v1.variable_scope(name):
            w = v1.get_variable("weights", [kh, kw, int(x.shape[-1]), filters],
                                initializer=v1.glorot_uniform_initializer())
            y = tf.nn.conv2d(x, tf.cast(w, x.dtype), strides=[1, strides, strides, 1], padding=padding)
            self.kernels[w.op.name.rsplit("/", 1)[0]] = w
            return self._finish(y, [w], "conv2d", keras, use_bias, bn, epsilon, scale, activation)

    def depthwise(self, x: tf.Tensor, kernel_size: int, name: str, keras: str, *, strides: int = 1,
                  padding: str = "SAME", use_bias: bool = False, bn: str = "", epsilon: float = 1e-3,
                  activation: Activation = None) -> tf.Tensor:
        """DepthwiseConv2D (depth multiplier 1) [+ BatchNormalization] [+ activation]:
        [B, H, W, C] -> [B, H', W', C]. Variables ``<name>/depthwise_weights`` [k, k, C, 1] and
        as :meth:`conv`."""
        channels = int(x.shape[-1])
        with v1.variable_scope(name):
            w = v1.get_variable("depthwise_weights", [kernel_size, kernel_size, channels, 1],
                                initializer=v1.glorot_uniform_initializer())
            y = tf.nn.depthwise_conv2d(x, tf.cast(w, x.dtype), strides=[1, strides, strides, 1], padding=padding)
            return self._finish(y, [w], "depthwise_conv2d", keras, use_bias, bn, epsilon, True, activation)

    def _finish(self, y: tf.Tensor, variables: list[tf.Variable], kind: str, keras: str, use_bias: bool, bn: str,
                epsilon: float, scale: bool, activation: Activation) -> tf.Tensor:
        scope = v1.get_variable_scope().name
        if use_bias:
            b = v1.get_variable("biases", [int(y.shape[-1])], initializer=v1.zeros_initializer())
            y = tf.nn.bias_add(y, tf.cast(b, y.dtype))
            variables.append(b)
        self._record(keras, kind, variables)
        if bn:
            training = self.is_training if self.bn_trains(f"{scope}/bn") else False
            out = L.batch_norm(y, training, decay=0.99, epsilon=epsilon, name="bn", scale=scale)
            y = out.output
            self.updates.extend(out.updates)
            names = ("gamma", "beta", "moving_mean", "moving_variance")[0 if scale else 1:]
            self._record(bn, "batch_normalization", [_variable(f"{scope}/bn/{n}") for n in names])
        if activation is not None:
            y = activation(y)
        self.end_points[scope] = y
        return y


def _variable(name: str) -> tf.Variable:
    """The global variable called ``name`` (just created by this builder)."""
    for v in v1.global_variables():
        if v.op.name == name:
            return v
    raise KeyError(name)  # pragma: no cover - the builder created it


def pad(x: tf.Tensor, top_bottom: tuple[int, int], left_right: tuple[int, int], name: str = "pad") -> tf.Tensor:
    """Keras's ZeroPadding2D: zeros around the spatial dims of [B, H, W, C]."""
    return tf.pad(x, [[0, 0], list(top_bottom), list(left_right), [0, 0]], name=name)


def max_pool(x: tf.Tensor, size: int, strides: int, padding: str = "VALID", name: str = "pool") -> tf.Tensor:
    return tf.nn.max_pool2d(x, ksize=size, strides=strides, padding=padding, name=name)


def avg_pool(x: tf.Tensor, size: int, strides: int, padding: str = "SAME", name: str = "avg_pool") -> tf.Tensor:
    """Keras's AveragePooling2D: with SAME padding the border windows average only the real
    pixels, as ``tf.nn.avg_pool2d`` does."""
    return tf.nn.avg_pool2d(x, ksize=size, strides=strides, padding=padding, name=name)
