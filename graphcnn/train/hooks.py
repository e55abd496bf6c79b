"""Training hooks: extra fetches ride along with the training step's ``sess.run``.

As in tensorpack, a hook that needs the training step's own tensors (gradients, activations
of the batch) does not call ``sess.run`` itself: before a step it names the tensors it wants
(``fetches``), and after the step it receives their values (``after_step``). The loop merges
every hook's fetches into the one train call.

Summaries that read only variables (weight histograms, filter images) are the exception: given
a ``sess`` they run on their own after the step. Each new set of fetches next to the train op
makes TensorFlow prune and optimize the whole training graph again for a new executor
(0.2-0.35 s here, the first time the set occurs), while a run of the summary ops alone builds
a small one, and they read the same weights either way.
"""

from __future__ import annotations

from typing import Any, Mapping

import tensorflow as tf

from graphcnn.train.summaries import PngImage, png_summary

v1 = tf.compat.v1


def due(step: int, every: int, first: bool = True) -> bool:
    """Whether a periodic item runs at ``step``: every ``every`` steps (0 = never), and at step 1."""
    return every > 0 and (step % every == 0 or (first and step == 1))


class Hook:
    """Base hook: fetch nothing, do nothing."""

    def fetches(self, step: int) -> Mapping[str, Any]:
        """Tensors/ops to run with training step ``step`` (the global step after the update)."""
        return {}

    def after_step(self, step: int, results: Mapping[str, Any]) -> None:
        """Receive the values of this hook's fetches for ``step``."""

    def after_validation(self, step: int, result: Any) -> None:
        """A validation pass at ``step`` produced ``result`` (a trainer ``EvalResult``)."""

    def end(self, step: int) -> None:
        """Training has stopped at ``step``."""


class PeriodicSummaryHook(Hook):
    """Every ``every`` steps, evaluate a merged summary op and write it to ``writer``.

    Without ``sess`` the op rides along with the train step (it needs the step's tensors);
    with ``sess`` it is run on its own after the step (it reads only variables).
    """

    def __init__(self, key: str, op: tf.Tensor | None, every: int, writer: v1.summary.FileWriter,
                 sess: v1.Session | None = None):
        self.key, self.op, self.every, self.writer, self.sess = key, op, every, writer, sess

    def fetches(self, step: int) -> Mapping[str, Any]:
        if self.op is None or self.sess is not None or not due(step, self.every):
            return {}
        return {self.key: self.op}

    def after_step(self, step: int, results: Mapping[str, Any]) -> None:
        if self.sess is not None and self.op is not None and due(step, self.every):
            self.writer.add_summary(self.sess.run(self.op), step)
        elif self.key in results:
            self.writer.add_summary(results[self.key], step)


class PeriodicImageHook(Hook):
    """Every ``every`` steps, evaluate in-graph PNGs and write each under its exact tag.

    ``tf.summary.image`` would append ``/image`` to the tag; writing the Summary proto
    ourselves keeps ``filters/conv1_1`` as named. ``sess`` as in ``PeriodicSummaryHook``.
    """

    def __init__(self, images: Mapping[str, PngImage], every: int, writer: v1.summary.FileWriter,
                 sess: v1.Session | None = None):
        self.images, self.every, self.writer, self.sess = dict(images), every, writer, sess

    def _wanted(self, step: int) -> dict[str, tf.Tensor]:
        if not self.images or not due(step, self.every):
            return {}
        return {f"image:{tag}": image.png for tag, image in self.images.items()}

    def fetches(self, step: int) -> Mapping[str, Any]:
        return {} if self.sess is not None else self._wanted(step)

    def after_step(self, step: int, results: Mapping[str, Any]) -> None:
        if self.sess is not None:
            wanted = self._wanted(step)
            results = self.sess.run(wanted) if wanted else {}
        for tag, image in self.images.items():
            key = f"image:{tag}"
            if key in results:
                self.writer.add_summary(png_summary(tag, results[key], image.height, image.width, image.channels),
                                        step)
