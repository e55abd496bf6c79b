"""Training hooks: extra fetches ride along with the training step's ``sess.run``.

As in tensorpack, a hook never calls ``sess.run`` on its own for per-step work: before a
step it names the tensors it wants (``fetches``), and after the step it receives their
values (``after_step``). The loop merges every hook's fetches into the one train call.
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
    """Every ``every`` steps, fetch a merged summary op and write it to ``writer``."""

    def __init__(self, key: str, op: tf.Tensor | None, every: int, writer: v1.summary.FileWriter):
        self.key, self.op, self.every, self.writer = key, op, every, writer

    def fetches(self, step: int) -> Mapping[str, Any]:
        return {self.key: self.op} if self.op is not None and due(step, self.every) else {}

    def after_step(self, step: int, results: Mapping[str, Any]) -> None:
        if self.key in results:
            self.writer.add_summary(results[self.key], step)


class PeriodicImageHook(Hook):
    """Every ``every`` steps, fetch in-graph PNGs and write each under its exact tag.

    ``tf.summary.image`` would append ``/image`` to the tag; writing the Summary proto
    ourselves keeps ``filters/conv1_1`` as named.
    """

    def __init__(self, images: Mapping[str, PngImage], every: int, writer: v1.summary.FileWriter):
        self.images, self.every, self.writer = dict(images), every, writer

    def fetches(self, step: int) -> Mapping[str, Any]:
        if not self.images or not due(step, self.every):
            return {}
        return {f"image:{tag}": image.png for tag, image in self.images.items()}

    def after_step(self, step: int, results: Mapping[str, Any]) -> None:
        for tag, image in self.images.items():
            key = f"image:{tag}"
            if key in results:
                self.writer.add_summary(png_summary(tag, results[key], image.height, image.width, image.channels),
                                        step)
