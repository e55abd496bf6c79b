"""Tests for graphcnn.viz: tiling ops (graph mode) and PNG/APNG/GIF writers."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf

from graphcnn.viz import animation, grids

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


# ------------------------------------------------------------------------------- PNG


def _decode_png(path) -> np.ndarray:
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()


@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 1), (7, 5, 3)])
def test_write_png_round_trip(tmp_path, shape):
    image = _rng().integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "x.png"
    animation.write_png(path, image)
    decoded = _decode_png(path)
    np.testing.assert_array_equal(decoded, image.reshape(7, 5, -1))


def test_write_png_rejects_float(tmp_path):
    with pytest.raises(TypeError):
        animation.write_png(tmp_path / "x.png", np.zeros((2, 2), np.float32))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos: pos + 4])
        kind, body = data[pos + 4: pos + 8], data[pos + 8: pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length: pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def test_write_apng_structure(tmp_path):
    frames = [_rng().integers(0, 256, (6, 4, 3), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "x.png"
    animation.write_apng(path, frames, delay_ms=150, loop=2)
    np.testing.assert_array_equal(_decode_png(path), frames[0])

    chunks = _png_chunks(path.read_bytes())
    kinds = [k for k, _ in chunks]
    assert kinds == [b"IHDR", b"acTL", b"fcTL", b"IDAT", b"fcTL", b"fdAT", b"fcTL",
                     b"fdAT", b"IEND"]
    assert struct.unpack(">II", chunks[1][1]) == (3, 2)
    seqs = [struct.unpack(">I", body[:4])[0] for k, body in chunks if k in (b"fcTL", b"fdAT")]
    assert seqs == list(range(5))
    fctl = struct.unpack(">IIIIIHHBB", chunks[2][1])
    assert fctl[1:3] == (4, 6) and fctl[5:7] == (150, 1000)
    # fdAT payload is an ordinary zlib scanline stream
    raw = zlib.decompress(chunks[-2][1][4:])
    rows = np.frombuffer(raw, np.uint8).reshape(6, 1 + 4 * 3)
    np.testing.assert_array_equal(rows[:, 1:].reshape(6, 4, 3), frames[2])


def test_write_apng_pads_mismatched_frames(tmp_path):
    frames = [np.full((2, 3), 9, np.uint8), np.full((4, 2, 3), 200, np.uint8)]
    path = tmp_path / "x.png"
    animation.write_apng(path, frames)
    first = _decode_png(path)
    assert first.shape == (4, 3, 3)
    assert (first[:2, :3] == 9).all() and (first[2:] == 0).all()


# ------------------------------------------------------------------------------- GIF


def _decode_gif(path) -> np.ndarray:
    return tf.io.decode_gif(tf.io.read_file(str(path))).numpy()


def test_write_gif_gray_round_trip_exact(tmp_path):
    rng = _rng()
    # noise over 80x90 forces many 12-bit codes and table-full clear codes;
    # a constant frame produces long runs; a tiny frame the edge cases
    frames = [rng.integers(0, 256, (80, 90), dtype=np.uint8),
              np.full((80, 90), 77, np.uint8),
              (rng.integers(0, 3, (80, 90, 1)) * 100).astype(np.uint8)]
    path = tmp_path / "x.gif"
    animation.write_gif(path, frames, delay_ms=100, loop=0)
    data = path.read_bytes()
    assert data[:6] == b"GIF89a" and b"NETSCAPE2.0" in data and data[-1:] == b"\x3b"
    decoded = _decode_gif(path)
    assert decoded.shape == (3, 80, 90, 3)
    for got, want in zip(decoded, frames):
        for c in range(3):
            np.testing.assert_array_equal(got[..., c], want.reshape(80, 90))


def test_write_gif_single_pixel(tmp_path):
    path = tmp_path / "x.gif"
    animation.write_gif(path, [np.array([[5]], np.uint8)])
    assert _decode_gif(path)[0, 0, 0, 0] == 5


def test_write_gif_rgb_approximate(tmp_path):
    rng = _rng()
    frames = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(4)]
    path = tmp_path / "x.gif"
    animation.write_gif(path, frames)
    decoded = _decode_gif(path)
    assert decoded.shape == (4, 20, 30, 3)
    error = np.abs(decoded.astype(int) - np.stack(frames).astype(int))
    assert error.max() <= 26  # half a step of the 6-level red/blue axis


def test_draw_text_places_each_glyph_one_column_apart_and_clips():
    from graphcnn.viz import bitmap

    canvas = np.zeros((10, 20), np.uint8)
    bitmap.draw_text(canvas, "1a", 2, 1, 255)  # lower case drawn as upper; 'a' -> 'A'
    expected = np.zeros((10, 20), bool)
    expected[1:8, 2:7] = bitmap._MASKS["1"]
    expected[1:8, 8:13] = bitmap._MASKS["A"]
    np.testing.assert_array_equal(canvas == 255, expected)
    clipped = np.zeros((5, 4, 3), np.uint8)  # off the top-left corner, scaled
    bitmap.draw_text(clipped, "~", -3, -4, (1, 2, 3), scale=2)  # unknown -> '?'
    big = np.kron(bitmap._MASKS["?"], np.ones((2, 2), bool))
    np.testing.assert_array_equal(clipped[..., 0] == 1, big[4:9, 3:7])
    assert bitmap.text_width("1a") == 11
