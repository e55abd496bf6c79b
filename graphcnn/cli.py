"""The ``graphcnn`` command line: the one place that reads ``argv``.

Each subcommand parses its arguments, resolves a :class:`~graphcnn.config.Config` or a run
directory, and calls the library. TensorFlow is imported only after
:func:`graphcnn.runtime.configure` has set its environment.

Exit codes (:func:`main`): 0 done; 1 an unexpected error (a full disk, a read-only folder,
a TensorFlow error); 2 bad input or config (the message names the key, file or folder);
3 training stopped on a NaN/Inf loss (its last good checkpoint is kept); 130 interrupted
(Ctrl-C or SIGTERM: a checkpoint was saved; ``--resume`` continues). ``predict`` and ``explain``:
1 when some files cannot be read (the others are done), 2 when none can. An error is one
``graphcnn: error: ...`` line on stderr (a message that lists files or variables continues
on indented lines); ``--debug`` prints the traceback instead.

Output: graphcnn's own lines only. TensorFlow's start-up banner, its INFO/WARNING log and
image decoders' messages are kept off stderr (:mod:`graphcnn.runtime`); ``--verbose``
shows them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import errno
import json
import logging
import os
import pathlib
import sys
import time
import traceback
from collections.abc import Iterator
from typing import NoReturn

from graphcnn import runtime
from graphcnn.terminal import printable

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_NAN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

DEFAULT_LOGDIR = "logs"
EXPLAIN_METHODS = ("auto", "gradcam", "layercam")  # graphcnn.explain.METHODS, without importing TensorFlow


def _add_config_args(p: argparse.ArgumentParser, data: bool = True, finetune: bool = True) -> None:
    p.add_argument("--preset", default=None, help="named architecture (see `graphcnn presets`); default: digits")
    p.add_argument("--config", default=None, help="TOML or JSON file with config sections (may name a preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=3 (repeatable; unknown keys are errors)")
    if data:
        p.add_argument("--data", default=None, help="dataset path (shortcut for --set data.path=PATH)")
    if finetune:
        p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                       help="start from the weights of a checkpoint, checkpoint folder or run directory")
        p.add_argument("--exclude-scopes", default=None, metavar="S1,S2",
                       help="with --init-from: scopes not restored (e.g. logits when the classes differ)")
        p.add_argument("--trainable-scopes", default=None, metavar="S1,S2",
                       help="train only variables under these scopes (e.g. fc1,logits); the rest stay frozen")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``graphcnn train`` (also the tutorial scripts' options)."""
    _add_config_args(p)
    p.add_argument("--logdir", default=DEFAULT_LOGDIR, help="root folder of run directories (default: logs)")
    p.add_argument("--name", default=None, help="run directory name (default: <preset>-<timestamp>)")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue the run in this directory")
    p.add_argument("--next-stage", action="store_true",
                   help="with --resume: begin the run's next stage with --set/--trainable-scopes changes "
                        "(e.g. unfreeze the top block at a lower learning rate; train.epochs counts from the "
                        "run's start); training goes on from the latest checkpoint, in the same TensorBoard run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="train the grid of these --set values as separate runs under one parent folder (repeatable)")
    c = p.add_argument_group("scaling out (README, \"Scaling out\")")
    c.add_argument("--cluster", nargs="?", const="", default=None, metavar="FILE",
                   help="be one task of a cluster: read TF_CONFIG, or FILE (the same JSON, or its 'cluster' part "
                        "with --job/--task). A ps job makes it asynchronous with parameter servers, workers alone "
                        "synchronous with all-reduce; worker 0 is the chief and alone writes the run directory")
    c.add_argument("--job", choices=("ps", "worker"), default=None, help="with --cluster FILE: this task's job")
    c.add_argument("--task", type=int, default=None, help="with --cluster FILE: this task's index in its job")


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    value = _at_least_one(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def _at_least_one(text: str) -> int:
    """An argparse type: an integer of 1 or more (argparse's own error line otherwise, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _next_stage_config(last, new):
    """The next stage's config: ``new`` unless it changes the model, the data or where the
    weights came from, which a stage that goes on from the last one's checkpoint cannot."""
    from graphcnn import config as C

    before, after = C.to_dict(last), C.to_dict(new)
    # what makes the model and its data (the classes, the splits, the input); how the data is
    # read and augmented, and test-time flips, may change
    fixed = {"model": [k for k in after["model"] if k != "test_time_flip"],
             "data": ["source", "path", "test_path", "validation_fraction", "test_fraction", "seed",
                      "mean_subtraction", "exif_transpose"],
             "train": ["init_from", "exclude_scopes", "skip_mismatched"]}
    changed = [f"{section}.{key}" for section, keys in fixed.items() for key in keys
               if after[section][key] != before[section].get(key)]
    if changed:
        raise C.ConfigError(f"--next-stage keeps the run's model, data and initial weights: {', '.join(changed)} "
                            "cannot change (start a new run with --init-from RUN to train another)")
    return new


def resolve_config(args: argparse.Namespace, base=None):
    """Preset (from --preset, the config file, or the default), then the file, then --set.
    ``base``: start from this config instead of a preset (a run's next stage)."""
    from graphcnn import config as C
    from graphcnn.presets import DEFAULT_PRESET, get_preset

    preset = args.preset
    if args.config and preset is None:
        preset = C.read_file(args.config).get("preset")
        if preset is not None and base is None:
            try:
                get_preset(preset)
            except C.ConfigError as err:  # the file's choice: name the file
                raise C.ConfigError(f"{args.config}: {err}") from None
    overrides = _overrides(args)
    config = C.load(base if base is not None else get_preset(preset or DEFAULT_PRESET), args.config, overrides)
    # the run keeps its config: data paths absolute, so that --resume and evaluate of the run
    # find the data from any folder (relative ones are read from this one, as given)
    data = config.data
    paths = {key: os.path.abspath(os.path.expanduser(value)) for key, value in
             (("path", data.path), ("test_path", data.test_path)) if value}
    return dataclasses.replace(config, data=dataclasses.replace(data, **paths)) if paths else config


def _overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` and the flags that are shorthands for config keys, as ``key=value`` overrides."""
    overrides = list(args.overrides)
    if getattr(args, "data", None) is not None:
        overrides.append(f"data.path={json.dumps(args.data)}")
    if getattr(args, "init_from", None) is not None:
        overrides.append(f"train.init_from={json.dumps(args.init_from)}")
    for flag, key in (("exclude_scopes", "train.exclude_scopes"), ("trainable_scopes", "train.trainable_scopes")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps([s.strip() for s in value.split(',') if s.strip()])}")
    return overrides


_DEBUG_HELP = "on an error, print the traceback instead of the one-line message"
_VERBOSE_HELP = ("also show TensorFlow's own output (its start-up banner, INFO/WARNING log, image decoder "
                 "messages), which graphcnn hides")
_PREDICT_FORMATS = """output formats (stdout): text, one line per readable file; json, a list with one object per file
(file, class, probability, top_k, error: null, or the reason the file cannot be read, with
class null); csv, a header row then one row per file (file, class, probability, topN_class,
topN_probability..., error: empty, or the reason, with the other columns empty). Unreadable
files are also named on stderr, and make the exit code 1."""
_EVALUATE_FORMATS = """images: without --data, the run's own data, split exactly as training split it
(--split test by default); with --data, another dataset: all of it by default, or --split
train|validation|test of it, split as training would split it with the run's
data.validation_fraction, data.test_fraction and data.seed (a source with its own test set,
e.g. training_set/ + test_set/ folders, keeps it). The text output says which images were
used. The dataset's class names must be among the model's (checked before any image is
decoded); a folder with a single class is fine.

formats: text (accuracy with its 95% interval, per-class precision/recall/f1/support, the
confusion matrix); json (the same); csv: the header class,precision,recall,f1,support, one
row per class of the model, then a row "accuracy" with the accuracy in the f1 column and the
image count as support (the layout of scikit-learn's classification report)."""
_DATA_DESCRIPTION = """Read a dataset exactly as training would, without training: the source detected, the
classes with their image counts (imbalance flagged), image sizes and modes (for image
files, from the scan that decodes each one), every bad or converted file with its reason,
and the split sizes (small splits flagged). Writes OUT/samples.png (a row of samples per
class, as the model sees them: resized and converted to its input) and OUT/data_report.txt
(the report printed here). Exit code 0 when the data can train, 2 when it cannot (the
report lists every problem)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as graphcnn's: one ``graphcnn: error:`` line, exit 2 (its
    subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]  # "predict" of "graphcnn predict"; "" at the top
        extra = message.partition("unrecognized arguments: ")[2].split()
        path = next((a for a in extra if not a.startswith("-") and os.path.exists(a)), None)
        if path is not None:  # `graphcnn train ~/cats_dogs`: the data goes with --data
            message += f"; to train on {path}, give it as --data {path}"
        self.exit(EXIT_BAD_INPUT, f"graphcnn: error: {command + ': ' if command else ''}{message} "
                                  f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="graphcnn", description="Build convolutional networks as TensorFlow graphs, train "
                     "them, and see inside them. `graphcnn COMMAND --help` for each command.")
    add_global_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network; writes logs/<run>/ (TensorBoard, checkpoints)")
    add_train_arguments(t)

    cl = sub.add_parser("cluster-local", help="train as a cluster of processes on this machine (127.0.0.1)",
                        description="Start --ps parameter-server tasks and --workers worker tasks of `graphcnn "
                                    "train --cluster` on 127.0.0.1, print their output labelled by task, and stop "
                                    "them all when the workers are done, when one fails, or on Ctrl-C. Example: "
                                    "graphcnn cluster-local --ps 1 --workers 2 -- --preset cats_dogs_150 --data DIR")
    cl.add_argument("--ps", type=int, default=1, help="parameter-server tasks; 0: synchronous all-reduce (default: 1)")
    cl.add_argument("--workers", type=int, default=2, help="worker tasks; worker 0 is the chief (default: 2)")
    cl.add_argument("--port", type=_port, default=None,
                    help="first of the consecutive ports the tasks listen on (default: free ports)")
    cl.add_argument("train_args", nargs=argparse.REMAINDER, metavar="-- TRAIN_ARGS",
                    help="the `graphcnn train` options of every task, after --")

    p = sub.add_parser("predict", help="classify image files with a trained run or checkpoint",
                       epilog=_PREDICT_FORMATS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="run directory, checkpoint folder or checkpoint prefix")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=_at_least_one, default=3,
                   help="classes listed per file, most probable first (default: 3)")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--latest", action="store_true", help="use the latest checkpoint instead of the best")
    p.add_argument("--stats", action="store_true",
                   help="print on stderr: images/s, and the time spent waiting for decoding vs in the "
                        "forward pass")
    p.add_argument("--batch-size", type=_at_least_one, default=64, help="images per forward pass (default: 64)")
    p.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"), default="auto",
                   help="the forward pass's compute precision; auto: bfloat16 where the CPU computes it "
                        "natively (AMX-BF16, AVX512-BF16), as train.precision=auto picks it, else float32 "
                        "(default: auto)")

    e = sub.add_parser("evaluate", help="accuracy, per-class precision/recall, confusion matrix",
                       epilog=_EVALUATE_FORMATS, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run", help="run directory (or checkpoint)")
    e.add_argument("--data", default="", help="another dataset to evaluate on (any source graphcnn reads)")
    e.add_argument("--split", choices=("train", "validation", "test", "all"), default=None,
                   help="which images: default test, or all with --data (see below)")
    e.add_argument("--format", choices=("text", "json", "csv"), default="text")
    e.add_argument("--latest", action="store_true", help="use the latest checkpoint instead of the best")
    e.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"), default="auto",
                   help="the forward pass's compute precision, as predict's; auto: bfloat16 where training's "
                        "auto computes in it (the run's own test accuracy then), else float32 (default: auto)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                   help="with --data: how to read it, as train takes it (data.source=pickle "
                        "data.trust_pickle=true, a source auto does not detect, ...); repeatable")

    pr = sub.add_parser("presets", help="list the named architectures")
    pr.add_argument("--show", metavar="NAME", help="print one preset's full config as JSON")

    d = sub.add_parser("data", help="check a dataset as training would read it: report + sample grid, no training",
                       description=_DATA_DESCRIPTION)
    d.add_argument("path", nargs="?", default=None,
                   help="dataset path (as --data of graphcnn train; default: the config's data.path, "
                        "else the embedded digits)")
    _add_config_args(d, data=False, finetune=False)
    d.add_argument("--out", default="data_check", help="folder for samples.png and data_report.txt "
                                                      "(default: ./data_check)")
    d.add_argument("--per-class", type=_at_least_one, default=8, help="samples per class in samples.png (default: 8)")

    a = sub.add_parser("augment-preview", help="write a PNG grid of augmented training samples",
                       description="Write a PNG grid: each row a training image (the column labelled "
                                   "'original', as preprocessed) followed by random augmentations of it "
                                   "(labelled 'augmented'), drawn as the training pipeline draws them.")
    _add_config_args(a, finetune=False)
    a.add_argument("--out", default="augment_preview.png", help="output PNG (default: augment_preview.png)")
    a.add_argument("--rows", type=int, default=6, help="training images, one per row (default: 6)")
    a.add_argument("--cols", type=int, default=8, help="columns: the original, then its augmentations (default: 8)")

    c = sub.add_parser("config", help="print the resolved config (preset + file + --set) as JSON")
    _add_config_args(c)

    tb = sub.add_parser("tensorboard", help="run TensorBoard on a run (or a folder of runs), keeping every image")
    tb.add_argument("logdir", nargs="?", default=DEFAULT_LOGDIR, help="run directory or parent folder (default: logs)")
    tb.add_argument("--port", type=_port, default=6006, help="the port to serve on (default: 6006)")
    tb.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default, this machine only) or 0.0.0.0")

    fl = sub.add_parser("filters", help="filter snapshots from a run's events as PNG frames + animated PNG/GIF")
    fl.add_argument("run", help="run directory")
    fl.add_argument("--layer", default="", help="only this layer (e.g. conv1_1)")
    fl.add_argument("--gif", action="store_true", help="also write an animated GIF")
    fl.add_argument("--delay-ms", type=_at_least_one, default=200,
                    help="time per frame of the APNG/GIF, in milliseconds (default: 200)")

    rp = sub.add_parser("report", help="training vs validation loss/accuracy plots as PNG in <run>/report/")
    rp.add_argument("run", help="run directory")
    rp.add_argument("--raw", action="store_true", help="every logged training value, not interval means")
    rp.add_argument("--compare", action="append", default=[], metavar="DIR",
                    help="also draw report/compare.png: this run's per-epoch curves and test accuracy beside DIR's, "
                         "another graphcnn run or a Keras TensorBoard(log_dir) folder (repeatable)")

    x = sub.add_parser("explain",
                       help="Grad-CAM / LayerCAM: a PNG per image of what made the network predict its class")
    x.add_argument("run", help="run directory, checkpoint folder or checkpoint prefix")
    x.add_argument("images", nargs="+", help="image files or folders")
    x.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the PNGs, one per image: <image>_<class>_<probability>.png")
    x.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help="explain this class instead of each image's predicted one")
    x.add_argument("--layer", default=None, metavar="LAYER", help="conv layer to explain at (default: the last)")
    x.add_argument("--method", default="auto", choices=EXPLAIN_METHODS,
                   help="gradcam (channels weighed by their mean gradient), layercam (each position by its own "
                        "gradient); auto: layercam behind a flatten head, gradcam behind a global average pool")
    x.add_argument("--latest", action="store_true", help="use the latest checkpoint instead of the best")

    ex = sub.add_parser("export", help="write a SavedModel (TF Serving, tf.saved_model.load) or a TFLite file")
    ex.add_argument("run", help="run directory, checkpoint folder or checkpoint prefix "
                                "(--format tflite: also a SavedModel folder)")
    ex.add_argument("--format", choices=("saved_model", "tflite"), default="saved_model")
    ex.add_argument("--out", required=True, metavar="PATH",
                    help="saved_model: a new or empty folder (TF Serving reads models/<name>/<version>/); "
                         "tflite: a .tflite file, or a folder for model.tflite")
    ex.add_argument("--latest", action="store_true", help="use the latest checkpoint instead of the best")
    for command in sub.choices.values():  # also after the subcommand; SUPPRESS keeps a leading one
        add_global_arguments(command, suppress=True)
    return parser


def add_global_arguments(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """``--debug`` and ``--verbose`` (on a subcommand: ``suppress``, so that one given before
    the subcommand is kept)."""
    default = argparse.SUPPRESS if suppress else False
    p.add_argument("--debug", action="store_true", default=default, help=_DEBUG_HELP)
    p.add_argument("--verbose", action="store_true", default=default, help=_VERBOSE_HELP)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a new run (or ``--resume`` one), holding the run's lock throughout.

    A new run's directory is made only once the config is resolved and the data loaded, so
    bad input leaves no folder; if training then fails before its first checkpoint the
    directory is removed again (:meth:`RunDir.starting`).
    """
    from graphcnn import config as C
    from graphcnn.data.sources import load_dataset
    from graphcnn.run_dir import RunDir, check_new_run

    task = _cluster_task(args)
    if args.next_stage and not args.resume:
        raise C.ConfigError("--next-stage continues a run: give --resume RUN")
    if args.exclude_scopes is not None and args.init_from is None and not args.resume:
        raise C.ConfigError("--exclude-scopes leaves scopes out of --init-from's checkpoint: give --init-from")
    if getattr(args, "sweep", None):
        if task is not None:
            raise C.ConfigError("--sweep and --cluster do not go together: sweep runs are separate processes")
        from graphcnn.train.sweep import train_sweep

        return train_sweep(args, resolve_config)
    from graphcnn.train.trainer import train

    if task is not None and not task.is_chief:
        return _train_cluster_task(args, task)

    if args.resume:
        run = RunDir.open(args.resume)
        config = C.from_json_file(run.config)
        if args.next_stage:
            if args.preset or args.data:
                raise C.ConfigError("--next-stage keeps the run's model and data: drop --preset/--data")
            if args.init_from is not None or args.exclude_scopes is not None:
                raise C.ConfigError("--next-stage goes on from the run's own latest checkpoint: drop "
                                    "--init-from/--exclude-scopes (they apply to a new run)")
            config = _next_stage_config(config, resolve_config(args, base=config))
        elif args.overrides or args.config or args.preset or args.data or args.init_from or \
                args.exclude_scopes is not None or args.trainable_scopes is not None or args.name is not None:
            print("graphcnn: --resume continues with the run's saved config.json in its folder; "
                  "other config options and --name are ignored (a new stage of the run: --next-stage)",
                  file=sys.stderr)
        with run.lock(), _resume_hint(run):
            print(f"run directory: {run.root}")
            result = train(config, run, resume=True, progress=not args.no_progress, new_stage=args.next_stage,
                           cluster=task)
    else:
        config = resolve_config(args)
        if args.name is not None:
            check_new_run(args.logdir, args.name)  # before the data is loaded: a bad or taken name fails at once
        from graphcnn.model.graph import check_network_fits

        check_network_fits(config)  # and a network too deep for its input size
        dataset = load_dataset(config.data, config.model.channels, size=config.model.input_size)
        with RunDir.starting(args.logdir, args.name or "", prefix=config.preset) as run, run.lock(), \
                _resume_hint(run):
            print(f"run directory: {run.root}")
            result = train(config, run, progress=not args.no_progress, dataset=dataset, cluster=task)
    if result.test is not None:
        print(f"test accuracy: {result.test.accuracy:.4f} ({result.test.count} images)")
    if result.peak_memory_mb:
        print(f"peak memory: {result.peak_memory_mb / 1024:.2f} GiB (resident, the whole process)")
    if result.interrupted:
        print(f"interrupted at step {result.global_step} (not tested); continue with: graphcnn train --resume "
              f"{run.root}, or test it as it is: graphcnn evaluate {run.root}")
    if result.best_step is not None:
        print(f"best checkpoint: {run.best} (step {result.best_step}); latest: {run.checkpoints}")
    else:  # stopped before its first validation
        print(f"no best checkpoint yet (no validation ran); latest: {run.checkpoints}")
    print(f"TensorBoard: graphcnn tensorboard {run.root}   (then open http://127.0.0.1:6006)")
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


@contextlib.contextmanager
def _resume_hint(run) -> Iterator[None]:
    """A Ctrl-C that ends training by an exception (a second one, or one during the final test)
    in a run that has a checkpoint: the error line says how to go on, as a stop after the step does."""
    try:
        yield
    except KeyboardInterrupt as err:
        if not run.has_checkpoint():
            raise
        raise KeyboardInterrupt(f"interrupted; the run keeps its checkpoints: continue with graphcnn train "
                                f"--resume {run.root}") from err


def _cluster_task(args: argparse.Namespace):
    """This process's task with ``--cluster``, else None (``--job``/``--task`` need a file)."""
    cluster = getattr(args, "cluster", None)
    if cluster is None:
        if getattr(args, "job", None) is not None or getattr(args, "task", None) is not None:
            raise ValueError("--job and --task say which task of a --cluster FILE this process is: add --cluster")
        return None
    from graphcnn.cluster import spec

    if cluster:
        return spec.from_file(cluster, args.job, args.task)
    if args.job is not None or args.task is not None:
        raise ValueError("--job/--task go with --cluster FILE; with TF_CONFIG, its 'task' says which task this is")
    return spec.from_environment()


def _train_cluster_task(args: argparse.Namespace, task) -> int:
    """A ps task serves the variables until it is stopped; a worker other than the chief trains
    with the run's config (``--resume RUN``: the chief's run directory, shared) or the same
    config options as the chief, and writes nothing."""
    from graphcnn import config as C
    from graphcnn.cluster.session import serve, start_server
    from graphcnn.run_dir import RunDir
    from graphcnn.train.trainer import stage_schedule_start, train

    if task.job == "ps":
        server = start_server(task)
        try:
            serve(task, server)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (cluster-local's, once the workers are done): its end
            logging.getLogger("graphcnn.cluster").info("%s: stopped", task.describe())
        return EXIT_OK
    start = 0
    if args.resume:
        run = RunDir.open(args.resume)
        config = C.from_json_file(run.config)
        if args.next_stage:  # the chief's stage: the same options on the config it continues from
            config = _next_stage_config(config, resolve_config(args, base=config))
        start = stage_schedule_start(run, True, args.next_stage)  # the chief's learning-rate schedule
    else:
        config = resolve_config(args)
    result = train(config, None, progress=False, cluster=task, schedule_start=start)
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


def cmd_cluster_local(args: argparse.Namespace) -> int:
    from graphcnn.cluster.local import run_local

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if any(a == "--cluster" or a.startswith("--cluster=") for a in train_args):
        raise ValueError("cluster-local gives each task its --cluster (TF_CONFIG): drop --cluster from the "
                         "train options")
    return run_local(args.ps, args.workers, train_args, args.port)


def cmd_predict(args: argparse.Namespace) -> int:
    from graphcnn.data import scan
    from graphcnn.predict import Predictor, collect_image_files

    files = collect_image_files(args.images)
    start = time.perf_counter()
    with Predictor(args.checkpoint, prefer_best=not args.latest, precision=args.precision) as predictor:
        restored = time.perf_counter()
        result = predictor.run_files(files, top_k=args.top_k, batch_size=max(1, args.batch_size),
                                     split_timing=args.stats)
        p = predictor.preprocessing
    done = time.perf_counter()
    log = logging.getLogger("graphcnn.predict")
    for message in scan.conversion_warnings(result.images, p.channels, exif_transpose=p.exif_transpose):  # as trained
        log.warning(message)
    resized = scan.resize_summary(result.images, p.input_height, p.input_width)
    if resized:
        log.info(resized)
    k = max(1, min(args.top_k, len(predictor.class_names)))  # the top-k a prediction holds
    if args.format == "json":
        print(json.dumps([
            {"file": f, "class": pr.class_name if pr else None, "probability": pr.probability if pr else None,
             "top_k": [{"class": c, "probability": q} for c, q in pr.top_k] if pr else [], "error": err}
            for f, pr, err in result.rows], indent=2))
    elif args.format == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")  # as evaluate writes, and every other line
        w.writerow(["file", "class", "probability"]
                   + [f"top{i + 1}_{key}" for i in range(k) for key in ("class", "probability")] + ["error"])
        for f, pr, err in result.rows:
            if pr is None:
                w.writerow([f, "", ""] + [""] * (2 * k) + [err])
            else:
                top = [x for c, q in pr.top_k for x in (c, f"{q:.6f}")]
                w.writerow([f, pr.class_name, f"{pr.probability:.6f}"] + top + [""] * (2 * k - len(top)) + [""])
    else:
        for f, pr, err in result.rows:
            if pr is not None:
                top = ", ".join(f"{c} {q:.3f}" for c, q in pr.top_k)
                print(f"{printable(f)}: {pr.class_name} ({pr.probability:.3f})   top-{len(pr.top_k)}: {top}")
    sys.stdout.flush()
    for f, e in result.errors:
        print(f"graphcnn: cannot read {printable(f)}: {e}", file=sys.stderr)
    if args.stats:
        n, work = len(result.predictions), done - restored
        other = max(0.0, work - result.decode_seconds - result.predict_seconds)
        print(f"graphcnn: {n} image(s) in {work:.2f} s: {n / max(work, 1e-9):.1f} images/s (decode wait "
              f"{result.decode_seconds:.2f} s, forward pass {result.predict_seconds:.2f} s, other {other:.2f} s; "
              f"decoding runs in parallel, overlapping the forward pass); {predictor.precision}"
              f"{', each image and its mirror image (model.test_time_flip)' if predictor.test_time_flip else ''}; "
              f"model restore {restored - start:.2f} s, not counted", file=sys.stderr)
    return _unreadable_files_end(len(result.errors), len(result.rows), "predicted")


def _unreadable_files_end(n_bad: int, n: int, done: str) -> int:
    """The exit code of a command over image files (predict, explain), after each unreadable
    one was named: 0 if none, 2 (bad input) if no file could be read, else 1, with one
    ``graphcnn: error:`` line counting them."""
    if not n_bad:
        return EXIT_OK
    if n_bad == n:  # nothing done: bad input, as a path that does not exist
        print(f"graphcnn: error: {'the file' if n == 1 else f'none of the {n} files'} could not be read "
              f"({'named' if n == 1 else 'each named'} above)", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"graphcnn: error: {n_bad} of {n} files could not be read (each named above; the others are {done})",
          file=sys.stderr)
    return EXIT_ERROR


def cmd_evaluate(args: argparse.Namespace) -> int:
    from graphcnn.evaluate import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.split, prefer_best=not args.latest, data_overrides=args.overrides,
                           precision=args.precision)
    if args.format == "json":
        print(json.dumps(metrics.to_dict(), indent=2))
    elif args.format == "csv":
        sys.stdout.write(metrics.to_csv())
    else:
        print(metrics.to_text())
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """``graphcnn data``: the data report and sample grid; exit 2 (after writing the report)
    when the data cannot train."""
    from pathlib import Path

    from graphcnn.atomic import write_text_atomic
    from graphcnn.data.check import check_data, report_text, sample_grid
    from graphcnn.data.dataset import DataError
    from graphcnn.viz.images import write_png

    if args.path is not None:
        args.data = args.path
    config = resolve_config(args)
    out = Path(args.out)
    check = check_data(config)
    out.mkdir(parents=True, exist_ok=True)
    samples = out / "samples.png"
    if check.dataset is not None:
        write_png(samples, sample_grid(check.dataset, config, args.per_class))
    elif samples.exists():
        samples.unlink()  # an old grid would pass for this data's
    write_text_atomic(out / "data_report.txt", report_text(check))
    print(report_text(check, every_file=False), end="")
    written = f"{samples} and {out / 'data_report.txt'}" if check.dataset is not None else str(out / "data_report.txt")
    print(f"wrote {written}")
    if check.error is not None:
        raise DataError(f"{check.error.summary}; every problem is listed in {out / 'data_report.txt'}")
    return EXIT_OK


def cmd_presets(args: argparse.Namespace) -> int:
    from graphcnn.presets import PRESETS, get_preset

    if args.show:
        print(json.dumps(get_preset(args.show).to_dict(), indent=2))
        return 0
    for name, fn in PRESETS.items():
        print(f"{name:18s} {(fn.__doc__ or '').strip().splitlines()[0]}")
    return 0


def cmd_augment_preview(args: argparse.Namespace) -> int:
    from graphcnn.data.preview import augmentation_preview, preview_image, sample_indices
    from graphcnn.data.sources import load_dataset
    from graphcnn.viz.images import write_png

    config = resolve_config(args)
    if not config.data.augment.enabled:
        raise ValueError("augmentation is off in this config: nothing to preview; set e.g. "
                         "--set data.augment.rotation_range=15")
    if args.cols < 2 or args.rows < 1:
        raise ValueError("--rows must be at least 1 and --cols at least 2 (the original and one augmentation)")
    out = pathlib.Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give the PNG file to write, e.g. {out / 'preview.png'}")
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: the preview is a PNG file; give a name ending in .png")
    if out.exists() and not _is_png(out):  # an earlier preview is replaced; anything else is the user's
        raise ValueError(f"--out {out} exists and is not a PNG image: not overwritten; give another name")
    dataset = load_dataset(config.data, config.model.channels)
    tiles = augmentation_preview(config, dataset.train, args.rows, args.cols, config.data.seed)
    out.parent.mkdir(parents=True, exist_ok=True)  # as data --out and explain --out
    labels = [dataset.class_names[dataset.train.labels[i]] for i in sample_indices(dataset.train, args.rows)]
    write_png(out, preview_image(tiles, args.cols, labels))
    print(f"wrote {args.out}: each row is a training image (original) followed by {args.cols - 1} augmentations")
    return 0


def _epoch(epoch: float) -> str:
    """3, 2.5, 0.48: an epoch as a person writes it (a validation every N steps lands between epochs)."""
    return f"{epoch:.2f}".rstrip("0").rstrip(".")


def _is_png(path: pathlib.Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(resolve_config(args).to_dict(), indent=2))
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    from graphcnn.tensorboard.launcher import run_tensorboard

    return run_tensorboard(args.logdir, args.port, args.host)


def cmd_filters(args: argparse.Namespace) -> int:
    from graphcnn.tensorboard.filters import export_filters

    export_filters(args.run, args.layer, args.gif, args.delay_ms)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from graphcnn.report import write_comparison, write_report

    # the comparison first: a folder it cannot read fails the command before any figure is written
    compared = write_comparison(args.run, args.compare) if args.compare else None
    for path in write_report(args.run, raw=args.raw):
        print(path)
    if compared:
        path, runs = compared
        print(path)
        for run in runs:
            accuracy = run.validation.get("accuracy")
            last = f"validation accuracy {accuracy[1][-1]:.4f} at epoch {_epoch(accuracy[0][-1])}" if accuracy else ""
            test = f"test accuracy {run.test_accuracy:.4f}" if run.test_accuracy is not None else "no test accuracy"
            if run.test_epoch is not None and accuracy and run.test_epoch != accuracy[0][-1]:
                test += f" (the best checkpoint, epoch {_epoch(run.test_epoch)})"  # not the weights of the last epoch
            print(f"  {run.label}: {', '.join(filter(None, (test, last)))}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from graphcnn.explain import METHOD_LABELS, Explainer
    from graphcnn.predict import collect_image_files

    files = collect_image_files(args.images)
    with Explainer(args.run, layer=args.layer, prefer_best=not args.latest, method=args.method) as explainer:
        written, errors = explainer.explain_files(files, args.out, args.class_name)
        print(f"{METHOD_LABELS[explainer.method]} at {explainer.layer} of {explainer.checkpoint}", file=sys.stderr)
    for path in written:
        print(printable(path))
    for f, e in errors:
        print(f"graphcnn: cannot read {printable(f)}: {e}", file=sys.stderr)
    return _unreadable_files_end(len(errors), len(files), "explained")


def cmd_export(args: argparse.Namespace) -> int:
    from graphcnn.export import (BYTES_INPUT, BYTES_SIGNATURE, UINT8_INPUT, UINT8_SIGNATURE, export_saved_model,
                                 export_tflite)

    start = time.perf_counter()
    if args.format == "saved_model":
        path = export_saved_model(args.run, args.out, prefer_best=not args.latest)
        print(f"wrote {path} ({time.perf_counter() - start:.1f} s): signatures {BYTES_SIGNATURE} "
              f"({BYTES_INPUT}: encoded image files) and {UINT8_SIGNATURE} ({UINT8_INPUT}: uint8 [N, H, W, C]); "
              f"see: saved_model_cli show --dir {path} --all")
    else:
        path = export_tflite(args.run, args.out, prefer_best=not args.latest)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s): "
              f"signature {UINT8_SIGNATURE}, input {UINT8_INPUT} uint8 [N, H, W, C] of the model's input size")
    return 0


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate, "presets": cmd_presets,
            "data": cmd_data, "config": cmd_config, "augment-preview": cmd_augment_preview,
            "tensorboard": cmd_tensorboard, "filters": cmd_filters, "report": cmd_report, "explain": cmd_explain,
            "export": cmd_export, "cluster-local": cmd_cluster_local}


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code. Every error becomes one ``graphcnn: error: ...``
    line on stderr (``--debug``: its traceback) and its exit code (see the module docstring).

    ``argv`` None (the ``graphcnn`` command, ``python -m graphcnn``): the process first
    relaunches itself once with huge pages for malloc, where that helps
    (:func:`graphcnn.runtime.relaunch_with_huge_pages`), and ends without the interpreter's
    teardown once the command is done (:func:`graphcnn.runtime.exit_now`)."""
    args = build_parser().parse_args(argv)
    if argv is None:
        runtime.relaunch_with_huge_pages()
    code = run(args)
    if argv is None:
        runtime.exit_now(code)
    return code


def run(args: argparse.Namespace) -> int:
    """Run the command ``args.command`` of parsed arguments (:func:`main`, the tutorial scripts)."""
    verbose = getattr(args, "verbose", False)
    runtime.configure(verbose=verbose)  # before TensorFlow is imported; quiets its Python loggers
    # a file name that is not UTF-8 (Latin-1 bytes) is printed as its own bytes, as ls does
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="surrogateescape")
    runtime.configure_logging()
    with runtime.native_stderr_filter(enabled=not verbose), runtime.interrupts():
        try:
            if args.command != "tensorboard":  # TensorBoard runs in a child process: no TensorFlow import here
                runtime.import_tensorflow()  # here: its import prints the banner the filter drops

            return COMMANDS[args.command](args)
        except BrokenPipeError:  # whoever read stdout stopped (`graphcnn predict ... | head`): nothing to add
            with contextlib.suppress(OSError, ValueError, AttributeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return EXIT_ERROR
        except (Exception, KeyboardInterrupt) as err:
            code, message = describe_error(err)
            if getattr(args, "debug", False):
                traceback.print_exc()
            else:
                print(f"graphcnn: error: {message}", file=sys.stderr)
            return code


def describe_error(err: BaseException) -> tuple[int, str]:
    """The exit code for ``err`` and its message for the one ``graphcnn: error:`` line."""
    if isinstance(err, KeyboardInterrupt) or runtime.interrupted():
        # before training's own handler is installed, or after; or a Ctrl-C that TensorFlow's
        # native code turned into another error (runtime.interrupts). First: a Ctrl-C during
        # `import tensorflow` leaves modules half imported, which the imports below would retry
        return EXIT_INTERRUPTED, (str(err) if isinstance(err, KeyboardInterrupt) else "") or "interrupted"
    tf = sys.modules.get("tensorflow")  # imported by every command but `graphcnn tensorboard`

    from graphcnn.checkpoints import CheckpointError, one_line
    from graphcnn.cluster.spec import ClusterTaskLost
    from graphcnn.config import ConfigError
    from graphcnn.data.dataset import DataError
    from graphcnn.run_dir import RunDirError

    if isinstance(err, FloatingPointError):  # the trainer's NaN/Inf stop; its message says what to change
        return EXIT_NAN, _indent(str(err))
    if isinstance(err, FileNotFoundError):
        return EXIT_BAD_INPUT, _os_error_text(err, "")
    if isinstance(err, (FileExistsError, NotADirectoryError)) and err.filename is not None:
        # a folder to write in (--logdir, --out) that is, or lies under, a file
        path = os.fsdecode(err.filename)
        blocker = next((q for q in (path, *map(str, pathlib.Path(path).parents)) if os.path.isfile(q)), None)
        if blocker is None:
            return EXIT_BAD_INPUT, f"{path}: {err.strerror}"
        return EXIT_BAD_INPUT, (f"{path} is a file, not a folder" if blocker == path
                                else f"cannot write {path}: {blocker} is a file, not a folder")
    if isinstance(err, (ConfigError, RunDirError, DataError, CheckpointError, ValueError)):
        return EXIT_BAD_INPUT, _indent(str(err))
    if isinstance(err, OSError):
        return EXIT_ERROR, _os_error_text(err, "cannot write ")
    if isinstance(err, ClusterTaskLost):  # names the task; restart the cluster with --resume
        return EXIT_ERROR, _indent(str(err))
    # a TensorFlow failure (a checkpoint save on a full disk, say)
    if tf is not None and isinstance(err, tf.errors.OpError):
        return EXIT_ERROR, one_line(err)
    text = " ".join(str(err).split())
    return EXIT_ERROR, f"{type(err).__name__}: {text} (run with --debug for the traceback)" if text else (
        f"{type(err).__name__} (run with --debug for the traceback)")


_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _os_error_text(err: OSError, write_prefix: str) -> str:
    """``cannot write <path>: <strerror>`` for a write that failed (disk full, read-only or
    forbidden folder), ``<path>: <strerror>`` otherwise; the path is the file graphcnn
    wanted, not a temporary one."""
    path = err.filename2 if err.filename2 is not None else err.filename
    if path is None or err.strerror is None:
        return " ".join(str(err).split())
    writing = err.errno in _WRITE_ERRNOS
    if err.errno in (errno.EACCES, errno.EPERM):
        # forbidden: a write, unless the path exists and cannot be read
        writing = not os.path.exists(path) or os.access(path, os.R_OK)
    prefix = write_prefix if writing else ("cannot read " if err.errno in (errno.EACCES, errno.EPERM) else "")
    return f"{prefix}{os.fsdecode(path)}: {err.strerror}"


def _indent(message: str) -> str:
    """A message whose first line is the error; further lines (a listing of files or
    variables) are indented under it."""
    first, *rest = message.strip().splitlines() or [""]
    return "\n".join([first] + ["  " + line if not line.startswith("  ") else line for line in rest])


if __name__ == "__main__":
    sys.exit(main())
