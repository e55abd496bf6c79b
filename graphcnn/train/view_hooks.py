"""The TensorBoard views of a training run, as hooks: their ops at graph-building time
(:class:`TensorBoardViews`), their hooks once the loop is set up.

Everything has a :class:`~graphcnn.config.LogConfig` switch (0/False = off), and nothing
adds work to a step that does not log:

* ``gradients/<variable>`` and ``activations/<layer>`` histograms plus ``sparsity/<layer>``
  (fraction of exact zeros: dead ReLU units on that batch), fetched with the train step;
* ``feature_maps/<layer>``: a fixed probe batch of validation images (``probe.npz``) run
  through the network in inference mode;
* at each validation: confusion matrix, most confident mistakes, PR curves
  (:mod:`graphcnn.tensorboard.views`);
* at the end: the projector, its files (``projector_*``) in the ``train/`` run's own folder.
"""

from __future__ import annotations

import io
import logging
import zipfile
from typing import Mapping

import numpy as np
import tensorflow as tf

from graphcnn.atomic import write_bytes_atomic
from graphcnn.config import Config
from graphcnn.data.dataset import Dataset, Split
from graphcnn.data.pipeline import InputPipeline
from graphcnn.explain import GradCamOps, gradcam_ops, gradcam_view
from graphcnn.model.graph import GraphHandles
from graphcnn.model.network import resolve_layer_names
from graphcnn.run_dir import RunDir
from graphcnn.tensorboard import views
from graphcnn.tensorboard.ops import build_view_ops
from graphcnn.tensorboard.writing import image_summary
from graphcnn.train.hooks import PeriodicImageHook, PeriodicSummaryHook, StepClock
from graphcnn.train.validation import EvalResult
from graphcnn.viz import images as viz_images

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.train")


def _subset(split: Split, indices: np.ndarray) -> Split:
    indices = np.asarray(indices, np.int64)
    if split.images is not None:
        return Split(labels=split.labels[indices], images=split.images[indices])
    return Split(labels=split.labels[indices], paths=tuple(split.paths[i] for i in indices))


def _first_of_each_class(labels: np.ndarray) -> list[int]:
    """The index of the first image of each class present, by class."""
    return np.unique(labels, return_index=True)[1].tolist()


def _preprocessed(sess, pipeline: InputPipeline, split: Split) -> np.ndarray:
    batches = [images for images, _ in pipeline.eval_batches(sess, split)]
    return np.concatenate(batches) if batches else np.zeros((0,))


class FeatureMapHook(PeriodicImageHook):
    """``feature_maps/<layer>`` of the probe batch, every N steps (and at step 1).

    The probe batch is preprocessed once the session exists and saved to ``probe.npz`` (a
    resumed run keeps the same images).
    """

    def __init__(self, clock: StepClock, views_: "TensorBoardViews", writer: v1.summary.FileWriter):
        super().__init__(clock, views_.ops.feature_maps, views_.config.log.feature_maps_every, writer)
        self.views = views_

    def after_create_session(self, session, coord) -> None:
        v = self.views
        indices = v.probe_indices()
        probe = _subset(v.eval_split, indices)
        images = _preprocessed(session, v.pipeline, probe)
        buffer = io.BytesIO()  # read again by --resume: replaced whole, never left half-written
        np.savez(buffer, indices=indices, labels=probe.labels, preprocessed=images,
                 **({"images": probe.images} if probe.images is not None else {}))
        write_bytes_atomic(v.run.probe, buffer.getvalue())
        self.feed = {v.g.inputs.images: images}


def gradcam_indices(probe, labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray,
                    mistakes: int) -> np.ndarray:
    """The images of the ``gradcam`` view: the probe images, then up to ``mistakes`` of the
    most confident mistakes that are not probe images already (each image shown once)."""
    wrong = np.flatnonzero(labels != predictions)
    wrong = wrong[~np.isin(wrong, np.asarray(probe, np.int64))]
    worst = wrong[np.argsort(-probabilities[wrong, predictions[wrong]], kind="stable")]
    return np.array([*probe, *worst[:mistakes]], np.int64)


class EvalViewsHook:
    """A validation listener: confusion matrix, most confident mistakes, per-class PR curves,
    and Grad-CAM of the probe images and the mistakes."""

    def __init__(self, config: Config, g: GraphHandles, pipeline: InputPipeline, split: Split, class_names,
                 writer: v1.summary.FileWriter, gradcam: GradCamOps | None = None, probe: np.ndarray | None = None):
        self.cfg, self.g, self.pipeline, self.split = config.log, g, pipeline, split
        self.class_names, self.writer = tuple(class_names), writer
        self.gradcam, self.probe = gradcam, probe  # probe: validation indices (None: one image per class)

    def after_validation(self, session, step: int, result: EvalResult) -> None:
        summaries = []
        if self.cfg.eval_images:
            summaries += views.confusion_summaries(result.confusion(len(self.class_names)), self.class_names)

            def images_of(indices: np.ndarray) -> np.ndarray:
                if self.split.images is not None:  # the arrays as loaded: no pass through the input pipeline
                    return self.split.images[indices]
                return viz_images.normalize_images(_preprocessed(session, self.pipeline, _subset(self.split, indices)))

            summaries += views.misclassified_summaries(result.labels, result.predictions, result.probabilities,
                                                       self.class_names, images_of, self.cfg.max_misclassified)
        if self.cfg.pr_curves:
            summaries += views.pr_curve_summaries(result.labels, result.probabilities, self.class_names)
        if self.gradcam is not None:
            summaries.append(self._gradcam_summary(session, result))
        for summary in summaries:
            self.writer.add_summary(summary, step)

    def _gradcam_summary(self, session, result: EvalResult) -> v1.Summary:
        """``gradcam``: the probe images, then the most confident mistakes, each under the Grad-CAM
        map of its predicted class, captioned ``true>predicted p``."""
        labels = result.labels
        probe = self.probe
        if probe is None:  # no feature-map probe: the first image of each class
            probe = _first_of_each_class(labels)
        indices = gradcam_indices(probe, labels, result.predictions, result.probabilities, self.cfg.max_misclassified)
        subset = _subset(self.split, indices)
        preprocessed = _preprocessed(session, self.pipeline, subset)
        display = subset.images if subset.images is not None else viz_images.normalize_images(preprocessed)
        grid = gradcam_view(session, self.gradcam, self.g.inputs.images, preprocessed, display, subset.labels,
                            self.class_names, probabilities=self.g.probabilities)
        return image_summary("gradcam", grid)


class ProjectorHook(v1.train.SessionRunHook):
    """At the end of training: penultimate features of validation images for the projector.

    Also a validation listener: when the last validation ran at the last step, its pass already
    computed the features (``evaluate_split(features=...)``, with the weight averages where
    ``train.moving_average_decay`` is set, as ``best/`` has them) and they are taken from it
    rather than computed again (a second forward pass: 1.1 s of a 224 px run). A run that stops
    between validations (``train.max_steps``) validates its last step at the end, before this
    hook's end (the trainer orders them so); only without a validation split, or after Ctrl-C
    (no final validation), are the features computed here.
    """

    def __init__(self, clock: StepClock, g: GraphHandles, pipeline: InputPipeline, split: Split, class_names,
                 count: int, run: RunDir):
        self.clock, self.g, self.pipeline, self.split = clock, g, pipeline, split
        self.class_names, self.count, self.run = tuple(class_names), count, run
        self._validated: tuple[int, np.ndarray, np.ndarray] | None = None  # step, features, predictions

    def after_validation(self, session, step: int, result) -> None:
        n = min(self.count, len(self.split))
        if result.features is not None and len(result.features) == n:
            self._validated = (step, result.features, result.predictions[:n])

    def end(self, session) -> None:
        n = min(self.count, len(self.split))
        if n == 0:
            return
        try:
            subset = _subset(self.split, np.arange(n))
            if self._validated is not None and self._validated[0] == self.clock.step:
                _, features_np, predictions_np = self._validated
                images_np = _preprocessed(session, self.pipeline, subset)
            else:
                features, images, predictions = [], [], []
                for batch, _ in self.pipeline.eval_batches(session, subset):
                    f, c = session.run([self.g.net.penultimate, self.g.classes], {self.g.inputs.images: batch})
                    features.append(f.reshape(len(batch), -1))
                    predictions.append(c)
                    images.append(batch)
                features_np, images_np, predictions_np = (np.concatenate(a) for a in (features, images, predictions))
            directory = self.run.train_logs  # TensorBoard reads projector_config.pbtxt in a run's folder
            views.export_projector(directory, features_np, images_np, subset.labels, predictions_np,
                                   self.class_names, self.clock.step)
            log.info("projector: %d validation images' %s features in %s", n, features_np.shape[1], directory)
        except Exception as err:  # never let a view break the end of training
            log.warning("projector export failed: %s", err)


def last_block(end_points: Mapping[str, tf.Tensor]) -> str | None:
    """The last end point of a backbone that is a feature map and not a pool (``vgg16/conv5/conv5_3``,
    ``resnet50/conv5/block3``, ``inception_v3/mixed10``, ``mobilenet_v2/conv_last``): the layer
    Grad-CAM is usually shown for, as in Keras's examples. None without a backbone."""
    blocks = [name for name, t in end_points.items()
              if "/" in name and t.shape.rank == 4 and "pool" not in name.rsplit("/", 1)[-1]]
    return blocks[-1] if blocks else None


class TensorBoardViews:
    """The trainer's entry point: ops at graph-building time, hooks and listeners after."""

    def __init__(self, config: Config, run: RunDir, dataset: Dataset, g: GraphHandles, pipeline: InputPipeline):
        self.config, self.run, self.dataset, self.g, self.pipeline = config, run, dataset, g, pipeline
        self.eval_split = next((s for s in (dataset.validation, dataset.test, dataset.train) if len(s)), dataset.train)
        cfg = config.log
        self.probe_count = min(cfg.probe_images, len(self.eval_split)) if cfg.feature_maps_every > 0 else 0
        kinds = {layer.name: layer.type for layer in resolve_layer_names(config.model.layers)}
        kinds["logits"] = "dense"
        self.ops = build_view_ops(g.gradients if cfg.gradients_every > 0 else [], g.net.end_points, kinds,
                                  cfg.activations_every > 0, self.probe_count)
        # Grad-CAM's layer: the head's last conv, else a backbone's last block (its features)
        convs = [name for name, kind in kinds.items() if kind == "conv"]
        layer = convs[-1] if convs else last_block(g.net.end_points)
        # Grad-CAM's gradient ops, built once here (before the graph is finalized); they run only
        # when the validation view fetches them, in inference mode (the inputs' defaults)
        self.gradcam = (gradcam_ops(g.inputs.images, g.logits, g.net.end_points[layer])
                        if cfg.gradcam and layer and len(dataset.validation) else None)
        self._projector: ProjectorHook | None = None

    def projector(self, clock: StepClock) -> ProjectorHook | None:
        """The projector's hook (one, shared by ``hooks`` and ``listeners``), or None when off."""
        if self._projector is None and self.config.log.projector_images > 0:
            self._projector = ProjectorHook(clock, self.g, self.pipeline, self.eval_split, self.dataset.class_names,
                                            self.config.log.projector_images, self.run)
        return self._projector

    def probe_indices(self) -> np.ndarray:
        """The probe batch: the saved one on resume, else one image per class first, then the next."""
        path = self.run.probe
        if path.exists():
            try:
                with np.load(path) as saved:
                    indices = saved["indices"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                # only the feature-map view's images: a damaged file does not stop a resume
                log.warning("%s cannot be read (%s); choosing the probe images again", path, err)
            else:
                if len(indices) == self.probe_count and indices.max(initial=-1) < len(self.eval_split):
                    return indices
        labels = self.eval_split.labels
        chosen = sorted(_first_of_each_class(labels)[: self.probe_count])
        rest = [i for i in range(len(labels)) if i not in chosen]
        return np.array(sorted(chosen + rest[: self.probe_count - len(chosen)]), np.int64)

    def hooks(self, clock: StepClock, train_writer, feed: Mapping) -> list[v1.train.SessionRunHook]:
        """The step hooks of the views; ``feed`` is the training step's (for the last snapshot of the
        gradient and activation histograms)."""
        cfg = self.config.log
        hooks: list[v1.train.SessionRunHook] = []
        if self.ops.gradients is not None:
            hooks.append(PeriodicSummaryHook(clock, self.ops.gradients, cfg.gradients_every, train_writer, feed=feed))
        if self.ops.activations is not None:
            hooks.append(PeriodicSummaryHook(clock, self.ops.activations, cfg.activations_every, train_writer,
                                             feed=feed))
        if self.ops.feature_maps:
            hooks.append(FeatureMapHook(clock, self, train_writer))
        projector = self.projector(clock)
        return hooks + ([projector] if projector is not None else [])

    def listeners(self, val_writer, clock: StepClock) -> list:
        """The validation listeners of the views: the validation images, and the projector, which
        takes the last validation's features."""
        cfg = self.config.log
        listeners: list = []
        if (cfg.eval_images or cfg.pr_curves or self.gradcam is not None) and len(self.dataset.validation):
            # eval_split is the validation split here: the feature-map probe is theirs
            probe = self.probe_indices() if self.probe_count else None
            listeners.append(EvalViewsHook(self.config, self.g, self.pipeline, self.dataset.validation,
                                           self.dataset.class_names, val_writer, self.gradcam, probe))
        projector = self.projector(clock)
        if projector is not None and len(self.dataset.validation):  # eval_split is the validation split
            listeners.append(projector)
        return listeners
