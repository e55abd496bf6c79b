"""The ``graphcnn`` command line: the one place that reads ``argv``.

Each subcommand parses its arguments, resolves a :class:`~graphcnn.config.Config` or a run
directory, and calls the library. TensorFlow is imported only after
:func:`graphcnn.runtime.configure` has set its environment.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

from graphcnn import runtime

DEFAULT_LOGDIR = "logs"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="named architecture (see `graphcnn presets`); default: digits")
    p.add_argument("--config", default=None, help="TOML or JSON file with config sections (may name a preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=3 (repeatable; unknown keys are errors)")
    p.add_argument("--data", default=None, help="dataset path (shortcut for --set data.path=PATH)")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from the weights of a checkpoint, checkpoint folder or run directory")
    p.add_argument("--exclude-scopes", default=None, metavar="S1,S2",
                   help="with --init-from: scopes not restored (e.g. logits when the classes differ)")
    p.add_argument("--trainable-scopes", default=None, metavar="S1,S2",
                   help="train only variables under these scopes (e.g. fc1,logits); the rest stay frozen")


def resolve_config(args: argparse.Namespace):
    """Preset (from --preset, the config file, or the default), then the file, then --set."""
    from graphcnn import config as C
    from graphcnn.presets import DEFAULT_PRESET, get_preset

    preset = args.preset
    if args.config and preset is None:
        preset = C.read_file(args.config).get("preset")
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.path={json.dumps(args.data)}")
    if args.init_from is not None:
        overrides.append(f"train.init_from={json.dumps(args.init_from)}")
    for flag, key in (("exclude_scopes", "train.exclude_scopes"), ("trainable_scopes", "train.trainable_scopes")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps([s.strip() for s in value.split(',') if s.strip()])}")
    config = C.load(get_preset(preset or DEFAULT_PRESET), args.config, overrides)
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphcnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network; writes logs/<run>/ (TensorBoard, checkpoints)")
    _add_config_args(t)
    t.add_argument("--logdir", default=DEFAULT_LOGDIR, help="root folder of run directories (default: logs)")
    t.add_argument("--name", default="", help="run directory name (default: <preset>-<timestamp>)")
    t.add_argument("--resume", default=None, metavar="RUN", help="continue the run in this directory")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="train the grid of these --set values as separate runs under one parent folder (repeatable)")

    p = sub.add_parser("predict", help="classify image files with a trained run or checkpoint")
    p.add_argument("checkpoint", help="run directory, checkpoint folder or checkpoint prefix")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--latest", action="store_true", help="use the latest checkpoint instead of the best")

    e = sub.add_parser("evaluate", help="accuracy, per-class precision/recall, confusion matrix")
    e.add_argument("run", help="run directory (or checkpoint)")
    e.add_argument("--data", default="", help="another dataset to evaluate on (any source graphcnn reads)")
    e.add_argument("--split", choices=("train", "validation", "test", "all"), default="test")
    e.add_argument("--format", choices=("text", "json"), default="text")
    e.add_argument("--latest", action="store_true", help="use the latest checkpoint instead of the best")

    pr = sub.add_parser("presets", help="list the named architectures")
    pr.add_argument("--show", metavar="NAME", help="print one preset's full config as JSON")

    a = sub.add_parser("augment-preview", help="write a PNG grid of augmented training samples")
    _add_config_args(a)
    a.add_argument("--out", default="augment_preview.png", help="output PNG (default: augment_preview.png)")
    a.add_argument("--rows", type=int, default=6, help="training images, one per row")
    a.add_argument("--cols", type=int, default=8, help="columns: the original, then its augmentations")

    c = sub.add_parser("config", help="print the resolved config (preset + file + --set) as JSON")
    _add_config_args(c)

    tb = sub.add_parser("tensorboard", help="run TensorBoard on a run (or a folder of runs), keeping every image")
    tb.add_argument("logdir", nargs="?", default=DEFAULT_LOGDIR, help="run directory or parent folder (default: logs)")
    tb.add_argument("--port", type=int, default=6006)
    tb.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default, this machine only) or 0.0.0.0")

    fl = sub.add_parser("filters", help="filter snapshots from a run's events as PNG frames + animated PNG/GIF")
    fl.add_argument("run", help="run directory")
    fl.add_argument("--layer", default="", help="only this layer (e.g. conv1_1)")
    fl.add_argument("--gif", action="store_true", help="also write an animated GIF")
    fl.add_argument("--delay-ms", type=int, default=200, help="time per frame")

    rp = sub.add_parser("report", help="training vs validation loss/accuracy plots as PNG in <run>/report/")
    rp.add_argument("run", help="run directory")
    rp.add_argument("--raw", action="store_true", help="every logged training value, not interval means")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from graphcnn import config as C
    from graphcnn.train.run_dir import RunDir

    if getattr(args, "sweep", None):
        from graphcnn.train.sweep import train_sweep

        return train_sweep(args, resolve_config)
    if args.resume:
        run = RunDir.open(args.resume)
        config = C.from_json_file(run.config)
        if args.overrides or args.config or args.preset or args.data or args.init_from:
            print("graphcnn: --resume continues with the run's saved config.json; "
                  "other config options are ignored", file=sys.stderr)
    else:
        config = resolve_config(args)
        run = RunDir.create(args.logdir, args.name, prefix=config.preset)
    from graphcnn.train.trainer import train

    print(f"run directory: {run.root}")
    result = train(config, run, resume=bool(args.resume), progress=not args.no_progress)
    if result.test is not None:
        print(f"test accuracy: {result.test.accuracy:.4f} ({result.test.count} images)")
    if result.interrupted:
        print(f"interrupted at step {result.global_step}; continue with: graphcnn train --resume {run.root}")
    print(f"best checkpoint: {run.best} (step {result.best_step}); latest: {run.checkpoints}")
    print(f"TensorBoard: graphcnn tensorboard {run.root}   (then open http://127.0.0.1:6006)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from graphcnn.predict import Predictor, collect_image_files

    files = collect_image_files(args.images)
    if not files:
        print("graphcnn: no image files found in " + ", ".join(args.images), file=sys.stderr)
        return 2
    with Predictor(args.checkpoint, prefer_best=not args.latest) as predictor:
        predictions, errors = predictor.predict_files(files, top_k=args.top_k)
    if args.format == "json":
        print(json.dumps([{"file": p.file, "class": p.class_name, "probability": p.probability,
                           "top_k": [{"class": c, "probability": q} for c, q in p.top_k]} for p in predictions]
                         + [{"file": f, "error": e} for f, e in errors], indent=2))
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["file", "class", "probability"]
                   + [f"top{i + 1}_{k}" for i in range(min(args.top_k, len(predictor.class_names)))
                      for k in ("class", "probability")])
        for p in predictions:
            w.writerow([p.file, p.class_name, f"{p.probability:.6f}"]
                       + [x for c, q in p.top_k for x in (c, f"{q:.6f}")])
    else:
        for p in predictions:
            top = ", ".join(f"{c} {q:.3f}" for c, q in p.top_k)
            print(f"{p.file}: {p.class_name} ({p.probability:.3f})   top-{len(p.top_k)}: {top}")
    for f, e in errors:
        print(f"graphcnn: cannot read {f}: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from graphcnn.evaluate import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.split, prefer_best=not args.latest)
    print(json.dumps(metrics.to_dict(), indent=2) if args.format == "json" else metrics.to_text())
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from graphcnn.presets import PRESETS, get_preset

    if args.show:
        print(json.dumps(get_preset(args.show).to_dict(), indent=2))
        return 0
    for name, fn in PRESETS.items():
        print(f"{name:18s} {(fn.__doc__ or '').strip().splitlines()[0]}")
    return 0


def cmd_augment_preview(args: argparse.Namespace) -> int:
    from graphcnn.data.preview import augmentation_preview
    from graphcnn.data.sources import load_dataset
    from graphcnn.viz.animation import write_png

    config = resolve_config(args)
    if not config.data.augment.enabled:
        print("graphcnn: augmentation is off in this config; set e.g. --set data.augment.rotation_range=15",
              file=sys.stderr)
        return 2
    dataset = load_dataset(config.data, config.model.channels)
    write_png(args.out, augmentation_preview(config, dataset.train, args.rows, args.cols, config.data.seed))
    print(f"wrote {args.out}: each row is a training image followed by {args.cols - 1} augmentations")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(resolve_config(args).to_dict(), indent=2))
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    from graphcnn.tensorboard_cli import run_tensorboard

    return run_tensorboard(args.logdir, args.port, args.host)


def cmd_filters(args: argparse.Namespace) -> int:
    from graphcnn.tensorboard_cli import export_filters

    export_filters(args.run, args.layer, args.gif, args.delay_ms)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from graphcnn.report import write_report

    for path in write_report(args.run, raw=args.raw):
        print(path)
    return 0


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate, "presets": cmd_presets,
            "config": cmd_config, "augment-preview": cmd_augment_preview, "tensorboard": cmd_tensorboard,
            "filters": cmd_filters, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    runtime.configure()
    args = build_parser().parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # TF1-API deprecation notices are not for our users
    from graphcnn.config import ConfigError
    from graphcnn.train.run_dir import RunDirError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, RunDirError, FileNotFoundError) as err:
        print(f"graphcnn: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # DataError and other bad-input errors carry their own message
        print(f"graphcnn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
