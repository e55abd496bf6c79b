#!/usr/bin/env python
"""Benchmark graphcnn training, its alternatives and its defaults, and append the results to BENCHMARKS.md.

    python scripts/benchmark.py [--rounds N] [--quick] [--out BENCHMARKS.md] [--paths a,b,...]

The parent process never imports TensorFlow. Every measurement runs in its own subprocess
(``--worker NAME``), because ``TF_ENABLE_ONEDNN_OPTS`` and ``TF_XLA_FLAGS`` are read when
TensorFlow is imported. Paths run interleaved in rounds (A B C, A B C, ...) so that drift of
a shared machine hits them all alike; each table gives median/min/max over the rounds.

Steady state only: every training path skips its first ``warmup`` steps (graph
optimization, first-touch allocations, first histogram/filter summaries at step 1) and times
the next ``steps`` steps. For graphcnn's own trainer the per-step clock is the trainer's
progress bar (``StepClock``: a disabled tqdm whose ``update`` is timed, so the trainer's code is
unchanged); the intervals that contain the end-of-epoch validation and checkpoint are left
out of the steady rate and reported separately ("incl. epoch ends").

Paths (``--paths``; default: all):

* ``graphcnn``     (a) graphcnn's trainer, default settings, digits preset on the embedded digits, batch 128
* ``nolog``        (d) the same with TensorBoard logging off. (a) also measures logging inside its own
                   run: each step where a summary is due against its nearest plain steps, plus the
                   time of the views written at each validation
* ``paired``       (a), (c), (b) (TF defaults, oneDNN on, mixed_bfloat16 policy) and (a) at float32 precision:
                   one process each, taking turns in blocks of 10 steps: per-cycle ratios that the
                   drift between processes cannot blur
* ``inprocess``    (a) and (c) in one process, taking turns in blocks of 5 steps: the trainer's clock hands
                   over to a (c) session between its blocks, so both share the thread pools, the
                   caches and the load of the moment, with no process switch between them
* ``ingraph``      (c) the same graph, one batch held in a variable where the trainer has its pipeline, its
                   input placeholders fed as the trainer feeds them, ``sess.run(train_op)`` only
* ``keras``        (b) the same net as a Keras 3 ``model.fit``, TF defaults (oneDNN variable unset)
* ``keras_onednn`` (b) the same with ``TF_ENABLE_ONEDNN_OPTS=1``
* ``sweep``        defaults for (a): oneDNN off, thread counts, XLA, float32
                   precision, TF1's gradient gating
* ``predict``      (e) cold ``graphcnn predict`` vs ``import tensorflow``; batch inference with Predictor
* ``decode``       image-folder decode/resize throughput vs the dog_breeds_vgg training rate
* ``accuracy``     full default digits runs, default precision vs float32, seeds 0-2 (not in rounds)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT_TAG = "BENCH_RESULT "
BATCH = 128  # every digits path


# ---------------------------------------------------------------------------------------------
# workers (run in subprocesses; they may import TensorFlow)
# ---------------------------------------------------------------------------------------------

def _emit(result: dict) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


def _digits_config(batch: int, max_steps: int, log_off: bool, precision: str = "auto"):
    import dataclasses

    from graphcnn.presets import get_preset

    config = get_preset("digits")
    train = dataclasses.replace(config.train, batch_size=batch, max_steps=max_steps, precision=precision)
    config = dataclasses.replace(config, train=train)
    if log_off:
        config = dataclasses.replace(config, log=logging_off())
    return config


def logging_off():
    """LogConfig with every TensorBoard item off: scalars/histograms/filters_every = 0, graph=False, and so
    every other ``*_every`` (0), boolean switch (False) and image count of the views that exist."""
    import dataclasses

    from graphcnn.config import LogConfig

    off = {}
    for f in dataclasses.fields(LogConfig):
        default = getattr(LogConfig(), f.name)
        if f.name.endswith("_every") or f.name in ("projector_images", "probe_images"):
            off[f.name] = 0
        elif isinstance(default, bool):
            off[f.name] = False
    return LogConfig(**off)


def flops_per_image(model, num_classes: int) -> float:
    """Training FLOPs per image: 2 x MACs of the conv/dense layers forward, x3 for forward + backward."""
    h, w, c = model.input_height, model.input_width, model.channels
    macs = 0
    for layer in model.layers:
        if layer.type == "conv":
            macs += h * w * layer.kernel_size ** 2 * c * layer.filters
            c = layer.filters
        elif layer.type == "pool":
            h, w = -(-h // 2), -(-w // 2)
        elif layer.type == "dense":
            macs += h * w * c * layer.units
            h, w, c = 1, 1, layer.units
    macs += h * w * c * num_classes
    return 2.0 * macs * 3


def _resized(images, size: int):
    """uint8 [N, h, w, 1] -> uint8 [N, size, size, 1], resized exactly as the pipeline's preprocess does."""
    import numpy as np
    import tensorflow as tf

    x = tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear", antialias=True)
    return np.clip(np.round(x.numpy()), 0, 255).astype(np.uint8)


class StepClock:
    """Per-step durations of graphcnn's trainer, read from its progress bar.

    The trainer calls ``tqdm.update`` once per step (its bar is disabled in these runs, so only
    the call remains); a subclass installed in the trainer module times those calls, so the
    trainer's code is unchanged. ``between(step)``, if given, runs after step ``first`` and every
    ``every`` steps after it; its time is kept out of the next step's duration.
    """

    def __init__(self, between=None, every: int = 10, first: int = 10):
        import graphcnn.train.trainer as trainer_module

        self.steps: list[tuple[int, float]] = []  # (step, seconds): from the end of step - 1 to the end of step
        self.between, self.every, self.first = between, every, first
        self._count, self._last = 0, None
        clock, base = self, trainer_module.tqdm

        class ClockedBar(base):
            def update(self, n=1):
                clock._tick()
                return super().update(n)

        trainer_module.tqdm = ClockedBar

    def block(self, end: int, size: int, steps_per_epoch: int) -> list[float]:
        """Durations of the ``size`` steps up to ``end``, less those that hold an epoch end."""
        return [dt for s, dt in self.steps if end - size < s <= end and not after_epoch_end(s, steps_per_epoch)]

    def _tick(self) -> None:
        now = time.perf_counter()
        self._count += 1
        if self._last is not None:
            self.steps.append((self._count, now - self._last))
        if self.between is not None and self._count >= self.first and (self._count - self.first) % self.every == 0:
            self.between(self._count)
            now = time.perf_counter()
        self._last = now


def after_epoch_end(step: int, steps_per_epoch: int) -> bool:
    """Whether the duration of ``step`` holds the validation + checkpoint that ended the previous step's epoch."""
    return step > 1 and (step - 1) % steps_per_epoch == 0


def _steady_rate(steps: list[tuple[int, float]], warmup: int, steps_per_epoch: int,
                 batch: int) -> tuple[float, float, int]:
    """(steady images/s without epoch-end intervals, images/s including them, timed steps)."""
    timed = [(s, dt) for s, dt in steps if s > warmup]
    kept = [dt for s, dt in timed if not after_epoch_end(s, steps_per_epoch)]
    return len(kept) * batch / sum(kept), len(timed) * batch / sum(dt for _, dt in timed), len(timed)


def logging_steps(log) -> list[int]:
    """The ``*_every`` periods of a LogConfig that add work to a training step (0 = off)."""
    import dataclasses

    return [getattr(log, f.name) for f in dataclasses.fields(log)
            if f.name.endswith("_every") and getattr(log, f.name) > 0]


def logging_cost_in_run(steps: list[tuple[int, float]], periods: list[int], warmup: int,
                        steps_per_epoch: int, neighbours: int = 4) -> dict:
    """TensorBoard logging's share of training time, measured inside one default run.

    A step where any periodic summary is due is compared with the median of its nearest plain
    steps (up to ``neighbours`` on each side, no logging, no epoch end): the difference is its
    logging time. Steps that log the same things (the same periods due) cost the same, so
    each such group counts the median of its differences once per step: a load spike that
    lands on one of the 17 scalar steps of a run does not count as logging. Divided by the
    total time of the timed steps (epoch-end intervals left out, as in the steady rate), this
    is the cost of logging with the load of the moment cancelled, which a comparison of two
    processes cannot do on a shared machine. ``raw_share`` sums every difference as it is.
    """
    timed = [(s, dt) for s, dt in steps if s > warmup and not after_epoch_end(s, steps_per_epoch)]
    logging = {s for s, _ in timed if any(s % p == 0 for p in periods)}
    plain = [(s, dt) for s, dt in timed if s not in logging]
    groups: dict[tuple[int, ...], list[float]] = {}
    per_step = []
    for s, dt in timed:
        if s not in logging:
            continue
        near = sorted(plain, key=lambda x: abs(x[0] - s))[:2 * neighbours]
        e = dt - statistics.median(d for _, d in near)
        groups.setdefault(tuple(p for p in periods if s % p == 0), []).append(e)
        per_step.append((s, e))
    extra = sum(statistics.median(es) * len(es) for es in groups.values())
    total = sum(dt for _, dt in timed)
    return {"logging_share": extra / total, "raw_share": sum(e for _, e in per_step) / total,
            "logging_steps": len(logging), "timed_steps": len(timed),
            "largest_ms": sorted(((round(e * 1000, 1), s) for s, e in per_step), reverse=True)[:3]}


def _matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    import numpy as np
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        rng = np.random.default_rng(0)
        a = tf.Variable(rng.standard_normal((n, n), dtype=np.float32))
        b = tf.Variable(rng.standard_normal((n, n), dtype=np.float32))
        out = tf.reduce_sum(tf.matmul(a, b))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(2):
                sess.run(out)
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                sess.run(out)
                times.append(time.perf_counter() - t)
    return 2.0 * n ** 3 / statistics.median(times) / 1e9


def _time_calls(cls, name: str) -> list[float]:
    """Wrap ``cls.name`` so each call's seconds are appended to the returned list."""
    times: list[float] = []
    original = getattr(cls, name)

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - t)

    setattr(cls, name, timed)
    return times


def worker_graphcnn(opts: dict) -> dict:
    """(a)/(d)/sweep: graphcnn's own trainer on the embedded digits."""
    import tensorflow as tf

    from graphcnn.config import DataConfig
    from graphcnn.data.sources import load_dataset
    from graphcnn.train.run_dir import RunDir
    from graphcnn.train.tb_views import EvalViewsHook
    from graphcnn.train.trainer import train

    warmup, steps = opts["warmup"], opts["steps"]
    config = _digits_config(BATCH, warmup + steps, opts.get("log_off", False), opts.get("precision", "auto"))
    if opts.get("gate_op"):  # TF1's default gradient gating, which graphcnn turned off (see model/graph.py)
        compute = tf.compat.v1.train.Optimizer.compute_gradients
        tf.compat.v1.train.Optimizer.compute_gradients = lambda self, *a, **k: compute(
            self, *a, **dict(k, gate_gradients=tf.compat.v1.train.Optimizer.GATE_OP))
    dataset = load_dataset(DataConfig(), 1)
    session_config = None
    if opts.get("intra") is not None or opts.get("inter") is not None or opts.get("xla_config"):
        session_config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=opts.get("intra") or 0,
                                                  inter_op_parallelism_threads=opts.get("inter") or 0)
        if opts.get("xla_config"):
            session_config.graph_options.optimizer_options.global_jit_level = tf.compat.v1.OptimizerOptions.ON_1
    clock = StepClock()
    views_time = _time_calls(EvalViewsHook, "after_validation")  # the epoch-end share of logging
    run = RunDir.create(opts["workdir"], opts["name"], prefix="bench")
    result = train(config, run, dataset=dataset, progress=False, session_config=session_config)
    steps_per_epoch = max(1, len(dataset.train) // BATCH)
    steady, with_epoch_ends, n = _steady_rate(clock.steps, warmup, steps_per_epoch, BATCH)
    out = {"images_per_second": steady, "images_per_second_incl_epoch_ends": with_epoch_ends, "timed_steps": n,
           "trainer_reported_images_per_second": result.images_per_second, "run": str(run.root),
           "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "tf_version": tf.__version__,
           "train_mflop_per_image": flops_per_image(config.model, 10) / 1e6}
    if not opts.get("log_off"):
        out["logging_in_run"] = logging_cost_in_run(clock.steps, logging_steps(config.log), warmup, steps_per_epoch)
        # the views written at each validation (confusion matrix, mistakes, PR curves), over all timed time
        timed_total = sum(dt for s, dt in clock.steps if s > warmup)
        ends = [s for s, _ in clock.steps if s > warmup and after_epoch_end(s, steps_per_epoch)]
        before = len(range(steps_per_epoch, warmup, steps_per_epoch))  # validations in the warm-up
        out["logging_in_run"]["epoch_end_views_share"] = sum(views_time[before:before + len(ends)]) / timed_total
    if opts.get("matmul"):
        out["matmul_gflops"] = _matmul_gflops(*((1024, 5) if opts.get("quick") else (2048, 10)))
    return out


def _ingraph_session(opts: dict, steps_total: int):
    """The graph of (c): one preprocessed batch in a variable, no input pipeline, the trainer's placeholders.

    Returns (run one training step, close, batch size, MFLOP per image).
    """
    import numpy as np
    import tensorflow as tf

    from graphcnn.config import DataConfig
    from graphcnn.data.pipeline import InputHandles
    from graphcnn.data.sources import load_dataset
    from graphcnn.model.graph import build_graph, network_for

    v1 = tf.compat.v1
    if opts.get("preset", "digits") == "digits":
        size = BATCH
        config = _digits_config(size, steps_total, False)
        dataset = load_dataset(DataConfig(), 1)
        batch = _resized(dataset.train.images[:size], config.model.input_height).astype(np.float32) / 255.0
        batch_labels, num_classes = dataset.train.labels[:size], 10
    else:  # another preset on random data (dog_breeds_vgg: what must the image-folder pipeline keep up with)
        import dataclasses

        from graphcnn.presets import get_preset

        size = opts["batch"]
        config = get_preset(opts["preset"])
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=size))
        rng = np.random.default_rng(0)
        mc = config.model
        batch = rng.random((size, mc.input_height, mc.input_width, mc.channels), dtype=np.float32)
        batch_labels, num_classes = rng.integers(0, 2, size).astype(np.int64), 2
    m = config.model
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(config.train.seed)
        network = network_for(config, num_classes)  # the trainer's, compute precision included
        # the trainer's input layer (placeholders with defaults, fed as the trainer feeds them),
        # with one batch in a variable where the trainer has its pipeline
        with tf.name_scope("input"):
            batch_images = tf.Variable(batch, trainable=False, name="batch_images")
            batch_labels = tf.Variable(batch_labels, trainable=False, name="batch_labels")
            images = v1.placeholder_with_default(batch_images.read_value(), [None, *batch.shape[1:]], name="images")
            labels = v1.placeholder_with_default(batch_labels.read_value(), [None], name="labels")
            is_training = v1.placeholder_with_default(False, [], name="is_training")
            keep = {g: v1.placeholder_with_default(1.0, [], name=f"keep_rate_{g}") for g in network.keep_groups}
            pixel_mean = tf.Variable(np.zeros(batch.shape[1:], np.float32), trainable=False, name="pixel_mean")
            inputs = InputHandles(images, labels, is_training, keep, pixel_mean)
        g = build_graph(config, inputs, num_classes, steps_total, network)
        init = v1.global_variables_initializer()
        sess = v1.Session(graph=graph)
        sess.run(init)
        graph.finalize()
    feed = {is_training: True, **{keep[k]: config.train.keep_rates.get(k, 1.0) for k in network.keep_groups}}
    return (lambda: sess.run(g.train_op, feed)), sess.close, size, flops_per_image(m, num_classes) / 1e6


def worker_ingraph(opts: dict) -> dict:
    """(c): the same graph with one preprocessed batch in a variable, and no input pipeline."""
    warmup, steps = opts["warmup"], opts["steps"]
    step, close, size, mflop = _ingraph_session(opts, warmup + steps)
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t
    close()
    return {"images_per_second": steps * size / dt, "timed_steps": steps, "batch": size,
            "train_mflop_per_image": mflop, "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}


def worker_inprocess(opts: dict) -> dict:
    """``inprocess``: graphcnn's trainer and (c) in one process, in turns of ``block`` steps."""
    from graphcnn.config import DataConfig
    from graphcnn.data.sources import load_dataset
    from graphcnn.train.run_dir import RunDir
    from graphcnn.train.trainer import train

    warmup, block, cycles = opts["warmup"], opts["block"], opts["cycles"]
    step, close, _, _ = _ingraph_session({}, 10 ** 6)
    for _ in range(warmup):
        step()
    dataset = load_dataset(DataConfig(), 1)
    steps_per_epoch = max(1, len(dataset.train) // BATCH)
    a_rates: list[float] = []
    c_rates: list[float] = []

    def between(at: int) -> None:  # after each block of the trainer: time it, then run a block of (c)
        if at <= warmup:
            return
        kept = clock.block(at, block, steps_per_epoch)
        if len(kept) < block:  # the block held an epoch end: its pair is left out
            return
        t = time.perf_counter()
        for _ in range(block):
            step()
        c_rates.append(block * BATCH / (time.perf_counter() - t))
        a_rates.append(block * BATCH / sum(kept))

    clock = StepClock(between, every=block, first=warmup)
    config = _digits_config(BATCH, warmup + block * cycles, False)
    train(config, RunDir.create(opts["workdir"], opts["name"], prefix="bench"), dataset=dataset, progress=False)
    close()
    return {"a_rates": a_rates, "c_rates": c_rates, "block": block, "images_per_second": statistics.median(a_rates),
            "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}


def _keras_model(policy: str = "float32"):
    """(b)'s network as a compiled Keras 3 model, and its input: the digits at 28x28x1, shuffled, batch 128.

    ``policy``: Keras's dtype policy (``mixed_bfloat16``: the like-for-like of graphcnn's precision).
    """
    import numpy as np
    import tensorflow as tf
    import keras

    from graphcnn.config import DataConfig
    from graphcnn.data.sources import load_dataset

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    dataset = load_dataset(DataConfig(), 1)
    x = _resized(dataset.train.images, 28).astype(np.float32) / 255.0
    y = dataset.train.labels
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=0).repeat().batch(BATCH)
          .prefetch(tf.data.AUTOTUNE))
    L = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(16, 3, padding="same", activation="relu"), L.Conv2D(16, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2, padding="same"),
        L.Conv2D(32, 3, padding="same", activation="relu"), L.Conv2D(32, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2, padding="same"),
        L.Flatten(), L.Dense(128, activation="relu"), L.Dropout(0.5), L.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model, ds


def worker_keras(opts: dict) -> dict:
    """(b): the same network as a Keras 3 model.fit, same data (28x28x1 digits), batch 128, Adam."""
    import keras

    warmup, steps = opts["warmup"], opts["steps"]
    model, ds = _keras_model(opts.get("policy", "float32"))
    stamps: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Clock()])
    dt = stamps[-1] - stamps[warmup - 1]
    return {"images_per_second": steps * BATCH / dt, "timed_steps": steps, "keras_version": keras.__version__,
            "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "policy": opts.get("policy", "float32")}


class Turns:
    """A worker's side of the turn-taking in ``paired``: one line per message on stdin/stdout."""

    def ready(self) -> None:
        print("TURN_READY", flush=True)

    def wait(self) -> None:
        line = sys.stdin.readline()
        if line.strip() != "go":
            raise RuntimeError(f"expected 'go' from the benchmark parent, got {line!r}")

    def report(self, seconds: float, images: int) -> None:
        print(f"TURN_BLOCK {seconds!r} {images}", flush=True)


def worker_turns(opts: dict) -> dict:
    """One path of ``paired``: after warm-up, wait for "go", run ``block`` steps, report, repeat.

    Every path runs in its own process (so each has its own ``TF_ENABLE_ONEDNN_OPTS``), and
    all of them stay alive while the parent hands out turns, so a cycle of blocks sees one load.
    """
    path, warmup, block, cycles = opts["path"], opts["warmup"], opts["block"], opts["cycles"]
    turns = Turns()
    if path in ("graphcnn", "graphcnn_fp32"):  # the trainer drives; its clock takes the turns between its blocks
        from graphcnn.config import DataConfig
        from graphcnn.data.sources import load_dataset
        from graphcnn.train.run_dir import RunDir
        from graphcnn.train.trainer import train

        dataset = load_dataset(DataConfig(), 1)
        steps_per_epoch = max(1, len(dataset.train) // BATCH)

        def between(step: int) -> None:
            if step > warmup:  # the block that just ended: its steps, less epoch-end intervals
                kept = clock.block(step, block, steps_per_epoch)
                turns.report(sum(kept), len(kept) * BATCH)
            else:
                turns.ready()
            if step < warmup + block * cycles:
                turns.wait()

        clock = StepClock(between, every=block, first=warmup)  # at warm-up's end: ready, then take turns
        config = _digits_config(BATCH, warmup + block * cycles, False,
                                "float32" if path == "graphcnn_fp32" else "auto")
        train(config, RunDir.create(opts["workdir"], opts["name"], prefix="bench"), dataset=dataset,
              progress=False)
        return _turns_result(path)
    if path == "ingraph":
        step, close, _, _ = _ingraph_session({}, warmup + block * cycles)
        finish = lambda: None  # noqa: E731 (sess.run returns when the step is done)
    else:  # keras, keras_onednn, keras_bf16: the train function model.fit runs, on an iterator kept across blocks
        model, ds = _keras_model("mixed_bfloat16" if path == "keras_bf16" else "float32")
        model.make_train_function()
        iterator, outputs = iter(ds), []
        step = lambda: outputs.append(model.train_function(iterator))  # noqa: E731
        close = lambda: None  # noqa: E731

        def finish() -> None:
            float(outputs[-1]["loss"])  # the last step's results exist: the block is done
            outputs.clear()

    for _ in range(warmup):
        step()
    finish()
    turns.ready()
    for _ in range(cycles):
        turns.wait()
        t = time.perf_counter()
        for _ in range(block):
            step()
        finish()
        turns.report(time.perf_counter() - t, block * BATCH)
    close()
    return _turns_result(path)


def _turns_result(path: str) -> dict:
    import tensorflow as tf

    from graphcnn.model.precision import resolve_precision

    out = {"path": path, "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "tf_version": tf.__version__}
    if path.startswith("graphcnn"):
        out["precision"] = resolve_precision("float32" if path == "graphcnn_fp32" else "auto")
    if path.startswith("keras"):
        import keras

        out["keras_version"] = keras.__version__
    return out


def worker_predict_batch(opts: dict) -> dict:
    """(e): batch inference with graphcnn.predict.Predictor on the digits test split."""
    from graphcnn.config import DataConfig
    from graphcnn.data.sources import load_dataset
    from graphcnn.predict import Predictor

    test = load_dataset(DataConfig(), 1).test
    with Predictor(opts["run"]) as predictor:
        for _ in range(2):
            predictor.probabilities_for(predictor.preprocess_arrays(test.images))
        reps = opts.get("reps", 10)
        t = time.perf_counter()
        for _ in range(reps):
            predictor.probabilities_for(predictor.preprocess_arrays(test.images))
        dt = time.perf_counter() - t
    return {"images_per_second": reps * len(test) / dt, "images": reps * len(test)}


def worker_make_jpegs(opts: dict) -> dict:
    """Write ``count`` random JPEGs of mixed sizes (200-500 px) into ``folder``."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    folder = Path(opts["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(opts["count"]):
        h, w = rng.integers(200, 501, 2)
        # smooth random images (a noisy gradient) compress like photos, not like noise
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
        img = tf.image.resize(base[None], [h, w], method="bilinear")[0]
        img = tf.cast(tf.clip_by_value(img + rng.normal(0, 8, (h, w, 3)), 0, 255), tf.uint8)
        (folder / f"img_{i:05d}.jpg").write_bytes(tf.io.encode_jpeg(img, quality=90).numpy())
    return {"count": opts["count"]}


def worker_decode(opts: dict) -> dict:
    """tf.data decode/resize to 224x224x3 with decode_file in a parallel map, as InputPipeline uses it."""
    import tensorflow as tf

    from graphcnn.data.pipeline import decode_file

    v1 = tf.compat.v1
    paths = sorted(str(p) for p in Path(opts["folder"]).glob("*.jpg"))
    graph = tf.Graph()
    with graph.as_default():
        ds = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: decode_file(p, 224, 224, 3),
                                                          num_parallel_calls=tf.data.AUTOTUNE)
        it = v1.data.make_initializable_iterator(ds.batch(32).prefetch(tf.data.AUTOTUNE))
        nxt = it.get_next()
        with v1.Session(graph=graph) as sess:
            rates = []
            for _ in range(opts.get("passes", 1)):
                sess.run(it.initializer)
                n, t = 0, time.perf_counter()
                while True:
                    try:
                        n += len(sess.run(nxt))
                    except tf.errors.OutOfRangeError:
                        break
                rates.append(n / (time.perf_counter() - t))
    return {"images_per_second": max(rates), "images": len(paths)}


def worker_accuracy(opts: dict) -> dict:
    """One full default digits run (the preset's epochs and batch), at ``precision`` and ``seed``."""
    import dataclasses

    import tensorflow as tf

    from graphcnn.config import DataConfig
    from graphcnn.data.sources import load_dataset
    from graphcnn.model.precision import resolve_precision
    from graphcnn.presets import get_preset
    from graphcnn.train.run_dir import RunDir
    from graphcnn.train.trainer import train

    config = get_preset("digits")
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, precision=opts.get("precision", "auto"), seed=opts.get("seed", config.train.seed)))
    run = RunDir.create(opts["workdir"], opts["name"], prefix="bench")
    t = time.perf_counter()
    result = train(config, run, dataset=load_dataset(DataConfig(), 1), progress=False)
    return {"test_accuracy": result.test.accuracy, "test_count": result.test.count,
            "validation_accuracy": result.validation.accuracy if result.validation else None,
            "wall_s": time.perf_counter() - t, "images_per_second": result.images_per_second,
            "epochs": config.train.epochs, "batch_size": config.train.batch_size, "tf_version": tf.__version__,
            "precision": resolve_precision(config.train.precision), "seed": config.train.seed}


WORKERS = {"graphcnn": worker_graphcnn, "ingraph": worker_ingraph, "keras": worker_keras, "turns": worker_turns,
           "predict_batch": worker_predict_batch, "make_jpegs": worker_make_jpegs, "decode": worker_decode,
           "accuracy": worker_accuracy, "inprocess": worker_inprocess}


def worker_main(name: str, opts: dict) -> None:
    if opts.get("graphcnn_runtime"):
        from graphcnn import runtime

        runtime.configure()  # what the graphcnn command line does first
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.getLogger("graphcnn").setLevel(logging.WARNING)
    _emit(WORKERS[name](opts))


# ---------------------------------------------------------------------------------------------
# the parent: rounds, subprocesses, report
# ---------------------------------------------------------------------------------------------

def _env(onednn: str | None, extra: dict | None = None) -> dict:
    """The parent's environment with TF_ENABLE_ONEDNN_OPTS set to ``onednn`` ("unset": removed,
    None: left as graphcnn's runtime.configure decides, i.e. the user's value or graphcnn's default)."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("TF_XLA_FLAGS", None)
    if onednn == "unset":
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    elif onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    env.update(extra or {})
    return env


def run_worker(name: str, opts: dict, env: dict, timeout: float = 600) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--opts", json.dumps(opts)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"worker {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


# (path, TF_ENABLE_ONEDNN_OPTS as _env takes it, whether graphcnn's runtime defaults apply)
PAIRED = (("graphcnn", None, True), ("ingraph", None, True), ("keras", "unset", False), ("keras_onednn", "1", False),
          ("graphcnn_fp32", None, True), ("keras_bf16", "unset", False))


def run_turns(opts: dict, timeout: float = 900) -> dict:
    """``paired``: start one process per path of PAIRED, then hand out turns, one block at a time.

    Only the process whose turn it is computes; the others wait on their stdin. The order
    within a cycle rotates, so no path always follows the same one. Returns images/s per
    block: {"rates": {path: [...]}, "block": steps, "cycles": n}.
    """
    procs, logs = {}, {}
    deadline = time.monotonic() + timeout

    def read_tagged(path: str) -> list[str]:
        proc = procs[path]
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                logs[path].seek(0)
                raise RuntimeError(f"paired worker {path} exited ({proc.wait()}):\n{logs[path].read()[-3000:]}")
            if line.startswith("TURN_"):
                return line.split()
        raise TimeoutError(f"paired worker {path}: no answer in {timeout:.0f} s")

    try:
        for path, onednn, runtime in PAIRED:
            logs[path] = tempfile.TemporaryFile("w+")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "turns", "--opts",
                   json.dumps(dict(opts, path=path, name=f"{opts['name']}-{path}", graphcnn_runtime=runtime))]
            procs[path] = subprocess.Popen(cmd, env=_env(onednn), cwd=ROOT, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=logs[path], text=True)
        for path in procs:
            if read_tagged(path)[0] != "TURN_READY":
                raise RuntimeError(f"paired worker {path} did not get ready")
        rates: dict[str, list[float]] = {path: [] for path in procs}
        order = list(procs)
        for cycle in range(opts["cycles"]):
            for path in order[cycle % len(order):] + order[:cycle % len(order)]:
                procs[path].stdin.write("go\n")
                procs[path].stdin.flush()
                _, seconds, images = read_tagged(path)
                rates[path].append(int(images) / float(seconds))
        finals = {}
        for path, proc in procs.items():
            rest = proc.stdout.read()  # to EOF: the worker's result line
            if proc.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
                logs[path].seek(0)
                raise RuntimeError(f"paired worker {path} failed:\n{logs[path].read()[-3000:]}")
            finals[path] = next((json.loads(line[len(RESULT_TAG):]) for line in rest.splitlines()
                                 if line.startswith(RESULT_TAG)), {})
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for log_file in logs.values():
            log_file.close()
    return {"rates": rates, "block": opts["block"], "cycles": opts["cycles"],
            "images_per_second": statistics.median(rates["graphcnn"]),
            "onednn_env": {path: final.get("onednn_env") for path, final in finals.items()},
            "precision": finals["graphcnn"].get("precision"),
            "tf_version": finals["graphcnn"].get("tf_version"), "keras_version": finals["keras"].get("keras_version")}


def time_command(cmd: list[str], env: dict, first_line: bool) -> float:
    """Seconds from process start to its first stdout line (``first_line``) or to its exit."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if first_line:
        line = proc.stdout.readline()
        dt = time.perf_counter() - t
        proc.communicate()
        if not line.strip():
            raise RuntimeError(f"{cmd} printed nothing (exit {proc.returncode})")
    else:
        proc.communicate()
        dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    return dt


_AFTER_IMPORT = """
import sys, time
import tensorflow
t = time.perf_counter()
from graphcnn.cli import main
main(["predict", sys.argv[1], sys.argv[2]])
print("AFTER_IMPORT", time.perf_counter() - t)
"""


def time_predict_after_import(run: str, image: Path, env: dict) -> float:
    """Seconds a cold ``graphcnn predict`` spends after ``import tensorflow``, timed in its process:
    graphcnn's own share, without the import time that dominates (and blurs) the process timing."""
    out = subprocess.run([sys.executable, "-c", _AFTER_IMPORT, run, str(image)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return float(out.rsplit("AFTER_IMPORT", 1)[1])


class Plan:
    """The measurements of one invocation: each is (key, label, callable returning a result dict)."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args, self.workdir = args, workdir
        q = args.quick
        # 10 + 190 steps: the timed window holds steps 100 and 200, where the default logging's
        # every-100/every-200 summaries fall, so their cost is amortized as in a long run
        self.train_steps = dict(warmup=5, steps=10) if q else dict(warmup=10, steps=190)
        self.keras_steps = dict(warmup=5, steps=10) if q else dict(warmup=10, steps=110)
        self.counter = 0
        self.last_run: str | None = None

    def _name(self, key: str) -> str:
        self.counter += 1
        return f"{key}-{self.counter:03d}"

    def graphcnn(self, key: str, onednn=None, extra_env=None, **opts):
        def go():
            o = dict(self.train_steps, workdir=str(self.workdir), name=self._name(key), graphcnn_runtime=True,
                     quick=self.args.quick, **opts)
            r = run_worker("graphcnn", o, _env(onednn, extra_env))
            self.last_run = r["run"]
            return r
        return go

    def keras(self, onednn):
        return lambda: run_worker("keras", dict(self.keras_steps), _env(onednn))

    def ingraph(self):
        return lambda: run_worker("ingraph", dict(self.train_steps, graphcnn_runtime=True), _env(None))

    def paired(self):
        sizes = dict(warmup=4, block=3, cycles=2) if self.args.quick else dict(warmup=10, block=10, cycles=20)
        return lambda: run_turns(dict(sizes, workdir=str(self.workdir), name=self._name("paired"),
                                      graphcnn_runtime=True))

    def inprocess(self):
        sizes = dict(warmup=10, block=3, cycles=4) if self.args.quick else dict(warmup=10, block=5, cycles=120)
        return lambda: run_worker("inprocess", dict(sizes, workdir=str(self.workdir), name=self._name("inprocess"),
                                                    graphcnn_runtime=True), _env(None))

    def predict_cold(self):
        def go():
            if self.last_run is None:
                raise RuntimeError("predict needs a graphcnn run from an earlier path of the round")
            image = sorted((Path(self.last_run) / "examples").glob("*.png"))[0]
            # the same TensorFlow settings on both sides (graphcnn's runtime turns oneDNN on if unset)
            env = _env(os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"))
            tf_import, predict, after_import = [], [], []
            for _ in range(1 if self.args.quick else 4):  # alternate, so that drift hits both alike
                # both to their first line of output (process exit would add TensorFlow's teardown to one side)
                tf_import.append(time_command([sys.executable, "-c", "import tensorflow; print('imported', flush=True)"],
                                              env, first_line=True))
                predict.append(time_command([sys.executable, "-m", "graphcnn", "predict", self.last_run, str(image)],
                                            env, first_line=True))
                after_import.append(time_predict_after_import(self.last_run, image, env))
            p, t = statistics.median(predict), statistics.median(tf_import)
            return {"predict_s": p, "import_tf_s": t, "extra_s": p - t,
                    "after_import_s": statistics.median(after_import)}
        return go

    def predict_batch(self):
        def go():
            return run_worker("predict_batch", {"run": self.last_run, "graphcnn_runtime": True,
                                                "reps": 2 if self.args.quick else 10}, _env(None))
        return go

    def decode(self):
        def go():
            folder = self.workdir / "jpegs"
            if not folder.exists():
                run_worker("make_jpegs", {"folder": str(folder), "count": 64 if self.args.quick else 2000},
                           _env(None))
            return run_worker("decode", {"folder": str(folder), "graphcnn_runtime": True}, _env(None))
        return go

    def vgg(self):
        steps = dict(warmup=1, steps=1) if self.args.quick else dict(warmup=1, steps=2)
        return lambda: run_worker("ingraph", dict(steps, preset="dog_breeds_vgg", batch=32, graphcnn_runtime=True),
                                  _env(None))

    def measurements(self, paths: set[str]):
        """(per-round measurements, measurements made once after the rounds)."""
        m, once = [], []
        if "graphcnn" in paths or "predict" in paths:
            m.append(("graphcnn", self.graphcnn("graphcnn", matmul=True)))
        if "ingraph" in paths:
            m.append(("ingraph", self.ingraph()))
        if "keras" in paths:
            m.append(("keras", self.keras("unset")))
        if "keras_onednn" in paths:
            m.append(("keras_onednn", self.keras("1")))
        if "nolog" in paths:
            m.append(("nolog", self.graphcnn("nolog", log_off=True)))
        if "paired" in paths:
            m.append(("paired", self.paired()))
        if "inprocess" in paths:
            m.append(("inprocess", self.inprocess()))
        if "sweep" in paths:
            m += [
                ("onednn_off", self.graphcnn("onednn_off", onednn="0", matmul=True)),
                ("threads_2_1", self.graphcnn("threads_2_1", intra=2, inter=1)),
                ("precision_float32", self.graphcnn("precision_float32", precision="float32")),
                ("gate_op", self.graphcnn("gate_op", gate_op=True)),
            ]
            once += [  # XLA compiles for tens of seconds per process: once, after the rounds
                ("xla_config", self.graphcnn("xla_config", xla_config=True)),
                ("xla_env", self.graphcnn("xla_env", extra_env={
                    "TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"})),
            ]
        if "predict" in paths:
            m += [("predict_cold", self.predict_cold()), ("predict_batch", self.predict_batch())]
        if "decode" in paths:  # far apart (tens vs hundreds of images/s): once, after the rounds
            once += [("decode", self.decode()), ("vgg", self.vgg())]
        return m, once


ALL_PATHS = ("graphcnn", "ingraph", "keras", "keras_onednn", "nolog", "paired", "inprocess", "sweep", "predict",
             "decode", "accuracy")
QUICK_PATHS = ("graphcnn", "ingraph")


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        name = fields.get("Model name", "").strip() or platform.processor()
        flags = fields.get("Flags", "")
        isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in flags.split()]
        return f"{name}, {os.cpu_count()} logical CPUs ({', '.join(isa)})"
    except OSError:
        return platform.processor() or "unknown"


def gpu_info() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout.strip()
        return out or "none"
    except (OSError, subprocess.SubprocessError):
        return "none"


def _fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _row(label: str, s: dict, ref: float | None = None, target: str = "", met: bool | None = None,
         digits: int = 0) -> str:
    ratio = f"{s['median'] / ref:.2f}x" if ref else ""
    verdict = "" if met is None else ("met" if met else "**missed**")
    return (f"| {label} | {_fmt(s['median'], digits)} | {_fmt(s['min'], digits)} | {_fmt(s['max'], digits)} "
            f"| {ratio} | {target} | {verdict} |")


HEADER = "| path | median | min | max | ratio | target | verdict |\n|---|---:|---:|---:|---:|---|---|"


def report(results: dict[str, list[dict]], meta: dict, accuracy: dict) -> tuple[str, dict]:
    """Markdown for one invocation, and the verdicts."""
    S = {k: summarize([r["images_per_second"] for r in v]) for k, v in results.items()
         if v and "images_per_second" in v[0]}
    verdicts: dict[str, bool] = {}
    lines = [f"## Run {meta['date']}", "",
             f"- command: `{meta['command']}`",
             f"- CPU: {meta['cpu']}; GPU: {meta['gpu']}"
             + ("" if meta['gpu'] != "none" else " (not run on a GPU: none available; the script pins no device)"),
             f"- TensorFlow {meta.get('tf_version', '?')}, Keras {meta.get('keras_version', '?')}, "
             f"Python {platform.python_version()}; {meta['rounds']} round(s), interleaved; wall {meta['wall_s']:.0f} s",
             f"- load average before/after: {meta['load_before']} / {meta['load_after']}"
             + (" (machine shared with other jobs: expect noise)" if meta.get("shared") else ""),
             f"- images/s are steady state: {meta['warmup']} warm-up steps skipped, {meta['steps']} steps timed "
             f"per measurement, batch {BATCH}, digits 28x28x1, Adam", ""]
    g = S.get("graphcnn")
    if g:
        lines += ["### Training throughput (images/s)", "", HEADER,
                  _row("(a) graphcnn trainer, defaults", g)]
        for key, label, target, verdict in (
                ("keras", "(b) Keras 3 model.fit, TF defaults (oneDNN unset)", 2.0, "vs keras TF defaults >= 2.0x"),
                ("keras_onednn", "(b) Keras 3 model.fit, TF_ENABLE_ONEDNN_OPTS=1", 1.0, "vs keras oneDNN >= 1.0x"),
                ("ingraph", "(c) in-graph limit (batch in a variable, train_op only)", 0.95,
                 "vs in-graph limit >= 0.95x")):
            if key in S:
                ratio = g["median"] / S[key]["median"]
                verdicts[verdict] = ok = ratio >= target
                lines.append(_row(label, S[key], None, f"(a) >= {target}x: {ratio:.2f}x", ok))
        if "nolog" in S:
            cost = 1 - g["median"] / S["nolog"]["median"]
            ok = cost <= 0.03
            verdicts["logging cost <= 3%"] = ok
            lines.append(_row("(d) graphcnn, TensorBoard logging off", S["nolog"], None,
                              f"default logging costs <= 3%: {cost * 100:.1f}%", ok))
        in_run = [r["logging_in_run"] for r in results["graphcnn"] if "logging_in_run" in r]
        if in_run:
            steps_share = statistics.median(x["logging_share"] for x in in_run)
            views_share = statistics.median(x["epoch_end_views_share"] for x in in_run)
            ok = steps_share + views_share <= 0.03
            verdicts["logging cost <= 3% (measured inside the default run)"] = ok
            per_round = ", ".join(f"{x['logging_share'] * 100:.1f}" for x in in_run)
            raw = ", ".join(f"{x['raw_share'] * 100:.1f}" for x in in_run if "raw_share" in x)
            lines.append(f"| (d) logging measured inside (a): steps where a summary is due vs their nearest plain "
                         f"steps (median per kind of step), + the validation views | | | | | <= 3%: "
                         f"{steps_share * 100:.1f}% of step time (per round {per_round}; every step as it came: "
                         f"{raw}) + "
                         f"{views_share * 100:.1f}% at epoch ends | {'met' if ok else '**missed**'} |")
        paired = []  # per-round ratios: the rounds are interleaved, so a ratio within a round sees one load
        for key in ("keras", "keras_onednn", "ingraph", "nolog"):
            if key in S and len(results[key]) == len(results["graphcnn"]):
                rr = [a["images_per_second"] / b["images_per_second"] for a, b in zip(results["graphcnn"], results[key])]
                paired.append(f"(a)/{key}: " + ", ".join(f"{x:.2f}" for x in rr))
        if paired:
            lines += ["", "Per-round ratios (same round, adjacent in time): " + "; ".join(paired) + "."]
        incl = summarize([r["images_per_second_incl_epoch_ends"] for r in results["graphcnn"]])
        rep = [r["trainer_reported_images_per_second"] for r in results["graphcnn"]]
        lines += ["", f"Ratios are of medians. (a) including the end-of-epoch validation + checkpoint intervals: "
                      f"median {_fmt(incl['median'])} images/s; the trainer's own images_per_second "
                      f"(median of its 10-step windows): {', '.join(_fmt(x) for x in rep)}.", ""]
        mm = [r["matmul_gflops"] for r in results["graphcnn"] if "matmul_gflops" in r]
        if mm:
            mflop = results["graphcnn"][0]["train_mflop_per_image"]
            achieved = g["median"] * mflop / 1e3
            lines += ["### Achieved GFLOP/s", "",
                      f"Training costs {mflop:.1f} MFLOP per image (conv/dense MACs x2 forward, x3 forward+backward: "
                      f"{mflop / 3:.2f} MFLOP forward).", "",
                      "| setting | training GFLOP/s (median) | 2048x2048 float32 matmul GFLOP/s (median, min-max) "
                      "| fraction |", "|---|---:|---:|---:|",
                      f"| oneDNN on (graphcnn default) | {achieved:.1f} | {statistics.median(mm):.1f} "
                      f"({min(mm):.1f}-{max(mm):.1f}) | {achieved / statistics.median(mm):.0%} |"]
            off = [r["matmul_gflops"] for r in results.get("onednn_off", []) if "matmul_gflops" in r]
            if off and "onednn_off" in S:
                a_off = S["onednn_off"]["median"] * mflop / 1e3
                lines.append(f"| oneDNN off | {a_off:.1f} | {statistics.median(off):.1f} "
                             f"({min(off):.1f}-{max(off):.1f}) | {a_off / statistics.median(off):.0%} |")
            lines.append("")
    if results.get("paired"):
        pr = results["paired"]
        rates = {k: [x for r in pr for x in r["rates"][k]] for k in pr[0]["rates"]}
        cycles = len(rates["graphcnn"])
        lines += ["### Paired: the paths take turns, a block of steps each", "",
                  f"One process per path (each with its own oneDNN setting), all alive at once; they take turns "
                  f"running {pr[0]['block']} steps each, in a rotating order, while the others wait. "
                  f"{cycles} cycles over {len(pr)} round(s). The blocks of one cycle lie within a few seconds and see "
                  f"the same load, so the per-cycle ratios are free of the drift between separate runs. graphcnn's "
                  f"blocks are its trainer with default settings (input pipeline, logging, hooks; epoch-end "
                  f"intervals left out); Keras's are the train function `model.fit` runs, on its tf.data iterator. "
                  f"TF_ENABLE_ONEDNN_OPTS seen by each process: "
                  + ", ".join(f"{k} {v or 'unset'}" for k, v in pr[0].get("onednn_env", {}).items())
                  + f". graphcnn's default precision here: {pr[0].get('precision', '?')}; (c) uses the same. "
                  "Caveat: while the other paths take their turns, graphcnn's tf.data prefetch may fill its "
                  "buffer, which favours (a) slightly; the separate-process rows above have no such bias.",
                  "", "| path | images/s, median of blocks | (a) / path, median of cycles | quartiles | target "
                  "| verdict |", "|---|---:|---:|---|---|---|",
                  f"| (a) graphcnn trainer, defaults | {_fmt(statistics.median(rates['graphcnn']))} | | | | |"]
        for key, label, target, name in (
                ("keras", "(b) Keras 3 train step, TF defaults (oneDNN unset)", 2.0,
                 "vs keras TF defaults >= 2.0x (paired)"),
                ("keras_onednn", "(b) Keras 3 train step, TF_ENABLE_ONEDNN_OPTS=1", 1.0,
                 "vs keras oneDNN >= 1.0x (paired)"),
                ("ingraph", "(c) in-graph limit", 0.95, "vs in-graph limit >= 0.95x (paired)"),
                ("keras_bf16", "Keras 3 train step, mixed_bfloat16 policy (like-for-like precision)", None, ""),
                ("graphcnn_fp32", "graphcnn trainer, train.precision=float32", None, "")):
            if key not in rates:
                continue
            ratios = [a / b for a, b in zip(rates["graphcnn"], rates[key])]
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            med = statistics.median(ratios)
            verdict = ""
            if target is not None:
                verdicts[name] = ok = med >= target
                verdict = "met" if ok else "**missed**"
            lines.append(f"| {label} | {_fmt(statistics.median(rates[key]))} | {med:.3f}x | {q[0]:.3f}-{q[2]:.3f} "
                         f"| {f'>= {target}x' if target is not None else 'recorded'} | {verdict} |")
        lines.append("")
    ip = results.get("inprocess") or []
    if ip:
        ratios = [a / c for r in ip for a, c in zip(r["a_rates"], r["c_rates"])]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        med = statistics.median(ratios)
        verdicts["vs in-graph limit >= 0.95x (in one process)"] = ok = med >= 0.95
        per_round = ", ".join(f"{statistics.median([a / c for a, c in zip(r['a_rates'], r['c_rates'])]):.3f}"
                              for r in ip)
        lines += ["### In one process: the trainer and (c) take turns", "",
                  f"graphcnn's trainer (defaults, logging on) hands over to a (c) session after each block of "
                  f"{ip[0]['block']} steps, {len(ratios)} pairs of blocks over {len(ip)} round(s) (blocks holding "
                  "an epoch end left out). Both share the thread pools, the caches and the load of the moment, "
                  "and no process switch separates them.", "",
                  "| path | images/s, median of blocks | (a) / (c), median of pairs | quartiles | per round | target "
                  "| verdict |", "|---|---:|---:|---|---|---|---|",
                  f"| (a) graphcnn trainer, defaults | {_fmt(statistics.median(a for r in ip for a in r['a_rates']))} "
                  "| | | | | |",
                  f"| (c) in-graph limit | {_fmt(statistics.median(c for r in ip for c in r['c_rates']))} | "
                  f"{med:.3f}x | {q[0]:.3f}-{q[2]:.3f} | {per_round} | >= 0.95x | {'met' if ok else '**missed**'} |",
                  ""]
    sweep = [("onednn_off", "TF_ENABLE_ONEDNN_OPTS=0"),
             ("threads_2_1", "intra_op=2, inter_op=1 (ConfigProto)"),
             ("threads_1_2", "intra_op=1, inter_op=2 (ConfigProto; once, after the rounds)"),
             ("xla_config", "XLA: ConfigProto global_jit_level=ON_1 (once, after the rounds)"),
             ("xla_env", "XLA: TF_XLA_FLAGS=--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit (once, after the rounds)"),
             ("precision_float32", "train.precision=float32 (auto picks mixed_bfloat16 on AMX-BF16 CPUs)"),
             ("gate_op", "gradients with GATE_OP, TF1's default (no fused bias gradients)")]
    if g and any(k in S for k, _ in sweep):
        lines += ["### Defaults for (a): one setting changed at a time (images/s)", "", HEADER,
                  _row("graphcnn defaults (oneDNN on, threads 0/0 = TF's choice, no XLA, AUTOTUNE map+prefetch)",
                       g, g["median"])]
        for key, label in sweep:
            if key in S:
                r = S[key]["median"] / g["median"]
                lines.append(_row(label, S[key], g["median"], "> 1.05x to adopt", None)[:-3]
                             + (" wins |" if r > 1.05 else " no |"))
        lines.append("")
    if accuracy:
        lines += ["### Accuracy: the default precision vs float32 (one full default digits run each)", "",
                  "| train.precision | resolved | seed | test accuracy | validation accuracy | epochs x batch | wall s "
                  "| trainer images/s |", "|---|---|---:|---:|---:|---|---:|---:|"]
        for key, r in accuracy.items():
            lines.append(f"| {key.rsplit('-', 1)[0]} | {r['precision']} | {r['seed']} | {r['test_accuracy']:.4f} "
                         f"({r['test_count']}) | {r['validation_accuracy']:.4f} | {r['epochs']} x {r['batch_size']} "
                         f"| {r['wall_s']:.0f} | {_fmt(r['images_per_second'])} |")
        by = {p: [r["test_accuracy"] for k, r in accuracy.items() if k.startswith(p + "-")] for p in ("auto", "float32")}
        if by["auto"] and by["float32"]:
            lines += ["", f"Mean test accuracy: default {statistics.mean(by['auto']):.4f}, float32 "
                          f"{statistics.mean(by['float32']):.4f}."]
        lines.append("")
    if results.get("predict_cold"):
        pc = results["predict_cold"]
        p = summarize([r["predict_s"] for r in pc])
        t = summarize([r["import_tf_s"] for r in pc])
        e = summarize([r["extra_s"] for r in pc])
        ok = e["median"] <= 0.7
        verdicts["cold predict <= import tf + 0.7 s"] = ok
        lines += ["### Prediction", "", "| measurement | median | min | max | target | verdict |",
                  "|---|---:|---:|---:|---|---|",
                  f"| cold `graphcnn predict <run> <one png>` to first result (s) | {p['median']:.2f} | {p['min']:.2f} "
                  f"| {p['max']:.2f} | | |",
                  f"| bare `python -c \"import tensorflow; print(...)\"` to its first line (s) | {t['median']:.2f} | {t['min']:.2f} | {t['max']:.2f} | | |",
                  f"| difference (s) | {e['median']:.2f} | {e['min']:.2f} | {e['max']:.2f} | <= 0.7 s | "
                  f"{'met' if ok else '**missed**'} |"]
        if all("after_import_s" in r for r in pc):
            a = summarize([r["after_import_s"] for r in pc])
            lines.append(f"| the predict process after its `import tensorflow`, timed inside it (s) | {a['median']:.2f} "
                         f"| {a['min']:.2f} | {a['max']:.2f} | | |")
        if "predict_batch" in S:
            b = S["predict_batch"]
            lines.append(f"| batch inference, Predictor on the test split, preprocessing included (images/s) "
                         f"| {_fmt(b['median'])} | {_fmt(b['min'])} | {_fmt(b['max'])} | | |")
        lines.append("")
    if "decode" in S and "vgg" in S:
        d, v = S["decode"], S["vgg"]
        ok = d["median"] > v["max"]
        verdicts["image-folder decode > dog_breeds_vgg training"] = ok
        n = results["decode"][0]["images"]
        lines += ["### Image-folder input vs dog_breeds_vgg training (images/s)", "", HEADER,
                  _row(f"decode_file + resize to 224x224x3, parallel map (AUTOTUNE), {n} JPEGs 200-500 px, first pass",
                       d, v["median"], "> vgg training", ok),
                  _row("dog_breeds_vgg training, batch 32, random 224x224x3 held in a variable (compute limit)", v,
                       digits=1), ""]
    if verdicts:
        lines += ["### Targets", ""] + [f"- {k}: {'met' if ok else '**missed**'}" for k, ok in verdicts.items()] + [""]
    return "\n".join(lines) + "\n", verdicts


PREAMBLE = """# graphcnn benchmarks

Produced by `scripts/benchmark.py` (see its docstring for the method). Each run appends a
section below: the command, date, CPU, TensorFlow version, and one table per measurement with
median/min/max over interleaved rounds (every measurement in its own subprocess, since
`TF_ENABLE_ONEDNN_OPTS` and `TF_XLA_FLAGS` are read at TensorFlow import).

"""


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny: few steps, paths graphcnn + ingraph, 1 round")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--paths", default="", help=f"comma-separated subset of {','.join(ALL_PATHS)}")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--opts", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker, json.loads(args.opts))
        return 0
    paths = set(args.paths.split(",")) if args.paths else set(QUICK_PATHS if args.quick else ALL_PATHS)
    unknown = paths - set(ALL_PATHS)
    if unknown:
        p.error(f"unknown paths {sorted(unknown)}; choices: {','.join(ALL_PATHS)}")
    rounds = 1 if args.quick and "--rounds" not in (argv or sys.argv) else args.rounds
    start, load_before = time.perf_counter(), _load()
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="graphcnn-bench-") as tmp:
        plan = Plan(args, Path(tmp))
        measurements, once = plan.measurements(paths)
        results: dict[str, list[dict]] = {key: [] for key, _ in measurements + once}
        schedule = [(r, key, go) for r in range(rounds) for key, go in measurements] + [
            (rounds - 1, key, go) for key, go in once]
        for r, key, go in schedule:
            t = time.perf_counter()
            res = go()
            results[key].append(res)
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items() if k != "run"}
            print(f"round {r + 1}/{rounds} {key}: {shown} ({time.perf_counter() - t:.0f} s)", flush=True)
        accuracy = {}
        if "accuracy" in paths:  # the default precision against float32, seed by seed, alternating
            for seed in (0, 1, 2):
                for precision in ("auto", "float32"):
                    key = f"{precision}-{seed}"
                    accuracy[key] = run_worker("accuracy", {"workdir": tmp, "name": f"acc-{key}", "seed": seed,
                                                            "precision": precision, "graphcnn_runtime": True},
                                               _env(None))
                    print(f"accuracy {key}: {accuracy[key]}", flush=True)
    first = next((v[0] for v in results.values() if v), {})
    meta = {"date": date, "command": " ".join(shlex.quote(a) for a in ["python", "scripts/benchmark.py",
                                                                      *(argv if argv is not None else sys.argv[1:])]),
            "cpu": cpu_model(), "gpu": gpu_info(), "rounds": rounds, "wall_s": time.perf_counter() - start,
            "load_before": load_before, "load_after": _load(),
            "tf_version": first.get("tf_version", next(iter(accuracy.values()), {}).get("tf_version", "?")),
            "keras_version": (results.get("keras") or results.get("keras_onednn") or results.get("paired")
                              or [{}])[0].get("keras_version", "?"),
            "warmup": plan.train_steps["warmup"], "steps": plan.train_steps["steps"]}
    meta["shared"] = max(float(x) for x in (load_before + " " + meta["load_after"]).split() if x != "?") > 2.5
    text, verdicts = report(results, meta, accuracy)
    out = Path(args.out)
    if not out.exists() or not out.read_text().strip():
        out.write_text(PREAMBLE)
    with out.open("a") as f:
        f.write("\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
