"""Validation and what depends on it: one pass over a split, the hook that runs it at epoch
ends, and the listeners that act on its result (early stopping, the best checkpoint, the
plateau learning-rate factor, the metrics log).

:class:`ValidationHook` evaluates, writes the ``validation/`` scalars, then hands the result
to each listener in order, as ``after_validation(session, step, result)``. A listener that
must stop training (early stopping) is also a hook of its own: it asks for the stop in its
``after_run``, which TensorFlow calls after the validation hook's.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Protocol, Sequence

import numpy as np
import tensorflow as tf

from graphcnn.checkpoints import CheckpointManager, checkpoints_on_disk, step_of
from graphcnn.data.dataset import Split
from graphcnn.data.pipeline import InputPipeline
from graphcnn.model.graph import GraphHandles
from graphcnn.run_dir import RunDir
from graphcnn.tensorboard.writing import ScalarWriter
from graphcnn.train.early_stopping import EarlyStopping, PlateauReducer
from graphcnn.train.hooks import StepClock

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.train")


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one pass over a split."""

    loss: float
    accuracy: float
    count: int
    labels: np.ndarray  # int64 [N]
    predictions: np.ndarray  # int64 [N]
    probabilities: np.ndarray  # float32 [N, K]
    features: np.ndarray | None = None  # float32 [min(N, features), F]: penultimate features of the first images

    def confusion(self, num_classes: int) -> np.ndarray:
        """int64 [K, K]: rows are true classes, columns predicted classes."""
        matrix = np.zeros((num_classes, num_classes), np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix


def evaluate_split(sess: v1.Session, g: GraphHandles, pipeline: InputPipeline, split: Split,
                   repeated: bool = False, flip: bool = False, features: int = 0) -> EvalResult | None:
    """Run the network over ``split`` (no dropout, batch-norm moving averages).

    ``repeated``: the split is evaluated again later (validation), so its preprocessed
    images may be kept between calls. ``flip`` (``model.test_time_flip``): the predictions and
    probabilities are those of the mean of each image's and its mirror image's probabilities,
    as ``predict`` computes them; the loss stays the plain pass's, comparable with training's.
    ``features``: also keep the penultimate features of the first this many images (of the plain
    pass; the projector's, at no extra cost: the pass computes them anyway).
    """
    if len(split) == 0:
        return None
    losses, labels, preds, probs, feats = [], [], [], [], []
    kept = 0
    for images, batch_labels in pipeline.eval_batches(sess, split, keep=repeated):
        feed = {g.inputs.images: images, g.inputs.labels: batch_labels}
        if kept < features:
            ce, p, c, f = sess.run([g.cross_entropy, g.probabilities, g.classes, g.net.penultimate], feed)
            feats.append(f.reshape(len(f), -1)[: features - kept])
            kept += len(feats[-1])
        else:
            ce, p, c = sess.run([g.cross_entropy, g.probabilities, g.classes], feed)
        if flip:  # NHWC: axis 2 is the width
            feed[g.inputs.images] = images[:, :, ::-1]
            p = (p + sess.run(g.probabilities, feed)) / 2
            c = p.argmax(axis=1)
        losses.append(ce * len(batch_labels))
        labels.append(batch_labels)
        preds.append(c)
        probs.append(p)
    labels_all, preds_all, probs_all = np.concatenate(labels), np.concatenate(preds), np.concatenate(probs)
    return EvalResult(loss=float(np.sum(losses) / len(labels_all)), accuracy=float(np.mean(labels_all == preds_all)),
                      count=len(labels_all), labels=labels_all, predictions=preds_all, probabilities=probs_all,
                      features=np.concatenate(feats) if feats else None)


class ValidationListener(Protocol):
    def after_validation(self, session: v1.Session, step: int, result: EvalResult) -> None: ...


class ValidationHook(v1.train.SessionRunHook):
    """Validate at each epoch end, every ``every_steps`` steps, and when training ends (unless
    the last step was just validated, or training was interrupted); then tell each listener,
    in order.

    ``swap`` (``train.moving_average_decay``): the op exchanging the weights with their moving
    averages. It runs before the evaluation and again after the listeners, so the evaluation,
    the validation views and ``best/`` see the averages, and training and ``checkpoints/`` the
    weights."""

    def __init__(self, clock: StepClock, evaluate: Callable[[v1.Session], EvalResult | None], steps_per_epoch: int,
                 every_steps: int, writer: v1.summary.FileWriter, listeners: Sequence[ValidationListener] = (),
                 interrupted: Callable[[], bool] = lambda: False, validated: Callable[[], int] = lambda: -1,
                 swap: tf.Operation | None = None):
        self.clock, self.evaluate, self.writer, self.interrupted = clock, evaluate, writer, interrupted
        self.validated, self.swap = validated, swap
        self.steps_per_epoch, self.every_steps = steps_per_epoch, every_steps
        self.scalars = ScalarWriter(writer)
        self.listeners = list(listeners)
        self.last: EvalResult | None = None
        self._last_step = -1

    def after_create_session(self, session, coord) -> None:
        # a run resumed at a step it had validated (it was stopped between that and the end)
        # does not validate it again
        self._last_step = self.validated()

    def after_run(self, run_context, run_values) -> None:
        if self.clock.crossed(self.steps_per_epoch) or self.clock.crossed(self.every_steps):
            self.validate(run_context.session)

    def end(self, session) -> None:
        # not after an interruption: a mid-epoch validation would move early stopping and best/
        if self._last_step != self.clock.step and not self.interrupted():
            self.validate(session)

    def validate(self, session: v1.Session) -> None:
        step = self._last_step = self.clock.step
        with swapped(session, self.swap):
            result = self.evaluate(session)
            if result is None:
                return
            self.last = result
            self.scalars.write(step, {"loss": result.loss, "accuracy": result.accuracy})
            for listener in self.listeners:
                listener.after_validation(session, step, result)
        self.writer.flush()
        log.info("step %d (epoch %.2f): validation accuracy %.4f, loss %.4f", step, step / self.steps_per_epoch,
                 result.accuracy, result.loss)


@contextlib.contextmanager
def swapped(session: v1.Session, swap: tf.Operation | None):
    """The weights exchanged with their moving averages inside the block (nothing when ``swap``
    is None), and exchanged back however the block ends."""
    if swap is None:
        yield
        return
    session.run(swap)
    try:
        yield
    finally:
        session.run(swap)


def monitored(result: EvalResult, monitor: str) -> float:
    """The value of the early-stopping metric ("accuracy" or "loss") in ``result``."""
    return result.accuracy if monitor == "accuracy" else result.loss


class EarlyStoppingHook(v1.train.SessionRunHook):
    """Tracks the monitored metric (a listener) and stops training when it has stopped
    improving (a hook: the stop is asked for in ``after_run``)."""

    def __init__(self, early: EarlyStopping):
        self.early = early
        self.stopped = False

    def after_create_session(self, session, coord) -> None:
        # MetricsLog (an earlier hook) has restored the state of the resumed step: a run that
        # early stopping ended trains no further step (fit checks ``stopped`` before the first)
        if self.early.should_stop and not self.stopped:
            self.stopped = True
            log.info("early stopping had ended this run (validation %s best %.4f at step %d, then %d evaluations "
                     "without improvement): nothing to train; to go on, a new stage with more patience: "
                     "--resume RUN --next-stage --set train.early_stopping.patience=N",
                     self.early.cfg.monitor, self.early.best, self.early.best_step, self.early.wait)

    def after_validation(self, session, step: int, result: EvalResult) -> None:
        self.early.update(step, monitored(result, self.early.cfg.monitor))

    def after_run(self, run_context, run_values) -> None:
        if self.early.should_stop and not self.stopped:
            self.stopped = True
            cfg = self.early.cfg
            log.info("early stopping: validation %s has not improved for %d evaluations (best %.4f at step %d)",
                     cfg.monitor, cfg.patience, self.early.best, self.early.best_step)
            run_context.request_stop()


class BestCheckpoint:
    """Saves ``best/`` when the evaluation just recorded is early stopping's new best (improved
    by more than ``min_delta``): the weights restored at the end are the ones it refers to.

    A tie (the monitored metric equal to the best's) moves ``best/`` to the later step when its
    validation loss is lower (monitoring accuracy) or no higher (monitoring loss): on a small
    validation set accuracy ties often, and the earlier step is then usually the less trained.
    Ties do not reset early stopping's patience.
    """

    def __init__(self, checkpoints: CheckpointManager, early: EarlyStopping, run: RunDir,
                 guard: Callable[[], ContextManager] = contextlib.nullcontext):
        self.checkpoints, self.early, self.run, self.guard = checkpoints, early, run, guard
        self.best_loss: float | None = None  # validation loss at the best step

    def after_validation(self, session, step: int, result: EvalResult) -> None:
        if self.best_loss is None and self.checkpoints.best_step is not None:  # resumed: from the metrics log
            self.best_loss = next((r["loss"] for r in self.run.read_metrics()
                                   if r.get("split") == "validation" and r["step"] == self.checkpoints.best_step), None)
        metric = monitored(result, self.early.cfg.monitor)
        improved = self.early.best_step == step
        tie = (not improved and metric == self.checkpoints.best_metric and self.best_loss is not None
               and result.loss <= self.best_loss and (result.loss < self.best_loss or self.early.cfg.monitor == "loss"))
        if (improved or tie) and self.checkpoints.best_step != step:
            with self.guard():
                self.checkpoints.save_best(session, step, self.early.cfg.monitor, metric)
        if self.checkpoints.best_step == step:
            self.best_loss = result.loss


class PlateauListener:
    """Reduce-on-plateau: scales the learning rate (the ``train/learning_rate_scale`` variable)."""

    def __init__(self, plateau: PlateauReducer, scale: tf.Variable, monitor: str):
        self.plateau, self.scale, self.monitor = plateau, scale, monitor

    def after_validation(self, session, step: int, result: EvalResult) -> None:
        current = float(session.run(self.scale))
        new = self.plateau.update(monitored(result, self.monitor), current)
        if new != current:
            self.scale.load(new, session)
            cfg = self.plateau.cfg
            log.info("validation %s has not improved for %d evaluations: learning rate x%g", self.monitor,
                     cfg.plateau_patience, cfg.plateau_factor)


class MetricsLog(v1.train.SessionRunHook):
    """One ``metrics.jsonl`` line per validation (with its confusion matrix, for ``graphcnn
    report``), and the early-stopping and plateau state that ``--resume`` reads back.

    ``train_state.json`` keeps the state after each validation, each with its step: a run killed
    between a validation and the checkpoint of that step resumes from an earlier checkpoint, and
    must continue from the state of that step, not the later one, or it would replay the
    validation against the wrong history (a learning rate halved twice, say). So it keeps the
    last state at or before the oldest checkpoint on disk and every later one: whichever
    checkpoint a resume restores has its state (validating every few steps between epoch
    checkpoints makes many). For the same reason the metrics lines past the restored step are
    dropped on resume: the run writes them again.

    ``new_stage``: a stage of transfer learning begins (``--next-stage``). As a new Keras
    ``fit()`` with new callbacks, it gets its own patience: the early-stopping and plateau
    counts start again (their best so far stays: ``best/`` is the run's best) and the learning
    rate is the stage's own (``scale`` back to 1). That state is recorded at the stage's first
    step, so a resume before the stage's first checkpoint starts the stage the same way.
    """

    def __init__(self, run: RunDir, steps_per_epoch: int, num_classes: int, early: EarlyStopping,
                 plateau: PlateauReducer, checkpoints: CheckpointManager, clock: StepClock,
                 scale: tf.Variable | None = None, new_stage: bool = False):
        self.run, self.steps_per_epoch, self.num_classes = run, steps_per_epoch, num_classes
        self.early, self.plateau, self.checkpoints, self.clock = early, plateau, checkpoints, clock
        self.scale, self.new_stage = scale, new_stage
        self._states: list[dict] = []
        self.last_validated = -1  # the step of the last validation on record

    def after_create_session(self, session, coord) -> None:
        """A resumed run: the state of the restored step, and no metrics from past it."""
        step = self.clock.step
        state = self.run.read_state() or {}
        # a run of before the history: one state, no step (it fits any restored step)
        usable = [s for s in state.get("states", [state] if state else []) if s.get("step", step) <= step]
        self._states = usable
        monitor, best_step = self.early.cfg.monitor, self.checkpoints.best_step
        lost_best = best_step is not None and self.checkpoints.best_metric is None  # best.json lost
        history = [r for r in self.run.read_metrics() if r.get("split") == "validation" and r["step"] <= step
                   ] if not usable or lost_best else []
        if usable:
            self.early.load_state_dict(usable[-1]["early_stopping"])
            self.plateau.load_state_dict(usable[-1]["plateau"])
        elif history:  # train_state.json lost or damaged: its state is a function of the validations
            scale = 1.0
            for record in history:
                self.early.update(record["step"], record[monitor])
                scale = self.plateau.update(record[monitor], scale) if self.plateau.enabled else scale
            log.warning("early stopping and plateau state rebuilt from the %d validations in %s", len(history),
                        self.run.metrics)
            self._record_state(step)
        if lost_best:
            self.checkpoints.best_metric = next((r[monitor] for r in history if r["step"] == best_step), None)
        if self.new_stage:
            self.new_stage = False  # once: a recovered session is the same stage
            self.early.wait = self.plateau.wait = 0
            self._record_state(step, stage_start=True)
        starts = self._states[-1] if self._states else {}
        if starts.get("stage_start") and starts.get("step") == step and self.scale is not None:
            self.scale.load(1.0, session)  # the last stage's checkpoint holds its own scale
        dropped = self.run.drop_metrics_after(step)
        self.last_validated = max((r["step"] for r in self.run.read_metrics() if r.get("split") == "validation"),
                                  default=-1)
        if dropped:
            log.info("resumed at step %d: %d metrics records past it (or of an earlier final test) dropped",
                     step, dropped)

    def after_validation(self, session, step: int, result: EvalResult) -> None:
        self.last_validated = step
        self.run.append_metrics({"step": step, "epoch": step / self.steps_per_epoch, "split": "validation",
                                 "loss": result.loss, "accuracy": result.accuracy,
                                 "best": self.checkpoints.best_step == step,
                                 "confusion": result.confusion(self.num_classes).tolist()})
        self._record_state(step)

    def _record_state(self, step: int, **extra: Any) -> None:
        self._states = [s for s in self._states if s.get("step", -1) < step]
        self._states.append({"step": step, "early_stopping": self.early.state_dict(),
                             "plateau": self.plateau.state_dict(), **extra})
        self._states = states_to_keep(self._states, checkpoints_on_disk(self.checkpoints.checkpoint_dir))
        self.run.write_state({"states": self._states})


def states_to_keep(states: list[dict], checkpoints: Sequence[Path]) -> list[dict]:
    """The states (oldest step first) a resume may need: the last one at or before the oldest
    checkpoint's step (a checkpoint saved between validations has the one before it), and every
    later one."""
    if not checkpoints:
        return states
    oldest = step_of(checkpoints[0])
    upto = [s for s in states if s.get("step", -1) <= oldest]
    return upto[-1:] + [s for s in states if s.get("step", -1) > oldest]
