"""The training loop, in named phases (as tensorpack has them):

1. :func:`prepare`: load the data (bad files are reported by name before anything else
   happens) and write what the run directory needs before the first step;
2. :func:`build`: the graph (input pipeline, network, loss, train op, savers, summary and
   view ops), then ``graph.finalize()``: nothing can add ops once the loop runs;
3. :func:`loop_hooks`: every side effect of training as a ``SessionRunHook``;
4. :func:`fit`: a ``tf.compat.v1.train.MonitoredSession`` (its session created, initialized or
   restored by :class:`RunSessionCreator`) runs the train op until a hook stops it or the
   last step is reached;
5. :func:`finish`: the test split, evaluated with the best weights in a fresh session;
   ``results.json``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import tensorflow as tf
from tqdm.contrib.logging import logging_redirect_tqdm

from graphcnn.atomic import write_text_atomic
from graphcnn.cluster import graph as cluster_graph
from graphcnn.cluster.session import (AllReduceStopHook, ChiefSessionCreator, PsStopHook, WorkerSessionCreator,
                                      start_server)
from graphcnn.cluster.spec import ClusterTask
from graphcnn.checkpoints import (CheckpointManager, checkpoints_on_disk, export_inference_graph,
                                  lacks_variables, step_of)
from graphcnn.config import Config
from graphcnn.data.check import DataCheck, report_text
from graphcnn.data.dataset import DataError, Dataset, Split, split_changes
from graphcnn.data.pipeline import InputPipeline, Preprocessing, augment_fn_for, compute_pixel_mean
from graphcnn.data.sources import load_dataset
from graphcnn.model.backbones import preprocessing_record
from graphcnn.model.devices import resolve_devices
from graphcnn.model.devices import session_config as devices_session_config
from graphcnn.model.graph import GraphHandles, Replication, build_graph, inference_graph, network_for
from graphcnn.model.precision import resolve_precision
from graphcnn.run_dir import RunDir
from graphcnn.runtime import configure_logging, peak_memory_mb, raise_if_interrupted
from graphcnn.tensorboard.ops import SummaryOps, build_summary_ops
from graphcnn.tensorboard.writing import ScalarWriter, hparams_end_summary, write_run_root_summaries
from graphcnn.train.early_stopping import EarlyStopping, PlateauReducer
from graphcnn.train.finetune import InitFromCheckpoint, build_init_from_checkpoint
from graphcnn.train.keras_init import KERAS_PREFIX, build_init_from_keras
from graphcnn.train.hooks import (CheckpointHook, EventsHook, NanLossHook, PeriodicImageHook, PeriodicSummaryHook,
                                  ProgressBarHook, ScalarsHook, StageHook, StepClock, StopOnSignalHook, StopSignals,
                                  TraceHook)
from graphcnn.train.validation import (BestCheckpoint, EarlyStoppingHook, EvalResult, MetricsLog, PlateauListener,
                                       ValidationHook, evaluate_split)
from graphcnn.train.view_hooks import TensorBoardViews
from graphcnn.viz.images import write_png

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.train")


@dataclass(frozen=True)
class TrainResult:
    run: RunDir | None  # None: a cluster worker other than the chief
    global_step: int
    stopped_early: bool
    interrupted: bool
    validation: EvalResult | None
    test: EvalResult | None
    best_step: int | None
    images_per_second: float
    peak_memory_mb: float = 0.0  # the process's peak resident memory at the end (results.json too)


# --------------------------------------------------------------------------- 1. prepare


@dataclass(frozen=True)
class Prepared:
    """The data and the numbers every later phase needs."""

    dataset: Dataset
    steps_per_epoch: int
    total_steps: int
    pixel_mean: np.ndarray | None  # float32 [H, W, C] with data.mean_subtraction
    precision: str  # train.precision resolved on this machine
    devices: list[str]  # train.devices resolved on this machine: one tower each when two or more
    batch_size: int  # this process's batch: train.batch_size, split over the workers of an all-reduce cluster
    cluster: ClusterTask | None = None
    split_record: dict | None = None  # the whole dataset's Dataset.split_record (before a worker's share)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.class_names)


def prepare(config: Config, run: RunDir | None, resume: bool, dataset: Dataset | None,
            cluster: ClusterTask | None = None) -> Prepared:
    """Load the data and resolve what the graph needs (steps, pixel mean, precision, devices).
    A worker of a cluster trains on its shard of the training split. Writes nothing: the run's
    files come once the graph is built (:func:`write_run_files`)."""
    tcfg = config.train
    if dataset is None:
        dataset = load_dataset(config.data, config.model.channels, size=config.model.input_size)
    split_record = dataset.split_record() if run is not None else None
    if resume and run is not None:
        _check_same_classes(run, dataset)
        _check_same_splits(run, dataset.name, split_record)
    num_classes = len(dataset.class_names)
    # the step count of the whole run: a cluster's workers share the global step
    steps_per_epoch = max(1, len(dataset.train) // tcfg.batch_size)
    total_steps = tcfg.max_steps if tcfg.max_steps > 0 else tcfg.epochs * steps_per_epoch
    # the pixel mean of the whole training split: every worker normalizes alike
    mean = (compute_pixel_mean(dataset.train, config.model, exif_transpose=config.data.exif_transpose)
            if config.data.mean_subtraction else None)
    log.info("data: %s; %d classes; train %d, validation %d, test %d; %d steps per epoch",
             dataset.name, num_classes, len(dataset.train), len(dataset.validation), len(dataset.test),
             steps_per_epoch)
    if dataset.train.images is not None and dataset.train.paths is not None:
        kept = sum(s.images.nbytes for s in (dataset.train, dataset.validation, dataset.test))
        size = f"{kept / 2**20:.0f} MB" if kept >= 10 * 2**20 else f"{kept / 2**20:.1f} MB"  # not "0 MB"
        log.info("image files decoded once, by the data scan, and kept in memory: %s (data.cache = %s)",
                 size, config.data.cache)
    batch_size = tcfg.batch_size
    if cluster is not None:
        dataset, batch_size = _worker_share(dataset, tcfg.batch_size, cluster)
    precision = resolve_precision(tcfg.precision)
    if cluster is not None and precision == "mixed_bfloat16":
        # a graph run through a worker's gRPC session gets no bfloat16 CPU kernels (oneDNN's
        # rewrite, e.g. of Relu, is float-only there): measured with TensorFlow 2.21
        if tcfg.precision != "auto":
            raise ValueError("train.precision = mixed_bfloat16 does not run in a cluster on CPUs with TensorFlow "
                             "2.21; use float32 (or auto)")
        precision = "float32"
    log.info("precision: %s%s", precision, " (train.precision = auto)" if tcfg.precision == "auto" else "")
    devices = resolve_devices(tcfg.devices)
    if len(devices) > 1:
        # this process's batch: an all-reduce worker's share of train.batch_size is what its towers split
        if batch_size % len(devices):
            raise ValueError(f"train.batch_size: this process's batch of {batch_size} images does not split evenly "
                             f"over its {len(devices)} devices ({', '.join(devices)})"
                             + (f" (train.batch_size {tcfg.batch_size} over {cluster.num_workers} workers)"
                                if batch_size != tcfg.batch_size else ""))
        log.info("devices: %s, one tower each (%d images per tower and step)", ", ".join(devices),
                 batch_size // len(devices))
    return Prepared(dataset, steps_per_epoch, total_steps, mean, precision, devices, batch_size, cluster,
                    split_record)


def _check_same_classes(run: RunDir, dataset: Dataset) -> None:
    """A resumed run trains on the classes it started with: a class folder added or renamed
    since would restore the weights under other names (its preprocessing.json rewritten, every
    prediction of the run mislabelled from then on)."""
    try:
        recorded = Preprocessing.load(run.checkpoints)[0].class_names
    except (OSError, ValueError, KeyError):
        return  # a run killed before its files were written: nothing recorded to differ from
    if tuple(recorded) != tuple(dataset.class_names):
        raise DataError(f"{dataset.name}: its classes ({', '.join(dataset.class_names)}) are not the ones {run.root} "
                        f"trained on ({', '.join(recorded)}): --resume continues a run on its own data. Train a new "
                        f"run, or start one from this run's weights: --init-from {run.root} --exclude-scopes logits")


def _check_same_splits(run: RunDir, data_name: str, current: dict) -> None:
    """A resumed run trains, validates and tests on the splits it started with: a file added
    or removed since reshuffles them (images it validated or tested on would be trained on,
    its best checkpoint judged on other images)."""
    try:
        recorded = json.loads(run.data_split.read_text())  # ASCII: json.dumps escapes any name
    except (OSError, ValueError):
        return  # a run from before data_split.json, or killed before it: nothing to differ from
    changes = split_changes(recorded, current)
    if changes:
        raise DataError(f"{data_name}: changed since {run.root} started: {changes}. --resume continues a run on "
                        f"its own data, and these would split otherwise (images it validated or tested on would be "
                        f"trained on). Put the data back as it was, or train a new run, from this one's weights if "
                        f"you like: --init-from {run.root}")


def write_run_files(config: Config, run: RunDir, data: Prepared, resume: bool) -> None:
    """Write config.json (a new run), the data report, and the checkpoint folders'
    preprocessing.json and inference.meta: once the graph is built (a stage that cannot start
    leaves its run as it was), before the first checkpoint (every checkpoint can be predicted
    from)."""
    tcfg, dataset = config.train, data.dataset
    for folder in (run.train_logs, run.validation_logs):  # TensorBoard's writer would drop every event unsaid
        if not os.access(folder, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
    # the report `graphcnn data` writes: source, classes and counts, sizes, every bad or converted file
    write_text_atomic(run.data_report, report_text(DataCheck(config, dataset.source, dataset, None)))
    if data.split_record is not None and not run.data_split.exists():  # what a resume compares its data with
        write_text_atomic(run.data_split, json.dumps(data.split_record) + "\n")
    if not resume:
        run.write_config(config)
        write_run_root_summaries(config, run.root)  # TensorBoard's custom-scalars layout and HParams
    preprocessing = Preprocessing(config.model.input_height, config.model.input_width, config.model.channels,
                                  dataset.class_names, config.data.mean_subtraction,
                                  *preprocessing_record(config.model.backbone),
                                  test_time_flip=config.model.test_time_flip,
                                  exif_transpose=config.data.exif_transpose)
    for directory in (run.checkpoints, run.best):
        preprocessing.save(directory, data.pixel_mean)
    if tcfg.moving_average_decay > 0:  # checkpoints/ predicts from the averages, best/ holds them as weights
        stages = [*run.stage_trainable_scopes(), tcfg.trainable_scopes] if resume else [tcfg.trainable_scopes]
        export_inference_graph(*inference_graph(config.model, data.num_classes, stages), [run.checkpoints])
    export_inference_graph(*inference_graph(config.model, data.num_classes),
                           [run.best] if tcfg.moving_average_decay > 0 else [run.checkpoints, run.best])


def _worker_share(dataset: Dataset, batch_size: int, task: ClusterTask) -> tuple[Dataset, int]:
    """This worker's shard of the training split (every ``num_workers``-th example from its
    index) and its batch: all-reduce workers split ``train.batch_size`` between them (their
    step is one step of that batch), ps workers each take a whole batch a step."""
    n = task.num_workers
    if task.mode == "allreduce":
        if batch_size % n:
            raise ValueError(f"train.batch_size {batch_size} does not split evenly over {n} all-reduce workers; "
                             f"make it a multiple of {n}")
        batch_size //= n
    train = dataset.train
    if len(train) < n * batch_size:
        raise ValueError(f"the training split ({len(train)} images) is too small for {n} workers of "
                         f"{batch_size} images a step")
    shard = dataclasses.replace(train, labels=train.labels[task.index::n],
                                images=None if train.images is None else train.images[task.index::n],
                                paths=None if train.paths is None else train.paths[task.index::n])
    log.info("%s: training on %d of the %d training images, %d a step", task.describe(), len(shard), len(train),
             batch_size)
    return dataclasses.replace(dataset, train=shard), batch_size


# ----------------------------------------------------------------------------- 2. build


class Built(NamedTuple):
    """The finalized training graph and what was built with it."""

    graph: tf.Graph
    g: GraphHandles
    pipeline: InputPipeline
    checkpoints: CheckpointManager | None  # None on a cluster's workers other than the chief
    summaries: SummaryOps
    views: TensorBoardViews
    init_op: tf.Operation
    init_from: InitFromCheckpoint | None
    train_writer: v1.summary.FileWriter | None  # None on a cluster's workers other than the chief
    val_writer: v1.summary.FileWriter | None
    feed: dict  # the training step's feed: is_training and the dropout keep rates
    restore_by_name: bool = False  # the first session restores the latest checkpoint through init_from
    cluster: "ClusterOps | None" = None
    # train.moving_average_decay: sets the averages that init_from did not restore to their weights
    reset_averages: tf.Operation | None = None


class ClusterOps(NamedTuple):
    """What a cluster worker's graph adds (:mod:`graphcnn.cluster.graph`)."""

    state: cluster_graph.SharedState
    broadcast: cluster_graph.Broadcast | None  # all-reduce mode
    ready: tf.Tensor  # the uninitialized variables' names: empty once the chief has initialized


def build(config: Config, run: RunDir | None, data: Prepared, resume: bool, new_stage: bool = False,
          schedule_start: int = 0) -> Built:
    """The training graph; a cluster worker's is the same graph (same names) placed on the
    cluster (:func:`graphcnn.cluster.graph.device_function`). ``schedule_start``: the step the
    learning-rate schedule counts from (a stage's first, :func:`stage_schedule_start`)."""
    tcfg, task = config.train, data.cluster
    graph = tf.Graph()
    with graph.as_default(), v1.device(cluster_graph.device_function(task) if task else None):
        v1.set_random_seed(tcfg.seed)
        network = network_for(config, data.num_classes, data.precision)
        pipeline = InputPipeline(config.data, config.model, data.dataset.train, data.batch_size,
                                 network.keep_groups, seed=config.data.seed,
                                 augment_fn=augment_fn_for(config.data.augment))
        inputs = pipeline.build()
        replication, state = None, None
        if task is not None:
            state = cluster_graph.shared_state(task)
            reduce = cluster_graph.allreduce_gradients(task, state) if task.mode == "allreduce" else None
            replication = Replication(task.index, task.num_workers, reduce,
                                      [state.count_step] if task.mode == "ps" else [])
        g = build_graph(config, inputs, data.num_classes, data.total_steps, network, data.devices, replication,
                        schedule_start)
        checkpoints = CheckpointManager(run.checkpoints, run.best, tcfg.checkpoints_to_keep) if run else None
        init_from = None
        # a stage's graph trains other variables than the last stage's, whose checkpoint has no
        # optimizer slots for them: restore what it has by name, start the rest afresh
        # (a cluster's other workers get the variables from the chief: run is None there)
        by_name = run is not None and (new_stage or (
            resume and run.stage > 1 and lacks_variables(run.checkpoints, v1.global_variables())))
        # --init-from applies to a new run's first session, and to a resumed run that has no
        # checkpoint yet (killed in its first epoch): it starts again as it first started
        fresh = run is not None and (not resume or not checkpoints_on_disk(run.checkpoints))
        if by_name:
            init_from = build_init_from_checkpoint(str(run.checkpoints), v1.global_variables(), training_state=True)
        elif fresh and tcfg.init_from.startswith(KERAS_PREFIX):
            init_from = build_init_from_keras(tcfg.init_from[len(KERAS_PREFIX):], config.model.backbone,
                                              g.net.keras_layers, v1.global_variables(), tcfg.exclude_scopes)
        elif fresh and tcfg.init_from:
            init_from = build_init_from_checkpoint(tcfg.init_from, v1.global_variables(),
                                                   tcfg.exclude_scopes, tcfg.skip_mismatched)
        conv_kernels = {name: k for name, k in g.net.kernels.items() if len(k.shape) == 4}
        summaries = build_summary_ops(v1.trainable_variables(), conv_kernels, config.log.max_filter_images)
        views = TensorBoardViews(config, run, data.dataset, g, pipeline)
        init_op = v1.global_variables_initializer()
        reset = _reset_averages(g, init_from) if init_from is not None and g.swap_averages is not None else None
        cluster = None
        if task is not None:
            broadcast = cluster_graph.broadcast(task, v1.global_variables()) if task.mode == "allreduce" else None
            ready = v1.report_uninitialized_variables(v1.global_variables() + v1.local_variables())
            ready.mark_used()  # used by the other workers only
            cluster = ClusterOps(state, broadcast, ready)
        # FileWriter refuses to be created under eager execution, i.e. outside a graph context
        train_writer = v1.summary.FileWriter(str(run.train_logs)) if run else None
        val_writer = v1.summary.FileWriter(str(run.validation_logs)) if run else None
    graph.finalize()
    feed = {inputs.is_training: True}
    feed.update({inputs.keep_rates[group]: tcfg.keep_rates.get(group, 1.0) for group in network.keep_groups})
    return Built(graph, g, pipeline, checkpoints, summaries, views, init_op, init_from, train_writer, val_writer,
                 feed, by_name, cluster, reset)


def _reset_averages(g: GraphHandles, init_from: InitFromCheckpoint) -> tf.Operation:
    """An op setting each moving average that ``init_from`` does not restore to its weight.

    A fine-tuned run's averages start from the checkpoint's weights; a new stage keeps the
    averages its checkpoint has and starts the others from their weights."""
    restored = set(init_from.restored)
    with tf.name_scope("moving_average_reset"):
        return tf.group(*[v1.assign(shadow, var) for var, shadow in g.averages
                          if shadow.op.name not in restored])


class RunSessionCreator(v1.train.SessionCreator):
    """Creates the training session: restores the newest complete checkpoint, or initializes
    (then applies ``--init-from`` and the pixel mean), and starts the input pipeline at the
    global step. ``MonitoredSession`` calls it again to recover a session it lost."""

    def __init__(self, built: Built, pixel_mean: np.ndarray | None, resume: bool,
                 config: v1.ConfigProto | None = None, target: str = ""):
        self.built, self.pixel_mean, self.resume = built, pixel_mean, resume
        self.config, self.target, self.by_name = config, target, built.restore_by_name
        self.restored: Path | None = None

    def create_session(self) -> v1.Session:
        b = self.built
        sess = v1.Session(self.target, graph=b.graph, config=self.config)
        # a new stage's first session restores the last stage's checkpoint by name (init_from);
        # a later one (MonitoredSession's recovery) finds this stage's own checkpoints
        self.restored = None if self.by_name else b.checkpoints.restore_latest(sess)
        if self.by_name:
            b.checkpoints.adopt_on_disk()  # the last stage's checkpoints count towards checkpoints_to_keep
        if self.restored is None:
            if self.resume and not self.by_name:
                log.warning("no checkpoint in %s: starting from %s", b.checkpoints.checkpoint_dir,
                            "scratch" if b.init_from is None else f"{b.init_from.checkpoint_path} again")
            sess.run(b.init_op)
            if b.init_from is not None:
                b.init_from.init_fn(sess)
                log.info("initialized %d variables from %s (excluded: %s; new: %d; other shape: %d)",
                         len(b.init_from.restored), b.init_from.checkpoint_path,
                         ", ".join(b.init_from.excluded) or "none", len(b.init_from.missing_in_checkpoint),
                         len(b.init_from.mismatched))
                if b.init_from.mismatched:  # train.skip_mismatched: say which weights start afresh
                    log.warning("init_from: %d variable(s) keep their initial values, their shape differs from "
                                "the checkpoint's (train.skip_mismatched): %s", len(b.init_from.mismatched),
                                "; ".join(f"{m.name} {list(m.graph_shape)}, checkpoint {list(m.checkpoint_shape)}"
                                          for m in b.init_from.mismatched))
                if b.reset_averages is not None:  # the averages start from the restored weights, not the random ones
                    sess.run(b.reset_averages)
            self.by_name = False
            if self.pixel_mean is not None:
                b.g.inputs.pixel_mean.load(self.pixel_mean, sess)
        else:
            log.info("resumed from %s", self.restored)
        b.pipeline.initialize(sess, int(sess.run(b.g.global_step)))  # a resumed run continues its batch order
        return sess


# ----------------------------------------------------------------------------- 3. hooks


class LoopHooks(NamedTuple):
    clock: StepClock
    all: list[v1.train.SessionRunHook]  # in the order TensorFlow calls them
    scalars: ScalarsHook | None  # None: a cluster worker other than the chief (it writes nothing)
    progress: ProgressBarHook | None
    validation: ValidationHook | None
    checkpoint: CheckpointHook | None
    early_stopping: EarlyStoppingHook | None


def loop_hooks(config: Config, run: RunDir | None, data: Prepared, b: Built, signals: StopSignals, progress: bool,
               extra: Sequence[v1.train.SessionRunHook], new_stage: bool = False) -> LoopHooks:
    """The built-in hooks, then ``extra``. The clock comes first (the others read its step);
    validation comes before the views (the projector takes the final validation's features) and
    before the latest checkpoint, so the final one is saved after the final validation has set
    the learning-rate scale. A cluster's other workers (``run`` None) only
    count steps and stop with the chief; its stop hook comes last, after the final checkpoint."""
    tcfg, lcfg, g, task = config.train, config.log, b.g, data.cluster
    clock = StepClock(g.global_step, {"loss": g.loss, "accuracy": g.accuracy, "learning_rate": g.learning_rate},
                      shared=task is not None and task.mode == "ps", last=data.total_steps)
    if run is None:
        hooks = [clock, StopOnSignalHook(signals), *extra, cluster_stop_hook(task, b, clock, data.total_steps)]
        return LoopHooks(clock, hooks, None, None, None, None, None)
    early = EarlyStopping(tcfg.early_stopping)
    monitor = tcfg.early_stopping.monitor
    plateau = PlateauReducer(tcfg.schedule, "max" if monitor == "accuracy" else "min", base_rate=tcfg.learning_rate)
    # restores their state on resume
    metrics = MetricsLog(run, data.steps_per_epoch, data.num_classes, early, plateau, b.checkpoints, clock,
                         b.g.learning_rate_scale, new_stage)
    early_hook = EarlyStoppingHook(early)
    listeners: list[Any] = [*b.views.listeners(b.val_writer, clock), early_hook,
                            BestCheckpoint(b.checkpoints, early, run, guard=signals.saving)]
    if tcfg.schedule.plateau_factor > 0:
        listeners.append(PlateauListener(plateau, g.learning_rate_scale, monitor))
    listeners.append(metrics)
    validation = ValidationHook(
        clock, lambda sess: evaluate_split(sess, g, b.pipeline, data.dataset.validation, repeated=True,
                                    flip=config.model.test_time_flip, features=config.log.projector_images),
        data.steps_per_epoch, tcfg.eval_every_steps, b.val_writer, listeners, interrupted=lambda: signals.raised,
        validated=lambda: metrics.last_validated, swap=g.swap_averages)
    stage = run.stage
    # images of the whole step: an all-reduce step is train.batch_size over the workers, and a
    # shared (ps) step counts every worker's batch
    scalars = ScalarsHook(clock, ScalarWriter(b.train_writer), lcfg.scalars_every,
                          tcfg.batch_size if task is not None and task.mode == "allreduce" else data.batch_size,
                          {"stage": stage} if stage > 1 else None)
    label = run.root.name if run is not None else config.model.name  # the run's name: a folder run's net is "digits"
    bar = ProgressBarHook(clock, data.total_steps, label, scalars) if progress else None
    hooks: list[v1.train.SessionRunHook] = [
        clock, metrics, EventsHook(clock, [b.train_writer, b.val_writer], b.graph if lcfg.graph else None), scalars]
    if bar is not None:
        hooks.append(bar)
    if stage > 1 and b.restore_by_name:  # this start begins the stage (a resume of it after that: no second mark)
        trained = ", ".join(tcfg.trainable_scopes) or "every variable"
        until = f"step {tcfg.max_steps}" if tcfg.max_steps > 0 else f"epoch {tcfg.epochs} (step {data.total_steps})"
        hooks.append(StageHook(clock, b.train_writer, f"stage {stage} from step {{step}}: trains {trained} at "
                               f"learning rate {tcfg.learning_rate:g}, until {until}"))
    if b.summaries.histograms is not None:  # weights only: run on their own after the step
        hooks.append(PeriodicSummaryHook(clock, b.summaries.histograms, lcfg.histograms_every, b.train_writer,
                                         alone=True))
    if b.summaries.filters:
        hooks.append(PeriodicImageHook(clock, b.summaries.filters, lcfg.filters_every, b.train_writer))
    # validation before the views: at the end, a run stopped between validations validates its
    # last step first, and the projector takes that pass's features instead of computing them again
    hooks.append(validation)
    hooks += b.views.hooks(clock, b.train_writer, b.feed)
    if lcfg.trace_every > 0:
        hooks.append(TraceHook(clock, b.train_writer, lcfg.trace_every, [grad for grad, _ in g.gradients], b.feed))
    checkpoint = CheckpointHook(clock, b.checkpoints, data.steps_per_epoch, tcfg.checkpoint_every_steps,
                                [b.train_writer, b.val_writer], guard=signals.saving)
    hooks += [checkpoint, early_hook, StopOnSignalHook(signals, save=checkpoint.save)]
    if not tcfg.check_numerics:  # unguarded: the update is applied, but a NaN loss still stops the run
        hooks.append(NanLossHook(clock))
    hooks += extra
    if task is not None:
        hooks.append(cluster_stop_hook(task, b, clock, data.total_steps))
    return LoopHooks(clock, hooks, scalars, bar, validation, checkpoint, early_hook)


def cluster_stop_hook(task: ClusterTask, b: Built, clock: StepClock, total_steps: int) -> v1.train.SessionRunHook:
    """How a cluster's workers stop together (:mod:`graphcnn.cluster.session`)."""
    if task.mode == "ps":
        return PsStopHook(task, b.cluster.state)
    return AllReduceStopHook(b.g.stop_votes, b.cluster.state.stop_vote, b.g.train_op, b.feed, lambda: clock.step,
                             total_steps)


# ------------------------------------------------------------------------------- 4. fit


def fit(b: Built, creator: RunSessionCreator, hooks: LoopHooks, total_steps: int) -> None:
    """Run the train op until the last step or until a hook asks to stop."""
    try:
        with v1.train.MonitoredSession(session_creator=creator, hooks=hooks.all) as sess:
            # a resumed run that early stopping had ended (its state says so) takes no step
            ended = hooks.early_stopping is not None and hooks.early_stopping.stopped
            while hooks.clock.step < total_steps and not sess.should_stop() and not ended:
                try:
                    sess.run(b.g.train_op, b.feed)
                except v1.train.NanLossDuringTrainingError:
                    raise FloatingPointError(
                        f"training stopped at step {hooks.clock.step}: the loss is NaN. train.check_numerics is "
                        "off, so that update was applied; the run is kept, with the checkpoints saved before it. Lower "
                        "train.learning_rate or set train.clip_global_norm.") from None
                except tf.errors.InvalidArgumentError as err:
                    if "NaN or Inf" not in err.message:
                        raise
                    # the update depends on the check, so the weights are still the last good
                    # ones: keep them as the latest checkpoint (no end() hooks run on an error)
                    if hooks.checkpoint is not None:
                        sess.run_step_fn(lambda step_context: hooks.checkpoint.save(step_context.session))
                    if hooks.clock.step == 0:  # nothing trained, nothing saved: a failed start
                        kept, where = "no step had trained (a new run's folder is removed)", ""
                    else:
                        kept = ("the last good checkpoint is in "
                                f"{b.checkpoints.checkpoint_dir if b.checkpoints else 'the run directory'}")
                        where = " (a new run, or this one's --resume RUN --next-stage --set ...)"
                    raise FloatingPointError(
                        f"training stopped at step {hooks.clock.step + 1}: the loss or its gradients became NaN "
                        f"or Inf; that update was not applied and {kept}. Lower train.learning_rate or "
                        f"train.weight_decay, or set train.clip_global_norm{where}.") from None
    finally:
        if hooks.progress is not None:
            hooks.progress.close()


# ---------------------------------------------------------------------------- 5. finish


def finish(config: Config, run: RunDir, data: Prepared, b: Built, hooks: LoopHooks, interrupted: bool,
           session_config: v1.ConfigProto | None, target: str = "") -> TrainResult:
    """Evaluate the test split with the best weights (or the last), write results.json.
    ``target``: a cluster chief's server (the graph's variables live on the cluster; the
    other workers have stopped). An ``interrupted`` run is not tested (a Ctrl-C means stop
    now, and the run goes on with ``--resume``; ``graphcnn evaluate RUN`` tests it as it is):
    its results.json has no test accuracy."""
    final_step = hooks.clock.step
    test, evaluated = (None, final_step) if interrupted else _final_test(config, data, b, final_step, session_config,
                                                                           target)
    last_val = hooks.validation.last
    logged = [] if last_val else [r for r in run.read_metrics()
                                  if r.get("split") == "validation" and r.get("step", 0) <= final_step]
    record: dict[str, Any] = {
        "global_step": final_step, "evaluated_step": evaluated,
        "steps_per_epoch": data.steps_per_epoch,  # what puts a run without validation on an epoch axis (report)
        "interrupted": interrupted, "stopped_early": hooks.early_stopping.stopped,
        # a start that validated nothing (resumed after its last step): the run's last validation
        "validation_accuracy": last_val.accuracy if last_val else (logged[-1].get("accuracy") if logged else None),
        "best_validation": b.checkpoints.best_metric,
        "test_accuracy": test.accuracy if test else None, "test_loss": test.loss if test else None,
        "test_count": test.count if test else 0, "images_per_second": hooks.scalars.images_per_second,
        "precision": data.precision,
        # the whole process so far: the dataset as loaded (kept decoded folders included), the
        # graph, the training steps and this evaluation
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }
    # a resumed run that had already ended (its results.json is of this step) trained nothing
    # now: its events at this step are written, and what only training measures is kept
    previous = run.read_results() if hooks.clock.steps_run == 0 else None
    ended_before = (previous is not None and previous.get("global_step") == final_step
                    and not previous.get("interrupted"))  # an interrupted end was not tested
    if ended_before:
        record.update({key: previous.get(key) for key in ("validation_accuracy", "images_per_second")})
    if config.log.hparams and not ended_before:
        b.val_writer.add_summary(hparams_end_summary(finished=not interrupted), final_step)
    if test is not None:
        if not ended_before:
            ScalarWriter(b.val_writer).write(final_step, {"test_accuracy": test.accuracy})
        run.append_metrics({"step": final_step, "split": "test", "loss": test.loss, "accuracy": test.accuracy,
                            "evaluated_step": record["evaluated_step"]})  # the weights of this step's checkpoint
    run.write_results(record)
    dataset = data.dataset
    write_examples(run.examples, dataset.test if len(dataset.test) else dataset.validation, dataset.class_names)
    return TrainResult(run, final_step, hooks.early_stopping.stopped, interrupted, last_val, test,
                       b.checkpoints.best_step, hooks.scalars.images_per_second, record["peak_memory_mb"])


def _final_test(config: Config, data: Prepared, b: Built, final_step: int, session_config: v1.ConfigProto | None,
                target: str) -> tuple[EvalResult | None, int]:
    """The test split's evaluation with the best weights (or the last), and the step of those weights."""
    tcfg = config.train
    use_best = tcfg.early_stopping.restore_best and b.checkpoints.best_step is not None
    evaluated = final_step
    with b.graph.as_default(), v1.Session(target, graph=b.graph, config=session_config) as sess:
        if use_best:
            restored = b.checkpoints.restore_best(sess)  # the latest, if best/ is damaged
            evaluated = step_of(restored)
            if evaluated != final_step:
                log.info("restored the best checkpoint (step %d, validation %s %.4f) for the final evaluation",
                         evaluated, tcfg.early_stopping.monitor, b.checkpoints.best_metric)
        else:
            restored = b.checkpoints.restore_latest(sess)
        if b.g.swap_averages is not None and restored is not None and restored.parent != b.checkpoints.best_dir:
            sess.run(b.g.swap_averages)  # best/ holds the averages as the weights; checkpoints/ holds both
        return evaluate_split(sess, b.g, b.pipeline, data.dataset.test, flip=config.model.test_time_flip), evaluated


def write_examples(directory: Path, split: Split, class_names: tuple[str, ...], per_class: int = 1,
                   max_files: int = 10) -> None:
    """Save a few images of ``split`` (one per class first) as files to try ``graphcnn predict`` on."""
    directory.mkdir(exist_ok=True)
    chosen: list[int] = []
    for c in range(len(class_names)):
        chosen.extend(np.flatnonzero(split.labels == c)[:per_class].tolist())
    for i in chosen[:max_files]:
        safe = re.sub(r"[^\w.-]+", "_", class_names[split.labels[i]])  # "T-shirt/top" is no file name
        name = f"{i:05d}_true-{safe}"
        if split.paths is not None:  # the file itself, as a user would give it to predict
            source = Path(split.paths[i])
            shutil.copyfile(source, directory / f"{name}{source.suffix.lower()}")
        else:
            write_png(directory / f"{name}.png", split.images[i])


def train(config: Config, run: RunDir | None, *, resume: bool = False, progress: bool = True,
          dataset: Dataset | None = None, session_config: v1.ConfigProto | None = None,
          hooks: Sequence[v1.train.SessionRunHook] = (), new_stage: bool = False,
          cluster: ClusterTask | None = None, schedule_start: int | None = None) -> TrainResult:
    """Train ``config`` in ``run`` (a new directory, or an existing one with ``resume``).

    ``new_stage`` (with ``resume``): ``config`` differs from the run's (other trainable scopes,
    learning rate, more epochs), as in the second stage of transfer learning: it becomes the
    run's config (the last one is kept as ``config.stage<k>.json``), training goes on from the
    latest checkpoint and its step, its learning-rate schedule counts from there (over its own
    steps), and TensorBoard gets a ``stage`` scalar and text there.

    ``cluster``: this process is a worker of that cluster (:mod:`graphcnn.cluster`; a ps task
    runs :func:`graphcnn.cluster.session.serve` instead). The chief (worker 0) trains in
    ``run`` as a single process would; the other workers get ``run`` None and write nothing,
    and ``schedule_start``: the step the chief's learning-rate schedule counts from
    (:func:`stage_schedule_start`; with ``run``, the run's own is used).

    Writes TensorBoard events, checkpoints, metrics.jsonl and results.json under ``run``.
    ``dataset`` may be given to skip loading (tests, benchmarks); ``hooks`` (any
    ``tf.compat.v1.train.SessionRunHook``) run after the built-in ones, around every step.
    """
    configure_logging()
    if new_stage and not resume:
        raise ValueError("new_stage continues a run: give resume=True")
    if (run is None) != (cluster is not None and not cluster.is_chief):
        raise ValueError("run: a directory for a single process or a cluster's chief, None for its other workers")
    if cluster is not None and config.train.moving_average_decay > 0:
        # the averages would live on the ps tasks (or in every all-reduce worker) and be exchanged
        # with the weights around each validation while the other workers train on them
        raise ValueError("train.moving_average_decay does not run in a cluster yet; set it to 0 there")
    server = start_server(cluster) if cluster is not None else None  # first: the others may wait for it
    data = prepare(config, run, resume, dataset, cluster)
    session_config = devices_session_config(data.devices, session_config)  # logical CPUs for CPU towers
    finish_config = session_config
    if cluster is not None:
        # the test split is evaluated once the other workers have stopped: without them
        session_config, finish_config = (cluster_graph.session_config(cluster, session_config, peers)
                                         for peers in (True, False))
    if run is not None:
        schedule_start = stage_schedule_start(run, resume, new_stage)
    b = build(config, run, data, resume, new_stage, schedule_start or 0)
    if new_stage:
        _check_stage_trains(run, data.total_steps)
    raise_if_interrupted()  # a Ctrl-C that TensorFlow swallowed while the run was prepared: stop, the run as it was
    if run is not None:  # once the graph is built: a stage that cannot start leaves the run as it was
        write_run_files(config, run, data, resume)
    if new_stage:
        log.info("stage %d of this run begins", run.start_stage(config, schedule_start))
    target = server.target if server is not None else ""
    try:
        with StopSignals() as signals, logging_redirect_tqdm([logging.getLogger("graphcnn")]):
            loop = loop_hooks(config, run, data, b, signals, progress, hooks, new_stage)
            creator = session_creator(b, data, resume, session_config, target)
            with b.graph.as_default():
                try:
                    fit(b, creator, loop, data.total_steps)
                finally:
                    if run is not None and loop.clock.steps_run:
                        run.mark_trained()  # a failure from here on keeps the run (RunDir.starting)
            interrupted = signals.raised
        if run is None:
            log.info("%s: stopped at global step %d", cluster.describe(), loop.clock.step)
            return TrainResult(None, loop.clock.step, False, interrupted, None, None, None, float("nan"))
        return finish(config, run, data, b, loop, interrupted, finish_config, target)
    finally:
        for writer in (b.train_writer, b.val_writer):
            if writer is not None:
                writer.close()


def stage_schedule_start(run: RunDir, resume: bool, new_stage: bool) -> int:
    """The global step a run's learning-rate schedule counts from: 0 for its first stage; a
    later stage's own first step, as a new Keras ``fit()`` starts its schedule (a new stage
    begins at the run's latest checkpoint; a resumed one reads ``stages.json``)."""
    if new_stage:
        latest = checkpoints_on_disk(run.checkpoints)
        return (step_of(latest[-1]) or 0) if latest else 0
    return run.stage_start() if resume else 0


def _check_stage_trains(run: RunDir, total_steps: int) -> None:
    """A new stage goes on from the run's step: refuse one whose train.epochs (or max_steps)
    ends at or before it, which would train nothing."""
    latest = checkpoints_on_disk(run.checkpoints)
    done = step_of(latest[-1]) if latest else 0
    if done is not None and total_steps <= done:
        raise ValueError(f"--next-stage: the run has trained {done} steps and this stage's train.epochs (or "
                         f"train.max_steps) ends at step {total_steps}; a stage goes on from the run's step, so "
                         "raise train.epochs to the epochs of every stage together")


def session_creator(b: Built, data: Prepared, resume: bool, config: v1.ConfigProto | None,
                    target: str) -> v1.train.SessionCreator:
    """The training session's creator: this process's own, or a cluster worker's."""
    task = data.cluster
    if task is None or task.is_chief:
        creator = RunSessionCreator(b, data.pixel_mean, resume, config, target)
        if task is None:
            return creator

        def probe() -> None:  # reads every variable's initialized flag: each ps task answers
            with v1.Session(target, graph=b.graph, config=config) as sess:
                sess.run(b.cluster.ready)

        return ChiefSessionCreator(task, creator, b.cluster.state, b.cluster.broadcast, probe)
    start_pipeline = lambda sess: b.pipeline.initialize(sess, int(sess.run(b.g.global_step)))  # noqa: E731
    return WorkerSessionCreator(task, b.graph, target, config, b.init_op, b.cluster.broadcast, b.cluster.ready,
                                start_pipeline)
