"""Tests for graphcnn.viz (tiling ops in graph mode; images drawn and encoded with Pillow) and the
files made from event files: graphcnn.tensorboard.events, graphcnn.tensorboard.filters, graphcnn.report."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from graphcnn.report import precision_recall, write_report
from graphcnn.tensorboard import events
from graphcnn.tensorboard.filters import export_filters
from graphcnn.viz import grids
from graphcnn.viz import images as viz_images

tf1 = tf.compat.v1


@pytest.fixture
def sess():
    """A fresh graph and session per test."""
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as session:
        yield session


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ------------------------------------------------------------------------- filter_grid


def test_filter_grid_gray_input_shape_and_range(sess):
    kernel = _rng().normal(size=(3, 3, 1, 8)).astype(np.float32)
    image = grids.filter_grid(tf.constant(kernel), scale=1)
    # 8 tiles -> 3 cols x 3 rows of (3 + 1) px, plus the outer 1 px border
    assert image.shape.as_list() == [1, 13, 13, 1]
    assert image.dtype == tf.uint8
    out = sess.run(image)
    assert out.min() == 0 and out.max() == 255


def test_filter_grid_auto_scale_is_bounded(sess):
    kernel = tf.constant(_rng().normal(size=(3, 3, 1, 8)).astype(np.float32))
    # long side 13 px -> ceil(128 / 13) = 10, capped at 8
    assert grids.filter_grid(kernel).shape.as_list() == [1, 104, 104, 1]
    big = tf.constant(_rng().normal(size=(5, 5, 1, 64)).astype(np.float32))
    # 8 x 8 tiles of 6 px + 1 = 49 px -> scale 3
    assert grids.filter_grid(big).shape.as_list() == [1, 147, 147, 1]


def test_filter_grid_rgb_input(sess):
    kernel = _rng().normal(size=(5, 5, 3, 6)).astype(np.float32)
    image = grids.filter_grid(tf.constant(kernel), scale=2)
    # 6 tiles -> 3 cols x 2 rows of (5 + 1) px, upscaled 2x
    assert image.shape.as_list() == [1, 26, 38, 3]
    out = sess.run(image)
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    # nearest-neighbour upscale: 2x2 blocks are constant
    assert (out[:, ::2, ::2] == out[:, 1::2, 1::2]).all()


def test_filter_grid_deep_layer_bounded_by_max_tiles(sess):
    kernel = _rng().normal(size=(3, 3, 16, 32)).astype(np.float32)
    full = grids.filter_grid(tf.constant(kernel), scale=1)  # 512 pairs > 256
    assert full.shape.as_list() == [1, 16 * 4 + 1, 16 * 4 + 1, 1]
    small = grids.filter_grid(tf.constant(kernel), max_tiles=64, scale=1)
    assert small.shape.as_list() == [1, 8 * 4 + 1, 8 * 4 + 1, 1]
    thin = grids.filter_grid(tf.zeros([3, 3, 4, 100]), max_tiles=64, scale=1)
    assert thin.shape.as_list() == [1, 4 * 4 + 1, 16 * 4 + 1, 1]  # uses the whole budget
    out = sess.run(small)
    assert out.min() == 0 and out.max() == 255


def test_filter_grid_deep_layout_rows_are_inputs(sess):
    n_in, n_out = 2, 3
    # tile (i, j) is constant i * n_out + j -> 0..5 maps linearly onto 0..255
    values = np.arange(n_in * n_out, dtype=np.float32).reshape(n_in, n_out)
    kernel = np.broadcast_to(values, (2, 2, n_in, n_out))
    out = sess.run(grids.filter_grid(tf.constant(kernel), scale=1))[0, :, :, 0]
    assert out.shape == (2 * 3 + 1, 3 * 3 + 1)
    centers = out[1::3, 1::3][:n_in, :n_out]
    np.testing.assert_array_equal(centers, np.round(values / 5 * 255))
    assert (out[0] == 128).all() and (out[:, 0] == 128).all()  # neutral border


def test_filter_grid_normalizes_per_layer(sess):
    kernel = np.zeros((3, 3, 1, 2), np.float32)
    kernel[..., 1] = 1.0
    out = sess.run(grids.filter_grid(tf.constant(kernel), scale=1))[0, :, :, 0]
    assert (out[1:4, 1:4] == 0).all() and (out[1:4, 5:8] == 255).all()


def test_filter_grid_constant_kernel_is_gray_not_nan(sess):
    out = sess.run(grids.filter_grid(tf.fill([3, 3, 16, 4], 0.3)))
    assert (out == 128).all()


# --------------------------------------------------------------------- activation_grid


def test_activation_grid_dynamic_batch(sess):
    maps = tf1.placeholder(tf.float32, [None, 5, 5, 5])
    image = grids.activation_grid(maps)
    assert image.shape.as_list() == [None, 13, 19, 1]  # 5 tiles -> 3 cols x 2 rows
    feed = _rng().normal(size=(2, 5, 5, 5)).astype(np.float32)
    feed[1, :, :, 2] = 0.0  # dead channel
    out = sess.run(image, {maps: feed})
    assert out.shape == (2, 13, 19, 1) and out.dtype == np.uint8
    # per-channel normalisation: every live tile spans 0..255
    tile = out[0, 1:6, 1:6, 0]
    assert tile.min() == 0 and tile.max() == 255
    assert (out[1, 1:6, 13:18, 0] == 0).all()  # constant channel -> black
    assert (out[:, 7:12, 13:18] == 128).all()  # unused sixth cell stays blank


def test_activation_grid_max_channels(sess):
    maps = tf1.placeholder(tf.float32, [None, 4, 4, 32])
    image = grids.activation_grid(maps, max_channels=4, pad=0)
    assert image.shape.as_list() == [None, 8, 8, 1]
    out = sess.run(image, {maps: np.zeros((3, 4, 4, 32), np.float32)})
    assert out.shape == (3, 8, 8, 1)


# ------------------------------------------------------------------------ image_grid


def test_image_grid_dynamic_batch_and_blank_tiles(sess):
    images = tf1.placeholder(tf.float32, [None, 4, 4, 3])
    image = grids.image_grid(images, rows=2, cols=3)
    assert image.shape.as_list() == [1, 11, 16, 3]
    out = sess.run(image, {images: np.ones((4, 4, 4, 3), np.float32)})
    assert out.shape == (1, 11, 16, 3) and out.dtype == np.uint8
    assert (out[0, 1:5, 1:5] == 255).all()
    assert (out[0, 6:10, 11:15] == 128).all()  # cell 6 of 6 is blank
    more = sess.run(image, {images: np.ones((10, 4, 4, 3), np.float32)})
    assert more.shape == (1, 11, 16, 3)


def test_grids_feed_summary_image(sess):
    images = tf1.placeholder(tf.float32, [None, 4, 4, 1])
    summary = tf1.summary.image("grid", grids.image_grid(images, 2, 2))
    proto = tf1.Summary.FromString(sess.run(summary, {images: np.zeros((3, 4, 4, 1))}))
    assert proto.value[0].image.height == 11


# ---------------------------------------------------------------------- PNG files


def _open(data_or_path) -> Image.Image:
    return Image.open(io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path)


@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 1), (7, 5, 2), (7, 5, 3), (7, 5, 4)])
def test_png_round_trip_every_channel_count(tmp_path, shape):
    image = _rng().integers(0, 256, shape, dtype=np.uint8)
    expected = image.reshape(7, 5) if image.ndim == 2 or shape[2] == 1 else image
    decoded = np.asarray(_open(viz_images.png_bytes(image)))
    np.testing.assert_array_equal(decoded, expected)
    viz_images.write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(np.asarray(_open(tmp_path / "x.png")), expected)
    fast = viz_images.png_bytes(image, compress_level=1)  # what the validation views use
    np.testing.assert_array_equal(np.asarray(_open(fast)), expected)


@pytest.mark.parametrize("bad", [np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int64),
                                 np.zeros((2, 2, 5), np.uint8), np.zeros((0, 3), np.uint8)])
def test_png_rejects_what_it_cannot_encode(tmp_path, bad):
    with pytest.raises(ValueError):
        viz_images.png_bytes(bad)
    with pytest.raises(ValueError):
        viz_images.write_png(tmp_path / "x.png", bad)


def test_to_rgb_and_normalize_images():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for image in (grey, grey[..., None], np.stack([grey, np.full_like(grey, 9)], axis=2)):
        rgb = viz_images.to_rgb(image)
        assert rgb.shape == (2, 3, 3) and (rgb == grey[..., None]).all()
    rgba = _rng().integers(0, 256, (2, 3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(viz_images.to_rgb(rgba), rgba[..., :3])
    x = np.stack([np.linspace(-1, 1, 8).reshape(2, 2, 2), np.full((2, 2, 2), 3.0)])  # [2, 2, 2, 2]
    out = viz_images.normalize_images(x)
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert out[0].min() == 0 and out[0].max() == 255 and (out[1] == 0).all()  # per image; constant -> 0
    # thumbnails: every 2nd row and column, stretched by the whole image's range (its max at [1, 1] is left out)
    thumb = viz_images.normalize_images(x, step=2)
    assert thumb.shape == (2, 1, 1, 2)
    np.testing.assert_array_equal(thumb[0, 0, 0], out[0, 0, 0])
    assert thumb[0].max() < 255


# --------------------------------------------------------------------- animations


def _frames_of(path) -> list[tuple[np.ndarray, int]]:
    """(RGB pixels, duration ms) of every frame of an animated PNG or GIF, as Pillow plays it."""
    out = []
    with Image.open(path) as image:
        for i in range(getattr(image, "n_frames", 1)):
            image.seek(i)
            out.append((np.asarray(image.convert("RGB")), image.info.get("duration")))
    return out


def test_write_animation_apng(tmp_path):
    rng = _rng()
    frames = [rng.integers(0, 256, (6, 4, 3), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "x.png"
    viz_images.write_animation(path, frames, delay_ms=150, loop=2)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.is_animated and image.n_frames == 3
        assert image.size == (4, 6) and image.info.get("loop") == 2
    decoded = _frames_of(path)
    assert [d for _, d in decoded] == [150] * 3
    for (pixels, _), frame in zip(decoded, frames):
        np.testing.assert_array_equal(pixels, frame)  # PNG is lossless


def test_write_animation_gif_grey_exact_and_rgb_close(tmp_path):
    rng = _rng()
    grey = [rng.integers(0, 256, (20, 30), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "grey.gif"
    viz_images.write_animation(path, grey, delay_ms=100, loop=0)
    assert path.read_bytes()[:6] == b"GIF89a"
    decoded = _frames_of(path)
    assert len(decoded) == 3 and [d for _, d in decoded] == [100] * 3
    for (pixels, _), frame in zip(decoded, grey):
        np.testing.assert_array_equal(pixels[..., 0], frame)
    with Image.open(path) as image:
        assert image.size == (30, 20) and image.info.get("loop") == 0
    # smooth RGB frames (what the filter frames are) survive the 256-colour palette closely
    ramp = np.linspace(0, 255, 30, dtype=np.uint8)
    rgb = [np.stack(np.broadcast_arrays(ramp[None, :], ramp[::-1, None][:20], np.uint8(40 * i)), axis=2)
           for i in range(4)]
    viz_images.write_animation(tmp_path / "rgb.gif", rgb)
    decoded = _frames_of(tmp_path / "rgb.gif")
    assert len(decoded) == 4
    assert max(np.abs(p.astype(int) - f.astype(int)).max() for (p, _), f in zip(decoded, rgb)) <= 24


@pytest.mark.parametrize("suffix", ["png", "gif"])
def test_write_animation_pads_mixed_sizes_and_modes(tmp_path, suffix):
    frames = [np.full((2, 3), 90, np.uint8), np.full((4, 2, 3), 200, np.uint8)]
    path = tmp_path / f"x.{suffix}"
    viz_images.write_animation(path, frames)
    decoded = _frames_of(path)
    assert len(decoded) == 2 and all(p.shape == (4, 3, 3) for p, _ in decoded)
    first, second = decoded[0][0], decoded[1][0]
    assert (first[:2, :3] == 90).all() and (first[2:] == 0).all()  # padded black, bottom/right
    assert (second[:, :2] == 200).all()


def test_write_animation_rejects_other_suffixes_and_no_frames(tmp_path):
    with pytest.raises(ValueError):
        viz_images.write_animation(tmp_path / "x.webp", [np.zeros((2, 2), np.uint8)])
    with pytest.raises(ValueError):
        viz_images.write_animation(tmp_path / "x.png", [])


# ----------------------------------------------------------------- drawn with text


def _label_font():
    return viz_images.font(viz_images.LABEL_SIZE)


def _ink_columns(image: np.ndarray, rows: slice) -> np.ndarray:
    """Indices of the columns with dark pixels (text) in ``rows`` of an RGB image."""
    return np.flatnonzero((image[rows].min(axis=2) < 128).any(axis=0))


@pytest.mark.parametrize("names", [["covid_negative", "covid_positive"],
                                   [f"class_name{i:02d}" for i in range(10)]])
def test_confusion_image_has_room_for_every_full_name(names):
    k = len(names)
    matrix = np.diag(np.full(k, 40)) + 3
    image = viz_images.confusion_image(matrix, names)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    f = _label_font()
    longest = max(viz_images.text_width(n, f) for n in names)
    # row labels left of the matrix, column labels (upright or turned) below it: every full name
    # needs its measured length of room on both sides of the matrix
    assert image.shape[1] >= longest + k * 16 and image.shape[0] >= longest + k * 16
    # labels are the outermost ink (row names on the left, column names and "predicted" below,
    # "true" at the far left): none of it may touch an edge, or it was cut
    dark = image.min(axis=2) < 128
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    assert rows.min() >= 2 and cols.min() >= 2
    assert rows.max() <= image.shape[0] - 3 and cols.max() <= image.shape[1] - 3
    # the Blues map: the diagonal is dark, the off-diagonal light
    assert image.min() < 60


def test_confusion_image_matches_the_names_it_was_given():
    short = viz_images.confusion_image(np.array([[5, 1], [0, 7]]), ["cat", "dog"])
    long = viz_images.confusion_image(np.array([[5, 1], [0, 7]]), ["covid_negative", "covid_positive"])
    # a longer name makes the image wider by (about) the measured difference, so nothing is cut
    f = _label_font()
    grown = viz_images.text_width("covid_negative", f) - viz_images.text_width("dog", f)
    assert long.shape[1] - short.shape[1] >= grown - 2
    default = viz_images.confusion_image(np.eye(3, dtype=int), [])
    assert default.shape[2] == 3
    with pytest.raises(ValueError):
        viz_images.confusion_image(np.eye(3, dtype=int), ["a", "b"])


def test_labelled_grid_shape_and_captions_fit():
    tiles = _rng().integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    grid = viz_images.labelled_grid(tiles, ["1>2"] * 5)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    # 3 columns x 2 rows of 64 px tiles (8 px upscaled 8x) plus captions and padding
    assert 3 * 64 < grid.shape[1] < 3 * 64 + 40 and grid.shape[0] > 2 * 64
    assert (np.abs(grid.astype(int) - viz_images.CAPTION).sum(axis=2) < 60).any()  # red captions
    long = ["covid_negative>covid_positive"] * 4
    wide = viz_images.labelled_grid(_rng().integers(0, 256, (4, 28, 28, 3), dtype=np.uint8), long)
    f = viz_images.font(10)  # the smallest caption font: its width of each line is the least room needed
    need = max(viz_images.text_width(t, f) for t in ("covid_negative >", "covid_positive"))
    assert wide.shape[1] >= 2 * need
    assert viz_images.labelled_grid(np.zeros((0, 8, 8, 1), np.uint8), []).shape[2] == 3
    with pytest.raises(ValueError):
        viz_images.labelled_grid(tiles, ["a"])


def test_caption_image_upscales_to_min_side_and_labels():
    kernel = _rng().integers(0, 256, (13, 9), dtype=np.uint8)
    out = viz_images.caption_image(kernel, "conv1_1  step 1200")
    assert out.dtype == np.uint8 and out.shape[2] == 3
    assert out.shape[0] - 13 * 20 > 0 and out.shape[1] == 9 * 20  # factor ceil(256 / 13) = 20
    body = out[-13 * 20:]
    np.testing.assert_array_equal(body[::20, ::20, 0], kernel)  # nearest neighbour: 20x20 blocks
    strip = out[:-13 * 20]
    assert (strip.min(axis=2) < 100).any()  # the caption's ink
    wide = viz_images.caption_image(np.zeros((300, 400, 3), np.uint8), "x", min_side=256)
    assert wide.shape[1] == 400  # already large enough: not upscaled


# ----------------------------------------------------------------------- events


def _write_events(directory: Path, summaries: list[tuple[int, tf1.Summary]], start: int | None = None) -> Path:
    """One event file with ``summaries`` at their steps (a SessionLog.START first when ``start``)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tf.Graph().as_default():  # FileWriter refuses eager mode
        writer = tf1.summary.FileWriter(str(directory))
        if start is not None:
            writer.add_session_log(tf1.SessionLog(status=tf1.SessionLog.START), start)
        for step, summary in summaries:
            writer.add_summary(summary, step)
        writer.close()
    return max(directory.glob("events.out.tfevents.*"))


def _scalar(tag: str, value: float) -> tf1.Summary:
    return tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=value)])


def _image(tag: str, image: np.ndarray) -> tf1.Summary:
    h, w = image.shape[:2]
    c = 1 if image.ndim == 2 else image.shape[2]
    img = tf1.Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=viz_images.png_bytes(image))
    return tf1.Summary(value=[tf1.Summary.Value(tag=tag, image=img)])


def test_read_scalars_and_images(tmp_path):
    picture = _rng().integers(0, 256, (5, 6, 3), dtype=np.uint8)
    _write_events(tmp_path, [(1, _scalar("loss", 2.0)), (2, _scalar("loss", 1.5)), (2, _scalar("loss", 1.25)),
                             (3, _scalar("accuracy", 0.5)), (3, _image("filters/conv1_1", picture)),
                             (4, _image("misclassified", picture[..., 0]))])
    scalars = events.read_scalars(tmp_path)
    assert scalars == {"loss": [(1, 2.0), (2, 1.25)], "accuracy": [(3, 0.5)]}  # last write per step
    images = events.read_images(tmp_path, "filters/")
    assert list(images) == ["filters/conv1_1"] and [s for s, _ in images["filters/conv1_1"]] == [3]
    np.testing.assert_array_equal(np.asarray(_open(images["filters/conv1_1"][0][1])), picture)
    assert set(events.read_images(tmp_path)) == {"filters/conv1_1", "misclassified"}
    assert events.read_scalars(tmp_path / "missing") == {} and events.read_images(tmp_path / "missing") == {}


def test_read_scalars_of_the_scalars_plugin_tensors(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step, value in ((0, 1.0), (5, 0.25)):
            tf.summary.scalar("loss", value, step=step)
    writer.close()
    assert events.read_scalars(tmp_path) == {"loss": [(0, 1.0), (5, 0.25)]}


def test_read_after_a_restart_drops_what_the_crashed_run_wrote_past_it(tmp_path):
    _write_events(tmp_path, [(s, _scalar("loss", float(s))) for s in (1, 2, 3, 4)], start=0)
    time.sleep(1.1)  # event file names carry the second: the resumed run's file sorts after
    _write_events(tmp_path, [(s, _scalar("loss", 10.0 + s)) for s in (3, 4)], start=2)
    # TensorBoard's rule: a START at step 2 removes the earlier events at steps >= 2
    assert events.read_scalars(tmp_path)["loss"] == [(1, 1.0), (3, 13.0), (4, 14.0)]


def test_read_a_file_whose_last_record_was_cut(tmp_path, caplog):
    path = _write_events(tmp_path, [(s, _scalar("loss", float(s))) for s in range(1, 6)])
    path.write_bytes(path.read_bytes()[:-3])  # a SIGKILL mid-write
    with caplog.at_level(logging.WARNING, logger="graphcnn.tensorboard"):
        scalars = events.read_scalars(tmp_path)
    assert scalars == {"loss": [(s, float(s)) for s in range(1, 5)]}
    assert "incomplete record" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="graphcnn.tensorboard"):
        events.read_scalars(tmp_path / "..")  # no event files here: nothing to warn about
    assert "incomplete record" not in caplog.text


# ---------------------------------------------------------------------- filters


def test_export_filters_frames_are_upscaled_and_labelled(tmp_path, capsys):
    rng = _rng()
    snapshots = [rng.integers(0, 256, (13, 13), dtype=np.uint8) for _ in range(2)]
    _write_events(tmp_path / "train", [(1, _image("filters/conv1_1", snapshots[0])),
                                       (30, _image("filters/conv1_1", snapshots[1])),
                                       (30, _scalar("loss", 1.0))])
    written = export_filters(tmp_path, gif=True, delay_ms=120)
    out = tmp_path / "filters"
    assert written == [out / "conv1_1.png", out / "conv1_1.gif"]
    frames = sorted((out / "conv1_1").glob("step-*.png"))
    assert [p.name for p in frames] == ["step-0000001.png", "step-0000030.png"]
    for path, snapshot in zip(frames, snapshots):
        frame = np.asarray(_open(path).convert("RGB"))
        assert max(frame.shape[:2]) >= 256
        body = frame[-13 * 20:]  # 13 px upscaled 20x under the caption strip
        np.testing.assert_array_equal(body[::20, ::20, 0], snapshot)
        assert (frame[:-13 * 20].min(axis=2) < 100).any()  # "conv1_1  step N" in the strip
    first, second = (np.asarray(_open(p).convert("RGB")) for p in frames)
    assert (first[:-13 * 20] != second[:-13 * 20]).any()  # the captions differ: step 1 vs step 30
    animation = _frames_of(out / "conv1_1.png")
    assert len(animation) == 2 and [d for _, d in animation] == [120, 120]
    np.testing.assert_array_equal(animation[1][0], second)
    with Image.open(out / "conv1_1.gif") as gif:
        assert gif.n_frames == 2 and gif.size == first.shape[1::-1]
    assert "filters/conv1_1: 2 frames (steps 1..30)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="nope"):
        export_filters(tmp_path, layer="nope")


# ----------------------------------------------------------------------- report


def _report_run(root: Path, with_confusion: bool = True) -> Path:
    """A hand-made run folder: config.json, metrics.jsonl, preprocessing.json and train/ events."""
    names = ["covid_negative", "covid_positive", "pneumonia_viral"]
    root.mkdir()
    (root / "config.json").write_text("{}")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "preprocessing.json").write_text(json.dumps({"class_names": names}))
    records = []
    for i, step in enumerate((10, 20, 30)):
        record = {"split": "validation", "step": step, "epoch": step / 10, "loss": 1.0 / (i + 1),
                  "accuracy": 0.5 + 0.1 * i}  # ten steps an epoch
        if with_confusion:
            record["confusion"] = [[8 + i, 2 - i, 0], [1, 9, 0], [0, 3, 7]]
        records.append(record)
    records.append({"split": "test", "step": 30, "accuracy": 0.7})
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    scalars = []
    for step in range(1, 31):
        scalars += [(step, _scalar("loss", 2.0 / step)), (step, _scalar("accuracy", 0.4 + step / 100)),
                    (step, _scalar("learning_rate", 0.01 * 0.95 ** step))]
    _write_events(root / "train", scalars)
    return root


def test_write_report_draws_every_figure(tmp_path):
    run = _report_run(tmp_path / "run")
    written = write_report(run)
    report = run / "report"
    assert [p.name for p in written] == ["loss.png", "accuracy.png", "learning_rate.png", "confusion_matrix.png",
                                         "per_class.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 300, path.name
    assert {p.name for p in report.iterdir()} == {p.name for p in written}
    with Image.open(report / "loss.png") as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    orange, blue = np.array([255, 127, 14]), np.array([31, 119, 180])  # tab:orange train, tab:blue validation
    assert (np.abs(pixels - orange).sum(axis=2) < 30).sum() > 100
    assert (np.abs(pixels - blue).sum(axis=2) < 30).sum() > 100
    assert write_report(run, raw=True)[0] == report / "loss.png"


def test_write_report_shows_the_tested_checkpoint_and_the_test_figure(tmp_path, monkeypatch):
    """The confusion matrix and per-class chart were the last validation's, a model the run
    neither tested nor ships when best/ is an earlier step; no figure showed the test accuracy."""
    from graphcnn import report

    run = _report_run(tmp_path / "run")
    (run / "results.json").write_text(json.dumps({"evaluated_step": 20, "test_accuracy": 0.65, "test_loss": 0.4}))
    drawn = {}
    for name in ("confusion_figure", "per_class_figure", "line_figure"):
        real = getattr(report, name)
        monkeypatch.setattr(report, name, lambda *a, _real=real, _name=name: drawn.setdefault(_name, []).append(a)
                            or _real(*a))
    write_report(run)
    (matrix, _, step, note), = drawn["confusion_figure"]
    assert step == 20 and note == ", the tested checkpoint" and matrix[0].tolist() == [9, 1, 0]
    assert drawn["per_class_figure"][0][2:] == (20, ", the tested checkpoint")
    tests = {args[1]: args[3] for args in drawn["line_figure"] if len(args) > 3}
    assert tests == {"loss: train and validation": (20, 0.4), "accuracy: train and validation": (20, 0.65)}


def test_write_report_falls_back_to_the_logged_confusion_image(tmp_path):
    run = _report_run(tmp_path / "run", with_confusion=False)
    logged = viz_images.confusion_image(np.eye(3, dtype=int), ["a", "b", "c"])
    _write_events(run / "validation", [(20, _image("confusion_matrix", logged[..., 0])),
                                       (30, _image("confusion_matrix", logged))])
    written = write_report(run)
    assert [p.name for p in written] == ["loss.png", "accuracy.png", "learning_rate.png", "confusion_matrix.png"]
    np.testing.assert_array_equal(np.asarray(_open(run / "report" / "confusion_matrix.png")), logged)
    assert not (run / "report" / "per_class.png").exists()


def test_write_report_of_an_empty_run_fails(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no metrics"):
        write_report(tmp_path)


def _keras_log_folder(folder: Path, epochs: int = 3) -> None:
    """A Keras 3 fit's TensorBoard(log_dir) folder, written by the callback itself, and the
    results.json a script writes beside it."""
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((64, 6, 6, 1), np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, validation_split=0.25, epochs=epochs, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(folder), write_graph=False, profile_batch=0)])
    (folder / "results.json").write_text(json.dumps({"test_accuracy": 0.625}))


def test_report_compares_a_run_with_a_keras_log_folder(tmp_path, capsys):
    from graphcnn import cli
    from graphcnn.report import read_curves

    run = _report_run(tmp_path / "graphcnn")
    (run / "results.json").write_text(json.dumps({"test_accuracy": 0.7}))
    _keras_log_folder(tmp_path / "keras")

    mine = read_curves(run)
    assert mine.label == "graphcnn" and mine.test_accuracy == 0.7
    np.testing.assert_allclose(mine.validation["accuracy"][0], [1, 2, 3])
    np.testing.assert_allclose(mine.validation["accuracy"][1], [0.5, 0.6, 0.7])
    np.testing.assert_allclose(mine.train["loss"][0], [1, 2, 3])  # interval means, at each evaluation's epoch
    np.testing.assert_allclose(mine.train["loss"][1][0], np.mean([2.0 / s for s in range(1, 11)]))
    keras_run = read_curves(tmp_path / "keras")
    assert keras_run.test_accuracy == 0.625
    for curves in (keras_run.train, keras_run.validation):
        assert set(curves) == {"loss", "accuracy"}
        np.testing.assert_allclose(curves["accuracy"][0], [1, 2, 3])  # Keras writes epoch e at step e - 1

    assert cli.main(["report", str(run), "--compare", str(tmp_path / "keras")]) == 0
    out = capsys.readouterr().out
    assert str(run / "report" / "compare.png") in out
    assert "graphcnn: test accuracy 0.7000, validation accuracy 0.7000 at epoch 3" in out
    assert "keras: test accuracy 0.6250, validation accuracy" in out
    assert [cli._epoch(e) for e in (3.0, 2.5, 0.483871, 12.0)] == ["3", "2.5", "0.48", "12"]  # was 0.483871
    with Image.open(run / "report" / "compare.png") as image:
        assert image.size == (1600, 500)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    for color in ([31, 119, 180], [255, 127, 14]):  # C0 (graphcnn) and C1 (keras): curves and bars
        assert (np.abs(pixels - color).sum(axis=2) < 30).sum() > 500


def test_report_compare_draws_a_run_without_validation_by_its_training_epochs(tmp_path):
    """A run trained without a validation split has no epochs in metrics.jsonl: its
    results.json's steps_per_epoch puts its training curves (each epoch's mean) on the axis."""
    from graphcnn.report import read_curves

    run = _report_run(tmp_path / "run")
    (run / "metrics.jsonl").write_text(json.dumps({"split": "test", "step": 30, "accuracy": 0.7}) + "\n")
    with pytest.raises(ValueError, match="trained without a validation split"):
        read_curves(run)  # a run of before steps_per_epoch was recorded
    (run / "results.json").write_text(json.dumps({"test_accuracy": 0.7, "steps_per_epoch": 10,
                                                  "evaluated_step": 30}))
    curves = read_curves(run)
    assert curves.validation == {} and curves.test_accuracy == 0.7 and curves.test_epoch == 3.0
    np.testing.assert_allclose(curves.train["loss"][0], [1, 2, 3])
    np.testing.assert_allclose(curves.train["loss"][1][2], np.mean([2.0 / s for s in range(21, 31)]))


def test_report_compare_refuses_a_folder_it_cannot_read_before_writing(tmp_path, capsys):
    from graphcnn import cli

    run = _report_run(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(run), "--compare", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphcnn: error: ") and str(tmp_path / "empty") in err and len(err.splitlines()) == 1
    assert not (run / "report").exists()  # nothing written


def test_precision_recall():
    precision, recall = precision_recall(np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]]))
    np.testing.assert_allclose(precision, [8 / 9, 9 / 11, 0.0])
    np.testing.assert_allclose(recall, [0.8, 0.9, 0.0])


@pytest.mark.parametrize("names", [["covid_negative", "covid_positive"], [f"class_name{i:02d}" for i in range(10)],
                                   [f"a class named {i} with a fairly long name, fifty characters" for i in range(10)],
                                   ["covid_negative_from_hospital_A_ward_3", "covid_positive_from_hospital_A_ward_3",
                                    "pneumonia", "normal"], ["ankle_boot", "sneaker"],
                                   ["golden_retriever_from_the_long_imagenet_class_list_x", "cat", "dog_breed_short"]])
def test_report_confusion_figure_keeps_every_label_inside(names, tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from graphcnn.report import _save, confusion_figure, per_class_figure

    matrix = np.diag(np.full(len(names), 30)) + 2
    for i, make in enumerate((confusion_figure, per_class_figure)):  # as written: no ink on the PNG's edges
        _save(make(matrix, names, 100), tmp_path / f"{i}.png")
        pixels = np.asarray(Image.open(tmp_path / f"{i}.png").convert("L"))
        for edge in (pixels[:3], pixels[-3:], pixels[:, :3], pixels[:, -3:]):
            assert edge.min() == 255, (make.__name__, names)
    for figure in (confusion_figure(matrix, names, 100), per_class_figure(matrix, names, 100)):
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        renderer = canvas.get_renderer()
        width, height = canvas.get_width_height()
        axis = figure.axes[0]
        labels = axis.get_xticklabels() + axis.get_yticklabels() + [axis.xaxis.label, axis.yaxis.label, axis.title]
        shown = [t.get_text() for t in axis.get_xticklabels()]  # full names, never shortened; a long one wrapped
        assert ["".join(t.split()) for t in shown] == ["".join(n.split()) for n in names]
        assert all(len(line) <= 21 for t in shown for line in t.splitlines()) or all("\n" not in t for t in shown)
        # level (wrapped) labels side by side, never over each other (a slanted one's box is not its ink)
        for ticks in (axis.get_xticklabels(), axis.get_yticklabels()):
            boxes = [t.get_window_extent(renderer) for t in ticks if t.get_rotation() == 0]
            assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), shown
        for text in labels:
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, text.get_text()
        title = axis.title.get_window_extent(renderer)
        for other in figure.axes[1:]:  # the colour bar: its tick labels stay clear of the title
            for tick in other.get_yticklabels():
                assert not title.overlaps(tick.get_window_extent(renderer)), tick.get_text()
        # the bars' values stay apart (two side by side read "0.000.00" in narrow columns)
        values = [t.get_window_extent(renderer) for t in axis.texts if t.get_text().replace(".", "").isdigit()]
        assert not any(a.overlaps(b) for i, a in enumerate(values) for b in values[i + 1:]), names
        assert axis.get_window_extent(renderer).height > 0.4 * height  # the chart is not a thin strip


def test_read_curves_names_a_damaged_results_file(tmp_path):
    from graphcnn.report import read_curves

    run = _report_run(tmp_path / "run")
    for text, message in (("{bad", "not a results file"), ("[1]", "not a results file"),
                          ('{"test_accuracy": "high"}', "test_accuracy is 'high', not a number")):
        (run / "results.json").write_text(text)
        with pytest.raises(ValueError, match=rf"^{run / 'results.json'}: {message}"):
            read_curves(run)
    (run / "results.json").write_text('{"test_accuracy": 0.75}')
    assert read_curves(run).test_accuracy == 0.75


def test_evaluate_text_confusion_columns_are_numbered_as_the_rows():
    """Names cut to a column's width once read 'covi covi' for covid_negative and covid_positive."""
    from graphcnn.evaluate import Metrics

    names = ("covid_negative", "covid_positive", "normal")
    m = Metrics.from_predictions(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), names)
    lines = m.to_text().splitlines()
    start = lines.index("confusion matrix (rows: true class, columns: predicted, numbered as the rows)")
    header, *rows = lines[start + 1:start + 5]
    assert header.split() == ["0", "1", "2"]
    assert [r.split() for r in rows] == [["0", "covid_negative", "1", "1", "0"], ["1", "covid_positive", "0", "1", "0"],
                                         ["2", "normal", "1", "0", "1"]]
    assert all(len(r) == len(header) for r in rows)  # the counts stand under their column numbers
    digits = Metrics.from_predictions(np.array([0, 1]), np.array([0, 1]), ("0", "1")).to_text().splitlines()
    assert [r.split() for r in digits[-2:]] == [["0", "1", "0"], ["1", "0", "1"]]  # "0", not "0 0"
    # a CJK name takes two terminal columns a character: the columns still line up on screen
    from graphcnn.terminal import columns

    wide = Metrics.from_predictions(np.array([0, 1]), np.array([0, 1]), ("猫", "dog")).to_text().splitlines()
    table = wide[wide.index("confusion matrix (rows: true class, columns: predicted, numbered as the rows)") + 1:]
    assert len({columns(line) for line in table}) == 1, table
    per_class = [line for line in wide if line.startswith(("猫", "dog"))]
    assert columns(per_class[0]) == columns(per_class[1])


def test_gradcam_view_shows_each_image_once():
    from graphcnn.train.view_hooks import gradcam_indices

    labels = np.array([0, 1, 2, 0, 1])
    predictions = np.array([1, 1, 0, 2, 0])  # images 0, 2, 3, 4 are mistakes; 0 is also a probe image
    probabilities = np.full((5, 3), 0.1)
    probabilities[[0, 2, 3, 4], predictions[[0, 2, 3, 4]]] = [0.9, 0.5, 0.8, 0.7]
    assert gradcam_indices([0, 1], labels, predictions, probabilities, 2).tolist() == [0, 1, 3, 4]
    assert gradcam_indices([0, 1], labels, predictions, probabilities, 9).tolist() == [0, 1, 3, 4, 2]
