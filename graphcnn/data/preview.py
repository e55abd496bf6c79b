"""What the model is fed: augmented training samples, for ``graphcnn augment-preview``.

Row ``i`` shows one training image (first column, as preprocessed, unaugmented, headed
``original``) followed by ``cols - 1`` random augmentations of it (headed ``augmented``),
exactly as the training pipeline draws them; :func:`preview_image` lays the tiles out, each
at least :data:`MIN_TILE` px, the column headers drawn by
:func:`graphcnn.viz.images.caption_image`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from graphcnn.config import Config
from graphcnn.data.augment import augment_batch
from graphcnn.data.dataset import Split
from graphcnn.data.pipeline import decode_file, preprocess

v1 = tf.compat.v1
MIN_TILE = 96  # px: the long side of every tile in the preview
GAP = 4  # px of white between tiles; the original column stands 4 * GAP apart
LABEL_WIDTH = 200  # px: the widest row label (class name) left of the grid


def sample_indices(split: Split, rows: int) -> list[int]:
    """One image per class first (round robin), so every class shows up."""
    by_class = [list(np.flatnonzero(split.labels == c)) for c in np.unique(split.labels)]
    chosen: list[int] = []
    while len(chosen) < min(rows, len(split)):
        for members in by_class:
            if members and len(chosen) < rows:
                chosen.append(int(members.pop(0)))
    return chosen


def augmentation_preview(config: Config, split: Split, rows: int = 4, cols: int = 8, seed: int = 0) -> np.ndarray:
    """uint8 [R * cols, H, W, C], row by row: ``R = min(rows, len(split))`` training images at
    the model's input size, each followed by ``cols - 1`` augmented versions of it."""
    h, w, c = config.model.input_height, config.model.input_width, config.model.channels
    indices = sample_indices(split, rows)
    with tf.Graph().as_default(), v1.Session() as sess:
        if split.images is not None:
            raw = tf.constant(split.images[indices])
        else:
            raw = tf.stack([decode_file(tf.constant(split.paths[i]), h, w, c, config.data.exif_transpose)
                            for i in indices])
        images = preprocess(raw, h, w, c, None)
        repeated = tf.repeat(images, cols - 1, axis=0)
        augmented = tf.reshape(augment_batch(repeated, config.data.augment, tf.constant([seed, 0], tf.int64)),
                               [len(indices), cols - 1, h, w, c])
        tiles = tf.reshape(tf.concat([images[:, None], augmented], axis=1), [-1, h, w, c])
        return sess.run(tf.cast(tf.round(tf.clip_by_value(tiles, 0.0, 1.0) * 255.0), tf.uint8))


def preview_image(tiles: np.ndarray, cols: int, row_labels: Sequence[str] = ()) -> np.ndarray:
    """uint8 [H, W, 3]: ``tiles`` (uint8 [rows * cols, h, w, C], row by row, as
    :func:`augmentation_preview` returns them) in a grid whose first column is headed
    ``original`` and the others ``augmented``; tiles upscaled (nearest neighbour) to at least
    MIN_TILE px. ``row_labels``: each row's class name, written left of it."""
    from graphcnn.viz.images import caption_image, to_rgb, upscale

    n, h, w = tiles.shape[:3]
    rows = n // cols
    factor = max(1, math.ceil(MIN_TILE / max(h, w)))
    columns = []
    for j in range(cols):
        stacked = [np.pad(to_rgb(upscale(tiles[r * cols + j], factor)), [(0, GAP), (0, 0), (0, 0)],
                          constant_values=255) for r in range(rows)]
        header = "original" if j == 0 else "augmented"
        columns.append(caption_image(np.concatenate(stacked, axis=0), header, min_side=1))
    height = max(c.shape[0] for c in columns)
    padded = [np.pad(c, [(0, height - c.shape[0]), (GAP, GAP * (4 if j == 0 else 0)), (0, 0)], constant_values=255)
              for j, c in enumerate(columns)]
    grid = np.concatenate(padded, axis=1)
    if not row_labels:
        return grid
    return _with_row_labels(grid, row_labels, header=height - rows * (h * factor + GAP), row=h * factor + GAP)


def _with_row_labels(grid: np.ndarray, labels: Sequence[str], header: int, row: int) -> np.ndarray:
    """``grid`` with ``labels`` right-aligned in a white column to its left, one per row of
    ``row`` px below a ``header`` px strip (a label too long for 200 px shrinks, to 9 px)."""
    from PIL import Image, ImageDraw

    from graphcnn.viz.images import TEXT, fitting_font, text_width

    f = fitting_font(list(labels), LABEL_WIDTH, 13, min_size=9)
    width = min(LABEL_WIDTH, max(text_width(t, f) for t in labels)) + 2 * GAP
    canvas = Image.fromarray(np.pad(grid, [(0, 0), (width, 0), (0, 0)], constant_values=255))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(labels):
        draw.text((width - GAP, header + i * row + (row - GAP) // 2), text, font=f, fill=TEXT, anchor="rm")
    return np.asarray(canvas)
