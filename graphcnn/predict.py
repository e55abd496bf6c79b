"""Restore a checkpoint and predict, from the checkpoint alone.

:class:`Predictor` (and :class:`~graphcnn.explain.Explainer`, which adds Grad-CAM to it)
imports a saved meta graph (``import_meta_graph``) and restores the weights: no network code
runs, so any checkpoint graphcnn wrote can be served even if the config that built it is
gone. It prefers ``inference.meta`` (the forward pass alone, written beside every run's
checkpoints) to the checkpoint's own ``.meta`` (the whole training graph), and wires file
decoding into ``input/images`` with ``input_map``, so a single file goes from path to
probabilities in one ``Session.run``: both matter for a cold start (BENCHMARKS.md).
Preprocessing parameters come from ``preprocessing.json`` next to the checkpoint. The same
names are what a plain TensorFlow script uses (README).

Several files go through a ``tf.data`` pipeline in the same graph: read and decode in a
parallel ``map`` (in input order), batched and prefetched, so decoding the next batch
overlaps the forward pass of this one. Each file is decoded as training decodes it
(:func:`~graphcnn.data.pipeline.decode_file`: the same pixels), and what it natively was
(size, channels, bit depth, frames) comes with it at no extra decode, for the conversion
report (:func:`graphcnn.data.scan.conversion_warnings`, as training reports them).
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Self, Sequence

import numpy as np
import tensorflow as tf

from graphcnn.checkpoints import load_first, serving_meta_graph
from graphcnn.data import formats, scan
from graphcnn.data.dataset import DataError
from graphcnn.data.folders import IMAGE_EXTENSIONS, walk_image_files
from graphcnn.data.pipeline import Preprocessing, fit_images, no_autotune, preprocess
from graphcnn.model.precision import inference_session_config, resolve_precision

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.predict")


@dataclass(frozen=True)
class Prediction:
    file: str
    class_name: str
    probability: float
    top_k: tuple[tuple[str, float], ...]  # (class name, probability), most probable first


@dataclass
class FileResults:
    """What :meth:`Predictor.run_files` found, file by file in input order.

    ``rows``: (file, prediction, None) or (file, None, why it cannot be read);
    ``images``: the native size and mode of every readable file (for conversion reports);
    ``decode_seconds``: time spent waiting for decoded batches (decoding not hidden behind
    the forward pass); ``predict_seconds``: time in the network's forward pass.
    """

    rows: list[tuple[str, Prediction | None, str | None]] = field(default_factory=list)
    images: dict[str, scan.ImageInfo] = field(default_factory=dict)
    decode_seconds: float = 0.0
    predict_seconds: float = 0.0

    @property
    def predictions(self) -> list[Prediction]:
        return [p for _, p, _ in self.rows if p is not None]

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [(f, e) for f, _, e in self.rows if e is not None]


def collect_image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Image files named directly, or found in the folders named as training finds them
    (recursively, sorted, links followed, hidden entries skipped: macOS's ``._x.jpg`` is no
    image). A path that does not exist is kept (its row names it, as an unreadable file's,
    and the others are still done), unless none exists (``FileNotFoundError``, exit 2); one
    with ``*``, ``?`` or ``[`` that does not exist is a pattern (a glob the shell left quoted),
    read as the files it matches. A ``DataError`` when there are no files (bad input, exit 2)."""
    paths = list(paths)
    files: list[Path] = []
    missing: list[Path] = []
    for p in map(Path, paths):
        if not p.exists() and not p.is_symlink() and any(c in str(p) for c in "*?["):
            matches = sorted(glob.glob(str(p), recursive=True))
            if matches:
                files.extend(collect_image_files(matches))
                continue
        if p.is_dir():
            unreadable: list[OSError] = []
            found, skipped, _again = walk_image_files(p, onerror=unreadable.append)
            if unreadable:  # rglob would skip such a folder without a word
                err = unreadable[0]
                raise DataError(f"cannot read folder {err.filename}: {err.strerror}"
                                + (f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""))
            if skipped:
                log.info("%s: %d entries skipped (not %s files, or hidden)", p, len(skipped),
                         "/".join(IMAGE_EXTENSIONS))
            files.extend(found)  # a broken link among them gets its error row
        elif p.exists() and not p.is_file():  # reading a FIFO would wait forever
            raise DataError(f"{p}: not a file or folder (a FIFO, socket or device)")
        else:
            files.append(p)  # a file, a broken link or a name that does not exist: its row says which
            if not p.is_file():
                missing.append(p)
    if missing and len(missing) == len(files):
        raise FileNotFoundError(f"{missing[0]}: no such file or folder"
                                + (f" (nor {len(missing) - 1} other path(s) given)" if len(missing) > 1 else ""))
    if not files:
        raise DataError("no image files found in " + ", ".join(map(str, paths)))
    return files


class Predictor:
    """A model restored from a checkpoint prefix, a checkpoint folder or a run directory.

    For a run directory the best checkpoint (by the validation metric) is used, else the
    latest. A checkpoint that cannot be restored (damaged files) is skipped with a warning
    naming it, for the next candidate (:func:`~graphcnn.checkpoints.checkpoint_candidates`:
    a run's other best, then its latest checkpoints newest first); a checkpoint prefix named
    directly has no fallback. A subclass adds its own ops to the restored graph in
    :meth:`_add_outputs` (:class:`~graphcnn.explain.Explainer`: Grad-CAM's).

    ``precision``: ``float32`` runs the forward pass as it was saved; ``mixed_bfloat16`` in
    bfloat16 as mixed-precision training computes it (probabilities differ from float32's in
    the second or third decimal); ``auto`` picks bfloat16 where ``train.precision = auto``
    would (:func:`~graphcnn.model.precision.resolve_precision`). ``graphcnn predict`` uses
    ``auto``.

    ``test_time_flip``: :attr:`probabilities` are the mean of each image's and its mirror
    image's (the forward pass runs on both); ``None`` (default) does as the run was trained to
    evaluate (``model.test_time_flip``, recorded in ``preprocessing.json``).
    """

    def __init__(self, checkpoint: str | Path, prefer_best: bool = True, precision: str = "float32",
                 test_time_flip: bool | None = None):
        self.precision = resolve_precision(precision)
        self._flip_wanted = test_time_flip
        load_first(checkpoint, self._load, prefer_best)

    def _load(self, checkpoint: Path) -> None:
        """Import ``checkpoint``'s meta graph and restore it; on failure nothing stays open."""
        self.checkpoint = checkpoint
        self.preprocessing, mean = Preprocessing.load(self.checkpoint.parent)
        size = self.input_size
        self.meta_graph = serving_meta_graph(checkpoint)
        self.graph = tf.Graph()
        with self.graph.as_default():
            with tf.name_scope("predict_input"):
                self._path = v1.placeholder(tf.string, [], name="path")
                turn = self.preprocessing.exif_transpose  # JPEGs upright by their EXIF orientation, as trained
                self._single, *self._single_info = scan.decode_with_info(tf.io.read_file(self._path), *size, turn)
                # uint8 [N, H, W, C] at the model's size: defaults to the decoded file, or feed a decoded batch
                self._fit = v1.placeholder_with_default(self._single[None], [None, *size], name="fit_images")
                self._decoded = preprocess(self._fit, *size, mean)
                # float32 [N, H, W, C]: defaults to the above, or feed preprocessed images;
                # the batch dimension stays None, as the imported graph expects
                self.images = v1.placeholder_with_default(self._decoded, [None, *size], name="images")
                # uint8 [N, h, w, 1|3] of any size -> the model's size and channels
                self._raw = v1.placeholder(tf.uint8, [None, None, None, None], name="raw_images")
                self._raw_fit = {c: fit_images(tf.ensure_shape(self._raw, [None, None, None, c]), *size)
                                 for c in (1, 3)}
                # many files: decoded in a parallel map (input order kept), the failures left out
                self._paths = v1.placeholder(tf.string, [None], name="paths")
                self._batch_size = v1.placeholder(tf.int64, [], name="batch_size")
                files = (tf.data.Dataset.from_tensor_slices((tf.range(tf.size(self._paths)), self._paths))
                         .map(lambda i, p: (i, *scan.decode_with_info(tf.io.read_file(p), *size, turn)),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                         .ignore_errors()
                         .batch(self._batch_size)
                         .prefetch(1))
                files = files.with_options(no_autotune())
                iterator = v1.data.make_initializable_iterator(files)
                self._files_init, self._next_files = iterator.initializer, iterator.get_next()
            self.test_time_flip = (self.preprocessing.test_time_flip if self._flip_wanted is None
                                   else self._flip_wanted)
            model_input = self.images
            if self.test_time_flip:  # one forward pass over the images and their mirror images
                model_input = tf.concat([self.images, tf.reverse(self.images, [2])], 0, name="test_time_flip")
            saver = v1.train.import_meta_graph(str(self.meta_graph), clear_devices=True,
                                               input_map={"input/images:0": model_input})
            self.probabilities = self.graph.get_tensor_by_name("output/probabilities:0")
            if self.test_time_flip:
                with tf.name_scope("test_time_flip_mean"):
                    self.probabilities = tf.reduce_mean(tf.stack(tf.split(self.probabilities, 2)), axis=0)
            self._add_outputs()
            self.sess = v1.Session(graph=self.graph, config=inference_session_config(self.precision))
            try:
                saver.restore(self.sess, str(self.checkpoint))
            except BaseException:
                self.sess.close()
                raise
        self.graph.finalize()

    def _add_outputs(self) -> None:
        """A subclass's ops on the imported graph, before it is finalized (raise to reject the model)."""

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(height, width, channels) of the model's input."""
        p = self.preprocessing
        return p.input_height, p.input_width, p.channels

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.preprocessing.class_names

    def close(self) -> None:
        self.sess.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fit_arrays(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, h, w, 1|3] (any size) -> uint8 [N, H, W, C] of the model's input size and
        channels (:func:`~graphcnn.data.pipeline.fit_images`, as training fits them)."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.shape[1:] == self.input_size:
            return images
        return self.sess.run(self._raw_fit[1 if images.shape[-1] == 1 else 3], {self._raw: images})

    def preprocess_arrays(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, h, w, 1|3] (any size) -> float32 [N, H, W, C] as ``input/images`` wants."""
        return self.sess.run(self._decoded, {self._fit: self.fit_arrays(images)})

    def probabilities_for(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """float32 [N, K] for preprocessed float32 [N, H, W, C] images."""
        out = [self.sess.run(self.probabilities, {self.images: images[i:i + batch_size]})
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

    def predict_files(self, files: Sequence[str | Path], top_k: int = 3, batch_size: int = 64
                      ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Predictions for image files, and (file, error) for each file that could not be read."""
        result = self.run_files(files, top_k, batch_size)
        return result.predictions, result.errors

    def run_files(self, files: Sequence[str | Path], top_k: int = 3, batch_size: int = 64,
                  split_timing: bool = False) -> FileResults:
        """Predict image files: decoded in parallel and batched (one file: decoded and predicted
        in one ``Session.run``, unless ``split_timing`` asks for the decode time on its own). A
        file the decoder would crash on or misread gets its error row, undecoded
        (:func:`graphcnn.data.formats.refused_files`)."""
        names = [str(f) for f in files]
        refused = formats.refused_files(names)
        if not refused:
            return self._run_files(names, top_k, batch_size, split_timing)
        result = self._run_files([f for f in names if f not in refused], top_k, batch_size, split_timing)
        done = {row[0]: row for row in result.rows}
        result.rows = [done[f] if f in done else (f, None, refused[f]) for f in names]
        return result

    def _run_files(self, names: list[str], top_k: int, batch_size: int, split_timing: bool) -> FileResults:
        result = FileResults()
        if len(names) == 1 and not split_timing:  # the usual CLI call: one graph pruning, not two
            start = time.perf_counter()
            try:
                probs, *info = self.sess.run([self.probabilities, *self._single_info],
                                             {self._path: os.fsencode(names[0])})
            except tf.errors.OpError as err:
                result.rows.append((names[0], None, scan.describe_failure(names[0], err.message)))
            else:
                result.images[names[0]] = scan.image_info(*info)
                result.rows.append((names[0], self._to_predictions(names, probs, top_k)[0], None))
            result.predict_seconds = time.perf_counter() - start
            return result
        found: dict[int, Prediction] = {}
        if names:
            # bytes: the file system's names, UTF-8 or not
            self.sess.run(self._files_init, {self._paths: [os.fsencode(n) for n in names],
                                             self._batch_size: batch_size})
        while names:
            start = time.perf_counter()
            try:
                index, images, *info = self.sess.run(self._next_files)
            except tf.errors.OutOfRangeError:
                break
            middle = time.perf_counter()
            probs = self.sess.run(self.probabilities, {self._fit: images})
            result.decode_seconds += middle - start
            result.predict_seconds += time.perf_counter() - middle
            batch = [names[i] for i in index]
            for i, prediction in zip(index, self._to_predictions(batch, probs, top_k)):
                found[int(i)] = prediction
            for f, *one in zip(batch, *info):
                result.images[f] = scan.image_info(*one)
        for i, f in enumerate(names):
            result.rows.append((f, found[i], None) if i in found else (f, None, self._why_unreadable(f)))
        return result

    def _why_unreadable(self, path: str) -> str:
        """The decoder's own words for a file the pipeline left out (decoded again, alone)."""
        try:
            self.sess.run(self._single, {self._path: os.fsencode(path)})
        except tf.errors.OpError as err:
            return scan.describe_failure(path, err.message)
        return "could not be read while predicting (it reads now: changed meanwhile?)"

    def _to_predictions(self, files: list[str], probs: np.ndarray, top_k: int) -> list[Prediction]:
        names = self.class_names
        result = []
        for f, p in zip(files, probs):
            order = np.argsort(-p)[: max(1, min(top_k, len(names)))]
            result.append(Prediction(f, names[order[0]], float(p[order[0]]),
                                     tuple((names[i], float(p[i])) for i in order)))
        return result
