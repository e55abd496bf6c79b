"""Training hooks: every side effect of the training loop is a ``SessionRunHook``.

The loop (graphcnn/train/trainer.py: ``fit``) only runs the train op in a
``tf.compat.v1.train.MonitoredSession``; TensorFlow calls each hook around every step, in
list order: ``before_run`` may add fetches (or run options) to the step's own ``sess.run``,
``after_run`` receives their values, ``end`` runs once when training stops normally.

A hook that needs the training step's own tensors (gradients, activations of the batch)
adds them to the step's fetches. Summaries that read only variables (weight histograms,
filter images) run on their own after the step instead: each new set of fetches next to the
train op makes TensorFlow prune and optimize the whole training graph again for a new
executor (0.2-0.35 s the first time a set occurs), while a run of the summary ops alone builds
a small one, and they read the same weights either way.

Every hook here that needs the step number reads it from the :class:`StepClock`, which must
come first in the list.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import time
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from graphcnn.checkpoints import CheckpointManager
from graphcnn.tensorboard.ops import PngImage
from graphcnn.tensorboard.writing import ScalarWriter, png_summary, start_session_log, text_summary

v1 = tf.compat.v1
SessionRunArgs = v1.train.SessionRunArgs
log = logging.getLogger("graphcnn.train")


def due(step: int, every: int, first: bool = True) -> bool:
    """Whether a periodic item runs at ``step``: every ``every`` steps (0 = never), and at step 1."""
    return every > 0 and (step % every == 0 or (first and step == 1))


class StepClock(v1.train.SessionRunHook):
    """The global step, and the step's own values (loss, accuracy, learning rate).

    ``step`` is the global step after the last update: read once from the session, then
    counted, so no hook pays for a read of the global step. ``shared``: other processes
    advance it too (asynchronous workers of a cluster), so it is read with every step, and a
    step may jump; periodic hooks then ask :meth:`crossed` rather than test ``step % every``.
    ``last``: the run's last step (0: unknown), which the snapshots of step-time tensors ride
    along with (:meth:`next_is_last`) instead of running once more after it.
    """

    def __init__(self, global_step: tf.Variable, values: Mapping[str, tf.Tensor], shared: bool = False,
                 last: int = 0):
        self._global_step = global_step
        self.last = last
        self._fetches = dict(values)
        if shared:
            self._fetches["_global_step"] = global_step
        self.step = self.previous = 0
        self.steps_run = 0  # the steps this process has run (0: none yet)
        self.values: Mapping[str, Any] = {}

    def after_create_session(self, session, coord) -> None:
        self.step = self.previous = int(session.run(self._global_step))

    def before_run(self, run_context) -> SessionRunArgs:
        return SessionRunArgs(self._fetches)

    def after_run(self, run_context, run_values) -> None:
        self.previous = self.step
        # the shared step is read while the update runs: before or after it, so at least + 1
        self.step = max(self.step + 1, int(run_values.results.get("_global_step", 0)))
        self.steps_run += 1
        self.values = run_values.results

    def next_is_last(self) -> bool:
        """Whether the step about to run is the run's last."""
        return self.last > 0 and self.step + 1 == self.last

    def snapshot_due(self, every: int, first: bool = True) -> bool:
        """Whether a snapshot of the step's own tensors rides along with the step about to run:
        every ``every`` steps (0 = never), at step 1 with ``first``, and at the run's last step,
        rather than on its own after it, which took one more forward and backward pass and a
        new executor for its fetches (2-3 s at the end of a cats_dogs_150 run, Zen 1)."""
        return due(self.step + 1, every, first) or (every > 0 and self.next_is_last())

    def crossed(self, every: int, first: bool = False) -> bool:
        """Whether the last step passed a multiple of ``every`` (0 = never), or step 1 with
        ``first``: ``step % every == 0`` when steps are counted one by one."""
        if every <= 0:
            return False
        return self.previous // every != self.step // every or (first and self.previous < 1 <= self.step)


class NanLossHook(v1.train.SessionRunHook):
    """With ``train.check_numerics`` off: a NaN loss stops training (``NanLossDuringTrainingError``,
    which the trainer turns into its one error line). The clock's own fetch of the loss is read:
    TensorFlow's ``NanTensorHook`` fetched it again and logged an ERROR line of its own."""

    def __init__(self, clock: StepClock):
        self.clock = clock

    def after_run(self, run_context, run_values) -> None:
        if np.isnan(self.clock.values["loss"]):
            raise v1.train.NanLossDuringTrainingError


class EventsHook(v1.train.SessionRunHook):
    """Opens the event files of a (re)started session: the graph once, and ``SessionLog.START``
    at the first step this session trains (the restored step + 1). TensorBoard then drops what
    a killed run wrote past its checkpoint, and keeps what was written at the checkpoint's step
    (its loaders purge the steps from the START's on)."""

    def __init__(self, clock: StepClock, writers: Sequence[v1.summary.FileWriter], graph: tf.Graph | None):
        self.clock, self.writers, self.graph = clock, list(writers), graph

    def after_create_session(self, session, coord) -> None:
        if self.graph is not None and self.clock.step == 0:
            self.writers[0].add_graph(self.graph)
        for writer in self.writers:
            start_session_log(writer, self.clock.step + 1)


class StageHook(v1.train.SessionRunHook):
    """Marks where a stage of a staged run (``train(..., new_stage=True)``) begins: a text
    summary ``stage/begins`` at its first step, saying what it trains (with the ``stage`` scalar that
    :class:`ScalarsHook` writes, and the learning-rate curve, the boundary shows in TensorBoard)."""

    def __init__(self, clock: StepClock, writer: v1.summary.FileWriter, text: str):
        self.clock, self.writer, self.text, self._written = clock, writer, text, False

    def after_create_session(self, session, coord) -> None:
        if not self._written:
            self.writer.add_summary(text_summary("stage/begins", self.text.format(step=self.clock.step + 1)),
                                    self.clock.step + 1)
            self._written = True


RECENT_STEPS = 20  # the progress bar's images/s: over this many last steps


class ScalarsHook(v1.train.SessionRunHook):
    """Every ``every`` steps, and after the last: ``loss``, ``accuracy``, ``learning_rate`` and
    ``images_per_second`` to ``train/``.

    ``images_per_second`` counts the time of the training steps themselves (each step's
    ``Session.run``, with the fetches hooks add to it) since the last write: not the validations,
    checkpoints and snapshots that run between steps, which made the curve dip at every
    evaluation without the training getting any slower.
    """

    def __init__(self, clock: StepClock, writer: ScalarWriter, every: int, batch_size: int,
                 constants: Mapping[str, float] | None = None):
        self.clock, self.writer, self.every, self.batch_size = clock, writer, every, batch_size
        self.constants = dict(constants or {})  # written with each write (the ``stage`` of a staged run)
        self.speed = 0.0
        self.speeds: list[float] = []  # images/s per window, for the run's summary figure
        self._images, self._seconds, self._started = 0, 0.0, 0.0
        self._written = -1  # the step of the last write
        # (images, seconds) of the last steps but this start's first (graph warm-up): the progress bar's rate
        self._recent: collections.deque[tuple[int, float]] = collections.deque(maxlen=RECENT_STEPS)
        self._warm = False

    def before_run(self, run_context) -> None:
        self._started = time.perf_counter()

    def after_run(self, run_context, run_values) -> None:
        seconds = time.perf_counter() - self._started
        images = self.batch_size * (self.clock.step - self.clock.previous)  # all workers' steps
        self._seconds += seconds
        self._images += images
        if self._warm:
            self._recent.append((images, seconds))
        self._warm = True
        if self.clock.crossed(self.every):
            self._write()

    @property
    def recent_speed(self) -> float | None:
        """images/s over the last :data:`RECENT_STEPS` steps, this start's first left out; None
        before the second step (a rate from the first alone would be the warm-up's)."""
        seconds = sum(t for _, t in self._recent)
        return sum(n for n, _ in self._recent) / seconds if seconds > 0 else None

    def end(self, session) -> None:
        if self._images and self.clock.values and self._written != self.clock.step:
            self._write()  # the steps since the last write: a run's curves end at its last step

    def _write(self) -> None:
        self.speed = self._images / max(self._seconds, 1e-9)
        self.speeds.append(self.speed)
        self._images, self._seconds = 0, 0.0
        self._written = step = self.clock.step
        values = self.clock.values
        self.writer.write(step, {"loss": values["loss"], "accuracy": values["accuracy"],
                                 "learning_rate": values["learning_rate"], "images_per_second": self.speed,
                                 **self.constants})

    @property
    def images_per_second(self) -> float:
        """The median window: the first one includes graph warm-up, so it is left out."""
        speeds = self.speeds[1:] if len(self.speeds) > 1 else self.speeds
        return float(np.median(speeds)) if speeds else float("nan")


class ProgressBarHook(v1.train.SessionRunHook):
    """A tqdm bar over the steps, with the step's loss and accuracy and the images/s."""

    def __init__(self, clock: StepClock, total_steps: int, description: str, scalars: ScalarsHook | None = None):
        self.clock, self.total_steps, self.description, self.scalars = clock, total_steps, description, scalars
        self.bar: tqdm | None = None

    def after_create_session(self, session, coord) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total_steps, initial=self.clock.step, unit="step", dynamic_ncols=True,
                            desc=self.description)

    def after_run(self, run_context, run_values) -> None:
        values = self.clock.values
        postfix = {"loss": f"{values['loss']:.3f}", "acc": f"{values['accuracy']:.3f}"}
        if self.scalars is not None:  # "?" until measured (a 0, or the warm-up's rate, read as a slow run)
            speed = self.scalars.recent_speed
            postfix["img_s"] = "?" if speed is None else f"{speed:.0f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def end(self, session) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StopSignals:
    """Ctrl-C / SIGTERM while training: finish the current step, save, flush, stop cleanly.

    A context manager (handlers are restored on exit) that :class:`StopOnSignalHook` reads. A
    second signal stops at once (``KeyboardInterrupt``), except during a checkpoint save
    (:meth:`saving`): that one is finished first, so no checkpoint is left half written.
    """

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, Any] = {}
        self._saving = False
        self._again = False

    def __enter__(self) -> "StopSignals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no signal handling
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if not self.raised:
            self.raised = True
            log.warning("received %s: stopping after this step and saving a checkpoint", signal.Signals(signum).name)
        elif self._saving:
            self._again = True
            log.warning("received %s again: stopping as soon as the checkpoint is written", signal.Signals(signum).name)
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """Around a checkpoint save: a second signal waits for it to finish."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._again:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class StopOnSignalHook(v1.train.SessionRunHook):
    """Stops after the step a signal came in, and saves (``save``: the checkpoint hook's) at
    once: before the other hooks' ``end`` (final snapshots, a trace, the projector: seconds) that
    a second signal would cut short."""

    def __init__(self, signals: StopSignals, save: Callable[[v1.Session], None] | None = None):
        self.signals, self.save = signals, save

    def after_run(self, run_context, run_values) -> None:
        if self.signals.raised:
            run_context.request_stop()
            if self.save is not None:
                self.save(run_context.session)


class CheckpointHook(v1.train.SessionRunHook):
    """The latest checkpoints: at each epoch end, every ``every_steps`` steps, and when training
    stops. The event files are flushed with each save, so TensorBoard is as current as the
    checkpoint. ``guard``: a context around each save (:meth:`StopSignals.saving`)."""

    def __init__(self, clock: StepClock, checkpoints: CheckpointManager, steps_per_epoch: int, every_steps: int,
                 writers: Sequence[v1.summary.FileWriter],
                 guard: Callable[[], ContextManager] = contextlib.nullcontext):
        self.clock, self.checkpoints, self.writers, self.guard = clock, checkpoints, list(writers), guard
        self.steps_per_epoch, self.every_steps = steps_per_epoch, every_steps
        self._saved = -1
        self._disk_use_logged = False

    def after_create_session(self, session, coord) -> None:
        self._saved = self.clock.step  # what was restored is on disk already

    def after_run(self, run_context, run_values) -> None:
        if self.clock.crossed(self.steps_per_epoch) or self.clock.crossed(self.every_steps):
            self.save(run_context.session)

    def end(self, session) -> None:
        self.save(session)

    def save(self, session) -> None:
        if self._saved == self.clock.step:
            return
        with self.guard():
            self.checkpoints.save(session, self.clock.step)
        if not self._disk_use_logged:  # once the first checkpoint's size is known
            log.info("%s", self.checkpoints.describe_disk_use())
            self._disk_use_logged = True
        self._saved = self.clock.step
        for writer in self.writers:
            writer.flush()


class TraceHook(v1.train.SessionRunHook):
    """Every ``every`` steps and at the run's last step, trace the real train step and attach it
    to the graph of ``train/`` as run metadata ``step<N>`` (TensorBoard then colours nodes by
    compute time and memory).

    When training stops early at a step with no trace, the forward and backward pass of one more batch
    (``final_fetches`` with ``feed``; the update is not applied) is traced, so a short run shows
    one too.
    """

    def __init__(self, clock: StepClock, writer: v1.summary.FileWriter, every: int,
                 final_fetches: Any = None, feed: Mapping | None = None):
        self.clock, self.writer, self.every = clock, writer, every
        self.final_fetches, self.feed = final_fetches, dict(feed or {})
        self._tracing = False
        self._last = -1

    def before_run(self, run_context) -> SessionRunArgs | None:
        self._tracing = self.clock.snapshot_due(self.every, first=False)
        if self._tracing:
            return SessionRunArgs(None, options=_FULL_TRACE)
        return None

    def after_run(self, run_context, run_values) -> None:
        if self._tracing:
            self._write(run_values.run_metadata)

    def end(self, session) -> None:
        # steps_run: a resumed run that trains no step (it had ended) has this step's already
        if self.final_fetches is not None and self._last != self.clock.step and self.clock.steps_run > 0:
            metadata = v1.RunMetadata()
            session.run(self.final_fetches, self.feed, options=_FULL_TRACE, run_metadata=metadata)
            self._write(metadata)

    def _write(self, metadata: v1.RunMetadata) -> None:
        self._last = self.clock.step
        self.writer.add_run_metadata(metadata, f"step{self._last}", self._last)


_FULL_TRACE = v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE)


class PeriodicSummaryHook(v1.train.SessionRunHook):
    """Every ``every`` steps (and at step 1, and the last step), evaluate a merged summary op
    and write it.

    ``alone=False``: the op rides along with the train step (it needs the step's tensors:
    gradients, activations), the run's last step included; when training stops early it runs
    on its own with ``feed`` (the training feed: one more batch, no update). ``alone=True``: it
    runs on its own after the step (it reads only variables, or ``feed``).
    """

    def __init__(self, clock: StepClock, op: Any, every: int, writer: v1.summary.FileWriter,
                 alone: bool = False, feed: Mapping | None = None):
        self.clock, self.op, self.every, self.writer, self.alone = clock, op, every, writer, alone
        self.feed = dict(feed or {})
        self._last = -1
        self._riding = False

    def before_run(self, run_context) -> SessionRunArgs | None:
        # the next step's number is a guess when other workers advance it too: ride along when due
        self._riding = not self.alone and self.clock.snapshot_due(self.every)
        return SessionRunArgs(self.op) if self._riding else None

    def after_run(self, run_context, run_values) -> None:
        if self._riding:
            self._write(run_values.results)
        elif self.alone and self.clock.crossed(self.every, first=True):
            self._write(run_context.session.run(self.op, self.feed))

    def end(self, session) -> None:
        if self.every > 0 and self._last != self.clock.step and self.clock.steps_run > 0:
            self._write(session.run(self.op, self.feed))

    def _write(self, summary) -> None:
        self._last = self.clock.step
        self.writer.add_summary(summary, self._last)


class PeriodicImageHook(PeriodicSummaryHook):
    """Every ``every`` steps (and at step 1, and the last step), run in-graph PNGs on their own
    after the step and write each under its exact tag (``tf.summary.image`` would append
    ``/image``).

    ``feed``: e.g. a fixed probe batch for ``input/images`` (feature maps); none for the
    filters, which read only the weights.
    """

    def __init__(self, clock: StepClock, images: Mapping[str, PngImage], every: int,
                 writer: v1.summary.FileWriter, feed: Mapping | None = None):
        self.images = dict(images)
        super().__init__(clock, {tag: image.png for tag, image in self.images.items()}, every, writer, alone=True,
                         feed=feed)

    def _write(self, encoded) -> None:
        step = self._last = self.clock.step
        for tag, image in self.images.items():
            self.writer.add_summary(png_summary(tag, encoded[tag], image.height, image.width, image.channels), step)
