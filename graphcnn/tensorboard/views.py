"""Validation views, from a validation pass's arrays to Summary protos, and the projector export.

At each validation (the ``validation/`` run): ``confusion_matrix`` (image) and
``confusion_matrix_text`` (markdown), ``misclassified`` (the most confident mistakes,
captioned ``true>predicted``) with ``misclassified_text``, and ``pr_curves/<class>``. At the
end of training, the projector, in the ``train/`` run's own folder (penultimate features of
validation images: ``projector_config.pbtxt``, ``projector_features.tsv``,
``projector_metadata.tsv``, ``projector_sprite.png``).
Nothing here runs the graph: the training hooks fetch the arrays and hand them in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from graphcnn.tensorboard.writing import image_summary, pr_curve_summary, text_summary
from graphcnn.viz import images as viz_images

v1 = tf.compat.v1

MAX_PR_CLASSES = 20
PR_THRESHOLDS = 51


def pr_curve_counts(labels: np.ndarray, probabilities: np.ndarray, num_thresholds: int = PR_THRESHOLDS) -> np.ndarray:
    """One-vs-rest PR data of every class at once, as the pr_curves plugin stores it.

    ``labels`` int [N], ``probabilities`` float [N, K] -> float32 [K, 6, num_thresholds]: rows
    tp, fp, tn, fn, precision, recall, where threshold i counts the scores >= i / (T - 1).
    """
    k = probabilities.shape[1]
    buckets = np.clip(np.floor(np.asarray(probabilities, np.float64) * (num_thresholds - 1)), 0,
                      num_thresholds - 1).astype(np.int64)
    flat = buckets + np.arange(k) * num_thresholds  # [N, K]: class c's bucket, offset by c * T
    positive = np.asarray(labels)[:, None] == np.arange(k)
    pos = np.bincount(flat[positive], minlength=k * num_thresholds).reshape(k, num_thresholds).astype(np.float64)
    neg = np.bincount(flat[~positive], minlength=k * num_thresholds).reshape(k, num_thresholds).astype(np.float64)
    tp, fp = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1], np.cumsum(neg[:, ::-1], axis=1)[:, ::-1]
    fn, tn = pos.sum(axis=1, keepdims=True) - tp, neg.sum(axis=1, keepdims=True) - fp
    precision = tp / np.maximum(1e-7, tp + fp)
    recall = tp / np.maximum(1e-7, tp + fn)
    return np.stack([tp, fp, tn, fn, precision, recall], axis=1).astype(np.float32)


def confusion_markdown(matrix: np.ndarray, class_names) -> str:
    names = [str(n) for n in class_names]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, matrix):
        lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines)


def confusion_summaries(matrix: np.ndarray, class_names: Sequence[str]) -> list[v1.Summary]:
    """``confusion_matrix`` (image) and ``confusion_matrix_text`` of an int [K, K] matrix."""
    return [image_summary("confusion_matrix", viz_images.confusion_image(matrix, class_names)),
            text_summary("confusion_matrix_text", confusion_markdown(matrix, class_names))]


def pr_curve_summaries(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> list[v1.Summary]:
    """``pr_curves/<class>`` for the first :data:`MAX_PR_CLASSES` classes (none for one class)."""
    if len(class_names) < 2:
        return []
    shown = min(len(class_names), MAX_PR_CLASSES)
    data = pr_curve_counts(labels, probabilities[:, :shown])
    return [pr_curve_summary(f"pr_curves/{class_names[c]}", data[c]) for c in range(shown)]


def misclassified_summaries(labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray,
                            class_names: Sequence[str], images_of: Callable[[np.ndarray], np.ndarray],
                            max_images: int) -> list[v1.Summary]:
    """The most confident mistakes as a captioned grid (``misclassified``) and a table
    (``misclassified_text``). ``images_of(indices)`` -> uint8 [n, h, w, c] of those images."""
    wrong = np.flatnonzero(labels != predictions)
    if max_images <= 0:
        return []
    if len(wrong) == 0:  # an image too: the tag's newest would otherwise be an older step's mistakes
        text = f"no misclassified validation images ({len(labels)} of {len(labels)} right)"
        blank = viz_images.caption_image(np.full((16, 320, 3), 255, np.uint8), text, min_side=320)
        return [image_summary("misclassified", blank), text_summary("misclassified_text", text)]
    confidence = probabilities[wrong, predictions[wrong]]
    worst = wrong[np.argsort(-confidence, kind="stable")[:max_images]]
    names = class_names
    captions = [f"{names[labels[i]]}>{names[predictions[i]]}" for i in worst]
    rows = ["| # | validation index | true | predicted | p(predicted) | p(true) |", "|---|---|---|---|---|---|"]
    for n, i in enumerate(worst):
        rows.append(f"| {n + 1} | {i} | {names[labels[i]]} | {names[predictions[i]]} | "
                    f"{probabilities[i, predictions[i]]:.3f} | {probabilities[i, labels[i]]:.3f} |")
    text = (f"{len(wrong)} of {len(labels)} validation images misclassified; the most confident mistakes "
            "(grid in reading order, captions true>predicted):\n\n" + "\n".join(rows))
    return [image_summary("misclassified", viz_images.labelled_grid(images_of(worst), captions)),
            text_summary("misclassified_text", text)]


PROJECTOR_TENSOR = "penultimate"
# the projector's files, in the train/ run's own folder (TensorBoard reads projector_config.pbtxt there)
PROJECTOR_FILES = ("projector_config.pbtxt", "projector_features.tsv", "projector_metadata.tsv", "projector_sprite.png")


def projector_label(name) -> str:
    """A class name as the projector's metadata shows it: ``class 3`` for a number (the
    projector labels points by the first column that is not numeric, and colours numbers as
    a gradient), the name itself otherwise; tabs and newlines become spaces."""
    text = " ".join(str(name).split())
    try:
        float(text)
    except ValueError:
        return text
    return f"class {text}"


def export_projector(directory: Path, features: np.ndarray, images: np.ndarray, labels: np.ndarray,
                     predictions: np.ndarray, class_names: Sequence[str], step: int) -> None:
    """Write the projector files for ``features`` float [N, D] of ``images`` (any dtype
    [N, H, W, C], normalized per image for the sprite), their labels and predictions int [N].

    ``directory`` is a TensorBoard run's folder (the ``train/`` run): the features as a TSV
    tensor file (``projector_features.tsv``, 5 significant digits), ``projector_metadata.tsv``,
    ``projector_sprite.png`` and ``projector_config.pbtxt`` naming them by relative paths.
    No checkpoint: TensorBoard reads a tensor file without TensorFlow, and the run's folder
    gets no ``checkpoint`` file or variables.
    """
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    n, dims = len(features), int(np.prod(features.shape[1:]))
    directory.mkdir(parents=True, exist_ok=True)
    np.savetxt(directory / "projector_features.tsv", np.asarray(features, np.float32).reshape(n, dims), fmt="%.5g",
               delimiter="\t")
    factor = max(1, math.ceil(max(images.shape[1:3]) / 64))  # sprite tiles <= 64 px
    tiles = viz_images.normalize_images(images, step=factor)
    side = math.ceil(math.sqrt(n))
    th, tw = tiles.shape[1:3]
    grid = np.zeros((side * side, *tiles.shape[1:]), np.uint8)  # row-major, the empty cells black
    grid[:n] = tiles
    sprite = grid.reshape(side, side, th, tw, -1).transpose(0, 2, 1, 3, 4).reshape(side * th, side * tw, -1)
    viz_images.write_png(directory / "projector_sprite.png", sprite)
    names = [projector_label(name) for name in class_names]
    lines = ["label\tpredicted\tcorrect"] + [
        f"{names[t]}\t{names[p]}\t{'yes' if t == p else 'no'}" for t, p in zip(labels, predictions)]
    (directory / "projector_metadata.tsv").write_text("\n".join(lines) + "\n")
    config = projector_config_pb2.ProjectorConfig(embeddings=[projector_config_pb2.EmbeddingInfo(
        tensor_name=PROJECTOR_TENSOR, tensor_path="projector_features.tsv", tensor_shape=[n, dims],
        metadata_path="projector_metadata.tsv",
        sprite=projector_config_pb2.SpriteMetadata(image_path="projector_sprite.png", single_image_dim=[tw, th]))])
    # the config last: TensorBoard sees the projector once the files it names are complete
    partial = directory / "projector_config.pbtxt.partial"
    partial.write_text(f"# {n} validation images, penultimate layer ({dims} features), step {step}\n"
                          + text_format.MessageToString(config))
    partial.replace(directory / "projector_config.pbtxt")
