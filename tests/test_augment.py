"""Tests for graphcnn.data.augment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from graphcnn.config import AugmentConfig
from graphcnn.data.augment import FILL_MODES, augment_batch
from graphcnn.registry import UnknownChoiceError

B = 48  # copies of the input image, each with its own random parameters


def run_augment(
    images: np.ndarray, cfg: AugmentConfig, seed=0, runs: int = 1, dynamic_batch: bool = False
) -> list[np.ndarray]:
    """Augment ``images`` in a fresh graph; one result per ``Session.run``."""
    with tf.Graph().as_default():
        shape = (None,) + images.shape[1:] if dynamic_batch else images.shape
        x = tf.compat.v1.placeholder(tf.float32, shape)
        y = augment_batch(x, cfg, seed)
        assert y.dtype == tf.float32
        assert y.shape.as_list() == list(shape)
        with tf.compat.v1.Session() as sess:
            return [sess.run(y, {x: images}) for _ in range(runs)]


def point_image(size: int, row: int, col: int, channels: int = 1) -> np.ndarray:
    image = np.zeros((B, size, size, channels), np.float32)
    image[:, row, col, :] = 1.0
    return image


def centroids(batch: np.ndarray) -> np.ndarray:
    """[B, 2] (row, col) intensity centroid of each image's first channel."""
    mass = batch[..., 0]
    rows, cols = np.mgrid[: mass.shape[1], : mass.shape[2]]
    total = mass.sum(axis=(1, 2))
    return np.stack([(mass * rows).sum(axis=(1, 2)) / total, (mass * cols).sum(axis=(1, 2)) / total], axis=1)


def test_disabled_returns_input_unchanged_without_ops():
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 1])
        before = len(graph.get_operations())
        assert augment_batch(x, AugmentConfig(), 0) is x
        assert len(graph.get_operations()) == before


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentConfig(horizontal_flip=True),
        AugmentConfig(vertical_flip=True),
        AugmentConfig(rotation_range=30),
        AugmentConfig(width_shift_range=0.2),
        AugmentConfig(height_shift_range=0.2),
        AugmentConfig(shear_range=20),
        AugmentConfig(zoom_range=0.2),
        AugmentConfig(brightness_range=(0.5, 1.5)),
        AugmentConfig(contrast_range=0.5),
        AugmentConfig(horizontal_flip=True, rotation_range=20, width_shift_range=0.1, height_shift_range=0.1,
                      shear_range=10, zoom_range=0.1, brightness_range=(0.8, 1.2), contrast_range=0.2,
                      fill_mode="reflect", erasing=0.5),
        AugmentConfig(erasing=1.0),
    ],
    ids=["hflip", "vflip", "rotation", "wshift", "hshift", "shear", "zoom", "brightness", "contrast", "all",
         "erasing"],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_range_and_change(cfg, channels):
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 1.0, (6, 9, 10, channels)).astype(np.float32)
    (out,) = run_augment(images, cfg, seed=3, dynamic_batch=True)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, images)  # something happened


def test_flips_really_flip():
    rng = np.random.default_rng(1)
    image = rng.uniform(size=(1, 5, 7, 3)).astype(np.float32)
    images = np.repeat(image, B, axis=0)
    (h,) = run_augment(images, AugmentConfig(horizontal_flip=True))
    flipped = [np.allclose(o, image[0, :, ::-1], atol=1e-5) for o in h]
    same = [np.allclose(o, image[0], atol=1e-5) for o in h]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)
    (v,) = run_augment(images, AugmentConfig(vertical_flip=True))
    flipped = [np.allclose(o, image[0, ::-1], atol=1e-5) for o in v]
    same = [np.allclose(o, image[0], atol=1e-5) for o in v]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


@pytest.mark.parametrize("axis", ["width", "height"])
def test_shift_moves_a_point_at_most_range(axis):
    size, r = 16, 0.25
    cfg = AugmentConfig(fill_mode="constant", **{f"{axis}_shift_range": r})
    (out,) = run_augment(point_image(size, 8, 8), cfg)
    moving, fixed = (1, 0) if axis == "width" else (0, 1)
    for img in out[..., 0]:
        rows, cols = np.nonzero(img > 1e-6)
        coords = (rows, cols)
        assert np.all(coords[fixed] == 8)
        assert np.all(np.abs(coords[moving] - 8) <= math.ceil(r * size))
    displacement = centroids(out)[:, moving] - 8
    assert np.abs(displacement).max() > 1.0  # it does move
    assert np.abs(displacement).max() <= r * size + 1e-4


def test_rotation_bounded_by_range():
    # A point 6 px right of the centre; rotating by at most 90 degrees keeps it at distance
    # 6 and never on the left half.
    size, centre = 17, 8
    (out,) = run_augment(point_image(size, centre, centre + 6), AugmentConfig(rotation_range=90, fill_mode="constant"))
    c = centroids(out) - centre
    assert np.allclose(np.hypot(c[:, 0], c[:, 1]), 6.0, atol=0.6)
    assert c[:, 1].min() >= -0.6
    angles = np.degrees(np.arctan2(c[:, 0], c[:, 1]))
    assert np.abs(angles).max() > 30  # really rotates


def test_zoom_scales_distance_within_range():
    size, centre, d, r = 17, 8, 6, 0.2
    (out,) = run_augment(point_image(size, centre, centre + d), AugmentConfig(zoom_range=r, fill_mode="constant"))
    c = centroids(out) - centre
    assert np.allclose(c[:, 0], 0.0, atol=1e-4)
    # output distance = d / z with z in [1 - r, 1 + r]
    assert c[:, 1].min() >= d / (1 + r) - 0.05 and c[:, 1].max() <= d / (1 - r) + 0.05
    assert c[:, 1].max() - c[:, 1].min() > 0.5


def test_shear_keras_semantics():
    # Output->input: x' = cos(s) x, y' = y - sin(s) x. A point on the vertical axis stays
    # (bilinear sampling smears it symmetrically); a point at (x=d, y=0) moves to
    # x = d / cos(s), y = d tan(s).
    size, centre, d, r = 17, 8, 4, 30.0
    cfg = AugmentConfig(shear_range=r, fill_mode="constant")
    (out,) = run_augment(point_image(size, centre - 5, centre), cfg)
    assert np.allclose(centroids(out), [centre - 5, centre], atol=1e-4)
    (out,) = run_augment(point_image(size, centre, centre + d), cfg)
    c = centroids(out) - centre
    shear = np.arctan2(c[:, 0], d)  # tan(s) = dy / d
    assert np.degrees(np.abs(shear)).max() <= r + 2.0 and np.degrees(np.abs(shear)).max() > 5
    assert np.allclose(c[:, 1], d / np.cos(shear), atol=0.2)


def test_brightness_factor_within_range():
    images = np.full((B, 4, 4, 3), 0.5, np.float32)
    (out,) = run_augment(images, AugmentConfig(brightness_range=(0.6, 1.4)))
    factors = out / 0.5
    per_image = factors.reshape(B, -1)
    assert np.allclose(per_image, per_image[:, :1], atol=1e-6)  # one factor per image
    assert per_image.min() >= 0.6 - 1e-6 and per_image.max() <= 1.4 + 1e-6
    assert per_image.std() > 0.05
    (out,) = run_augment(np.full((B, 4, 4, 1), 0.9, np.float32), AugmentConfig(brightness_range=(1.5, 2.0)))
    assert np.all(out == 1.0)  # clipped


def test_contrast_factor_within_range_about_mean():
    rng = np.random.default_rng(2)
    image = rng.uniform(0.4, 0.6, (1, 5, 5, 1)).astype(np.float32)
    images = np.repeat(image, B, axis=0)
    (out,) = run_augment(images, AugmentConfig(contrast_range=0.5))
    mean = image.mean()
    assert np.allclose(out.mean(axis=(1, 2, 3)), mean, atol=1e-5)
    factors = ((out - mean) * (image - mean)).sum(axis=(1, 2, 3)) / ((image - mean) ** 2).sum()
    assert factors.min() >= 0.5 - 1e-4 and factors.max() <= 1.5 + 1e-4
    assert factors.max() - factors.min() > 0.3


def test_fill_modes():
    size = 8
    images = np.full((B, size, size, 1), 0.3, np.float32)
    (out,) = run_augment(images, AugmentConfig(width_shift_range=0.5, fill_mode="constant", cval=0.9))
    assert np.isclose(out, 0.9).any()
    for mode in ("nearest", "reflect", "wrap"):
        (out,) = run_augment(images, AugmentConfig(width_shift_range=0.5, rotation_range=45, fill_mode=mode))
        assert np.allclose(out, 0.3, atol=1e-5), mode  # a constant image stays constant
    # wrap with a column ramp: every output column still holds an input column value.
    ramp = np.tile(np.arange(size, dtype=np.float32)[None, None, :, None] / size, (B, size, 1, 1))
    (out,) = run_augment(ramp, AugmentConfig(horizontal_flip=True, fill_mode="wrap"))
    assert np.allclose(np.sort(out[:, 0, :, 0], axis=1), np.sort(ramp[:, 0, :, 0], axis=1), atol=1e-5)


def test_int_seed_gives_reproducible_stream():
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(4, 8, 8, 1)).astype(np.float32)
    cfg = AugmentConfig(rotation_range=20, zoom_range=0.1, brightness_range=(0.8, 1.2))
    first = run_augment(images, cfg, seed=5, runs=3)
    again = run_augment(images, cfg, seed=5, runs=3)
    other = run_augment(images, cfg, seed=6, runs=1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], first[1])  # a new draw per run
    assert not np.allclose(first[0], other[0])


def test_tensor_seed_is_pure_function():
    rng = np.random.default_rng(4)
    images = rng.uniform(size=(4, 8, 8, 3)).astype(np.float32)
    cfg = AugmentConfig(horizontal_flip=True, shear_range=15, contrast_range=0.3)
    with tf.Graph().as_default():
        seed = tf.compat.v1.placeholder(tf.int64, [2])
        y = augment_batch(tf.constant(images), cfg, seed)
        with tf.compat.v1.Session() as sess:
            a = sess.run(y, {seed: [1, 7]})
            b = sess.run(y, {seed: [1, 7]})
            c = sess.run(y, {seed: [1, 8]})
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_enabling_an_option_keeps_other_draws():
    # Each random quantity has its own stream: adding brightness leaves the flips alone.
    rng = np.random.default_rng(5)
    images = rng.uniform(0.2, 0.4, (B, 4, 6, 1)).astype(np.float32)
    with tf.Graph().as_default():
        seed = tf.constant([3, 4], tf.int64)
        flip = augment_batch(tf.constant(images), AugmentConfig(horizontal_flip=True), seed)
        both = augment_batch(tf.constant(images),
                             AugmentConfig(horizontal_flip=True, brightness_range=(2.0, 2.0)), seed)
        with tf.compat.v1.Session() as sess:
            flip, both = sess.run([flip, both])
    np.testing.assert_allclose(both, np.clip(flip * 2.0, 0, 1), atol=1e-6)


def test_in_tf_data_pipeline_new_draw_per_batch():
    images = np.full((6, 4, 4, 1), 0.5, np.float32)

    def batches() -> list[np.ndarray]:
        with tf.Graph().as_default():
            ds = tf.data.Dataset.from_tensor_slices(images).batch(2)
            ds = ds.map(lambda x: augment_batch(x, AugmentConfig(brightness_range=(0.5, 1.5)), 11))
            nxt = tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
            assert nxt.shape.as_list() == [None, 4, 4, 1]
            with tf.compat.v1.Session() as sess:
                return [sess.run(nxt) for _ in range(3)]

    first, again = batches(), batches()
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], first[1])


def test_unknown_fill_mode_lists_the_registered_ones():
    images = point_image(8, 3, 3)
    with pytest.raises(UnknownChoiceError, match=f"unknown fill mode 'mirror'; choices: {', '.join(FILL_MODES)}$"):
        run_augment(images, AugmentConfig(rotation_range=10.0, fill_mode="mirror"))
    assert tuple(FILL_MODES) == ("nearest", "constant", "reflect", "wrap")


def test_erasing_replaces_one_rectangle_of_the_area_asked_with_noise():
    images = np.full((200, 20, 30, 3), 0.5, np.float32)  # noise never equals 0.5 exactly in all 3 channels
    with tf.Graph().as_default():
        out = augment_batch(tf.constant(images), AugmentConfig(erasing=1.0, erasing_area=(0.05, 0.3)),
                            tf.constant([1, 2], tf.int64))
        with tf.compat.v1.Session() as sess:
            out = sess.run(out)
    changed = (out != 0.5).all(axis=3)  # [B, H, W]
    shares = []
    for mask in changed:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask.sum() == len(rows) * len(cols)  # one filled rectangle
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        shares.append(mask.mean())
    # the area share asked for, give or take the rounding of the sides and the clipping to the image
    assert 0.02 <= min(shares) and max(shares) <= 0.36
    assert np.std(shares) > 0.03  # drawn per image
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_erasing_probability_and_validation():
    images = np.full((400, 8, 8, 1), 0.5, np.float32)
    with tf.Graph().as_default():
        out = augment_batch(tf.constant(images), AugmentConfig(erasing=0.25), tf.constant([3, 4], tf.int64))
        with tf.compat.v1.Session() as sess:
            out = sess.run(out)
    erased = (out != 0.5).any(axis=(1, 2, 3)).mean()
    assert 0.18 < erased < 0.32  # 400 draws at p = 0.25: 4 standard deviations either side
    assert AugmentConfig(erasing=0.5).enabled and not AugmentConfig().enabled
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="augment.erasing: a probability"):
            augment_batch(tf.constant(images), AugmentConfig(erasing=1.5), 0)
        with pytest.raises(ValueError, match="augment.erasing_area"):
            augment_batch(tf.constant(images), AugmentConfig(erasing=0.5, erasing_area=(0.5, 0.2)), 0)
