"""TensorBoard views of a training run, beyond scalars, weights and filters.

Everything has a :class:`~graphcnn.config.LogConfig` switch (0/False = off), and nothing
adds work to a step that does not log:

* ``gradients/<variable>`` histograms and ``activations/<layer>`` histograms plus
  ``sparsity/<layer>`` (fraction of exact zeros, i.e. dead ReLU units on that batch):
  in-graph summaries fetched with the train step every N steps (explicit tags);
* ``feature_maps/<layer>``: a fixed probe batch of validation images (``probe.npz``) run
  through the network (inference mode) every N steps, each conv/pool output as a grid;
* at each validation (``validation/`` run): ``confusion_matrix`` (image),
  ``confusion_matrix_text`` (markdown), ``misclassified`` (the most confident mistakes,
  captioned ``true>predicted``) with ``misclassified_text``, and ``pr_curves/<class>``;
* (the trainer itself traces the real train step every ``log.trace_every`` steps and
  attaches it as run metadata ``step<N>`` to the graph of ``train/``);
* once, in the run root: a custom-scalars layout (loss and accuracy of ``train`` and
  ``validation`` in one chart each) and the HParams record (flattened config);
* at the end: the projector (``projector/``: penultimate features of validation images as a
  checkpointed variable, ``metadata.tsv``, ``sprite.png``, ``projector_config.pbtxt``).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import tensorflow as tf

from graphcnn.config import Config, to_dict
from graphcnn.data.sources import Dataset, Split
from graphcnn.model.network import resolve_layer_names
from graphcnn.train.hooks import Hook, due
from graphcnn.train.summaries import PngImage, histogram_summary, png_summary, text_summary
from graphcnn.viz import bitmap
from graphcnn.viz.grids import activation_grid

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.train")

MAX_PR_CLASSES = 20
PR_THRESHOLDS = 51
FEATURE_MAP_MIN_HEIGHT = 96
# activation histograms bucket the first images of the batch only: 16 images give the same
# distribution shape at an eighth of the cost of a 128-image batch
ACTIVATION_HISTOGRAM_IMAGES = 16


# ----------------------------------------------------------------------------- graph ops


class ViewOps(NamedTuple):
    gradients: tf.Tensor | None  # merged gradients/<variable> histograms
    activations: tf.Tensor | None  # merged activations/<layer> histograms + sparsity/<layer> scalars
    feature_maps: dict[str, PngImage]  # "feature_maps/<layer>" -> PNG of the probe batch side by side


def layer_kinds(config: Config) -> dict[str, str]:
    kinds = {layer.name: layer.type for layer in resolve_layer_names(config.model.layers)}
    kinds["logits"] = "dense"
    return kinds


def _upscale(image: tf.Tensor, factor: int) -> tf.Tensor:
    if factor <= 1:
        return image
    _, h, w, c = image.shape.as_list()
    image = tf.broadcast_to(tf.reshape(image, [1, h, 1, w, 1, c]), [1, h, factor, w, factor, c])
    return tf.reshape(image, [1, h * factor, w * factor, c])


def build_view_ops(config: Config, g, probe_count: int) -> ViewOps:
    """Summary ops of the views (call in the graph-building phase, after build_graph)."""
    cfg = config.log
    kinds = layer_kinds(config)
    gradients = activations = None
    feature_maps: dict[str, PngImage] = {}
    with tf.name_scope("summaries/"):  # re-enter the scope of build_summary_ops
        if cfg.gradients_every > 0 and g.gradients:
            with tf.name_scope("gradients"):
                gradients = v1.summary.merge([histogram_summary(f"gradients/{var.op.name}", grad)
                                              for grad, var in g.gradients])
        if cfg.activations_every > 0:
            ops = []
            with tf.name_scope("activations"):
                for name, tensor in g.net.end_points.items():
                    if kinds.get(name) in ("dropout", "flatten"):
                        continue
                    ops.append(histogram_summary(f"activations/{name}", tensor[:ACTIVATION_HISTOGRAM_IMAGES]))
                    if name != "logits" and kinds.get(name) in ("conv", "dense", "pool", "global_avg_pool"):
                        zeros = tf.reduce_mean(tf.cast(tf.equal(tensor, 0.0), tf.float32))
                        ops.append(tf.raw_ops.ScalarSummary(tags=f"sparsity/{name}", values=zeros, name="sparsity"))
            activations = v1.summary.merge(ops) if ops else None
        if cfg.feature_maps_every > 0 and probe_count > 0:
            for name, tensor in g.net.end_points.items():
                if kinds.get(name) not in ("conv", "pool") or tensor.shape.rank != 4 \
                        or not tensor.shape[1:].is_fully_defined():
                    continue
                with tf.name_scope(f"feature_maps_{name}"):
                    grid = activation_grid(tf.cast(tensor, tf.float32))  # [B, H, W, 1]
                    _, h, w, c = grid.shape.as_list()
                    # the probe images left to right; concat, not a uint8 transpose (which oneDNN
                    # logs an error for on every run, then leaves to Eigen)
                    side_by_side = tf.concat(tf.unstack(grid, num=probe_count), axis=1)[tf.newaxis]
                    factor = min(4, max(1, math.ceil(FEATURE_MAP_MIN_HEIGHT / h)))
                    image = _upscale(side_by_side, factor)
                    feature_maps[f"feature_maps/{name}"] = PngImage(
                        tf.io.encode_png(image[0]), h * factor, probe_count * w * factor, c)
    return ViewOps(gradients, activations, feature_maps)


# ------------------------------------------------------------------------- summaries


# zlib level of the PNGs written at every validation: level 1 encodes the confusion matrix and
# the mistakes grid about 3x faster than level 6, for a few KB more per validation
VIEW_PNG_LEVEL = 1


def image_summary(tag: str, image: np.ndarray, level: int = VIEW_PNG_LEVEL) -> v1.Summary:
    """A Summary with a numpy uint8 image under exactly ``tag``."""
    image = bitmap.to_rgb(image) if image.ndim == 2 or image.shape[-1] not in (1, 3) else image
    h, w, c = image.shape
    return png_summary(tag, bitmap.png_bytes(image, level), h, w, c)


def pr_curve_counts(labels: np.ndarray, probabilities: np.ndarray, num_thresholds: int = PR_THRESHOLDS
                    ) -> np.ndarray:
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


@functools.lru_cache(maxsize=1024)
def _pr_metadata(tag: str, num_thresholds: int) -> v1.SummaryMetadata:
    from tensorboard.plugins.pr_curve import metadata as pr_metadata

    meta = pr_metadata.create_summary_metadata(display_name=tag, description="", num_thresholds=num_thresholds)
    return v1.SummaryMetadata.FromString(meta.SerializeToString())


def pr_curve_summary(tag: str, data: np.ndarray) -> v1.Summary:
    """One pr_curves plugin summary under exactly ``tag``; ``data`` float32 [6, T], a row of
    :func:`pr_curve_counts`."""
    value = v1.Summary.Value(tag=tag, metadata=_pr_metadata(tag, data.shape[-1]))
    # the TensorProto filled directly: tf.make_tensor_proto's checks cost more than the counting
    value.tensor.dtype = tf.float32.as_datatype_enum
    value.tensor.tensor_shape.dim.extend(v1.TensorShape(data.shape).as_proto().dim)
    value.tensor.tensor_content = np.ascontiguousarray(data, np.float32).tobytes()
    return v1.Summary(value=[value])


def confusion_markdown(matrix: np.ndarray, class_names) -> str:
    names = [str(n) for n in class_names]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, matrix):
        lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines)


_PLUMBING = {"checkpoints_to_keep", "checkpoint_every_steps", "check_numerics", "eval_every_steps", "skip_mismatched",
             "init_from", "early_stopping.monitor", "early_stopping.restore_best", "early_stopping.min_delta"}


def flat_hparams(config: Config) -> dict[str, Any]:
    """The run's hyperparameters for the HParams dashboard: train.* scalars without the ``train.``
    prefix (learning_rate, batch_size, optimizer, epochs, keep_rates.fc, schedule.name ...),
    preset, model, and the augmentation settings that differ from the defaults."""
    from graphcnn.config import AugmentConfig

    out: dict[str, Any] = {"preset": config.preset, "model.name": config.model.name,
                           "model.initializer": config.model.initializer, "model.layers": len(config.model.layers)}

    def walk(prefix: str, value: Any, into: dict[str, Any]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v, into)
        elif isinstance(value, (bool, int, float, str)) and prefix not in _PLUMBING:
            into[prefix] = value

    walk("", to_dict(config.train), out)
    augment, default = {}, {}
    walk("augment", to_dict(config.data.augment), augment)
    walk("augment", to_dict(AugmentConfig()), default)
    out.update({k: v for k, v in augment.items() if default.get(k) != v})
    if config.data.mean_subtraction:
        out["mean_subtraction"] = True
    return out


def write_run_root_summaries(config: Config, root: Path) -> None:
    """Once per run: the custom-scalars layout and the HParams record, in the run root's own events."""
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as cs_summary
    from tensorboard.plugins.hparams import summary_v2 as hp

    if not (config.log.custom_scalars or config.log.hparams):
        return
    writer = v1.summary.FileWriter(str(root), graph=None)
    try:
        if config.log.custom_scalars:
            def chart(title, regex):
                return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[regex]))

            layout = layout_pb2.Layout(category=[
                layout_pb2.Category(title="train vs validation", chart=[
                    chart("loss (train, validation)", r"^loss$"),
                    chart("accuracy (train, validation)", r"^(accuracy|test_accuracy)$")]),
                layout_pb2.Category(title="training", closed=True, chart=[
                    chart("learning rate", r"^learning_rate$"), chart("images per second", r"^images_per_second$"),
                    chart("ReLU sparsity (fraction of zeros)", r"^sparsity/")]),
            ])
            writer.add_summary(cs_summary.pb(layout).SerializeToString(), 0)
        if config.log.hparams:
            params = flat_hparams(config)
            metrics = [hp.Metric(tag, group=group, display_name=f"{group} {tag}")
                       for group, tag in (("validation", "accuracy"), ("validation", "loss"),
                                          ("validation", "test_accuracy"), ("train", "accuracy"), ("train", "loss"))]
            writer.add_summary(hp.hparams_config_pb([hp.HParam(k) for k in params], metrics)
                               .SerializeToString(), 0)
            writer.add_summary(hp.hparams_pb(params, trial_id=root.name, start_time_secs=time.time())
                               .SerializeToString(), 0)
    finally:
        writer.close()


# ----------------------------------------------------------------------------- hooks


def _subset(split: Split, indices: np.ndarray) -> Split:
    indices = np.asarray(indices, np.int64)
    if split.images is not None:
        return Split(labels=split.labels[indices], images=split.images[indices])
    return Split(labels=split.labels[indices], paths=tuple(split.paths[i] for i in indices))


def _preprocessed(sess, pipeline, split: Split) -> np.ndarray:
    batches = [images for images, _ in pipeline.eval_batches(sess, split)]
    return np.concatenate(batches) if batches else np.zeros((0,))


class FeatureMapHook(Hook):
    """Every N steps (and at step 1) run the probe batch and write ``feature_maps/<layer>``."""

    def __init__(self, sess, images: Mapping[str, PngImage], feed: dict, every: int, writer):
        self.sess, self.images, self.feed, self.every, self.writer = sess, dict(images), feed, every, writer

    def after_step(self, step: int, results: Mapping[str, Any]) -> None:
        if not self.images or not due(step, self.every):
            return
        values = self.sess.run({tag: image.png for tag, image in self.images.items()}, self.feed)
        for tag, image in self.images.items():
            self.writer.add_summary(png_summary(tag, values[tag], image.height, image.width, image.channels), step)


class EvalViewsHook(Hook):
    """At each validation: confusion matrix, most confident mistakes, per-class PR curves."""

    def __init__(self, config: Config, sess, g, pipeline, split: Split, class_names, writer):
        self.cfg, self.sess, self.g, self.pipeline, self.split = config.log, sess, g, pipeline, split
        self.class_names, self.writer = tuple(class_names), writer

    def after_validation(self, step: int, result) -> None:
        k = len(self.class_names)
        if self.cfg.eval_images:
            matrix = result.confusion(k)
            self.writer.add_summary(image_summary("confusion_matrix", bitmap.confusion_image(matrix, self.class_names)), step)
            self.writer.add_summary(text_summary("confusion_matrix_text", confusion_markdown(matrix, self.class_names)), step)
            self._misclassified(step, result)
        if self.cfg.pr_curves and k >= 2:
            shown = min(k, MAX_PR_CLASSES)
            data = pr_curve_counts(result.labels, result.probabilities[:, :shown])
            for c in range(shown):
                self.writer.add_summary(pr_curve_summary(f"pr_curves/{self.class_names[c]}", data[c]), step)

    def _misclassified(self, step: int, result) -> None:
        wrong = np.flatnonzero(result.labels != result.predictions)
        if self.cfg.max_misclassified <= 0:
            return
        if len(wrong) == 0:
            self.writer.add_summary(text_summary("misclassified_text", "no misclassified validation images"), step)
            return
        confidence = result.probabilities[wrong, result.predictions[wrong]]
        worst = wrong[np.argsort(-confidence, kind="stable")[: self.cfg.max_misclassified]]
        if self.split.images is not None:  # the arrays as loaded: no pass through the input pipeline
            images = self.split.images[worst]
        else:
            images = bitmap.normalize_images(_preprocessed(self.sess, self.pipeline, _subset(self.split, worst)))
        names = self.class_names
        captions = [f"{names[result.labels[i]][:5]}>{names[result.predictions[i]][:5]}" for i in worst]
        self.writer.add_summary(image_summary("misclassified", bitmap.labelled_grid(images, captions)), step)
        rows = ["| # | validation index | true | predicted | p(predicted) | p(true) |", "|---|---|---|---|---|---|"]
        for n, i in enumerate(worst):
            rows.append(f"| {n + 1} | {i} | {names[result.labels[i]]} | {names[result.predictions[i]]} | "
                        f"{result.probabilities[i, result.predictions[i]]:.3f} | "
                        f"{result.probabilities[i, result.labels[i]]:.3f} |")
        text = (f"{len(wrong)} of {result.count} validation images misclassified; the most confident mistakes "
                "(grid in reading order, captions true>predicted):\n\n" + "\n".join(rows))
        self.writer.add_summary(text_summary("misclassified_text", text), step)


class ProjectorHook(Hook):
    """At the end of training: penultimate features of validation images for the projector."""

    def __init__(self, sess, g, pipeline, split: Split, class_names, count: int, directory: Path):
        self.sess, self.g, self.pipeline, self.split = sess, g, pipeline, split
        self.class_names, self.count, self.directory = tuple(class_names), count, directory

    def end(self, step: int) -> None:
        try:
            export_projector(self.sess, self.g, self.pipeline, self.split, self.class_names, self.count,
                             self.directory, step)
        except Exception as err:  # never let a view break the end of training
            log.warning("projector export failed: %s", err)


def export_projector(sess, g, pipeline, split: Split, class_names, count: int, directory: Path, step: int) -> None:
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    n = min(count, len(split))
    if n == 0:
        return
    subset = _subset(split, np.arange(n))
    features, images, predictions = [], [], []
    for batch, _ in pipeline.eval_batches(sess, subset):
        f, c = sess.run([g.net.penultimate, g.classes], {g.inputs.images: batch})
        features.append(f.reshape(len(batch), -1))
        predictions.append(c)
        images.append(batch)
    features_np = np.concatenate(features).astype(np.float32)
    predictions_np = np.concatenate(predictions)
    directory.mkdir(parents=True, exist_ok=True)
    with tf.Graph().as_default():
        embedding = v1.Variable(features_np, name="embedding")
        saver = v1.train.Saver([embedding])
        with v1.Session() as s:
            s.run(embedding.initializer)
            saver.save(s, str(directory / "embedding.ckpt"), global_step=step)
    tiles = bitmap.normalize_images(np.concatenate(images))
    factor = max(1, math.ceil(max(tiles.shape[1:3]) / 64))  # sprite tiles <= 64 px
    tiles = tiles[:, ::factor, ::factor]
    side = math.ceil(math.sqrt(n))
    th, tw = tiles.shape[1:3]
    sprite = np.zeros((side * th, side * tw, tiles.shape[3]), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, side)
        sprite[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
    (directory / "sprite.png").write_bytes(bitmap.png_bytes(sprite))
    lines = ["label\tpredicted\tcorrect"] + [
        f"{class_names[t]}\t{class_names[p]}\t{'yes' if t == p else 'no'}"
        for t, p in zip(subset.labels, predictions_np)]
    (directory / "metadata.tsv").write_text("\n".join(lines) + "\n")
    config = projector_config_pb2.ProjectorConfig()
    emb = config.embeddings.add()
    emb.tensor_name = "embedding"
    emb.metadata_path = "metadata.tsv"
    emb.sprite.image_path = "sprite.png"
    emb.sprite.single_image_dim.extend([tw, th])
    (directory / "projector_config.pbtxt").write_text(text_format.MessageToString(config))
    writer = v1.summary.FileWriter(str(directory))  # an event file makes the folder a TensorBoard run
    writer.add_summary(text_summary("projector_info", f"{n} validation images, penultimate layer "
                                    f"({features_np.shape[1]} features), step {step}"), step)
    writer.close()
    log.info("projector: %d validation images' %s features in %s", n, features_np.shape[1], directory)


# --------------------------------------------------------------------------- wiring


class TensorBoardViews:
    """The trainer's entry point: ops at graph-building time, hooks once the session exists."""

    def __init__(self, config: Config, run, dataset: Dataset, g, pipeline):
        self.config, self.run, self.dataset, self.g, self.pipeline = config, run, dataset, g, pipeline
        self.eval_split = next((s for s in (dataset.validation, dataset.test, dataset.train) if len(s)), dataset.train)
        self.probe_count = min(config.log.probe_images, len(self.eval_split))
        self.ops = build_view_ops(config, g, self.probe_count)

    def _probe_indices(self) -> np.ndarray:
        path = self.run.root / "probe.npz"
        if path.exists():
            with np.load(path) as saved:
                indices = saved["indices"]
            if len(indices) == self.probe_count and indices.max(initial=-1) < len(self.eval_split):
                return indices
        labels = self.eval_split.labels
        chosen: list[int] = []
        for c in np.unique(labels):  # one per class first, then the following images
            chosen.append(int(np.flatnonzero(labels == c)[0]))
        chosen = sorted(chosen[: self.probe_count])
        rest = [i for i in range(len(labels)) if i not in chosen]
        return np.array(sorted(chosen + rest[: self.probe_count - len(chosen)]), np.int64)

    def hooks(self, sess, train_writer, val_writer, resumed: bool) -> list[Hook]:
        cfg, g = self.config.log, self.g
        if not resumed:
            write_run_root_summaries(self.config, self.run.root)
        hooks: list[Hook] = []
        from graphcnn.train.hooks import PeriodicSummaryHook

        if self.ops.gradients is not None:
            hooks.append(PeriodicSummaryHook("view_gradients", self.ops.gradients, cfg.gradients_every, train_writer))
        if self.ops.activations is not None:
            hooks.append(PeriodicSummaryHook("view_activations", self.ops.activations, cfg.activations_every,
                                             train_writer))
        if self.ops.feature_maps:
            indices = self._probe_indices()
            probe = _subset(self.eval_split, indices)
            images = _preprocessed(sess, self.pipeline, probe)
            np.savez(self.run.root / "probe.npz", indices=indices, labels=probe.labels, preprocessed=images,
                     **({"images": probe.images} if probe.images is not None else {}))
            hooks.append(FeatureMapHook(sess, self.ops.feature_maps, {g.inputs.images: images},
                                        cfg.feature_maps_every, train_writer))
        if (cfg.eval_images or cfg.pr_curves) and len(self.dataset.validation):
            hooks.append(EvalViewsHook(self.config, sess, g, self.pipeline, self.dataset.validation,
                                       self.dataset.class_names, val_writer))
        if cfg.projector_images > 0:
            hooks.append(ProjectorHook(sess, g, self.pipeline, self.eval_split, self.dataset.class_names,
                                       cfg.projector_images, self.run.root / "projector"))
        return hooks
