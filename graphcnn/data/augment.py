"""Random batch augmentation in the style of Keras' ``ImageDataGenerator``, as TF graph ops.

:func:`augment_batch` works on a whole batch at once. Flips, rotation, shifts, shear and
zoom are composed into one projective transform per image (about the image centre) and
applied by a single ``ImageProjectiveTransformV3`` op on the batch; brightness and
contrast are per-image elementwise ops applied after it, and random erasing (Zhong et al.
2017, Keras's ``RandomErasing``) replaces a random rectangle of some images with noise last.

Reproducibility
---------------
All random numbers come from stateless ops (``tf.random.stateless_uniform``) keyed by a
per-batch seed pair; each option folds its own constant into that pair, so enabling one
option does not change the draws of another. The seed pair comes from ``seed``:

* a Python ``int``: one seeded stateful op (``tf.random.uniform(seed=seed)``) draws a new
  pair each time the augmentation runs (each ``Session.run``, each batch of a
  ``tf.data`` pipeline). The stream of augmentations is therefore different from batch to
  batch, and the same in every run built with the same ``seed`` and graph-level seed
  (``tf.compat.v1.set_random_seed``), provided batches reach the op in the same order
  (true for a sequential ``map``; a parallel ``map`` may hand out the draws to batches in
  a different order).
* an integer tensor of shape ``[2]`` (for example ``tf.stack([seed, batch_index])`` with
  the index from ``Dataset.enumerate()``): no stateful op at all; the output is a pure
  function of the images and this pair, also under a parallel ``map``.
"""

from __future__ import annotations

import math

import tensorflow as tf

from graphcnn.config import AugmentConfig
from graphcnn.registry import lookup

__all__ = ["FILL_MODES", "augment_batch"]

# AugmentConfig.fill_mode -> the fill_mode of ImageProjectiveTransformV3
FILL_MODES = {"nearest": "NEAREST", "constant": "CONSTANT", "reflect": "REFLECT", "wrap": "WRAP"}

# Constants folded into the seed pair, one per random quantity: fixed, so that each draw
# does not depend on which other options are enabled.
_KEY_HFLIP, _KEY_VFLIP, _KEY_ROTATION, _KEY_SHIFT_X, _KEY_SHIFT_Y = 1, 2, 3, 4, 5
_KEY_SHEAR, _KEY_ZOOM_X, _KEY_ZOOM_Y, _KEY_BRIGHTNESS, _KEY_CONTRAST = 6, 7, 8, 9, 10
_KEY_ERASE, _KEY_ERASE_AREA, _KEY_ERASE_RATIO, _KEY_ERASE_Y, _KEY_ERASE_X, _KEY_ERASE_NOISE = 11, 12, 13, 14, 15, 16
_ERASE_RATIO = 0.3  # the rectangle's height / width is log-uniform in [0.3, 1 / 0.3], as in the paper

_INT32_MAX = 2**31 - 1


def augment_batch(images: tf.Tensor, cfg: AugmentConfig, seed: int | tf.Tensor) -> tf.Tensor:
    """Randomly augment a batch of images, each image with its own random parameters.

    Args:
        images: float32 ``[B, H, W, C]`` with values in [0, 1], C = 1 or 3; B (and H, W)
            may be dynamic.
        cfg: which augmentations to apply and their ranges (see :class:`AugmentConfig`):

            * ``horizontal_flip`` / ``vertical_flip``: each image flipped with probability 1/2.
            * ``rotation_range``: angle uniform in [-r, r] degrees.
            * ``width_shift_range`` / ``height_shift_range``: shift uniform in [-r, r] times
              W (H) pixels.
            * ``shear_range``: shear angle uniform in [-r, r] degrees, as Keras shears
              (in output->input pixel coordinates about the centre, x' = cos(s) x,
              y' = y - sin(s) x).
            * ``zoom_range``: horizontal and vertical scale drawn independently, uniform in
              [1 - r, 1 + r], as Keras does; the scale maps output to input coordinates,
              so a scale above 1 shows more of the image (zooms out).
            * ``brightness_range`` ``(lo, hi)``: every pixel multiplied by a factor uniform in
              [lo, hi].
            * ``contrast_range``: ``(x - mean) * f + mean`` with f uniform in [1 - r, 1 + r]
              and mean the image's per-channel mean.
            * ``fill_mode`` (nearest | constant | reflect | wrap) and ``cval``: how pixels that
              map outside the input are filled by the geometric transform.
            * ``erasing``: with this probability an image gets one rectangle replaced by uniform
              noise in [0, 1]; its area is a share uniform in ``erasing_area`` of the image's,
              its height / width log-uniform in [0.3, 3.3], its place uniform (the rectangle
              clipped to the image).

            The geometric ones compose, as in Keras, to input = R . T . Sh . Z . F (output)
            (rotation, shift, shear, zoom, flip) about the centre ((W - 1)/2, (H - 1)/2),
            sampled bilinearly; then brightness, then contrast, then the result is clipped
            to [0, 1]; erasing comes last.
        seed: a Python int or an integer tensor of shape [2]; see the module docstring for
            the reproducibility each gives.

    Returns:
        float32 ``[B, H, W, C]``, the same static shape as ``images``. When ``cfg.enabled``
        is False, ``images`` itself is returned and no op is added to the graph.
    """
    if not cfg.enabled:
        return images
    fill_mode = lookup(FILL_MODES, cfg.fill_mode, "fill mode")
    if cfg.brightness_range and (len(cfg.brightness_range) != 2 or cfg.brightness_range[0] > cfg.brightness_range[1]):
        raise ValueError(f"augment.brightness_range: expected (low, high) with low <= high, got {cfg.brightness_range}")
    if not 0.0 <= cfg.erasing <= 1.0:
        raise ValueError(f"augment.erasing: a probability in [0, 1], got {cfg.erasing}")
    area = cfg.erasing_area
    if cfg.erasing and (len(area) != 2 or not 0.0 < area[0] <= area[1] <= 1.0):
        raise ValueError(f"augment.erasing_area: expected (low, high) with 0 < low <= high <= 1, got {area}")

    with tf.name_scope("augment"):
        images = tf.convert_to_tensor(images, dtype=tf.float32)
        static_shape = images.shape
        seed_pair = _seed_pair(seed)
        batch = tf.shape(images)[0]

        def uniform(key: int, low: float, high: float) -> tf.Tensor:
            """float32 [B], one draw per image."""
            return tf.random.stateless_uniform(
                [batch], seed=tf.random.experimental.stateless_fold_in(seed_pair, key), minval=low, maxval=high
            )

        out = images
        transform = _geometric_transform(cfg, images, uniform)
        if transform is not None:
            out = tf.raw_ops.ImageProjectiveTransformV3(
                images=out,
                transforms=transform,
                output_shape=tf.shape(images)[1:3],
                fill_value=tf.constant(cfg.cval, tf.float32),
                interpolation="BILINEAR",
                fill_mode=fill_mode,
            )
        if cfg.brightness_range:
            low, high = cfg.brightness_range
            factor = uniform(_KEY_BRIGHTNESS, low, high)
            out = out * factor[:, None, None, None]
        if cfg.contrast_range:
            factor = uniform(_KEY_CONTRAST, 1.0 - cfg.contrast_range, 1.0 + cfg.contrast_range)
            mean = tf.reduce_mean(out, axis=[1, 2], keepdims=True)
            out = (out - mean) * factor[:, None, None, None] + mean
        out = tf.clip_by_value(out, 0.0, 1.0)
        if cfg.erasing:
            out = _erase(out, cfg, uniform, seed_pair)
        out.set_shape(static_shape)
        return out


def _erase(images: tf.Tensor, cfg: AugmentConfig, uniform, seed_pair: tf.Tensor) -> tf.Tensor:
    """float32 [B, H, W, C]: each image, with probability ``cfg.erasing``, with one rectangle of
    uniform noise (see :func:`augment_batch`)."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    area = uniform(_KEY_ERASE_AREA, *cfg.erasing_area) * height * width
    ratio = tf.exp(uniform(_KEY_ERASE_RATIO, math.log(_ERASE_RATIO), -math.log(_ERASE_RATIO)))
    rows = tf.clip_by_value(tf.round(tf.sqrt(area * ratio)), 1.0, height)
    cols = tf.clip_by_value(tf.round(tf.sqrt(area / ratio)), 1.0, width)
    top = tf.floor(uniform(_KEY_ERASE_Y, 0.0, 1.0) * (height - rows + 1.0))
    left = tf.floor(uniform(_KEY_ERASE_X, 0.0, 1.0) * (width - cols + 1.0))
    erased = uniform(_KEY_ERASE, 0.0, 1.0) < cfg.erasing
    y = tf.range(height)[None, :]  # [1, H], pixel rows
    x = tf.range(width)[None, :]
    in_rows = (y >= top[:, None]) & (y < (top + rows)[:, None])  # [B, H]
    in_cols = (x >= left[:, None]) & (x < (left + cols)[:, None])  # [B, W]
    mask = in_rows[:, :, None] & in_cols[:, None, :] & erased[:, None, None]  # [B, H, W]
    noise = tf.random.stateless_uniform(shape, seed=tf.random.experimental.stateless_fold_in(seed_pair,
                                                                                            _KEY_ERASE_NOISE))
    return tf.where(mask[..., None], noise, images)


def _seed_pair(seed: int | tf.Tensor) -> tf.Tensor:
    """int32/int64 [2]: the stateless seed for this batch."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        return tf.random.uniform([2], maxval=_INT32_MAX, dtype=tf.int32, seed=seed % _INT32_MAX, name="seed_pair")
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise TypeError(f"augment_batch: seed must be an int or an integer tensor of shape [2], got {seed.dtype}")
    seed.shape.assert_is_compatible_with([2])
    return seed


def _geometric_transform(cfg: AugmentConfig, images: tf.Tensor, uniform) -> tf.Tensor | None:
    """float32 [B, 8] projective transforms (output -> input pixel coordinates), or None when
    no geometric option is on."""
    shape = tf.shape(images)
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    batch = shape[0]
    ones = tf.ones([batch], tf.float32)
    zeros = tf.zeros([batch], tf.float32)

    def matrix(a, b, c, d, e, f) -> tf.Tensor:
        """[B, 3, 3] affine matrices [[a, b, c], [d, e, f], [0, 0, 1]] from [B] entries."""
        rows = [tf.stack([a, b, c], axis=-1), tf.stack([d, e, f], axis=-1), tf.stack([zeros, zeros, ones], axis=-1)]
        return tf.stack(rows, axis=1)

    # Applied to output coordinates right to left: flip, zoom, shear, shift, rotation.
    factors = []
    if cfg.rotation_range:
        theta = uniform(_KEY_ROTATION, -cfg.rotation_range, cfg.rotation_range) * (math.pi / 180.0)
        cos, sin = tf.cos(theta), tf.sin(theta)
        factors.append(matrix(cos, sin, zeros, -sin, cos, zeros))
    if cfg.width_shift_range or cfg.height_shift_range:
        tx = (uniform(_KEY_SHIFT_X, -cfg.width_shift_range, cfg.width_shift_range) * width
              if cfg.width_shift_range else zeros)
        ty = (uniform(_KEY_SHIFT_Y, -cfg.height_shift_range, cfg.height_shift_range) * height
              if cfg.height_shift_range else zeros)
        factors.append(matrix(ones, zeros, tx, zeros, ones, ty))
    if cfg.shear_range:
        shear = uniform(_KEY_SHEAR, -cfg.shear_range, cfg.shear_range) * (math.pi / 180.0)
        factors.append(matrix(tf.cos(shear), zeros, zeros, -tf.sin(shear), ones, zeros))
    if cfg.zoom_range:
        low, high = 1.0 - cfg.zoom_range, 1.0 + cfg.zoom_range
        factors.append(matrix(uniform(_KEY_ZOOM_X, low, high), zeros, zeros,
                              zeros, uniform(_KEY_ZOOM_Y, low, high), zeros))
    if cfg.horizontal_flip or cfg.vertical_flip:
        def sign(key: int, on: bool) -> tf.Tensor:
            return tf.where(uniform(key, 0.0, 1.0) < 0.5, -ones, ones) if on else ones

        factors.append(matrix(sign(_KEY_HFLIP, cfg.horizontal_flip), zeros, zeros,
                              zeros, sign(_KEY_VFLIP, cfg.vertical_flip), zeros))
    if not factors:
        return None

    cx = (width - 1.0) / 2.0
    cy = (height - 1.0) / 2.0
    to_centre = matrix(ones, zeros, -cx * ones, zeros, ones, -cy * ones)  # pixel -> centred coordinates
    from_centre = matrix(ones, zeros, cx * ones, zeros, ones, cy * ones)
    m = from_centre
    for factor in factors:
        m = tf.matmul(m, factor)
    m = tf.matmul(m, to_centre)
    # Affine: the last row is exactly [0, 0, 1], so no normalisation by m[2, 2] is needed.
    return tf.reshape(m, [batch, 9])[:, :8]
