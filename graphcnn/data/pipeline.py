"""The ``tf.data`` input pipeline, inside the training graph.

Training batches reach the network through ``input/images`` / ``input/labels``,
placeholders *with defaults*: training runs the train op with no image feed (no per-step
host copy), while evaluation and prediction feed the same placeholders. Arrays enter the
graph through placeholders at initialization, so the saved graph never embeds the dataset.

Two training sources, by what the split holds:

* **in-memory arrays** (the embedded digits, Fashion-MNIST, ``.npz``): the images sit in a
  graph variable kept out of checkpoints (``input/train_pipeline/images``, uint8, resized to
  the model's size once), and each training step takes the next batch of indices of a
  fresh permutation each epoch (computed in the graph, no ``tf.data`` iterator), then
  gathers, scales and augments its batch itself. An iterator that carried the images cost
  6-11% of training throughput on a 2-core CPU (BENCHMARKS.md, "Why it is fast"): its background
  threads preempt the compute threads in the middle of each step; one that carried only the
  indices still made the step wait for it now and then (Q17). Each epoch uses
  ``len // batch_size`` full batches of its permutation (the rest of that epoch's order is
  left out, a different few each epoch). A folder of image files that fits in memory
  arrives here as such arrays, decoded by the data scan at the model's size
  (:func:`graphcnn.data.sources.load_dataset` with ``size``).
* **image files** (a folder too big to keep, or ``data.cache = none``): paths are shuffled,
  decoded in a parallel ``map``, cached in memory when they fit, batched, preprocessed (and
  augmented) in the pipeline, and prefetched.

Preprocessing (also done by ``graphcnn predict``): convert to the model's channels, resize
to its input size (bilinear), scale to [0, 1], optionally subtract the per-pixel mean of
the training split.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import tensorflow as tf

from graphcnn.atomic import write_bytes_atomic, write_text_atomic
from graphcnn.config import AugmentConfig, DataConfig, ModelConfig
from graphcnn.data import exif
from graphcnn.data.formats import is_webp
from graphcnn.data.dataset import Split

v1 = tf.compat.v1
AUTOTUNE = tf.data.AUTOTUNE
MEAN_FILE = "pixel_mean.npy"
PIXEL_MEAN_VARIABLE = "input/pixel_mean"  # the training graph's mean image: float32 [H, W, C]
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
    # a pretrained backbone's own preprocessing (caffe | tf), which the graph applies to input/images itself
    backbone: str = ""
    backbone_preprocessing: str = ""
    # the probabilities are the mean of the image's and its mirror image's (model.test_time_flip)
    test_time_flip: bool = False
    # JPEGs turned upright by their EXIF orientation before resizing (data.exif_transpose)
    exif_transpose: bool = False

    def save(self, directory: str | Path, mean: np.ndarray | None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["scale"] = "pixels / 255.0"
        # atomic (graphcnn.atomic): a kill while writing leaves the previous file, never a
        # half-written one that would make the checkpoints beside it unusable
        if self.mean_subtraction:  # the mean first: preprocessing.json says it is needed
            buffer = io.BytesIO()
            np.save(buffer, mean.astype(np.float32))
            write_bytes_atomic(directory / MEAN_FILE, buffer.getvalue())
        write_text_atomic(directory / PREPROCESSING_FILE, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> tuple["Preprocessing", np.ndarray | None]:
        directory = Path(directory)
        path = directory / PREPROCESSING_FILE
        try:
            text = path.read_text()
        except OSError:
            raise FileNotFoundError(f"{path} is missing: it holds the input size, channels and class names") from None
        try:
            data = json.loads(text)
            data.pop("scale", None)
            data["class_names"] = tuple(data["class_names"])
            spec = cls(**data)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            reason = f"no {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
            raise ValueError(f"{path} is damaged ({reason}): it holds the input size, channels and class "
                             "names") from None
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


def decode_image_bytes(data: tf.Tensor, channels: int, exif_transpose: bool = False, jpeg: bool = False
                       ) -> tf.Tensor:
    """A JPEG/PNG/BMP/GIF/WebP file's bytes -> its first frame, uint8 [h, w, channels].

    RGB models get the decoder's own conversion (a WebP with alpha, which the decoder refuses
    three channels, is decoded as it is and its alpha dropped). A grayscale model gets it for PNGs and
    JPEGs (a JPEG's luma); the decoder refuses one channel for BMPs (any kind: "channels
    must be 0, 3 or 4 for BMP"), GIFs ("0 or 3") and CMYK JPEGs ("Unsupported color
    conversion request"), so those are decoded at their own channels and made grayscale by
    ``rgb_to_grayscale`` (alpha dropped; a grayscale BMP kept as it is).

    ``exif_transpose``: a JPEG is then turned upright by its EXIF orientation
    (:mod:`graphcnn.data.exif`; ``data.exif_transpose``). ``jpeg``: ``data`` is known to be a JPEG.
    Files the decoder gets wrong are refused before they get here (:mod:`graphcnn.data.formats`).
    """
    image = _decode_first_frame(data, channels, jpeg)
    if not exif_transpose:
        return image
    return exif.upright(image, data)


def _decode_first_frame(data: tf.Tensor, channels: int, jpeg: bool = False) -> tf.Tensor:
    """``jpeg``: the caller knows ``data`` is a JPEG (the scan's JPEG branch: a WebP test nested
    in a branch there cost 0.15 ms a file, half the scan of a small JPEG)."""
    if channels != 1:
        def webp():  # the decoder refuses 3 channels for a WebP with alpha: decoded as it is, alpha dropped
            return tf.io.decode_image(data, 0, expand_animations=False)[..., :3]

        def other():
            return tf.io.decode_image(data, channels=channels, expand_animations=False)

        image = other() if jpeg else tf.cond(is_webp(data), webp, other)
        return tf.ensure_shape(image, [None, None, channels])

    def direct():
        return tf.io.decode_image(data, 1, expand_animations=False)

    def converted():
        native = tf.io.decode_image(data, 0, expand_animations=False)
        return tf.cond(tf.equal(tf.shape(native)[-1], 1), lambda: native[..., :1],
                       lambda: tf.image.rgb_to_grayscale(native[..., :3]))

    png = tf.equal(tf.strings.substr(data, 0, 4), b"\x89PNG")
    direct_ok = tf.cond(tf.io.is_jpeg(data), lambda: tf.not_equal(tf.io.extract_jpeg_shape(data)[2], 4), lambda: png)
    return tf.ensure_shape(tf.cond(direct_ok, direct, converted), [None, None, 1])


def decode_file(path: tf.Tensor, height: int, width: int, channels: int, exif_transpose: bool = False) -> tf.Tensor:
    """Read and decode one JPEG/PNG/BMP/GIF file (first frame) -> uint8 [height, width, channels]
    (``exif_transpose``: a JPEG turned upright first, :func:`decode_image_bytes`)."""
    return fit_images(decode_image_bytes(tf.io.read_file(path), channels, exif_transpose), height, width, channels)


def no_autotune() -> tf.data.Options:
    """Options for a pipeline whose iterator is torn down or re-initialized while the process
    goes on (each evaluation, prediction): tf.data's autotuner sleeps between its runs for
    up to a minute, and dropping the iterator waited for it: 3.5 s after 2,000 JPEGs in
    ``predict``, and a validation of 240 JPEGs that took as long as the epoch before it
    (41 s against 0.4 s; Zen 1). The parallel maps keep AUTOTUNE's parallelism."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


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
        self.data, self.model, self.train_split, self.batch_size = data, model, train_split, batch_size
        self.keep_groups, self.seed = keep_groups, seed
        self.augment_fn = augment_fn  # (float32 batch, int64 [2] seed) -> float32 batch, training only
        self._split_placeholders: dict[str, tf.Tensor] = {}
        self._array_source: tuple | None = None  # in-memory training arrays: see _array_batches
        self._eval_cache: dict[int, tuple[Split, np.ndarray, np.ndarray]] = {}

    # -- graph construction ---------------------------------------------------------
    def _size(self) -> tuple[int, int, int]:
        return self.model.input_height, self.model.input_width, self.model.channels

    def _file_dataset(self, split: Split, scope: str, skip: tf.Tensor | None = None) -> tf.data.Dataset:
        """Elements (uint8 [h, w, c], int64 label) of a file split; the paths enter via placeholders.
        ``skip`` (training, not cached): the epochs repeat, and that many files are passed over
        before any is decoded (a resumed run's place in the order)."""
        h, w, c = self._size()
        labels = v1.placeholder(tf.int64, [None], name=f"{scope}_labels")
        paths = v1.placeholder(tf.string, [None], name=f"{scope}_paths")
        self._split_placeholders[scope] = (paths, labels)
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if scope == "train":
            # the whole list of paths (a split lists its files class by class); a cached split
            # is shuffled once here, so that the cache holds a mixed order and the buffer's
            # shuffle of each epoch (build) starts from it, not from one class after another
            ds = ds.shuffle(len(split), seed=self.seed, reshuffle_each_iteration=not self._cache(split))
        if skip is not None:
            ds = ds.repeat().skip(skip)
        parallel = self.data.num_parallel_calls or AUTOTUNE
        return ds.map(lambda p, y: (decode_file(p, h, w, c, self.data.exif_transpose), y),
                      num_parallel_calls=parallel)

    def _cache(self, split: Split) -> bool:
        """Cache decoded (or resized) images in memory when asked, or ('auto') when under 2 GiB."""
        h, w, c = self._size()
        if self.data.cache == "none" or (split.images is not None and split.images.shape[1:] == (h, w, c)):
            return False  # arrays already of the model's size: the source itself is in memory
        if self.data.cache == "memory":
            return True
        return len(split) * h * w * c < 2 * 1024**3

    def _training_batch(self, images: tf.Tensor, mean: tf.Tensor | None, batch_seed: tf.Tensor) -> tf.Tensor:
        """uint8 [B, h, w, c] -> float32 [B, H, W, C] in [0, 1], augmented, then minus ``mean``.

        The mean comes off last: augmentation works on [0, 1] pixels (it clips to that range,
        fills and erases with values in it), so a mean taken off first would be clipped away
        and training would see other inputs than evaluation.
        """
        h, w, c = self._size()
        x = preprocess(images, h, w, c, None)
        if self.augment_fn is not None:
            x = self.augment_fn(x, batch_seed)
        return x if mean is None else x - mean

    def _batches(self, ds: tf.data.Dataset, mean: tf.Tensor | None, training: bool,
                 start: tf.Tensor | int = 0) -> tf.data.Dataset:
        h, w, c = self._size()
        ds = ds.batch(self.batch_size)
        if training and self.augment_fn is not None:
            # the batch index (from ``start``, a resumed run's step) joins the seed, so the random
            # stream does not depend on which parallel map call gets which batch
            seed = tf.constant(self.seed, tf.int64)
            return ds.enumerate(start).map(
                lambda i, xy: (self._training_batch(xy[0], mean, tf.stack([seed, i])), xy[1]),
                num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
        ds = ds.map(lambda x, y: (preprocess(x, h, w, c, mean), y), num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE)

    def _array_batches(self, mean: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        """In-memory training arrays: each step takes its batch of indices itself, and gathers it.

        Returns (float32 [b, H, W, C] preprocessed and augmented, int64 [b]), b =
        min(batch_size, len(train)). Batch number k (a counter the step advances) is batch
        ``k % per_epoch`` of epoch ``k // per_epoch``, whose permutation is a stateless
        shuffle keyed on (data.seed, epoch), computed once per epoch: the order depends on
        nothing but the seed and the step, so :meth:`initialize` can start it at any step (a
        resumed run continues the order it stopped in). No ``tf.data`` iterator and no input
        thread: the step never waits for another thread, and nothing preempts its compute
        threads (BENCHMARKS.md, Q17).
        """
        split, (h, w, c) = self.train_split, self._size()
        n = len(split)
        if n == 0:
            raise ValueError("the training split is empty: there is nothing to train on")
        batch = min(self.batch_size, n)
        per_epoch = n // batch
        resize_once = self._cache(split)  # else the arrays are of the model's size, or resized in each step
        stored = (h, w, c) if resize_once else split.images.shape[1:]
        images_in = v1.placeholder(tf.uint8, [n, *stored], name="train_images")
        labels_in = v1.placeholder(tf.int64, [n], name="train_labels")
        start = v1.placeholder(tf.int64, [], name="start_batch")

        def local(name: str, initial) -> tf.Variable:
            # outside every collection: not checkpointed, not initialized by global_variables_initializer
            return v1.Variable(initial, trainable=False, collections=[], name=name, use_resource=True)

        images, labels = local("images", images_in), local("labels", labels_in)
        counter = local("batch_number", start)  # the next batch's number
        order = local("order", tf.zeros([n], tf.int64))  # the permutation of epoch order_epoch
        order_epoch = local("order_epoch", tf.constant(-1, tf.int64))
        seed = tf.constant(self.seed, tf.int64)
        number = counter.assign_add(1, read_value=True) - 1
        epoch = number // per_epoch

        def shuffle() -> tf.Tensor:
            fresh = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), tf.stack([seed, epoch]))
            with tf.control_dependencies([order_epoch.assign(epoch)]):
                return order.assign(fresh, read_value=True)

        current = tf.cond(tf.equal(order_epoch.read_value(), epoch), order.read_value, shuffle)
        indices = tf.slice(current, [(number % per_epoch) * batch], [batch])
        x = self._training_batch(tf.gather(images, indices), mean, tf.stack([seed, number]))
        y = tf.gather(labels, indices)
        fit = None
        if resize_once:  # run by initialize, in chunks
            raw = v1.placeholder(tf.uint8, [None, *split.images.shape[1:]], name="fit_images")
            fit = (raw, fit_images(raw, h, w, c))
        self._array_source = ([images, labels, counter, order, order_epoch], images_in, labels_in, start, fit)
        return x, y

    def build(self) -> InputHandles:
        """Create the ``input`` scope: iterators, placeholders and the pixel-mean variable."""
        h, w, c = self._size()
        with tf.name_scope("input"):
            pixel_mean = v1.get_variable(PIXEL_MEAN_VARIABLE, [h, w, c], tf.float32,
                                         initializer=v1.zeros_initializer(), trainable=False)
            mean = pixel_mean if self.data.mean_subtraction else None
            with tf.name_scope("train_pipeline"):
                if self.train_split.images is not None:
                    train_images, train_labels = self._array_batches(mean)
                else:
                    # a resumed run's global step: the order and the augmentation go on from it
                    self._start_step = v1.placeholder(tf.int64, [], name="train_start_step")
                    skip = self._start_step * self.batch_size
                    if self._cache(self.train_split):  # decoded once, then shuffled within a buffer
                        buffer = min(len(self.train_split), self.data.shuffle_buffer)
                        ds = (self._file_dataset(self.train_split, "train").cache()
                              .shuffle(buffer, seed=self.seed, reshuffle_each_iteration=True).repeat().skip(skip))
                    else:  # the files passed over are not decoded
                        ds = self._file_dataset(self.train_split, "train", skip=skip)
                    ds = self._batches(ds, mean, training=True, start=self._start_step)
                    self._train_iterator = v1.data.make_initializable_iterator(ds)
                    train_images, train_labels = self._train_iterator.get_next()
            with tf.name_scope("eval_pipeline"):
                if self.train_split.images is not None:
                    # arrays: one preprocessing op fed batch by batch (no iterator to re-initialize)
                    self._eval_raw = v1.placeholder(tf.uint8, [None, *self.train_split.images.shape[1:]],
                                                    name="eval_images")
                    self._eval_preprocessed = preprocess(self._eval_raw, h, w, c, mean)
                else:
                    # re-initialized for every evaluation: no autotuner to wait for (no_autotune)
                    self._eval_iterator = v1.data.make_initializable_iterator(
                        self._batches(self._file_dataset(self.train_split, "eval"), mean, training=False)
                        .with_options(no_autotune())
                    )
                    self._eval_next = self._eval_iterator.get_next()
            images = v1.placeholder_with_default(train_images, [None, h, w, c], name="images")
            labels = v1.placeholder_with_default(train_labels, [None], name="labels")
            is_training = v1.placeholder_with_default(False, [], name="is_training")
            keep_rates = {g: v1.placeholder_with_default(1.0, [], name=f"keep_rate_{g}") for g in self.keep_groups}
        return InputHandles(images, labels, is_training, keep_rates, pixel_mean)

    # -- session-time ---------------------------------------------------------------
    def _feed(self, scope: str, split: Split) -> dict:
        paths_ph, labels_ph = self._split_placeholders[scope]
        # as bytes, the file system's own: a name that is not UTF-8 (a Latin-1 é) is no valid str for TensorFlow
        return {paths_ph: np.asarray([os.fsencode(p) for p in split.paths], dtype=object), labels_ph: split.labels}

    def initialize(self, sess: v1.Session, start_step: int = 0) -> None:
        """Start the training iterator (the arrays are copied into the graph once).

        Training continues its batch order and augmentation from ``start_step`` (the global step
        of a resumed run): in-memory arrays by their permutation of each epoch, a file source by
        passing over that many batches of its seeded order (a cached one decodes them: its cache
        fills in the first epoch).
        """
        if self._array_source is None:
            sess.run(self._train_iterator.initializer,
                     {**self._feed("train", self.train_split), self._start_step: start_step})
            return
        variables, images_in, labels_in, start, fit = self._array_source
        data = self.train_split.images
        if fit is not None:
            data = np.concatenate([sess.run(fit[1], {fit[0]: data[i:i + 1024]}) for i in range(0, len(data), 1024)])
        sess.run([v.initializer for v in variables],
                 {images_in: data, labels_in: self.train_split.labels, start: start_step})

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


def compute_pixel_mean(split: Split, model: ModelConfig, batch_size: int = 256, exif_transpose: bool = False
                       ) -> np.ndarray:
    """Per-pixel mean float32 [H, W, C] of a split after resize and scaling to [0, 1] (files
    decoded as :func:`decode_file` with ``exif_transpose`` decodes them)."""
    h, w, c = model.input_height, model.input_width, model.channels
    graph = tf.Graph()
    with graph.as_default():
        if split.images is not None:
            ds = tf.data.Dataset.from_tensor_slices(split.images)
        else:
            ds = tf.data.Dataset.from_tensor_slices([os.fsencode(p) for p in split.paths]).map(
                lambda p: decode_file(p, h, w, c, exif_transpose), num_parallel_calls=AUTOTUNE)
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
