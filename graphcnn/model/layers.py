"""Layers from ``tf.nn`` ops and ``tf.compat.v1.get_variable``.

``tf.compat.v1.layers`` does not work under Keras 3, and its variable names are not ours to
pin, so every layer here is a few explicit ops. Each function opens a variable scope of its
own name, so variables come out as ``<name>/weights``, ``<name>/biases``,
``<name>/bn/gamma`` ... and a second connection with ``reuse`` shares them.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import tensorflow as tf

from graphcnn.registry import lookup

v1 = tf.compat.v1

# name -> activation function; None for linear (no op added)
ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor] | None] = {
    "relu": tf.nn.relu,
    "elu": tf.nn.elu,
    "leaky_relu": tf.nn.leaky_relu,
    "tanh": tf.nn.tanh,
    "sigmoid": tf.nn.sigmoid,
    "linear": None,
}

# A truncated normal of at least this many values is drawn through the inverse CDF instead of
# TensorFlow's TruncatedNormal op: the same distribution, about 2.8x faster (the op's Box-Muller
# and rejection loop take 1.6 s for dog_breeds_vgg's 103 M-value fc1 on 2 Zen 4 cores, a
# uniform draw and erfinv 0.6 s; BENCHMARKS.md). Smaller tensors keep the op, and with it the
# numbers each seed has always given the presets' smaller networks.
BIG_TRUNCATED_NORMAL = 1 << 23
_TWO_SIGMA = math.erf(2 / math.sqrt(2))  # the share of N(0, 1) within +-2


class TruncatedNormal:
    """N(0, stddev^2) cut at +-2 stddev, as ``tf.compat.v1.truncated_normal_initializer``; with
    ``fan_in_scale`` the stddev is ``sqrt(scale / fan_in)`` corrected for the cut, as
    ``variance_scaling_initializer(scale, "fan_in", "truncated_normal")`` has it (He's init
    with scale 2). Seeded by the graph-level seed, as those are."""

    def __init__(self, stddev: float = 0.1, fan_in_scale: float | None = None):
        self.stddev, self.fan_in_scale = stddev, fan_in_scale

    def _op_initializer(self) -> Callable[..., tf.Tensor]:
        if self.fan_in_scale is None:
            return v1.truncated_normal_initializer(stddev=self.stddev)
        return v1.variance_scaling_initializer(scale=self.fan_in_scale, mode="fan_in",
                                               distribution="truncated_normal")

    def __call__(self, shape, dtype=tf.float32, partition_info=None) -> tf.Tensor:
        shape = [int(d) for d in shape]
        if math.prod(shape) < BIG_TRUNCATED_NORMAL:
            return self._op_initializer()(shape, dtype=dtype, partition_info=partition_info)
        stddev = self.stddev
        if self.fan_in_scale is not None:  # fan_in: everything but the output axis (kernel h * w * in)
            # 0.8796... is the stddev of N(0, 1) cut at +-2, as variance_scaling_initializer divides by
            stddev = math.sqrt(self.fan_in_scale / max(1, math.prod(shape[:-1]))) / 0.87962566103423978
        # x = sqrt(2) erfinv(u) is N(0, 1) for u uniform in (-1, 1); u within +-erf(sqrt 2) cuts it at +-2
        u = tf.random.uniform(shape, -_TWO_SIGMA, _TWO_SIGMA, dtype=tf.float32)
        return tf.cast(tf.math.erfinv(u) * (math.sqrt(2.0) * stddev), dtype)


# name -> stddev -> a new initializer; only truncated_normal reads the stddev
INITIALIZERS: dict[str, Callable[[float], Callable[..., tf.Tensor]]] = {
    "truncated_normal": lambda stddev: TruncatedNormal(stddev),
    "glorot": lambda stddev: v1.glorot_uniform_initializer(),
    "he": lambda stddev: TruncatedNormal(fan_in_scale=2.0),
}

# LayerConfig.pool -> the pooling op
POOLS: dict[str, Callable[..., tf.Tensor]] = {"max": tf.nn.max_pool2d, "avg": tf.nn.avg_pool2d}


def get_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """The activation function called ``name`` (None for ``linear``); the error lists the choices."""
    return lookup(ACTIVATIONS, name, "activation")


def get_initializer(name: str, stddev: float = 0.1) -> Callable[..., tf.Tensor]:
    """Weight initializer by name: ``truncated_normal`` (stddev), ``glorot`` or ``he``."""
    return lookup(INITIALIZERS, name, "initializer")(stddev)


class LayerOutput(NamedTuple):
    """What a layer adds to the graph: its output and any state training must also update."""

    output: tf.Tensor
    # batch-norm moving averages as (variable, amount to subtract); the train op creates the
    # assignments, after its NaN checks, so a diverging step cannot corrupt them either
    updates: tuple[tuple[tf.Variable, tf.Tensor], ...] = ()
    weights: tf.Variable | None = None  # the kernel, for weight decay and summaries


def batch_norm(x: tf.Tensor, is_training: tf.Tensor | bool, decay: float = 0.99, epsilon: float = 1e-3,
               name: str = "bn", scale: bool = True) -> LayerOutput:
    """Batch normalization over all axes but the last: x float32 [B, H, W, C] or [B, C].

    Training (``is_training`` true) normalizes with the batch moments; evaluation uses the
    moving averages. The returned updates move those averages; the train op applies them.
    Variables ``<name>/{gamma,beta,moving_mean,moving_variance}`` [C]; ``scale=False``: no
    gamma (1). ``is_training`` the Python ``False``: a frozen layer, always in inference mode
    and without updates (a frozen layer's statistics must not drift, as in Keras).

    Both branches use the fused kernel (one op forward, one backward): built from
    ``tf.nn.moments`` the same layer made a BN network about 3x slower on CPU.
    """
    channels = int(x.shape[-1])
    with v1.variable_scope(name):
        gamma = (v1.get_variable("gamma", [channels], initializer=v1.ones_initializer()) if scale
                 else tf.ones([channels], name="gamma"))
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
        moving_mean = v1.get_variable("moving_mean", [channels], initializer=v1.zeros_initializer(), trainable=False)
        moving_variance = v1.get_variable("moving_variance", [channels], initializer=v1.ones_initializer(),
                                          trainable=False)
        # the fused kernel wants NHWC; a dense layer's [B, C] becomes [B, 1, 1, C]
        x4 = x if x.shape.rank == 4 else tf.reshape(x, [-1, 1, 1, channels])

        def batch_moments():  # (y, batch mean, batch variance)
            return v1.nn.fused_batch_norm(x4, gamma, beta, epsilon=epsilon, is_training=True)

        def moving_moments():
            y, _, _ = v1.nn.fused_batch_norm(
                x4, gamma, beta, mean=moving_mean, variance=moving_variance, epsilon=epsilon, is_training=False
            )
            return y, tf.identity(moving_mean), tf.identity(moving_variance)

        if is_training is False:
            y, updates = moving_moments()[0], ()
        else:
            y, mean, variance = tf.cond(is_training, batch_moments, moving_moments)
            # at evaluation the cond yields the moving averages themselves, so the deltas are 0
            updates = (
                (moving_mean, (moving_mean - mean) * (1.0 - decay)),
                (moving_variance, (moving_variance - variance) * (1.0 - decay)),
            )
        if x.shape.rank != 4:
            y = tf.reshape(y, [-1, channels])
        y.set_shape(x.shape)
    return LayerOutput(y, updates)


def _finish(y: tf.Tensor, w: tf.Variable, activation: str, is_training, use_batch_norm: bool,
            bn_decay: float) -> LayerOutput:
    """Biases (or batch norm, whose beta plays their role, as in tf-slim), then the activation."""
    updates: tuple = ()
    if use_batch_norm:
        y, updates, _ = batch_norm(y, is_training, decay=bn_decay)
    else:
        b = v1.get_variable("biases", [int(y.shape[-1])], initializer=v1.zeros_initializer())
        y = tf.nn.bias_add(y, tf.cast(b, y.dtype))
    act = get_activation(activation)
    if act is not None:
        y = act(y)
    return LayerOutput(y, updates, w)


def conv2d(x: tf.Tensor, filters: int, kernel_size: int, name: str, *, strides: int = 1, padding: str = "SAME",
           activation: str = "relu", initializer=None, is_training: tf.Tensor | None = None,
           use_batch_norm: bool = False, bn_decay: float = 0.99) -> LayerOutput:
    """2-D convolution: x float32 [B, H, W, Cin] -> [B, H', W', filters].

    Variables ``<name>/weights`` [k, k, Cin, filters] and ``<name>/biases`` [filters]
    (no biases when batch-normalized: the BN beta plays that role, as in tf-slim).
    """
    with v1.variable_scope(name):
        w = v1.get_variable("weights", [kernel_size, kernel_size, int(x.shape[-1]), filters], initializer=initializer)
        # variables stay float32; a bfloat16 network computes on a bfloat16 copy (cast is a no-op otherwise)
        y = tf.nn.conv2d(x, tf.cast(w, x.dtype), strides=[1, strides, strides, 1], padding=padding)
        return _finish(y, w, activation, is_training, use_batch_norm, bn_decay)


def dense(x: tf.Tensor, units: int, name: str, *, activation: str = "relu", initializer=None,
          is_training: tf.Tensor | None = None, use_batch_norm: bool = False, bn_decay: float = 0.99) -> LayerOutput:
    """Fully connected: x float32 [B, N] -> [B, units]; ``<name>/weights`` [N, units], ``<name>/biases``."""
    if len(x.shape) != 2:
        raise ValueError(f"{name}: dense needs a flat [batch, features] input, got shape {x.shape}; "
                         "add a flatten layer")
    with v1.variable_scope(name):
        w = v1.get_variable("weights", [int(x.shape[-1]), units], initializer=initializer)
        y = tf.matmul(x, tf.cast(w, x.dtype))
        return _finish(y, w, activation, is_training, use_batch_norm, bn_decay)


def pool2d(x: tf.Tensor, name: str, *, kind: str = "max", size: int = 2, strides: int = 0,
           padding: str = "SAME") -> tf.Tensor:
    """Max or average pooling, window ``size``, stride ``strides`` (0: same as size)."""
    op = lookup(POOLS, kind, "pool")
    with tf.name_scope(name):
        return op(x, ksize=size, strides=strides or size, padding=padding)


def dropout(x: tf.Tensor, keep_rate: tf.Tensor, name: str, seed: int, step: tf.Tensor | None = None) -> tf.Tensor:
    """Inverted dropout keeping each unit with probability ``keep_rate`` (a scalar tensor).

    The mask is a stateless draw keyed on (``seed``, ``step``), the global step before the
    update: the same step draws the same mask, so a resumed run continues exactly as the
    uninterrupted one would have (a stateful generator's position is not in the checkpoint).
    ``step`` None: 0. With keep rate 1.0 (the placeholder default) this is the identity, so
    evaluation and prediction need no feed, and draw no mask.
    """
    with tf.name_scope(name):
        key = tf.stack([tf.constant(seed, tf.int64),
                        tf.zeros([], tf.int64) if step is None else tf.cast(step, tf.int64)])

        def drop() -> tf.Tensor:
            # the random draw in float32 (the casts are no ops for a float32 x): bfloat16 random
            # numbers run on a slow generic kernel (+0.5 ms a step on the digits net)
            kept = tf.nn.experimental.stateless_dropout(tf.cast(x, tf.float32), rate=1.0 - keep_rate, seed=key)
            return tf.cast(kept, x.dtype)

        # a tensor rate of 0 still draws the whole mask: skipped at keep rate 1.0, evaluation
        # and prediction run without it (42 ms of a batch of 32 on dog_breeds_vgg's two)
        return tf.cond(keep_rate < 1.0, drop, lambda: tf.identity(x))


def flatten(x: tf.Tensor, name: str = "flatten") -> tf.Tensor:
    """[B, H, W, C] -> [B, H*W*C] with a static feature size."""
    with tf.name_scope(name):
        return tf.reshape(x, [-1, math.prod(int(d) for d in x.shape[1:])])


def global_avg_pool(x: tf.Tensor, name: str = "global_avg_pool") -> tf.Tensor:
    """[B, H, W, C] -> [B, C]: the mean over space, so any input size gives the same features."""
    with tf.name_scope(name):
        return tf.reduce_mean(x, axis=[1, 2])
