"""Restore a checkpoint and predict, from the checkpoint alone.

:class:`Predictor` imports a saved meta graph (``import_meta_graph``) and restores the
weights: no network code runs, so any checkpoint graphcnn wrote can be served even if the
config that built it is gone. It prefers ``inference.meta`` (the forward pass alone, written
beside every run's checkpoints) to the checkpoint's own ``.meta`` (the whole training graph),
and wires file decoding into ``input/images`` with ``input_map``, so a single file goes
from path to probabilities in one ``Session.run``: both matter for a cold start
(BENCHMARKS.md). Preprocessing parameters come from ``preprocessing.json`` next to the
checkpoint. The same names are what a plain TensorFlow script uses (README).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from graphcnn.data.pipeline import Preprocessing, decode_file, preprocess
from graphcnn.data.scan import clean_message
from graphcnn.train.checkpoints import INFERENCE_META, resolve_checkpoint

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.predict")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass(frozen=True)
class Prediction:
    file: str
    class_name: str
    probability: float
    top_k: tuple[tuple[str, float], ...]  # (class name, probability), most probable first


def collect_image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Image files named directly, or found (recursively, sorted) in the folders named."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


class Predictor:
    """A model restored from a checkpoint prefix, a checkpoint folder or a run directory.

    For a run directory the best checkpoint (by validation accuracy) is used, else the latest.
    """

    def __init__(self, checkpoint: str | Path, prefer_best: bool = True):
        self.checkpoint = resolve_checkpoint(checkpoint, prefer_best)
        self.preprocessing, mean = Preprocessing.load(self.checkpoint.parent)
        p = self.preprocessing
        size = (p.input_height, p.input_width, p.channels)
        lean = self.checkpoint.parent / INFERENCE_META
        self.meta_graph = lean if lean.exists() else Path(str(self.checkpoint) + ".meta")
        self.graph = tf.Graph()
        with self.graph.as_default():
            with tf.name_scope("predict_input"):
                self._path = v1.placeholder(tf.string, [], name="path")
                self._decoded = preprocess(decode_file(self._path, *size)[None], *size, mean)
                # float32 [N, H, W, C]: defaults to the decoded file, or feed preprocessed images;
                # the batch dimension stays None, as the imported graph expects
                self.images = v1.placeholder_with_default(self._decoded, [None, *size], name="images")
                self._raw = v1.placeholder(tf.uint8, [None, None, None, None], name="raw_images")
                self._raw_1 = preprocess(tf.ensure_shape(self._raw, [None, None, None, 1]), *size, mean)
                self._raw_3 = preprocess(tf.ensure_shape(self._raw, [None, None, None, 3]), *size, mean)
            saver = v1.train.import_meta_graph(str(self.meta_graph), clear_devices=True,
                                               input_map={"input/images:0": self.images})
            self.probabilities = self.graph.get_tensor_by_name("output/probabilities:0")
            self.sess = v1.Session(graph=self.graph)
            saver.restore(self.sess, str(self.checkpoint))
        self.graph.finalize()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.preprocessing.class_names

    def close(self) -> None:
        self.sess.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def preprocess_arrays(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, h, w, 1|3] (any size) -> float32 [N, H, W, C] as ``input/images`` wants."""
        if images.ndim == 3:
            images = images[..., None]
        out = self._raw_1 if images.shape[-1] == 1 else self._raw_3
        return self.sess.run(out, {self._raw: images})

    def probabilities_for(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """float32 [N, K] for preprocessed float32 [N, H, W, C] images."""
        out = [self.sess.run(self.probabilities, {self.images: images[i:i + batch_size]})
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

    def predict_files(self, files: Sequence[str | Path], top_k: int = 3, batch_size: int = 64
                      ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Predictions for image files, and (file, error) for each file that could not be read."""
        predictions: list[Prediction] = []
        errors: list[tuple[str, str]] = []
        names = [str(f) for f in files]
        # one file, the usual CLI call: decode and forward in one run (one graph pruning, not two)
        single = len(names) == 1
        for i in range(0, len(names), batch_size):
            good, rows = [], []
            for f in names[i:i + batch_size]:
                try:
                    rows.append(self.sess.run(self.probabilities if single else self._decoded, {self._path: f}))
                    good.append(f)
                except tf.errors.OpError as err:
                    errors.append((f, clean_message(err.message)))
            if rows:
                probs = rows[0] if single else self.probabilities_for(np.concatenate(rows))
                predictions.extend(self._to_predictions(good, probs, top_k))
        return predictions, errors

    def _to_predictions(self, files: list[str], probs: np.ndarray, top_k: int) -> list[Prediction]:
        names = self.class_names
        result = []
        for f, p in zip(files, probs):
            order = np.argsort(-p)[: max(1, min(top_k, len(names)))]
            result.append(Prediction(f, names[order[0]], float(p[order[0]]),
                                     tuple((names[i], float(p[i])) for i in order)))
        return result
