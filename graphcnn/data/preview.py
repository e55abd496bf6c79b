"""What the model is fed: a grid of augmented training samples.

Row ``i`` shows one training image (first column, as preprocessed, unaugmented) followed by
``cols - 1`` random augmentations of it, exactly as the training pipeline draws them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from graphcnn.config import Config
from graphcnn.data.augment import augment_batch
from graphcnn.data.pipeline import decode_file, preprocess
from graphcnn.data.sources import Split
from graphcnn.viz.grids import image_grid

v1 = tf.compat.v1


def _sample_indices(split: Split, rows: int) -> list[int]:
    """One image per class first (round robin), so every class shows up."""
    by_class = [list(np.flatnonzero(split.labels == c)) for c in np.unique(split.labels)]
    chosen: list[int] = []
    while len(chosen) < min(rows, len(split)):
        for members in by_class:
            if members and len(chosen) < rows:
                chosen.append(int(members.pop(0)))
    return chosen


def augmentation_preview(config: Config, split: Split, rows: int = 4, cols: int = 8, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, C]: ``rows`` training images, each with ``cols - 1`` augmented versions."""
    h, w, c = config.model.input_height, config.model.input_width, config.model.channels
    indices = _sample_indices(split, rows)
    with tf.Graph().as_default(), v1.Session() as sess:
        if split.images is not None:
            raw = tf.constant(split.images[indices])
        else:
            raw = tf.stack([decode_file(tf.constant(split.paths[i]), h, w, c) for i in indices])
        images = preprocess(raw, h, w, c, None)
        repeated = tf.repeat(images, cols - 1, axis=0)
        augmented = tf.reshape(augment_batch(repeated, config.data.augment, tf.constant([seed, 0], tf.int64)),
                               [len(indices), cols - 1, h, w, c])
        rows_of_tiles = tf.concat([images[:, None], augmented], axis=1)
        grid = image_grid(tf.reshape(rows_of_tiles, [-1, h, w, c]), len(indices), cols)
        return sess.run(grid)[0]
