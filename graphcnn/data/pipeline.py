"""The ``tf.data`` input pipeline, inside the training graph.

Training batches come from an iterator in the graph and reach the network through
``input/images`` / ``input/labels``, placeholders *with defaults*: training runs the
train op with no image feed (no per-step host copy), while evaluation and prediction feed
the same placeholders. Arrays enter the graph through placeholders at iterator
initialization, so the saved graph never embeds the dataset.

Preprocessing (also done by ``graphcnn predict``): convert to the model's channels, resize
to its input size (bilinear), scale to [0, 1], optionally subtract the per-pixel mean of
the training split.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import tensorflow as tf

from graphcnn.config import AugmentConfig, DataConfig, ModelConfig
from graphcnn.data.sources import Split

v1 = tf.compat.v1
AUTOTUNE = tf.data.AUTOTUNE
MEAN_FILE = "pixel_mean.npy"
EVAL_CACHE_BYTES = 1 << 30  # preprocessed in-memory evaluation splits kept between evaluations
PREPROCESSING_FILE = "preprocessing.json"


@dataclass(frozen=True)
class Preprocessing:
    """What a restored model needs to turn an image file into ``input/images``."""

    input_height: int
    input_width: int
    channels: int
    class_names: tuple[str, ...]
    mean_subtraction: bool = False  # if true, subtract pixel_mean.npy (float32 [H, W, C]) after scaling

    def save(self, directory: str | Path, mean: np.ndarray | None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["scale"] = "pixels / 255.0"
        (directory / PREPROCESSING_FILE).write_text(json.dumps(data, indent=2) + "\n")
        if self.mean_subtraction:
            np.save(directory / MEAN_FILE, mean.astype(np.float32))

    @classmethod
    def load(cls, directory: str | Path) -> tuple["Preprocessing", np.ndarray | None]:
        directory = Path(directory)
        path = directory / PREPROCESSING_FILE
        try:
            data = json.loads(path.read_text())
        except OSError:
            raise FileNotFoundError(f"{path} is missing: it holds the input size, channels and class names") from None
        data.pop("scale", None)
        data["class_names"] = tuple(data["class_names"])
        spec = cls(**data)
        mean = np.load(directory / MEAN_FILE) if spec.mean_subtraction else None
        return spec, mean


def fit_images(images: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """uint8 [..., h, w, c] -> uint8 [..., height, width, channels]: channel conversion, bilinear resize.

    Done once per image (then cached), so that each training step only scales a batch.
    """
    c = images.shape[-1]
    x = images
    if c == 3 and channels == 1:
        x = tf.image.rgb_to_grayscale(x)
    elif c == 1 and channels == 3:
        x = tf.image.grayscale_to_rgb(x)
    if x.shape[-3] == height and x.shape[-2] == width:
        return x
    x = tf.image.resize(x, [height, width], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def decode_file(path: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """Read and decode one JPEG/PNG/BMP/GIF file (first frame) -> uint8 [height, width, channels]."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return fit_images(image, height, width, channels)


def preprocess(images: tf.Tensor, height: int, width: int, channels: int, mean: tf.Tensor | None) -> tf.Tensor:
    """uint8 [B, h, w, c] -> float32 [B, height, width, channels] in [0, 1], minus ``mean``.

    Images not yet of the model's size and channels go through :func:`fit_images` first.
    """
    x = tf.cast(fit_images(images, height, width, channels), tf.float32) / 255.0
    if mean is not None:
        x = x - mean
    return x


class InputHandles(NamedTuple):
    """The ``input`` scope of the graph."""

    images: tf.Tensor  # input/images: float32 [None, H, W, C], default = next training batch
    labels: tf.Tensor  # input/labels: int64 [None], default = next training labels
    is_training: tf.Tensor  # input/is_training: bool scalar, default False
    keep_rates: dict[str, tf.Tensor]  # input/keep_rate_<group>: float32 scalar, default 1.0
    pixel_mean: tf.Variable  # input/pixel_mean: float32 [H, W, C] (zeros unless mean subtraction)


class InputPipeline:
    """Builds the training and evaluation pipelines for a dataset's splits.

    Call :meth:`build` inside the graph, then :meth:`initialize` once the session exists.
    """

    def __init__(self, data: DataConfig, model: ModelConfig, train_split: Split, batch_size: int,
                 keep_groups: tuple[str, ...], seed: int, augment_fn=None):
        self.data = data
        self.model = model
        self.train_split = train_split
        self.batch_size = batch_size
        self.keep_groups = keep_groups
        self.seed = seed
        self.augment_fn = augment_fn  # (float32 batch, int64 [2] seed) -> float32 batch, training only
        self._split_placeholders: dict[str, tf.Tensor] = {}
        self._eval_cache: dict[int, tuple[Split, np.ndarray, np.ndarray]] = {}

    # -- graph construction ---------------------------------------------------------
    def _size(self) -> tuple[int, int, int]:
        return self.model.input_height, self.model.input_width, self.model.channels

    def _source_dataset(self, split: Split, scope: str) -> tf.data.Dataset:
        """Elements (uint8 [h, w, c], int64 label); arrays and file lists enter via placeholders."""
        h, w, c = self._size()
        labels = v1.placeholder(tf.int64, [None], name=f"{scope}_labels")
        if split.images is not None:
            images = v1.placeholder(tf.uint8, [None, *split.images.shape[1:]], name=f"{scope}_images")
            self._split_placeholders[scope] = (images, labels)
            ds = tf.data.Dataset.from_tensor_slices((images, labels))
            if split.images.shape[1:] != (h, w, c):  # resize each image once, cached below
                ds = ds.map(lambda x, y: (fit_images(x, h, w, c), y), num_parallel_calls=AUTOTUNE)
            return ds
        paths = v1.placeholder(tf.string, [None], name=f"{scope}_paths")
        self._split_placeholders[scope] = (paths, labels)
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if scope == "train" and not self._cache(split):
            ds = ds.shuffle(len(split), seed=self.seed, reshuffle_each_iteration=True)
        parallel = self.data.num_parallel_calls or AUTOTUNE
        return ds.map(lambda p, y: (decode_file(p, h, w, c), y), num_parallel_calls=parallel)

    def _cache(self, split: Split) -> bool:
        """Cache decoded (or resized) images in memory when asked, or ('auto') when under 2 GiB."""
        h, w, c = self._size()
        if self.data.cache == "none" or (split.images is not None and split.images.shape[1:] == (h, w, c)):
            return False  # arrays already of the model's size: the source itself is in memory
        if self.data.cache == "memory":
            return True
        return len(split) * h * w * c < 2 * 1024**3

    def _batches(self, ds: tf.data.Dataset, mean: tf.Tensor | None, training: bool) -> tf.data.Dataset:
        h, w, c = self._size()
        ds = ds.batch(self.batch_size)
        ds = ds.map(lambda x, y: (preprocess(x, h, w, c, mean), y), num_parallel_calls=AUTOTUNE)
        if training and self.augment_fn is not None:
            # the batch index joins the seed, so the random stream does not depend on which
            # parallel map call gets which batch
            ds = ds.enumerate().map(
                lambda i, xy: (self.augment_fn(xy[0], tf.stack([tf.constant(self.seed, tf.int64), i])), xy[1]),
                num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE)

    def build(self) -> InputHandles:
        """Create the ``input`` scope: iterators, placeholders and the pixel-mean variable."""
        h, w, c = self._size()
        with tf.name_scope("input"):
            pixel_mean = v1.get_variable("input/pixel_mean", [h, w, c], tf.float32,
                                         initializer=v1.zeros_initializer(), trainable=False)
            mean = pixel_mean if self.data.mean_subtraction else None
            with tf.name_scope("train_pipeline"):
                ds = self._source_dataset(self.train_split, "train")
                if self._cache(self.train_split):
                    ds = ds.cache()
                if self.train_split.images is not None or self._cache(self.train_split):  # else shuffled as paths
                    buffer = min(len(self.train_split), self.data.shuffle_buffer)
                    ds = ds.shuffle(buffer, seed=self.seed, reshuffle_each_iteration=True)
                ds = self._batches(ds.repeat(), mean, training=True)
                self._train_iterator = v1.data.make_initializable_iterator(ds)
                train_images, train_labels = self._train_iterator.get_next()
            with tf.name_scope("eval_pipeline"):
                if self.train_split.images is not None:
                    # arrays: one preprocessing op fed batch by batch (no iterator to re-initialize)
                    self._eval_raw = v1.placeholder(tf.uint8, [None, *self.train_split.images.shape[1:]],
                                                    name="eval_images")
                    self._eval_preprocessed = preprocess(self._eval_raw, h, w, c, mean)
                else:
                    self._eval_iterator = v1.data.make_initializable_iterator(
                        self._batches(self._source_dataset(self.train_split, "eval"), mean, training=False)
                    )
                    self._eval_next = self._eval_iterator.get_next()
            images = v1.placeholder_with_default(train_images, [None, h, w, c], name="images")
            labels = v1.placeholder_with_default(train_labels, [None], name="labels")
            is_training = v1.placeholder_with_default(False, [], name="is_training")
            keep_rates = {
                g: v1.placeholder_with_default(1.0, [], name=f"keep_rate_{g}") for g in self.keep_groups
            }
        return InputHandles(images, labels, is_training, keep_rates, pixel_mean)

    # -- session-time ---------------------------------------------------------------
    def _feed(self, scope: str, split: Split) -> dict:
        data_ph, labels_ph = self._split_placeholders[scope]
        data = split.images if split.images is not None else np.asarray(split.paths, dtype=object)
        return {data_ph: data, labels_ph: split.labels}

    def initialize(self, sess: v1.Session) -> None:
        """Start the training iterator (the arrays are copied into the pipeline once)."""
        sess.run(self._train_iterator.initializer, self._feed("train", self.train_split))

    def eval_batches(self, sess: v1.Session, split: Split, keep: bool = False
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Preprocessed batches of ``split``, in order: (float32 [B, H, W, C], int64 [B]).

        ``keep`` (for a split evaluated again and again, like validation): an in-memory split
        is preprocessed once and kept (up to :data:`EVAL_CACHE_BYTES` in all).
        """
        if len(split) == 0:
            return
        if (split.images is None) != (self.train_split.images is None) or (
            split.images is not None and split.images.shape[1:] != self.train_split.images.shape[1:]
        ):
            raise ValueError("evaluation split must have the same form (arrays of the same shape, or files) "
                             "as the training split")
        if split.images is None:
            sess.run(self._eval_iterator.initializer, self._feed("eval", split))
            while True:
                try:
                    yield sess.run(self._eval_next)
                except tf.errors.OutOfRangeError:
                    return
        cached = self._eval_cache.get(id(split))
        if cached is not None and cached[0] is split:
            _, images, labels = cached
            for i in range(0, len(labels), self.batch_size):
                yield images[i:i + self.batch_size], labels[i:i + self.batch_size]
            return
        h, w, c = self._size()
        used = sum(x.nbytes for _, x, _ in self._eval_cache.values())
        keep = keep and used + len(split) * h * w * c * 4 <= EVAL_CACHE_BYTES
        kept = []
        for i in range(0, len(split), self.batch_size):
            batch = sess.run(self._eval_preprocessed, {self._eval_raw: split.images[i:i + self.batch_size]})
            if keep:
                kept.append(batch)
            yield batch, split.labels[i:i + self.batch_size]
        if keep:  # the split is kept with its arrays, so its id cannot be reused
            self._eval_cache[id(split)] = (split, np.concatenate(kept), split.labels)


def compute_pixel_mean(split: Split, model: ModelConfig, batch_size: int = 256) -> np.ndarray:
    """Per-pixel mean float32 [H, W, C] of a split after resize and scaling to [0, 1]."""
    h, w, c = model.input_height, model.input_width, model.channels
    graph = tf.Graph()
    with graph.as_default():
        if split.images is not None:
            ds = tf.data.Dataset.from_tensor_slices(split.images)
        else:
            ds = tf.data.Dataset.from_tensor_slices(list(split.paths)).map(
                lambda p: decode_file(p, h, w, c), num_parallel_calls=AUTOTUNE)
        ds = ds.batch(batch_size).map(lambda x: tf.reduce_sum(preprocess(x, h, w, c, None), axis=0))
        total = ds.reduce(tf.zeros([h, w, c]), lambda acc, s: acc + s)
        with v1.Session(graph=graph) as sess:
            return (sess.run(total) / max(len(split), 1)).astype(np.float32)


def augment_fn_for(cfg: AugmentConfig):
    """``fn(images, seed_pair)`` augmenting a training batch for ``cfg``, or None when it is off."""
    if not cfg.enabled:
        return None
    from graphcnn.data.augment import augment_batch

    return lambda images, batch_seed: augment_batch(images, cfg, batch_seed)
