"""Graph-mode ops that tile tensors into ``uint8`` images for TensorBoard.

Every function here builds a handful of TF ops (slice, normalise, pad, reshape,
transpose, cast) and returns a ``uint8`` tensor of shape ``[batch, H, W, C]`` that can
be passed straight to ``tf.compat.v1.summary.image``. Tiling is done with
reshape/transpose, so the cost does not grow with the number of ops per tile; all grid
geometry (rows, columns, padding, upscale factor) is decided at graph-build time from
static shapes. Batch sizes (``B``/``N``) may be dynamic.

Layout conventions shared by all grids:

* tiles are separated, and surrounded, by ``pad`` pixels of neutral mid-grey (128);
* unused grid cells (when the tile count does not fill the grid) are the same grey;
* grids are filled row-major.
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["filter_grid", "activation_grid", "image_grid", "upscale"]

# Value in [0, 1] used for borders and blank tiles; 0.5 -> 128 reads as "nothing here"
# against both dark and bright tiles.
_NEUTRAL = 0.5
# Auto upscale for filter_grid: smallest factor making the long side >= this many pixels.
_TARGET_LONG_SIDE = 128
_MAX_AUTO_SCALE = 8


def _dim(x: tf.Tensor, axis: int) -> int | tf.Tensor:
    """Static size of ``axis`` when known, else a scalar int32 tensor."""
    size = x.shape[axis]
    return size if size is not None else tf.shape(x)[axis]


def _near_square(n: int) -> tuple[int, int]:
    """(rows, cols) for ``n`` tiles with cols = ceil(sqrt(n))."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    return rows, cols


def _bounded_pair_grid(n_in: int, n_out: int, max_tiles: int) -> tuple[int, int]:
    """(rows, cols) with rows <= n_in, cols <= n_out and rows * cols <= max_tiles.

    Keeps everything when it fits; otherwise aims for a square block of the first
    inputs x first outputs, then widens whichever side still has room (so a thin
    kernel, e.g. 4 inputs x 1000 outputs, still uses the whole tile budget).
    """
    if n_in * n_out <= max_tiles:
        return n_in, n_out
    side = max(1, math.isqrt(max_tiles))
    rows = min(n_in, side)
    cols = max(1, min(n_out, max_tiles // rows))
    rows = max(1, min(n_in, max_tiles // cols))
    return rows, cols


def _normalize(x: tf.Tensor, axis: list[int] | None, constant_value: float) -> tf.Tensor:
    """Affine map of ``x`` to [0, 1] using min/max over ``axis`` (None = all).

    Slices with max == min become ``constant_value`` instead of 0/0 = NaN. Infinite
    entries are clipped to the float32 range first so they cannot make the span infinite.
    (Not ``tf.where(is_finite(x))``: with oneDNN on, a boolean op here logs an error line at
    every run on CPUs without AVX-512. NaN weights cannot occur: training stops first.)
    """
    x = tf.clip_by_value(x, -3.0e38, 3.0e38)
    lo = tf.reduce_min(x, axis=axis, keepdims=True)
    hi = tf.reduce_max(x, axis=axis, keepdims=True)
    span = hi - lo
    scaled = (x - lo) / tf.maximum(span, 1e-12)
    return tf.where(span > 0, scaled, constant_value)  # broadcasts


def _tile(tiles: tf.Tensor, rows: int, cols: int, pad: int) -> tf.Tensor:
    """Lay out ``tiles`` [B, rows*cols, h, w, C] as [B, rows*(h+pad)+pad, cols*(w+pad)+pad, C].

    Each tile gets ``pad`` pixels on its bottom/right and the whole image gets ``pad``
    on its top/left, so every gap (inner and outer) is exactly ``pad`` wide.
    """
    if pad:
        tiles = tf.pad(tiles, [[0, 0], [0, 0], [0, pad], [0, pad], [0, 0]], constant_values=_NEUTRAL)
    b, h, w, c = (_dim(tiles, i) for i in (0, 2, 3, 4))
    grid = tf.reshape(tiles, [b, rows, cols, h, w, c])
    grid = tf.transpose(grid, [0, 1, 3, 2, 4, 5])  # [B, rows, h, cols, w, C]
    grid = tf.reshape(grid, [b, rows * h, cols * w, c])
    if pad:
        grid = tf.pad(grid, [[0, 0], [pad, 0], [pad, 0], [0, 0]], constant_values=_NEUTRAL)
    return grid


def _pad_tile_count(tiles: tf.Tensor, total: int) -> tf.Tensor:
    """Append blank (neutral) tiles along axis 1 of [B, n, h, w, C] up to ``total``."""
    n = tiles.shape[1]
    if n is not None and n == total:
        return tiles
    missing = total - (n if n is not None else tf.shape(tiles)[1])
    return tf.pad(tiles, [[0, 0], [0, missing], [0, 0], [0, 0], [0, 0]], constant_values=_NEUTRAL)


def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)


def _check_rank4(x: tf.Tensor, name: str) -> None:
    if x.shape.rank != 4:
        raise ValueError(f"{name} must be rank 4, got shape {x.shape}")


def filter_grid(kernel: tf.Tensor, max_tiles: int = 256, scale: int = 0, pad: int = 1) -> tf.Tensor:
    """Tile a conv kernel into one image.

    Args:
        kernel: float tensor ``[kh, kw, in, out]`` with a fully static shape (a conv
            layer's weight variable).
        max_tiles: upper bound on the number of tiles drawn. For ``in`` in (1, 3) the
            first ``min(out, max_tiles)`` output channels are drawn. Otherwise the
            first ``rows`` inputs x first ``cols`` outputs are drawn, with
            ``rows * cols <= max_tiles`` (see :func:`_bounded_pair_grid`: all of the
            kernel if it fits, else a near-square block that still uses the budget).
        scale: nearest-neighbour integer upscale factor; 0 picks the smallest factor
            making the long side at least ~128 px, capped at 8.
        pad: width in pixels of the neutral-grey (128) border around every tile.

    Returns:
        ``uint8`` tensor ``[1, H, W, C]``:

        * ``in == 3``: one RGB tile (``C = 3``) per output channel, near-square grid
          (``cols = ceil(sqrt(n))``);
        * ``in == 1``: one grey tile (``C = 1``) per output channel, same grid;
        * otherwise: one grey tile per (input, output) pair, ``in`` rows by ``out``
          columns (bounded as above), ``C = 1``.

        ``H = (rows * (kh + pad) + pad) * scale``, likewise ``W`` with ``kw``/``cols``.

    Normalisation is per layer: one min/max over all drawn weights maps them to
    [0, 255]. Per-tile stretching would make a near-dead filter look as strong as the
    dominant one; a shared scale keeps relative magnitudes (and the sign pattern across
    tiles) comparable. A constant kernel renders as uniform grey 128, never NaN.
    """
    with tf.name_scope("filter_grid"):
        kernel = tf.convert_to_tensor(kernel)
        _check_rank4(kernel, "kernel")
        if not kernel.shape.is_fully_defined():
            raise ValueError(f"kernel needs a static shape, got {kernel.shape}")
        if max_tiles < 1 or scale < 0 or pad < 0:
            raise ValueError("need max_tiles >= 1, scale >= 0, pad >= 0")
        kh, kw, n_in, n_out = kernel.shape.as_list()
        kernel = tf.cast(kernel, tf.float32)

        if n_in in (1, 3):
            n = min(n_out, max_tiles)
            rows, cols = _near_square(n)
            tiles = tf.transpose(kernel[:, :, :, :n], [3, 0, 1, 2])  # [n, kh, kw, in]
        else:
            rows, cols = _bounded_pair_grid(n_in, n_out, max_tiles)
            tiles = tf.transpose(kernel[:, :, :rows, :cols], [2, 3, 0, 1])
            tiles = tf.reshape(tiles, [rows * cols, kh, kw, 1])  # row-major (in, out)

        # Min/max over what is drawn (== the whole kernel unless max_tiles truncates),
        # so the visible tiles always use the full 0..255 range.
        tiles = _normalize(tiles, axis=None, constant_value=_NEUTRAL)
        tiles = _pad_tile_count(tiles[tf.newaxis], rows * cols)
        image = _to_uint8(_tile(tiles, rows, cols, pad))

        if scale == 0:
            long_side = max(rows * (kh + pad) + pad, cols * (kw + pad) + pad)
            scale = min(_MAX_AUTO_SCALE, max(1, math.ceil(_TARGET_LONG_SIDE / long_side)))
        return upscale(image, scale)


def upscale(image: tf.Tensor, factor: int) -> tf.Tensor:
    """Nearest-neighbour integer upscale of ``[1, H, W, C]`` (static shape), as broadcast +
    reshape (3 ops; ``tf.repeat`` is ~40)."""
    if factor <= 1:
        return image
    _, h, w, c = image.shape.as_list()
    image = tf.broadcast_to(tf.reshape(image, [1, h, 1, w, 1, c]), [1, h, factor, w, factor, c])
    return tf.reshape(image, [1, h * factor, w * factor, c])


def activation_grid(feature_maps: tf.Tensor, max_channels: int = 64, pad: int = 1) -> tf.Tensor:
    """Tile each example's feature maps into one grey image.

    Args:
        feature_maps: float tensor ``[B, h, w, c]``; ``c`` must be static, ``B`` (and
            ``h``, ``w``) may be dynamic.
        max_channels: only the first ``min(c, max_channels)`` channels are drawn.
        pad: neutral-grey (128) border width in pixels.

    Returns:
        ``uint8`` tensor ``[B, rows * (h + pad) + pad, cols * (w + pad) + pad, 1]`` with
        ``n = min(c, max_channels)`` tiles in a grid of ``cols = ceil(sqrt(n))``,
        ``rows = ceil(n / cols)``.

    Each (example, channel) is normalised independently to [0, 255] (activations of
    different channels live on unrelated scales, so a shared scale would hide most of
    them). A constant channel, e.g. a dead ReLU, is drawn black.
    """
    with tf.name_scope("activation_grid"):
        x = tf.cast(tf.convert_to_tensor(feature_maps), tf.float32)
        _check_rank4(x, "feature_maps")
        c = x.shape[3]
        if c is None:
            raise ValueError("feature_maps needs a static channel dimension")
        if max_channels < 1 or pad < 0:
            raise ValueError("need max_channels >= 1, pad >= 0")
        n = min(c, max_channels)
        rows, cols = _near_square(n)
        x = _normalize(x[..., :n], axis=[1, 2], constant_value=0.0)
        tiles = tf.transpose(x, [0, 3, 1, 2])[..., tf.newaxis]  # [B, n, h, w, 1]
        tiles = _pad_tile_count(tiles, rows * cols)
        return _to_uint8(_tile(tiles, rows, cols, pad))


def image_grid(images: tf.Tensor, rows: int, cols: int, pad: int = 1) -> tf.Tensor:
    """Tile a batch of images into one image.

    Args:
        images: float tensor ``[N, h, w, C]`` with values in [0, 1] (clipped); ``N``
            may be dynamic. The first ``rows * cols`` images are drawn row-major; if
            ``N < rows * cols`` the remaining cells are blank neutral grey.
        rows, cols: grid size (static ints >= 1).
        pad: neutral-grey (128) border width in pixels.

    Returns:
        ``uint8`` tensor ``[1, rows * (h + pad) + pad, cols * (w + pad) + pad, C]``.
    """
    with tf.name_scope("image_grid"):
        x = tf.cast(tf.convert_to_tensor(images), tf.float32)
        _check_rank4(x, "images")
        if rows < 1 or cols < 1 or pad < 0:
            raise ValueError("need rows >= 1, cols >= 1, pad >= 0")
        tiles = _pad_tile_count(x[tf.newaxis, : rows * cols], rows * cols)
        return _to_uint8(_tile(tiles, rows, cols, pad))
