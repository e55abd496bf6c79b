#!/usr/bin/env python
"""Benchmark graphcnn's training speed against its alternatives, and one source tree against another.

    python scripts/benchmark.py [--paths a,b,...] [--rounds N] [--quick] [--out FILE]
                                [--ref-tree DIR | --ref COMMIT] [--ab-epochs N] [--pinned] [--set KEY=VALUE ...]

Paths (default: all; ab only with a reference). Every graphcnn run uses the digits preset, or ``--preset``.

* ``graphcnn``     graphcnn's trainer, ``train()``, default settings
* ``keras``        the same net as a Keras 3 model, ``model.fit`` on the same data, TF's defaults
                   (TF_ENABLE_ONEDNN_OPTS unset); ``keras_onednn``: with TF_ENABLE_ONEDNN_OPTS=1
* ``ingraph``      the trainer's graph (graphcnn's ``network_for``, ``build_graph``), one batch held in a
                   variable, ``sess.run(train_op)`` in a loop: graphcnn / ingraph is what the input
                   pipeline and the training loop cost; ``ingraph_bf16``: the same at mixed_bfloat16
* ``nolog``        the trainer with every TensorBoard item off: graphcnn / nolog is what logging costs
* ``matmul``       GFLOP/s of a float32 2048x2048 ``tf.matmul`` on this machine, the reference that the
                   training paths' GFLOP/s (images/s x the preset's training FLOPs, 3x its forward
                   convolution and matrix-product FLOPs) are set against
* ``predict``      cold ``python -m graphcnn predict RUN IMAGE`` vs ``python -c "import tensorflow"``, each
                   timed to its first line of output
* ``ab``           ``python -m graphcnn.cli train`` (``--ab-epochs`` epochs) from this checkout and from a
                   reference tree (``--ref-tree DIR``, or ``--ref COMMIT`` put in a temporary ``git worktree``),
                   PYTHONPATH set to each; images/s and test accuracy from each run's results.json. With
                   ``--pinned`` the two sides run at the same time, each pinned to one CPU (swapped every round):
                   on a shared virtual machine whose speed drifts by 10-30% within minutes, only runs that
                   share the same minutes see the same machine

Method: every measurement is a fresh subprocess (oneDNN is chosen when TensorFlow is imported;
this process never imports it). Paths run interleaved in rounds, in reverse order every other
round, so that drift on a shared machine reaches them all alike. Training paths time steps, not
processes: the trainer's through a ``SessionRunHook`` given to ``train(hooks=...)`` (wall time
between consecutive ``after_run`` calls; ``--warmup`` steps and the intervals holding an epoch
end left out), Keras's through a callback at each batch end. The report gives per path the
median and spread over the rounds, and per comparison the ratio of medians, its 95% bootstrap
interval (rounds resampled with replacement, a round's paths kept together) and the ratio
within each round.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULT = "BENCH_RESULT "
CHOICES = ["graphcnn", "keras", "keras_onednn", "ingraph", "ingraph_bf16", "nolog", "matmul", "predict",
           "ab"]  # --paths
LABELS = {"graphcnn": "graphcnn trainer, defaults",
          "keras": "Keras 3 model.fit, TF defaults (TF_ENABLE_ONEDNN_OPTS unset)",
          "keras_onednn": "Keras 3 model.fit, TF_ENABLE_ONEDNN_OPTS=1",
          "ingraph": "in-graph limit: the trainer's graph, batch in a variable, train_op only",
          "ingraph_bf16": "in-graph limit at train.precision=mixed_bfloat16",
          "matmul": "float32 2048x2048 matrix multiply (GFLOP/s)",
          "nolog": "graphcnn trainer, TensorBoard logging off",
          "ab_current": "this checkout", "ab_ref": "reference tree",
          "predict": "cold `graphcnn predict` of one image", "import_tf": "`python -c \"import tensorflow\"`"}
# the questions: (A, B, kind); "ratio": median(A) / median(B), "difference": median(A) - median(B)
COMPARISONS = [("graphcnn", "keras", "ratio"), ("graphcnn", "keras_onednn", "ratio"),
               ("graphcnn", "ingraph", "ratio"), ("ingraph_bf16", "ingraph", "ratio"),
               ("graphcnn", "nolog", "ratio"), ("ab_current", "ab_ref", "ratio"),
               ("predict", "import_tf", "difference")]


# --- workers: run in subprocesses (--worker NAME), import TensorFlow, print one RESULT line ---

def trainer_config(opts: dict):
    """The preset (``--preset``, digits) with ``opts["overrides"]`` (``--set`` syntax) applied, logging off if asked."""
    from graphcnn.config import load
    from graphcnn.presets import get_preset

    return load(get_preset(opts.get("preset", "digits")), None,
                opts["overrides"] + (logging_off() if opts.get("log_off") else []))


def logging_off() -> list[str]:
    """Overrides that switch every TensorBoard item off: each ``*_every`` and image count 0, each switch false."""
    from graphcnn.config import LogConfig

    return [f"log.{f.name}=false" if isinstance(f.default, bool) else f"log.{f.name}=0"
            for f in dataclasses.fields(LogConfig) if isinstance(f.default, bool)
            or f.name.endswith("_every") or f.name in ("probe_images", "projector_images")]


def rates(seconds, batch: int) -> dict:
    """Images/s over all the timed steps ("value"), and at the median step ("typical": blind to the
    rare slow steps, whether a summary or another process made them slow)."""
    return {"value": len(seconds) * batch / float(np.sum(seconds)), "typical": batch / float(np.median(seconds)),
            "timed_steps": len(seconds), "batch": batch}


def worker_trainer(opts: dict) -> dict:
    """``graphcnn`` / ``nolog``: the trainer, its steps timed by a hook."""
    import tensorflow as tf

    from graphcnn.data.sources import load_dataset
    from graphcnn.run_dir import RunDir
    from graphcnn.train.trainer import train

    class StepTimer(tf.compat.v1.train.SessionRunHook):
        def __init__(self):
            self.stamps: list[float] = []

        def after_run(self, run_context, run_values):
            self.stamps.append(time.perf_counter())

    config = trainer_config(opts)
    dataset = load_dataset(config.data, config.model.channels, size=config.model.input_size)
    timer = StepTimer()
    train(config, RunDir.create(opts["workdir"], opts["name"]), progress=False, dataset=dataset, hooks=[timer])
    batch, per_epoch = config.train.batch_size, max(1, len(dataset.train) // config.train.batch_size)
    # interval s: from the end of step s - 1 to the end of step s (steps count from 1)
    timed = [(s, b - a) for s, (a, b) in enumerate(zip(timer.stamps, timer.stamps[1:]), 2) if s > opts["warmup"]]
    # validation and checkpoint run in the after_run of an epoch's last step: in its interval if this hook
    # comes after theirs, else in the next one; both are left out
    kept = [dt for s, dt in timed if s % per_epoch not in (0, 1)]
    return dict(rates(kept, batch), with_epoch_ends=len(timed) * batch / sum(dt for _, dt in timed),
                mflop=training_mflop(config, len(dataset.class_names)))


def training_mflop(config, num_classes: int) -> float:
    """MFLOP per image of a training step: the forward pass's convolutions and matrix products
    (2 per multiply-add) 3x (the backward pass computes two such products per forward one: the
    weights' gradient and the input's), but the first layer's 2x (nothing needs the gradient of
    the images)."""
    import tensorflow as tf

    from graphcnn.model.graph import inference_graph

    graph, _ = inference_graph(config.model, num_classes)
    flops, first = 0, True
    for op in graph.get_operations():  # in the order the network was built: the first is the images' layer
        if op.type in ("Conv2D", "DepthwiseConv2dNative", "MatMul"):
            out = op.outputs[0].shape.as_list()[1:]
            kernel = op.inputs[1].shape.as_list()
            per_output = (kernel[0] * kernel[1] * (kernel[2] if op.type == "Conv2D" else 1)
                          if op.type != "MatMul" else kernel[0])
            flops += (2 if first else 3) * 2 * per_output * int(tf.TensorShape(out).num_elements())
            first = False
    return flops / 1e6


def worker_matmul(opts: dict) -> dict:
    """``matmul``: float32 [2048, 2048] x [2048, 2048] in a graph, GFLOP/s over about 3 s after a warm-up."""
    import tensorflow as tf

    v1, n = tf.compat.v1, 2048
    with tf.Graph().as_default():
        a = tf.Variable(tf.random.uniform([n, n]))
        product = tf.reduce_sum(tf.matmul(a, a))  # the sum keeps the output off the Python side
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(3):
                sess.run(product)
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < 3.0:
                sess.run(product)
                count += 1
            seconds = time.perf_counter() - start
    return {"value": 2 * n**3 * count / seconds / 1e9}


def worker_ingraph(opts: dict) -> dict:
    """``ingraph``: the trainer's graph, fed as the trainer feeds its step, on one batch held in a variable."""
    import tensorflow as tf

    from graphcnn.data.pipeline import InputHandles, preprocess
    from graphcnn.data.sources import load_dataset
    from graphcnn.model.graph import build_graph, network_for

    v1 = tf.compat.v1
    config = trainer_config(opts)
    m, t = config.model, config.train
    dataset = load_dataset(config.data, m.channels, size=m.input_size)  # a folder: kept decoded, as training does
    num_classes, shape = len(dataset.class_names), [m.input_height, m.input_width, m.channels]
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(t.seed)
        network = network_for(config, num_classes)
        with tf.name_scope("input"):  # the trainer's input scope, the batch where its pipeline is
            batch = tf.Variable(preprocess(tf.constant(dataset.train.images[:t.batch_size]), *shape, None),
                                trainable=False, name="batch_images")
            labels = tf.Variable(dataset.train.labels[:t.batch_size], trainable=False, name="batch_labels")
            inputs = InputHandles(
                v1.placeholder_with_default(batch.read_value(), [None, *shape], name="images"),
                v1.placeholder_with_default(labels.read_value(), [None], name="labels"),
                v1.placeholder_with_default(False, [], name="is_training"),
                {k: v1.placeholder_with_default(1.0, [], name=f"keep_rate_{k}") for k in network.keep_groups},
                v1.get_variable("input/pixel_mean", shape, initializer=v1.zeros_initializer(), trainable=False))
        g = build_graph(config, inputs, num_classes, opts["warmup"] + opts["steps"], network)
        init = v1.global_variables_initializer()
    graph.finalize()
    feed = {inputs.is_training: True, **{inputs.keep_rates[k]: t.keep_rates.get(k, 1.0) for k in network.keep_groups}}
    with v1.Session(graph=graph) as sess:
        sess.run(init)
        for _ in range(opts["warmup"]):
            sess.run(g.train_op, feed)
        stamps = [time.perf_counter()]
        for _ in range(opts["steps"]):
            sess.run(g.train_op, feed)
            stamps.append(time.perf_counter())
    return dict(rates(np.diff(stamps), t.batch_size), mflop=training_mflop(config, num_classes))


def keras_augmentation(keras, a) -> list:
    """Keras 3 preprocessing layers for graphcnn's ``data.augment`` (flips, rotation, shifts,
    zoom, as the in-graph augmentation draws them); the others have no layer here: an error."""
    if not a.enabled:
        return []
    unmirrored = [k for k in ("shear_range", "contrast_range", "erasing", "brightness_range") if getattr(a, k)]
    if unmirrored:
        raise ValueError(f"the Keras path has no layer for data.augment {', '.join(unmirrored)}")
    L, fill_mode = keras.layers, a.fill_mode  # the same names: nearest, constant, reflect, wrap
    flips = {(True, False): "horizontal", (False, True): "vertical", (True, True): "horizontal_and_vertical"}
    flip = flips.get((a.horizontal_flip, a.vertical_flip))
    out = [L.RandomFlip(flip)] if flip else []
    if a.rotation_range:
        out.append(L.RandomRotation(a.rotation_range / 360, fill_mode=fill_mode, fill_value=a.cval))
    if a.width_shift_range or a.height_shift_range:
        out.append(L.RandomTranslation(a.height_shift_range, a.width_shift_range, fill_mode=fill_mode,
                                       fill_value=a.cval))
    if a.zoom_range:
        out.append(L.RandomZoom(a.zoom_range, fill_mode=fill_mode, fill_value=a.cval))
    return out


def worker_keras(opts: dict) -> dict:
    """``keras`` / ``keras_onednn``: the preset's layers as a Keras 3 Sequential model, trained by ``fit``."""
    import keras
    import tensorflow as tf

    from graphcnn.data.pipeline import fit_images
    from graphcnn.data.sources import load_dataset

    config = trainer_config(opts)
    m, t = config.model, config.train
    dataset = load_dataset(config.data, m.channels, size=m.input_size)  # a folder: kept decoded, as training does
    x = np.asarray(fit_images(tf.constant(dataset.train.images), m.input_height, m.input_width, m.channels))
    num_classes = len(dataset.class_names)
    y = np.eye(num_classes, dtype=np.float32)[dataset.train.labels]
    L, layers = keras.layers, [keras.Input(x.shape[1:]), *keras_augmentation(keras, config.data.augment)]

    def weighted(core, layer) -> list:  # graphcnn's order: no bias under batch norm, BN, then the activation
        if not layer.batch_norm:
            return [core(activation=layer.activation)]
        return [core(activation=None, use_bias=False),
                L.BatchNormalization(momentum=m.batch_norm_decay, epsilon=1e-3), L.Activation(layer.activation)]

    for layer in m.layers:
        if layer.type == "conv":
            layers += weighted(lambda **kw: L.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides or 1,
                                                     padding=layer.padding.lower(), **kw), layer)
        elif layer.type == "pool":
            pool = L.MaxPooling2D if layer.pool == "max" else L.AveragePooling2D
            layers.append(pool(layer.pool_size, strides=layer.strides or None, padding=layer.padding.lower()))
        elif layer.type == "dense":
            layers += [L.Flatten(), *weighted(lambda **kw: L.Dense(layer.units, **kw), layer)]
        elif layer.type == "dropout":
            layers.append(L.Dropout(1.0 - t.keep_rates.get(layer.keep_group, 1.0)))
        elif layer.type == "batch_norm":
            layers.append(L.BatchNormalization(momentum=m.batch_norm_decay, epsilon=1e-3))
        elif layer.type == "flatten":
            layers.append(L.Flatten())
        else:
            raise ValueError(f"no Keras equivalent here for layer type {layer.type!r}")
    model = keras.Sequential(layers + [L.Flatten(), L.Dense(num_classes)])  # Flatten of a flat tensor: a no-op
    model.compile(optimizer=keras.optimizers.Adam(t.learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=t.label_smoothing))
    ds = (tf.data.Dataset.from_tensor_slices((x.astype(np.float32) / 255.0, y)).shuffle(len(y), seed=t.seed)
          .repeat().batch(t.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    stamps: list[float] = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: stamps.append(time.perf_counter()))
    model.fit(ds, epochs=1, steps_per_epoch=opts["warmup"] + opts["steps"], verbose=0, callbacks=[clock])
    return dict(rates(np.diff(stamps[opts["warmup"] - 1:]), t.batch_size), keras=keras.__version__,
                jit_compile=bool(model.jit_compile))


def worker_main(name: str, opts: dict) -> None:
    if not name.startswith("keras"):
        from graphcnn import runtime

        runtime.configure()  # graphcnn's defaults, set as its command line sets them, before TensorFlow loads
    result = {"graphcnn": worker_trainer, "nolog": worker_trainer, "ingraph": worker_ingraph,
              "ingraph_bf16": worker_ingraph, "matmul": worker_matmul,
              "keras": worker_keras, "keras_onednn": worker_keras}[name](opts)
    from tensorflow.python.util import _pywrap_util_port  # what TensorFlow decided at import

    print(RESULT + json.dumps(dict(result, onednn=_pywrap_util_port.IsMklEnabled())), flush=True)


# --- the parent: machine, measurements, rounds, statistics, report ---

def cpu_description() -> str:
    """Model name, family/model numbers, logical CPUs and the vector/matrix extensions that matter here."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return f"{platform.processor() or 'unknown CPU'}, {os.cpu_count()} logical CPUs"
    f = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}
    flags = f.get("flags", "").split()
    isa = [x for x in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if x in flags]
    return (f"{f.get('model name', '?')} ({f.get('vendor_id', '?')}, family {f.get('cpu family', '?')}, model "
            f"{f.get('model', '?')}), {os.cpu_count()} logical CPUs; {', '.join(isa) or 'no AVX2'}; "
            f"AMX: {'yes' if any(x.startswith('amx') for x in flags) else 'no'}")


def tree_commit(tree: Path) -> str:
    """``<sha> (clean)`` or ``<sha> (dirty: N paths)``, read without taking git's optional locks."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(tree), *args], capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        changed = git("status", "--porcelain").splitlines()
        return f"{git('rev-parse', 'HEAD')} ({f'dirty: {len(changed)} paths' if changed else 'clean'})"
    except (OSError, subprocess.CalledProcessError):
        return "not a git tree"


def env_for(onednn: str | None = None, tree: Path = ROOT) -> dict:
    """This environment, graphcnn imported from ``tree``; ``onednn``: "unset" removes TF_ENABLE_ONEDNN_OPTS,
    a value sets it, None leaves it to graphcnn (1 unless the user set it)."""
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    if onednn == "unset":
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    elif onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    return env


def run(cmd: list[str], env: dict, cwd: Path = ROOT, first_line: bool = False,
        cpu: int | None = None) -> tuple[str, float, float]:
    """(stdout, seconds from start to exit or to the first line of stdout, CPU seconds of this process and its
    threads); raises on failure. ``cpu``: pin the process to that CPU (TensorFlow then sizes its pools to one)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE if first_line else out, stderr=err,
                                text=True, preexec_fn=None if cpu is None else lambda: os.sched_setaffinity(0, {cpu}))
        line = proc.stdout.readline() if first_line else ""
        seconds = time.perf_counter() - start
        rest = proc.stdout.read() if first_line else ""
        # wait4: this child's own CPU time, also when two children run at once (--pinned)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = seconds if first_line else time.perf_counter() - start
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} in {cwd} failed (exit {proc.returncode}):\n{err.read()[-3000:]}")
        return line + rest + out.read(), seconds, usage.ru_utime + usage.ru_stime


class Bench:
    """The measurements of one invocation: ``measure(key)`` runs one and returns its result, ``{"value": ...}``."""

    def __init__(self, args: argparse.Namespace, workdir: Path, ref_tree: Path | None):
        self.args, self.workdir, self.ref_tree, self.count = args, workdir, ref_tree, 0
        self.ab_set = args.set + (["train.max_steps=30"] if args.quick else [f"train.epochs={args.ab_epochs}"])

    def cli_train(self, tree: Path, name: str, overrides: list[str], pin: int | None = None) -> dict:
        """``python -m graphcnn.cli train`` from ``tree``: its results.json, wall and CPU seconds."""
        _, seconds, cpu = run([sys.executable, "-m", "graphcnn.cli", "train", "--logdir", str(self.workdir),
                               "--name", name, "--no-progress", *[a for o in overrides for a in ("--set", o)]],
                              env_for(None, tree), tree, cpu=pin)
        return dict(json.loads((self.workdir / name / "results.json").read_text()), wall_s=seconds, cpu_s=cpu)

    def setup(self, keys: list[str]) -> None:
        if "predict" in keys:  # a short run to predict from
            self.cli_train(ROOT, "predict-run", self.args.set + ["train.max_steps=20"])
            self.image = str(sorted((self.workdir / "predict-run" / "examples").glob("*.png"))[0])
        for tree in [ROOT, self.ref_tree] if "ab_ref" in keys else []:  # each side imports its own tree
            out = run([sys.executable, "-c", "import graphcnn; print(graphcnn.__file__)"], env_for(None, tree), tree)
            if not Path(out[0].strip()).resolve().is_relative_to(tree.resolve()):
                raise RuntimeError(f"with PYTHONPATH={tree}, graphcnn was imported from {out[0].strip()!r}")

    def measure(self, key: str, pin: int | None = None) -> dict:
        self.count += 1
        name, a = f"{key}-{self.count:03d}", self.args
        if key in ("ab_current", "ab_ref"):
            r = self.cli_train(ROOT if key == "ab_current" else self.ref_tree, name, self.ab_set, pin)
            return dict(r, value=r["images_per_second"])
        if key in ("predict", "import_tf"):  # both with graphcnn's TensorFlow settings
            cmd = ([sys.executable, "-m", "graphcnn", "predict", str(self.workdir / "predict-run"), self.image]
                   if key == "predict" else [sys.executable, "-c", "import tensorflow; print('imported')"])
            return {"value": run(cmd, env_for(os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1")), first_line=True)[1]}
        opts = dict(warmup=a.warmup, steps=a.steps, workdir=str(self.workdir), name=name, log_off=key == "nolog",
                    preset=a.preset, overrides=a.set + [f"train.max_steps={a.warmup + a.steps}"]
                    + (["train.precision=mixed_bfloat16"] if key == "ingraph_bf16" else []))
        out = run([sys.executable, str(Path(__file__).resolve()), "--worker", key, "--opts", json.dumps(opts)],
                  env_for({"keras": "unset", "keras_onednn": "1"}.get(key)))[0]
        return json.loads(next(line for line in out.splitlines() if line.startswith(RESULT))[len(RESULT):])


def bootstrap(a: list[float], b: list[float], kind: str, resamples: int = 10000) -> tuple[float, float]:
    """95% percentile interval of median(a) / median(b) (or minus), the rounds resampled together."""
    idx = np.random.default_rng(0).integers(0, len(a), (resamples, len(a)))
    ma, mb = np.median(np.asarray(a)[idx], axis=1), np.median(np.asarray(b)[idx], axis=1)
    low, high = np.percentile(ma / mb if kind == "ratio" else ma - mb, [2.5, 97.5])
    return float(low), float(high)


def report(results: dict[str, list[dict]], meta: dict) -> str:
    num = lambda x: f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"  # noqa: E731
    med = lambda k, metric="value": float(np.median([r[metric] for r in results[k]]))  # noqa: E731
    out = [f"## Benchmark {meta['date']}", "", f"- command: `{meta['command']}`", f"- CPU: {meta['cpu']}",
           f"- TensorFlow {meta['tf']}, Keras {meta['keras']}, Python {platform.python_version()}, "
           f"numpy {np.__version__}",
           f"- commit: {meta['commit']}" + (f"; reference {meta['ref']}: {meta['ref_commit']}" if meta["ref"] else ""),
           f"- {meta['rounds']} round(s), paths interleaved, order reversed every other round; training paths: "
           f"{meta['warmup']} warm-up steps, then {meta['steps']} timed; {meta['preset']} preset"
           + ("; ab pinned: both sides at once, one CPU each, swapped every round" if meta["pinned"] else "")
           + (f", --set {' '.join(meta['set'])}" if meta["set"] else ""),
           f"- load average before / after: {meta['load_before']} / {meta['load_after']}; wall {meta['wall_s']:.0f} s"]

    def section(title: str, keys: list[str], unit: str, notes: list[str], metric: str = "value") -> None:
        vals = {k: [r[metric] for r in results[k]] for k in keys if k in results}
        if not vals:
            return
        out.extend(["", f"### {title}", "", f"| path | median {unit} | min | max | spread | per round |",
                    "|---|---:|---:|---:|---:|---|"])
        for k, v in vals.items():
            onednn = f" (oneDNN {'on' if results[k][0]['onednn'] else 'off'})" if "onednn" in results[k][0] else ""
            out.append(f"| {k}: {LABELS[k]}{onednn} | {num(med(k, metric))} | {num(min(v))} | {num(max(v))} "
                       f"| {(max(v) - min(v)) / med(k, metric):.1%} | {', '.join(num(x) for x in v)} |")
        out.extend(["", "| comparison | of medians | 95% bootstrap interval | per round |", "|---|---:|---|---|"])
        for a, b, kind in COMPARISONS:
            if a in vals and b in vals:
                f = "{:.3f}".format if kind == "ratio" else "{:+.2f} s".format
                op = (lambda x, y: x / y) if kind == "ratio" else (lambda x, y: x - y)
                low, high = bootstrap(vals[a], vals[b], kind)
                out.append(f"| {a} {'/' if kind == 'ratio' else '-'} {b} | {f(op(med(a, metric), med(b, metric)))} "
                           f"| {f(low)} to {f(high)} | {', '.join(f(op(x, y)) for x, y in zip(vals[a], vals[b]))} |")
        out.extend([""] + notes)

    notes = []
    if "graphcnn" in results:
        notes.append(f"Batch {results['graphcnn'][0]['batch']}. graphcnn including the epoch-end intervals: median "
                     f"{num(med('graphcnn', 'with_epoch_ends'))} images/s.")
        if "nolog" in results:
            notes.append(f"Logging cost, 1 - graphcnn / nolog: {1 - med('graphcnn') / med('nolog'):.1%}.")
    notes += [f"{k}: jit_compile {results[k][0]['jit_compile']} (Keras's choice)." for k in ("keras", "keras_onednn")
              if k in results]
    training = ["graphcnn", "keras", "keras_onednn", "ingraph", "ingraph_bf16", "nolog"]
    section("Training throughput (images/s over all timed steps)", training, "images/s", notes)
    section("Training throughput at the median step (images/s: batch / median step time)", training, "images/s",
            ["Blind to the rare slow steps, whether logging or another process made them slow: the check on the "
             "figures above when the machine is shared."], metric="typical")
    if "ab_ref" in results:
        acc = {k: [r["test_accuracy"] for r in results[k]] for k in ("ab_current", "ab_ref")}
        same_loss = len({r["test_loss"] for k in acc for r in results[k]}) == 1
        section("A/B: trainer throughput (images/s), this checkout vs the reference", ["ab_current", "ab_ref"],
                "images/s", [
                    f"Each side: `python -m graphcnn.cli train --no-progress "
                    f"{' '.join('--set ' + o for o in meta['ab_set'])}` with PYTHONPATH set to its tree; images/s "
                    "is `images_per_second` of results.json (the trainer's median over its 10-step logging windows "
                    "after the first; since 2026-12-07 of the steps' own time, without what runs between them: "
                    "compare two trees on the same side of that change).",
                    f"Test accuracy, this checkout: {', '.join(f'{x:.4f}' for x in acc['ab_current'])}; reference: "
                    f"{', '.join(f'{x:.4f}' for x in acc['ab_ref'])}: "
                    + ("identical in every run" if len(set(acc["ab_current"] + acc["ab_ref"])) == 1
                       else "**not identical**")
                    + f", test loss {'identical' if same_loss else 'not identical'}. Per process, median: wall time "
                    f"(start to exit) {med('ab_current', 'wall_s'):.1f} s vs {med('ab_ref', 'wall_s'):.1f} s, CPU "
                    f"time (user + system) {med('ab_current', 'cpu_s'):.1f} s vs {med('ab_ref', 'cpu_s'):.1f} s."])
        section("A/B: CPU time per run (seconds, user + system, the whole process)", ["ab_current", "ab_ref"], "s",
                ["Less sensitive than wall time to other processes on the machine; here lower is better."],
                metric="cpu_s")
    section("Cold start: predict one image (seconds to the first line of output)", ["predict", "import_tf"], "s", [])
    if "matmul" in results:
        rows = [f"| {k} | {results[k][0]['mflop']:.1f} | {med(k) * results[k][0]['mflop'] / 1e3:.1f} | "
                f"{med(k) * results[k][0]['mflop'] / 1e3 / med('matmul'):.0%} |" for k in training
                if k in results and "mflop" in results[k][0]]
        section("Float32 matrix multiply (GFLOP/s)", ["matmul"], "GFLOP/s", [
            "| path | training MFLOP/image | GFLOP/s at its median images/s | of the matmul median |",
            "|---|---:|---:|---:|", *rows])
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paths", default="", help="comma-separated subset of " + ",".join(CHOICES))
    p.add_argument("--rounds", type=int, help="default 5 (--quick: 1)")
    p.add_argument("--warmup", type=int, help="untimed steps per training run (default 20; --quick: 3)")
    p.add_argument("--steps", type=int, help="timed steps per training run (default 480; --quick: 12)")
    p.add_argument("--ref-tree", type=Path, help="ab: the reference source tree")
    p.add_argument("--ref", help="ab: a commit to check out as the reference (git worktree, removed afterwards)")
    p.add_argument("--ab-epochs", type=int, default=4)
    p.add_argument("--pinned", action="store_true",
                   help="ab: run both sides at the same time, each pinned to one CPU, CPUs swapped every round "
                   "(a shared machine's drift then reaches both sides alike)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    p.add_argument("--preset", default="digits", help="the preset every training path runs (default: digits; "
                   "the data is the preset's, else the embedded digits)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run: few steps, 1 round")
    p.add_argument("--out", help="append the report to this file (default: print only)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--opts", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker, json.loads(args.opts))
        return 0
    for name, normal, quick in (("rounds", 5, 1), ("warmup", 20, 3), ("steps", 480, 12)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    paths = args.paths.split(",") if args.paths else CHOICES[:-1] + (["ab"] if args.ref or args.ref_tree else [])
    if set(paths) - set(CHOICES) or ("ab" in paths and not (args.ref or args.ref_tree)):
        p.error(f"--paths: choose from {','.join(CHOICES)}; ab needs --ref-tree or --ref")
    if args.pinned and len(os.sched_getaffinity(0)) < 2:
        p.error("--pinned needs two CPUs")
    keys = [k for path in paths for k in {"ab": ["ab_current", "ab_ref"], "predict": ["predict", "import_tf"]}.get(
        path, [path])]
    start, load_before = time.perf_counter(), " ".join(f"{x:.2f}" for x in os.getloadavg())
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    results: dict[str, list[dict]] = {k: [] for k in keys}
    with tempfile.TemporaryDirectory(prefix="graphcnn-bench-") as tmp:
        ref_tree = args.ref_tree.resolve() if args.ref_tree else None
        if args.ref and "ab" in paths:
            ref_tree = Path(tmp) / "ref-tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(ref_tree), args.ref],
                           check=True, capture_output=True)
        try:
            ref_commit = tree_commit(ref_tree) if ref_tree else ""
            bench = Bench(args, Path(tmp), ref_tree)
            bench.setup(keys)
            for r in range(args.rounds):
                for key in keys if r % 2 == 0 else keys[::-1]:
                    if args.pinned and key in ("ab_current", "ab_ref"):
                        if key == "ab_ref" and "ab_current" in keys:
                            continue  # measured together with ab_current
                        first, second = sorted(os.sched_getaffinity(0))[:2]
                        pins = {"ab_current": first, "ab_ref": second} if r % 2 == 0 else {
                            "ab_current": second, "ab_ref": first}
                        with concurrent.futures.ThreadPoolExecutor(2) as pool:
                            running = {k: pool.submit(bench.measure, k, pins[k]) for k in pins}
                        for k, future in running.items():
                            results[k].append(future.result())
                        print(f"round {r + 1}/{args.rounds} ab, pinned: " + ", ".join(
                            f"{k} on CPU {pins[k]}: {results[k][-1]['value']:.2f}" for k in pins),
                            file=sys.stderr, flush=True)
                        continue
                    t = time.perf_counter()
                    results[key].append(bench.measure(key))
                    print(f"round {r + 1}/{args.rounds} {key}: {results[key][-1]['value']:.2f} "
                          f"({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
        finally:
            if args.ref and ref_tree is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref_tree)],
                               capture_output=True)
    text = report(results, {
        "date": date, "command": shlex.join(["python", "scripts/benchmark.py", *argv]), "cpu": cpu_description(),
        "tf": next((d.version for d in importlib.metadata.distributions()
                    if d.metadata["Name"].lower().replace("_", "-") in ("tensorflow", "tensorflow-cpu")), "?"),
        "keras": (results.get("keras") or results.get("keras_onednn") or [{}])[0].get("keras", "(not run)"),
        "commit": tree_commit(ROOT), "ref": str(args.ref_tree or (args.ref and f"--ref {args.ref}") or ""),
        "ref_commit": ref_commit, "rounds": args.rounds, "warmup": args.warmup, "steps": args.steps,
        "set": args.set, "ab_set": bench.ab_set, "pinned": args.pinned, "load_before": load_before,
        "preset": args.preset,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()), "wall_s": time.perf_counter() - start})
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
