"""Graph-side TensorBoard ops: histograms, filter grids and feature maps, built with the graph.

Histogram and image summaries are graph ops given their tag explicitly (the tf.compat.v1
summary functions derive it from a name scope, which TensorFlow makes unique: the tag of a
histogram of ``conv1_1/weights`` would come out ``conv1_1/weights_1``). Tags are the variable
names (``conv1_1/weights``), ``gradients/<variable>``, ``activations/<layer>``,
``sparsity/<layer>``, ``filters/<layer>`` and ``feature_maps/<layer>``; the ops live under
``summaries/`` in the graph view.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

from graphcnn.viz.grids import activation_grid, filter_grid, upscale

v1 = tf.compat.v1
HISTOGRAM_BUCKETS = 30  # tf.summary.histogram's default, what Keras's TensorBoard callback writes
FEATURE_MAP_MIN_HEIGHT = 96
# activation histograms bucket the first images of the batch only: 16 images give the same
# distribution shape at an eighth of the cost of a 128-image batch
ACTIVATION_HISTOGRAM_IMAGES = 16
# HistogramFixedWidth counts on one thread, ~400 M values/s on Zen 4: the 103 M-value fc1 weights
# and gradient of dog_breeds_vgg and its 26 M-value first activations made the two training steps
# that carry the histograms 1.3-1.5 s slower each, and each weights snapshot 0.3 s (of a 0.9 s
# step). Larger tensors are counted on an evenly spread sample of about this many values (every
# s-th value, s sharing no factor with the tensor's trailing dimensions, so every unit, channel
# and position is sampled alike), scaled to the tensor's size; min and max stay exact. With a
# 1 M sample of dog_breeds_vgg's fc1 weights the buckets holding 1% of the values or more came
# within 1% of their exact counts; a thin tail is the sample's (a bucket of 21 values showed 0).
HISTOGRAM_SAMPLE_VALUES = 1 << 20


def histogram_summary(tag: str, values: tf.Tensor, buckets: int = HISTOGRAM_BUCKETS,
                      name: str = "histogram") -> tf.Tensor:
    """A histogram summary of ``values`` (any shape, real dtype) under exactly ``tag``.

    TensorFlow 2's format: ``buckets`` equal-width buckets from min to max as a float64
    [buckets, 3] tensor of (left edge, right edge, count), counted by one vectorized op. The
    legacy HistogramSummary op binary-searches ~1,500 exponential buckets per value: the
    digits net's weight, gradient and activation histograms took ~65 ms per snapshot with it
    (three training steps), ~11 ms with this. Tensors of more than ``HISTOGRAM_SAMPLE_VALUES``
    values are counted on an evenly strided sample, the counts scaled to the tensor's size
    (they add up to it; each is an estimate); the edges (min, max) are exact. About 35 graph
    nodes (50 with a sample, 65 for a tensor without a static shape), all under ``name``.
    """
    fractions = np.linspace(0.0, 1.0, buckets + 1)
    with tf.name_scope(name):
        x = tf.reshape(values, [-1])
        size = tf.size(x)
        empty = tf.equal(size, 0)
        # min and max in the tensor's own dtype: casting all of a large bfloat16 tensor costs more
        lo = tf.where(empty, 0.0, tf.cast(tf.reduce_min(x), tf.float32))
        hi = tf.where(empty, 0.0, tf.cast(tf.reduce_max(x), tf.float32))
        # a NaN or an infinity (a diverging step, caught by train.check_numerics in the same
        # sess.run) must not fail here first: histogram_fixed_width refuses NaN values and range
        lo = tf.where(tf.math.is_finite(lo), lo, 0.0)
        hi = tf.where(tf.math.is_finite(hi), hi, 0.0)
        pad = tf.where(hi > lo, 0.0, 0.5)  # all values equal: a unit-wide range around them
        lo, hi = lo - pad, hi + pad
        stride = _sample_stride(size, values.shape)
        if isinstance(stride, int) and stride == 1:  # known to be small: every value, no sample ops
            counts = tf.histogram_fixed_width(_finite(tf.cast(x, tf.float32)), tf.stack([lo, hi]), nbins=buckets)
            counts = tf.cast(counts, tf.float64)
        else:
            sample = tf.cast(x[::stride], tf.float32)
            counts = tf.histogram_fixed_width(_finite(sample), tf.stack([lo, hi]), nbins=buckets)
            scale = tf.cast(size, tf.float64) / tf.cast(tf.maximum(tf.size(sample), 1), tf.float64)
            counts = tf.cast(counts, tf.float64) * scale
        lo64, span = tf.cast(lo, tf.float64), tf.cast(hi - lo, tf.float64)
        tensor = tf.stack([lo64 + span * fractions[:-1], lo64 + span * fractions[1:], counts], axis=1)
        meta = histogram_metadata.create_summary_metadata(display_name=tag, description="")
        return tf.raw_ops.TensorSummaryV2(tag=tag, tensor=tensor, serialized_summary_metadata=meta.SerializeToString(),
                                          name="summary")


def _finite(x: tf.Tensor) -> tf.Tensor:
    """``x`` with NaN and infinities counted as 0."""
    return tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))


def _sample_stride(size: tf.Tensor, shape: tf.TensorShape) -> int | tf.Tensor:
    """1 for up to ``HISTOGRAM_SAMPLE_VALUES`` values, else the smallest stride on the ladder
    that samples at most about that many and shares no factor with the trailing dimensions that
    are known (a stride of 512 over a [N, 512] weight would sample one unit). A Python int when
    the shape is static (weights, gradients), an int32 scalar tensor otherwise (activations:
    their batch dimension is not)."""
    trailing = 1
    for dim in reversed(shape.as_list() if shape.rank is not None else []):
        if dim is None:
            break
        trailing *= dim
    ladder = [1] + [p for p in _stride_ladder() if trailing % p]
    if shape.is_fully_defined():
        need = -(-shape.num_elements() // HISTOGRAM_SAMPLE_VALUES)
        return next((p for p in ladder if p >= need), ladder[-1])
    need = (size + HISTOGRAM_SAMPLE_VALUES - 1) // HISTOGRAM_SAMPLE_VALUES
    strides = tf.constant(ladder)
    below = tf.reduce_sum(tf.cast(strides < need, tf.int32))  # the index of the first stride >= need
    return tf.gather(strides, tf.minimum(below, len(ladder) - 1))


@functools.lru_cache(maxsize=1)
def _stride_ladder(top: int = 1 << 16) -> list[int]:
    """Primes from 2 to ``top`` (tensors up to 2**36 values), each at least 1/8 above the one
    before (68 strides): a sample holds at least half of ``HISTOGRAM_SAMPLE_VALUES``, and from
    about 20 M values on 89-100% of it."""
    sieve = np.ones(top + 1, bool)
    sieve[:2] = False
    for i in range(2, int(top ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = False
    ladder: list[int] = []
    for p in np.flatnonzero(sieve).tolist():
        if not ladder or p >= ladder[-1] * 9 / 8:
            ladder.append(p)
    return ladder


class PngImage(NamedTuple):
    """An in-graph PNG for an image summary whose tag we write ourselves."""

    png: tf.Tensor  # string scalar: encoded PNG
    height: int
    width: int
    channels: int


def encode_png(image: tf.Tensor) -> PngImage:
    """uint8 [1, H, W, C] (static H, W, C) -> :class:`PngImage`, at zlib level 1, as every PNG
    of the views: dog_breeds_vgg's six feature-map grids (1351x5404 the largest) encode in
    0.27 s instead of 0.59 s at the default level, 14% larger."""
    _, h, w, c = image.shape.as_list()
    return PngImage(tf.io.encode_png(image[0], compression=1), h, w, c)


class SummaryOps(NamedTuple):
    histograms: tf.Tensor | None  # merged histograms of weights and biases
    filters: dict[str, PngImage]  # tag "filters/<layer>" -> filter grid of the first conv layers


def build_summary_ops(variables: list[tf.Variable], conv_kernels: Mapping[str, tf.Variable],
                      max_filter_images: int) -> SummaryOps:
    """Summary ops for ``variables`` (histograms) and the first conv kernels (image grids)."""
    with tf.name_scope("summaries"):
        histograms = [histogram_summary(v.op.name, v) for v in variables]
        images = {}
        for name, kernel in list(conv_kernels.items())[:max_filter_images]:
            with tf.name_scope(f"filters_{name}"):
                images[f"filters/{name}"] = encode_png(filter_grid(kernel))
    return SummaryOps(v1.summary.merge(histograms) if histograms else None, images)


class ViewOps(NamedTuple):
    gradients: tf.Tensor | None  # merged gradients/<variable> histograms
    activations: tf.Tensor | None  # merged activations/<layer> histograms + sparsity/<layer> scalars
    feature_maps: dict[str, PngImage]  # "feature_maps/<layer>" -> PNG of the probe batch side by side


def build_view_ops(gradients: Sequence[tuple[tf.Tensor, tf.Variable]], end_points: Mapping[str, tf.Tensor],
                   layer_kinds: Mapping[str, str], activations: bool, probe_count: int) -> ViewOps:
    """Summary ops of the views, in the graph-building phase.

    ``gradients``: (gradient, variable) pairs to histogram (empty: none); ``end_points``: the
    network's layer outputs, histogrammed when ``activations`` and drawn for a probe batch of
    ``probe_count`` images (0: no feature maps); ``layer_kinds``: end point -> layer type.
    """
    kinds = layer_kinds
    gradient_op = activation_op = None
    feature_maps: dict[str, PngImage] = {}
    with tf.name_scope("summaries/"):  # re-enter the scope of build_summary_ops
        if gradients:
            with tf.name_scope("gradients"):
                gradient_op = v1.summary.merge([histogram_summary(f"gradients/{var.op.name}", grad)
                                                for grad, var in gradients])
        if activations:
            ops = []
            with tf.name_scope("activations"):
                for name, tensor in end_points.items():
                    if kinds.get(name) in ("dropout", "flatten"):
                        continue
                    ops.append(histogram_summary(f"activations/{name}", tensor[:ACTIVATION_HISTOGRAM_IMAGES]))
                    if name != "logits" and kinds.get(name) in ("conv", "dense", "pool", "global_avg_pool"):
                        zeros = tf.reduce_mean(tf.cast(tf.equal(tensor, 0.0), tf.float32))
                        ops.append(tf.raw_ops.ScalarSummary(tags=f"sparsity/{name}", values=zeros, name="sparsity"))
            activation_op = v1.summary.merge(ops) if ops else None
        if probe_count > 0:
            for name, tensor in end_points.items():
                if kinds.get(name) not in ("conv", "pool") or tensor.shape.rank != 4 \
                        or not tensor.shape[1:].is_fully_defined():
                    continue
                with tf.name_scope(f"feature_maps_{name}"):
                    grid = activation_grid(tf.cast(tensor, tf.float32))  # [B, H, W, 1]
                    h = grid.shape[1]
                    # the probe images left to right; concat, not a uint8 transpose (which oneDNN
                    # logs an error for on every run, then leaves to Eigen)
                    side_by_side = tf.concat(tf.unstack(grid, num=probe_count), axis=1)[tf.newaxis]
                    factor = min(4, max(1, math.ceil(FEATURE_MAP_MIN_HEIGHT / h)))
                    image = upscale(side_by_side, factor)
                    feature_maps[f"feature_maps/{name}"] = encode_png(image)
    return ViewOps(gradient_op, activation_op, feature_maps)

