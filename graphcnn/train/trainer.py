"""The training loop, in explicit phases (as tensorpack has them):

1. load the data (bad files are reported by name before anything else happens);
2. build the graph: input pipeline, network, loss, train op, savers, summary ops;
3. create the session, then initialize, fine-tune-init or restore (``--resume``);
4. finalize the graph, so nothing can add ops inside the loop;
5. loop: one ``sess.run`` per step carrying the hooks' fetches, evaluate on validation
   every epoch (and every N steps if asked), checkpoint, early-stop;
6. evaluate on the test split with the best weights and write ``results.json``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import signal
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from graphcnn.config import Config
from graphcnn.data.pipeline import InputPipeline, Preprocessing, augment_fn_for, compute_pixel_mean
from graphcnn.data.sources import Dataset, Split, load_dataset
from graphcnn.model.graph import GraphHandles, build_graph, inference_graph, network_for
from graphcnn.model.precision import resolve_precision
from graphcnn.train.checkpoints import CheckpointManager, export_inference_graph
from graphcnn.train.early_stopping import EarlyStopping
from graphcnn.train.finetune import build_init_from_checkpoint
from graphcnn.train.hooks import Hook, PeriodicImageHook, PeriodicSummaryHook
from graphcnn.train.run_dir import RunDir
from graphcnn.train.schedules import PlateauReducer
from graphcnn.train.summaries import ScalarWriter, build_summary_ops, start_session_log
from graphcnn.train.tb_views import TensorBoardViews
from graphcnn.viz.animation import write_png

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

    def confusion(self, num_classes: int) -> np.ndarray:
        """int64 [K, K]: rows are true classes, columns predicted classes."""
        matrix = np.zeros((num_classes, num_classes), np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix


@dataclass(frozen=True)
class TrainResult:
    run: RunDir
    global_step: int
    stopped_early: bool
    interrupted: bool
    validation: EvalResult | None
    test: EvalResult | None
    best_step: int | None
    images_per_second: float


class _StopFlag:
    """Ctrl-C / SIGTERM: finish the current step, save, flush, exit cleanly."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:  # a second Ctrl-C really interrupts
            raise KeyboardInterrupt
        self.raised = True
        log.warning("received %s: stopping after this step and saving a checkpoint", signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def evaluate_split(sess: v1.Session, g: GraphHandles, pipeline: InputPipeline, split: Split,
                   repeated: bool = False) -> EvalResult | None:
    """Run the network over ``split`` (no dropout, batch-norm moving averages).

    ``repeated``: the split is evaluated again later (validation), so its preprocessed
    images may be kept between calls.
    """
    if len(split) == 0:
        return None
    losses, labels, preds, probs = [], [], [], []
    for images, batch_labels in pipeline.eval_batches(sess, split, keep=repeated):
        ce, p, c = sess.run([g.cross_entropy, g.probabilities, g.classes],
                            {g.inputs.images: images, g.inputs.labels: batch_labels})
        losses.append(ce * len(batch_labels))
        labels.append(batch_labels)
        preds.append(c)
        probs.append(p)
    labels_all, preds_all = np.concatenate(labels), np.concatenate(preds)
    return EvalResult(
        loss=float(np.sum(losses) / len(labels_all)),
        accuracy=float(np.mean(labels_all == preds_all)),
        count=len(labels_all),
        labels=labels_all,
        predictions=preds_all,
        probabilities=np.concatenate(probs),
    )


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
        if split.images is not None:
            write_png(directory / f"{name}.png", split.images[i])
        else:
            source = Path(split.paths[i])
            shutil.copyfile(source, directory / f"{name}{source.suffix.lower()}")


def _configure_logging() -> None:
    if not logging.getLogger("graphcnn").handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("graphcnn: %(message)s"))
        logging.getLogger("graphcnn").addHandler(handler)
        logging.getLogger("graphcnn").setLevel(logging.INFO)


def train(config: Config, run: RunDir, *, resume: bool = False, progress: bool = True,
          dataset: Dataset | None = None, session_config: v1.ConfigProto | None = None) -> TrainResult:
    """Train ``config`` in ``run`` (a new directory, or an existing one with ``resume``).

    Writes TensorBoard events, checkpoints, metrics.jsonl and results.json under ``run``.
    ``dataset`` may be given to skip loading (tests, benchmarks).
    """
    _configure_logging()
    tcfg = config.train

    # 1. data --------------------------------------------------------------------------
    if dataset is None:
        dataset = load_dataset(config.data, config.model.channels)
    if dataset.warnings:
        run.data_report.write_text("\n".join(dataset.warnings) + "\n")
    num_classes = len(dataset.class_names)
    steps_per_epoch = max(1, len(dataset.train) // tcfg.batch_size)
    total_steps = tcfg.max_steps if tcfg.max_steps > 0 else tcfg.epochs * steps_per_epoch
    if not resume:
        config.save(run.config)
    mean = compute_pixel_mean(dataset.train, config.model) if config.data.mean_subtraction else None
    preprocessing = Preprocessing(config.model.input_height, config.model.input_width, config.model.channels,
                                  dataset.class_names, config.data.mean_subtraction)
    for directory in (run.checkpoints, run.best):
        preprocessing.save(directory, mean)
    export_inference_graph(*inference_graph(config.model, num_classes), [run.checkpoints, run.best])
    log.info("data: %s; %d classes; train %d, validation %d, test %d; %d steps per epoch",
             dataset.name, num_classes, len(dataset.train), len(dataset.validation), len(dataset.test),
             steps_per_epoch)
    precision = resolve_precision(tcfg.precision)
    log.info("precision: %s%s", precision, " (train.precision = auto)" if tcfg.precision == "auto" else "")

    # 2. graph -------------------------------------------------------------------------
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(tcfg.seed)
        network = network_for(config, num_classes, precision)
        pipeline = InputPipeline(config.data, config.model, dataset.train, tcfg.batch_size,
                                 network.keep_groups, seed=config.data.seed,
                                 augment_fn=augment_fn_for(config.data.augment))
        inputs = pipeline.build()
        g = build_graph(config, inputs, num_classes, total_steps, network)
        checkpoints = CheckpointManager(run.checkpoints, run.best, tcfg.checkpoints_to_keep)
        init_from = None
        if tcfg.init_from and not resume:
            init_from = build_init_from_checkpoint(tcfg.init_from, v1.global_variables(),
                                                   tcfg.exclude_scopes, tcfg.skip_mismatched)
        summary_ops = build_summary_ops(v1.trainable_variables(), {
            name: k for name, k in g.net.kernels.items() if len(k.shape) == 4}, config.log.max_filter_images)
        views = TensorBoardViews(config, run, dataset, g, pipeline)
        init_op = v1.global_variables_initializer()
        # FileWriter refuses to be created under eager execution, i.e. outside a graph context
        train_writer = v1.summary.FileWriter(str(run.train_logs))
        val_writer = v1.summary.FileWriter(str(run.validation_logs))

    with graph.as_default():  # savers and writers work only inside their graph
        # 3. session: initialize or restore --------------------------------------------------
        sess = v1.Session(graph=graph, config=session_config)
        restored = checkpoints.restore_latest(sess) if resume else None
        if restored is None:
            if resume:
                log.warning("no checkpoint in %s: starting from scratch", run.checkpoints)
            sess.run(init_op)
            if init_from is not None:
                init_from.init_fn(sess)
                log.info("initialized %d variables from %s (excluded: %s)", len(init_from.restored), tcfg.init_from,
                         ", ".join(init_from.excluded) or "none")
            if mean is not None:
                inputs.pixel_mean.load(mean, sess)
        else:
            log.info("resumed from %s", restored)
        step = int(sess.run(g.global_step))
        pipeline.initialize(sess, step)  # a resumed run continues the order of its batches

        # 4. finalize: the loop below can only run what is already in the graph -------------
        graph.finalize()

        # 5. loop --------------------------------------------------------------------------
        if config.log.graph and restored is None:
            train_writer.add_graph(graph)
        for w in (train_writer, val_writer):
            start_session_log(w, step)
        train_scalars, val_scalars = ScalarWriter(train_writer), ScalarWriter(val_writer)
        hooks: list[Hook] = [
            # weights only: run on their own, after the step (see graphcnn/train/hooks.py)
            PeriodicSummaryHook("histograms", summary_ops.histograms, config.log.histograms_every, train_writer, sess),
            PeriodicImageHook(summary_ops.filters, config.log.filters_every, train_writer, sess),
            *views.hooks(sess, train_writer, val_writer, resumed=restored is not None),
        ]
        early = EarlyStopping(tcfg.early_stopping)
        plateau = PlateauReducer(tcfg.schedule, "max" if tcfg.early_stopping.monitor == "accuracy" else "min",
                                 base_rate=tcfg.learning_rate)
        state_file = run.root / "train_state.json"
        if resume and state_file.exists():
            state = json.loads(state_file.read_text())
            early.load_state_dict(state["early_stopping"])
            plateau.load_state_dict(state["plateau"])

        feed = {inputs.is_training: True}
        feed.update({inputs.keep_rates[g_]: tcfg.keep_rates.get(g_, 1.0) for g_ in network.keep_groups})
        base_fetches = {"train": g.train_op, "loss": g.loss, "accuracy": g.accuracy, "lr": g.learning_rate}
        plain_step = sess.make_callable(list(base_fetches.values()), list(feed))

        def validate(step: int) -> EvalResult | None:
            result = evaluate_split(sess, g, pipeline, dataset.validation, repeated=True)
            if result is None:
                return None
            val_scalars.write(step, {"loss": result.loss, "accuracy": result.accuracy})
            for hook in hooks:
                hook.after_validation(step, result)
            val_writer.flush()
            metric = result.accuracy if tcfg.early_stopping.monitor == "accuracy" else result.loss
            improved_best = early.update(step, metric)  # improvement by more than min_delta
            if improved_best:
                checkpoints.save_best(sess, step, tcfg.early_stopping.monitor, metric)
            if tcfg.schedule.plateau_factor > 0:
                scale = float(sess.run(g.learning_rate_scale))
                new_scale = plateau.update(metric, scale)
                if new_scale != scale:
                    g.learning_rate_scale.load(new_scale, sess)
                    log.info("validation %s has not improved for %d evaluations: learning rate x%g",
                             tcfg.early_stopping.monitor, tcfg.schedule.plateau_patience, tcfg.schedule.plateau_factor)
            run.append_metrics({"step": step, "epoch": step / steps_per_epoch, "split": "validation",
                                "loss": result.loss, "accuracy": result.accuracy, "best": improved_best})
            state_file.write_text(json.dumps({"early_stopping": early.state_dict(), "plateau": plateau.state_dict()}))
            return result

        def save(step: int) -> None:
            checkpoints.save(sess, step)
            train_writer.flush()

        last_val: EvalResult | None = None
        last_val_step = -1
        interrupted = stopped_early = False
        window_images, window_start = 0, time.perf_counter()
        speed = 0.0
        speeds: list[float] = []  # images/s per logging window, for the run's summary figure
        bar = tqdm(total=total_steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True,
                   desc=f"{config.model.name}")
        with _StopFlag() as stop:
            try:
                while step < total_steps:
                    fetches = dict(base_fetches)
                    for hook in hooks:
                        fetches.update(hook.fetches(step + 1))
                    # every log.trace_every steps the real train step is traced, so TensorBoard's
                    # graph view can colour nodes by compute time and memory
                    trace = config.log.trace_every > 0 and (step + 1) % config.log.trace_every == 0
                    metadata = v1.RunMetadata() if trace else None
                    options = v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE) if trace else None
                    try:
                        if trace or len(fetches) > len(base_fetches):
                            results = sess.run(fetches, feed, options=options, run_metadata=metadata)
                        else:  # most steps: the prepared callable skips sess.run's per-call fetch parsing
                            results = dict(zip(base_fetches, plain_step(*feed.values())))
                    except tf.errors.InvalidArgumentError as err:
                        if "NaN or Inf" in err.message:
                            raise FloatingPointError(
                                f"training stopped at step {step + 1}: the loss or its gradients became NaN or Inf; "
                                f"that update was not applied and the last good checkpoint is in {run.checkpoints}. Lower "
                                "train.learning_rate or set train.clip_global_norm.") from None
                        raise
                    step += 1
                    if trace:
                        train_writer.add_run_metadata(metadata, f"step{step}", step)
                    window_images += tcfg.batch_size
                    for hook in hooks:
                        hook.after_step(step, results)
                    if config.log.scalars_every > 0 and step % config.log.scalars_every == 0:
                        now = time.perf_counter()
                        speed = window_images / max(now - window_start, 1e-9)
                        speeds.append(speed)
                        window_images, window_start = 0, now
                        train_scalars.write(step, {"loss": results["loss"], "accuracy": results["accuracy"],
                                                   "learning_rate": results["lr"], "images_per_second": speed})
                    bar.update(1)  # also the per-step clock of scripts/benchmark.py
                    if progress:
                        bar.set_postfix(loss=f"{results['loss']:.3f}", acc=f"{results['accuracy']:.3f}",
                                        img_s=f"{speed:.0f}", refresh=False)
                    epoch_end = step % steps_per_epoch == 0
                    if epoch_end or (tcfg.eval_every_steps > 0 and step % tcfg.eval_every_steps == 0):
                        last_val, last_val_step = validate(step) or last_val, step
                        if last_val is not None:
                            bar.write(f"step {step} (epoch {step / steps_per_epoch:.2f}): validation "
                                      f"accuracy {last_val.accuracy:.4f}, loss {last_val.loss:.4f}")
                    if step < total_steps and (
                            epoch_end or (tcfg.checkpoint_every_steps > 0 and step % tcfg.checkpoint_every_steps == 0)):
                        save(step)  # the last step is saved below, once
                    if early.should_stop:
                        stopped_early = True
                        bar.write(f"early stopping at step {step}: validation {tcfg.early_stopping.monitor} has not "
                                  f"improved for {tcfg.early_stopping.patience} evaluations "
                                  f"(best {early.best:.4f} at step {early.best_step})")
                        break
                    if stop.raised:
                        interrupted = True
                        break
            finally:
                bar.close()
                save(step)
                for hook in hooks:
                    hook.end(step)

        # 6. final evaluation with the best weights -----------------------------------------
        final_step = step
        if last_val_step != step:
            last_val = validate(step) or last_val
        use_best = tcfg.early_stopping.restore_best and checkpoints.best_step is not None
        if use_best and checkpoints.best_step != step:
            checkpoints.restore_best(sess)
            log.info("restored the best checkpoint (step %d, validation %s %.4f) for the final evaluation",
                     checkpoints.best_step, tcfg.early_stopping.monitor, checkpoints.best_metric)
        test = evaluate_split(sess, g, pipeline, dataset.test)
        # the first window includes graph warm-up; the median of the rest is the steady speed
        images_per_second = float(np.median(speeds[1:] if len(speeds) > 1 else speeds)) if speeds else math.nan
        results_record: dict[str, Any] = {
            "global_step": final_step, "evaluated_step": checkpoints.best_step if use_best else final_step,
            "interrupted": interrupted, "stopped_early": stopped_early,
            "validation_accuracy": last_val.accuracy if last_val else None,
            "best_validation": checkpoints.best_metric,
            "test_accuracy": test.accuracy if test else None, "test_loss": test.loss if test else None,
            "test_count": test.count if test else 0, "images_per_second": images_per_second,
            "precision": precision,
        }
        if test is not None:
            val_scalars.write(final_step, {"test_accuracy": test.accuracy})
            run.append_metrics({"step": final_step, "split": "test", "loss": test.loss, "accuracy": test.accuracy})
        run.results.write_text(json.dumps(results_record, indent=2) + "\n")
        write_examples(run.root / "examples", dataset.test if len(dataset.test) else dataset.validation,
                       dataset.class_names)
        train_writer.close()
        val_writer.close()
        sess.close()
    return TrainResult(run, final_step, stopped_early, interrupted, last_val, test, checkpoints.best_step,
                       images_per_second)

