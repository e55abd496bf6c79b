#!/usr/bin/env python
"""The tutorials' real job, start to exit: train on a JPEG class-folder tree, graphcnn against Keras.

    python scripts/make_folder_data.py /tmp/race --train 600 --test 200
    python scripts/folder_race.py /tmp/race [--epochs 3] [--rounds 2] [--paths graphcnn,keras,...]
                                            [--preset cats_dogs_150 | dog_breeds_vgg]

Paths, each a fresh process timed from start to exit, run interleaved (A B C, C B A, ...):

* ``graphcnn``: ``graphcnn train --preset cats_dogs_150 --data DIR`` (or ``--preset
  dog_breeds_vgg``) with horizontal flips, rotation 20 degrees and zoom 0.2, ``--set
  train.epochs=N``, and the test on the last epoch's weights, as Keras's (``--set
  train.early_stopping.restore_best=false``; its default tests ``best/``); its test accuracy
  from results.json. The command relaunches itself with huge pages for malloc (its default,
  ``graphcnn/runtime.py``); the Keras jobs run as TensorFlow starts them (``keras_hugepages``
  gives them the same).
* ``keras``: the same job as a Keras 3 user writes it (``--keras-job`` runs it):
  ``keras.utils.image_dataset_from_directory`` (the preset's size, batch 32, 20% for validation)
  with ``cache()``, ``shuffle`` and ``prefetch`` as TensorFlow's tutorial has them,
  ``RandomFlip``/``RandomRotation``/``RandomZoom`` layers, the same net (cats_dogs_150:
  conv32-pool-conv64-pool-conv128-pool, fc128, fc512, dropout 0.5 at 150x150; dog_breeds_vgg:
  conv32-conv32-pool-dropout 0.25-conv64-conv64-pool-dropout 0.25, fc512, dropout 0.5 at
  224x224; pools padded SAME as graphcnn's, so the shapes and parameter counts are the same),
  Adam 1e-3, the same epochs, then ``evaluate`` on ``test_set/``; TF's defaults
  (TF_ENABLE_ONEDNN_OPTS unset). Left as each tool has them: the initializers (He truncated
  normal against Glorot uniform), rotation's fill (nearest against reflect), zoom (graphcnn
  draws height and width apart, RandomZoom keeps the aspect), resizing (antialiased against
  not), Adam's epsilon (1e-8 against 1e-7).
* ``keras_hugepages``: the Keras 3 job with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, the huge
  pages graphcnn's command gives itself.
* ``keras_onednn``: the same with TF_ENABLE_ONEDNN_OPTS=1.
* ``keras_no_autotune``: the Keras 3 job with ``tf.data.Options().autotune.enabled = False`` on
  its three datasets. In TF 2.21 dropping an autotuned iterator waits for the autotuner's sleep,
  and Keras drops one at each epoch's end: the default job's process sits idle for 5-8 s there in
  some runs and not in others (BENCHMARKS.md, Q13; docs/benchmarks/2026-12-06.md, Q13m), so this
  path is the steady Keras job.
* ``keras_bf16``: the Keras 3 job under ``keras.mixed_precision.set_global_policy("mixed_bfloat16")``,
  what graphcnn's ``train.precision = auto`` picks on CPUs with AMX-BF16 or AVX512-BF16.
* ``graphcnn_fp32``: the graphcnn job with ``train.precision = float32``.
* ``graphcnn_no_hugepages``: the graphcnn job with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0``, which
  keeps malloc on 4 KB pages (the A/B of graphcnn's huge-pages relaunch, ``graphcnn/runtime.py``).
* ``keras2``: the job as the Keras 2 tutorials write it, with ``tf_keras`` (``pip install
  tf_keras scipy``: benchmark-only, not graphcnn's dependencies): ``ImageDataGenerator(rescale,
  rotation_range=20, zoom_range=0.2, horizontal_flip, validation_split=0.2)
  .flow_from_directory`` for training and validation, a plain rescaling one for ``test_set/``,
  the same net without the preprocessing layers; TF's defaults.

Prints one line per run (with its peak resident memory), the medians, and each path's time
over the first path's: the ratio of the medians and the ratio in each round. ``--keep DIR``
keeps every run in DIR (``graphcnn-r1``, a graphcnn run directory; ``keras-r1``, the Keras
job's ``TensorBoard`` log folder with a results.json of its test accuracy) and draws each
round side by side with ``graphcnn report graphcnn-rN --compare keras-rN ...``
(``graphcnn-rN/report/compare.png``).

``--predict RUN`` races prediction instead, over the files of DIR (all its images, any depth):
``graphcnn predict RUN DIR --stats`` (its default precision, ``auto``, and ``--precision float32``)
against a Keras 3 user's ``model.predict`` on ``keras.utils.image_dataset_from_directory(DIR)``
with the same net (untrained: the work is the same; float32), each a fresh process timed from
start to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = "RACE_RESULT "


SIZES = {"cats_dogs_150": 150, "dog_breeds_vgg": 224}  # --preset: the presets raced, and their input size
TRAIN_PATHS = ("graphcnn", "graphcnn_fp32", "graphcnn_no_hugepages", "keras", "keras_onednn", "keras_no_autotune",
               "keras_bf16", "keras_hugepages", "keras2")  # --paths: the jobs described above
PREDICT_PATHS = ("predict_graphcnn", "predict_graphcnn_fp32", "predict_keras")  # --predict races these


def tutorial_model(num_classes: int, augment: bool = False, activation: str | None = None,
                   preset: str = "cats_dogs_150", keras=None):
    """The tutorial's network of ``preset`` in Keras 3 (or the ``keras`` module given, such as
    tf_keras, without the rescaling and augmentation layers: its generator does both);
    ``augment``: its flip, rotation and zoom."""
    preprocess = keras is None
    if keras is None:
        import keras
    layers = keras.layers

    def conv(filters):
        return layers.Conv2D(filters, 3, padding="same", activation="relu")

    def pool():  # graphcnn's pools pad SAME: 75 -> 38 -> 19 at 150 px (Keras's default VALID: 75 -> 37 -> 18)
        return layers.MaxPooling2D(padding="same")

    augmentation = [layers.RandomFlip("horizontal"), layers.RandomRotation(20 / 360), layers.RandomZoom(0.2)]
    if preset == "dog_breeds_vgg":
        body = [conv(32), conv(32), pool(), layers.Dropout(0.25),
                conv(64), conv(64), pool(), layers.Dropout(0.25),
                layers.Flatten(), layers.Dense(512, activation="relu"), layers.Dropout(0.5)]
    else:
        body = [conv(32), pool(), conv(64), pool(), conv(128), pool(),
                layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(512, activation="relu"),
                layers.Dropout(0.5)]
    size = SIZES[preset]
    preprocessing = [layers.Rescaling(1 / 255), *(augmentation if augment else [])] if preprocess else []
    return keras.Sequential([keras.Input((size, size, 3)), *preprocessing, *body,
                             layers.Dense(num_classes, activation=activation)])


def keras_datasets(data: Path, preset: str = "cats_dogs_150", seed: int = 0, autotune: bool = True) -> tuple:
    """The Keras 3 tutorial's datasets: ``(train, val, test, class_names)`` from
    ``image_dataset_from_directory`` (batch 32, 20% of training_set/ for validation), train and
    val cached and prefetched; ``autotune=False``: tf.data's autotuner off on all three."""
    import keras
    import tensorflow as tf

    kw = dict(image_size=(SIZES[preset], SIZES[preset]), batch_size=32, seed=seed, label_mode="int")
    train = keras.utils.image_dataset_from_directory(data / "training_set", validation_split=0.2, subset="training",
                                                     **kw)
    val = keras.utils.image_dataset_from_directory(data / "training_set", validation_split=0.2, subset="validation",
                                                   **kw)
    test = keras.utils.image_dataset_from_directory(data / "test_set", shuffle=False, **kw)
    class_names = train.class_names
    # as TensorFlow's tutorial: cache, then shuffle (its batches) each epoch; the files were
    # shuffled once before batching, and a cache alone would replay that order every epoch
    train = train.cache().shuffle(1000, seed=seed).prefetch(tf.data.AUTOTUNE)
    val = val.cache().prefetch(tf.data.AUTOTUNE)
    if not autotune:
        options = tf.data.Options()
        options.autotune.enabled = False
        train, val, test = (d.with_options(options) for d in (train, val, test))
    return train, val, test, class_names


def keras_job(data: Path, epochs: int, seed: int = 0, preset: str = "cats_dogs_150", logs: Path | None = None,
              bfloat16: bool = False, autotune: bool = True) -> None:
    """The Keras 3 tutorial version of the job; prints the test accuracy. ``logs``: also write the
    fit's TensorBoard logs there, as a Keras user does, and the test accuracy as results.json;
    ``bfloat16``: Keras's mixed_bfloat16 policy; ``autotune=False``: tf.data's autotuner off."""
    import keras

    keras.utils.set_random_seed(seed)
    if bfloat16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    train, val, test, class_names = keras_datasets(data, preset, seed, autotune)
    model = tutorial_model(len(class_names), augment=True, preset=preset)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    fit_and_test(keras, model, train, val, test, epochs, logs)


def fit_and_test(keras, model, train, val, test, epochs: int, logs: Path | None) -> None:
    """``fit`` then ``evaluate`` on the test split, printing its accuracy; with ``logs``, the fit's
    TensorBoard logs there (as a Keras user writes them) and the test accuracy as results.json."""
    callbacks = [keras.callbacks.TensorBoard(str(logs), write_graph=False, profile_batch=0)] if logs else []
    model.fit(train, validation_data=val, epochs=epochs, verbose=0, callbacks=callbacks)
    _, accuracy = model.evaluate(test, verbose=0)
    if logs:
        (logs / "results.json").write_text(json.dumps({"test_accuracy": float(accuracy)}) + "\n")
    print(RESULT + json.dumps({"test_accuracy": float(accuracy)}), flush=True)


def keras2_job(data: Path, epochs: int, seed: int = 0, preset: str = "cats_dogs_150", logs: Path | None = None) -> None:
    """The Keras 2 tutorials' version of the job (tf_keras, ImageDataGenerator); prints the test accuracy."""
    import tf_keras
    from tf_keras.preprocessing.image import ImageDataGenerator

    tf_keras.utils.set_random_seed(seed)
    augmenting = ImageDataGenerator(rescale=1 / 255, rotation_range=20, zoom_range=0.2, horizontal_flip=True,
                                    validation_split=0.2)
    rescaling = ImageDataGenerator(rescale=1 / 255, validation_split=0.2)
    kw = dict(target_size=(SIZES[preset], SIZES[preset]), batch_size=32, class_mode="sparse", seed=seed)
    train = augmenting.flow_from_directory(data / "training_set", subset="training", **kw)
    val = rescaling.flow_from_directory(data / "training_set", subset="validation", **kw)
    test = ImageDataGenerator(rescale=1 / 255).flow_from_directory(data / "test_set", shuffle=False, **kw)
    model = tutorial_model(train.num_classes, preset=preset, keras=tf_keras)
    model.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    fit_and_test(tf_keras, model, train, val, test, epochs, logs)


def keras_predict_job(data: Path) -> None:
    """``model.predict`` over a folder as a Keras 3 user writes it; prints the image count."""
    import keras
    import tensorflow as tf

    files = keras.utils.image_dataset_from_directory(data, image_size=(150, 150), batch_size=32, labels=None,
                                                     shuffle=False)
    model = tutorial_model(2, activation="softmax")
    probabilities = model.predict(files.prefetch(tf.data.AUTOTUNE), verbose=0)
    print(RESULT + json.dumps({"images": int(probabilities.shape[0])}), flush=True)


def command(path: str, data: Path, epochs: int, logdir: Path, name: str, run: Path | None = None,
            preset: str = "cats_dogs_150", keep: bool = False) -> tuple[list[str], dict]:
    if path not in TRAIN_PATHS + PREDICT_PATHS:
        raise ValueError(f"unknown path '{path}'; choices: {', '.join(TRAIN_PATHS + PREDICT_PATHS)}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if path in ("predict_graphcnn", "predict_graphcnn_fp32"):
        precision = "float32" if path.endswith("fp32") else "auto"
        return [sys.executable, "-m", "graphcnn", "predict", str(run), str(data), "--stats", "--format", "csv",
                "--precision", precision], env
    if path == "predict_keras":
        return [sys.executable, __file__, "--keras-predict-job", str(data)], env
    if path == "graphcnn_no_hugepages":
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), "glibc.malloc.hugetlb=0"]))
    if path in ("graphcnn", "graphcnn_fp32", "graphcnn_no_hugepages"):
        argv = [sys.executable, "-m", "graphcnn", "train", "--preset", preset, "--data", str(data),
                "--logdir", str(logdir), "--name", name, "--no-progress", "--set", f"train.epochs={epochs}",
                "--set", "data.validation_fraction=0.2", "--set", "data.augment.horizontal_flip=true",
                "--set", "data.augment.rotation_range=20", "--set", "data.augment.zoom_range=0.2",
                # the test on the last epoch's weights, as Keras's evaluate after fit (not best/'s)
                "--set", "train.early_stopping.restore_best=false"]
        return argv + (["--set", "train.precision=float32"] if path == "graphcnn_fp32" else []), env
    if path == "keras_onednn":
        env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    if path == "keras_hugepages":  # what graphcnn's command relaunches itself with (graphcnn.runtime)
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), "glibc.malloc.hugetlb=1"]))
    job = "--keras2-job" if path == "keras2" else "--keras-job"
    logs = ["--logs", str(logdir / name)] if keep else []
    flags = {"keras_bf16": ["--bfloat16"], "keras_no_autotune": ["--no-autotune"]}.get(path, [])
    return [sys.executable, __file__, job, str(data), "--epochs", str(epochs), "--preset", preset, *logs, *flags], env


def run_once(path: str, data: Path, epochs: int, logdir: Path, name: str, run: Path | None = None,
             preset: str = "cats_dogs_150", keep: bool = False) -> dict:
    argv, env = command(path, data, epochs, logdir, name, run, preset, keep)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # reaped here, so that its own peak memory is known
    seconds, code = time.perf_counter() - start, os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code:
        raise SystemExit(f"{path} failed ({code}):\n{out[-3000:]}")
    result = {"path": path, "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "test_accuracy": float("nan")}
    if path.startswith("predict"):
        result["note"] = " ".join(line for line in out.splitlines() if line.startswith(RESULT) or "images/s" in line)
    elif path.startswith("graphcnn"):
        result["test_accuracy"] = json.loads((logdir / name / "results.json").read_text())["test_accuracy"]
    else:
        line = next(line for line in out.splitlines() if line.startswith(RESULT))
        result["test_accuracy"] = json.loads(line[len(RESULT):])["test_accuracy"]
    return result


def ratio_line(path: str, base: str, results: dict[str, list[dict]]) -> str:
    """``path``'s time over ``base``'s: the ratio of the medians, then the ratio in each round
    (a round's runs shared the machine's minutes, so their spread is the race's)."""
    import statistics  # here, not at the top: the timed Keras jobs run this file too
    times = {p: [r["seconds"] for r in results[p]] for p in (path, base)}
    rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(times[path], times[base]))
    return (f"{path} / {base} (time): {statistics.median(times[path]) / statistics.median(times[base]):.2f}x "
            f"(rounds {rounds})")


def _paths(text: str) -> list[str]:
    """``--paths``: the names, each one of TRAIN_PATHS (argparse turns the error into a usage error)."""
    paths = text.split(",")
    unknown = [p for p in paths if p not in TRAIN_PATHS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown path {', '.join(unknown)}; choices: {', '.join(TRAIN_PATHS)}")
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paths", type=_paths, default="graphcnn,keras,keras_onednn",
                        help=f"comma-separated, first the reference; choices: {', '.join(TRAIN_PATHS)}")
    parser.add_argument("--preset", choices=sorted(SIZES), default="cats_dogs_150", help="the job's network")
    parser.add_argument("--predict", type=Path, metavar="RUN", help="race prediction over DIR with this run")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the runs here and draw each round's "
                        "curves side by side (graphcnn report --compare)")
    parser.add_argument("--logs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keras-job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bfloat16", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-autotune", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keras2-job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keras-predict-job", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keras_job:
        keras_job(args.data, args.epochs, preset=args.preset, logs=args.logs, bfloat16=args.bfloat16,
                  autotune=not args.no_autotune)
        return 0
    if args.keras2_job:
        keras2_job(args.data, args.epochs, preset=args.preset, logs=args.logs)
        return 0
    if args.keras_predict_job:
        keras_predict_job(args.data)
        return 0
    paths = list(PREDICT_PATHS) if args.predict else args.paths
    job = "predict" if args.predict else f"{args.preset}, {args.epochs} epochs"
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.data}; {job}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    results: dict[str, list[dict]] = {p: [] for p in paths}
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        logdir = args.keep or Path(temporary)
        for r in range(args.rounds):
            for path in (paths if r % 2 == 0 else list(reversed(paths))):
                res = run_once(path, args.data, args.epochs, logdir, f"{path}-r{r + 1}", args.predict, args.preset,
                               keep=bool(args.keep))
                results[path].append(res)
                print(f"round {r + 1} {path:16s} {res['seconds']:7.1f} s  test accuracy {res['test_accuracy']:.4f}  "
                      f"peak {res['peak_rss_mb']:.0f} MB {res.get('note', '')}", flush=True)
    import statistics
    for path, runs in results.items():
        print(f"{path:13s} median {statistics.median(r['seconds'] for r in runs):7.1f} s  "
              f"accuracy {statistics.median(r['test_accuracy'] for r in runs):.4f}")
    for path in paths[1:]:
        print(ratio_line(path, paths[0], results))
    if args.keep and "graphcnn" in paths and not args.predict:
        for r in range(args.rounds):
            others = [str(args.keep / f"{p}-r{r + 1}") for p in paths if p != "graphcnn"]
            compare = [a for other in others for a in ("--compare", other)]
            subprocess.run([sys.executable, "-m", "graphcnn", "report", str(args.keep / f"graphcnn-r{r + 1}"),
                            *compare], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
