"""``graphcnn train --sweep key=v1,v2 [--sweep key2=a,b]``: the grid of ``--set`` values as
separate runs under one parent folder, so TensorBoard (HParams, scalars) compares them.

    logs/sweep-<timestamp>/
      train.learning_rate=0.01,train.batch_size=32/   one ordinary run directory per point
      ...
      sweep.json                                      the grid and each run's final metrics

Values are separated by commas, or by semicolons when a value itself contains commas
(``--sweep 'train.keep_rates={"fc":0.5};{"fc":0.8}'``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import itertools
import json
import re
from pathlib import Path
from typing import Callable


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ValueError(f"--sweep expects KEY=V1,V2,..., got '{text}'")
    parts = [v.strip() for v in values.split(";" if ";" in values else ",")]
    if any(not v for v in parts):
        raise ValueError(f"--sweep {key}: empty value in '{values}'")
    return key.strip(), parts


def grid(sweeps: list[str]) -> list[list[tuple[str, str]]]:
    """Every combination of the ``--sweep`` values, first key varying slowest."""
    axes = [parse_sweep(s) for s in sweeps]
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"--sweep: {', '.join(twice)} is given twice; give each key once, with all its values")
    return [list(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def run_name(point: list[tuple[str, str]]) -> str:
    """A folder name for one grid point: ``learning_rate=0.01,batch_size=32`` (last key part;
    the whole key where two keys end alike: ``train.seed=1,data.seed=2``)."""
    last = [k.rsplit(".", 1)[-1] for k, _ in point]
    name = ",".join(f"{k if last.count(short) > 1 else short}={v}" for (k, v), short in zip(point, last))
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)[:120]


def _check_same_sweep(parent: Path, points: list, configs: list) -> None:
    """The same sweep command again goes on with the rest; another grid or other options under
    that name is refused (its runs were trained with other configs)."""
    from graphcnn.run_dir import RunDirError

    expected = {run_name(point): config for point, config in zip(points, configs)}
    others = sorted(p.name for p in parent.iterdir() if p.is_dir() and p.name not in expected)
    changed = sorted(name for name, config in expected.items() if (parent / name / "config.json").is_file()
                     and json.loads((parent / name / "config.json").read_text()) != config.to_dict())
    if others or changed:
        what = (f"runs not in this grid: {', '.join(others)}" if others else
                f"runs trained with other options: {', '.join(changed)}")
        raise RunDirError(f"{parent} holds a sweep with {what}; the same command goes on with an interrupted sweep, "
                          "another sweep needs another --name")


def _describe(point: list[tuple[str, str]]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in point) + ")"


def train_sweep(args: argparse.Namespace, resolve_config: Callable[[argparse.Namespace], object]) -> int:
    """Train every grid point as its own run; returns the exit code (130 if interrupted).

    Every config is resolved before anything trains; each run's data is loaded before its
    directory is made, each run holds its lock, and a run that fails before its first
    checkpoint is removed again (:meth:`RunDir.starting`); so is the parent folder if that
    leaves it empty. The same command again (the same ``--name``) goes on with an interrupted
    sweep: finished runs are kept, an interrupted one is resumed, the rest start.
    """
    from graphcnn.atomic import write_text_atomic
    from graphcnn.data.sources import load_dataset
    from graphcnn.run_dir import RunDir, RunDirError, check_run_name
    from graphcnn.train.trainer import train

    if args.resume:
        raise ValueError("--sweep and --resume do not go together; resume each run on its own")
    points = grid(args.sweep)
    configs = []
    for point in points:  # resolve every config first: a bad key fails before anything trains
        point_args = copy.copy(args)
        point_args.overrides = list(args.overrides) + [f"{k}={v}" for k, v in point]
        configs.append(resolve_config(point_args))
    names: dict[str, list[tuple[str, str]]] = {}
    for point in points:  # one folder per point: two that name the same folder fail before anything trains
        if (other := names.setdefault(run_name(point), point)) is not point:
            raise ValueError(f"--sweep: the grid points {_describe(other)} and {_describe(point)} would both be the "
                             f"run {run_name(point)}; give each value once, and values that differ in letters or "
                             "digits")
    resolved: dict[str, list[tuple[str, str]]] = {}
    for point, config in zip(points, configs):  # 0.1 and 0.10: one config, trained twice
        if (other := resolved.setdefault(json.dumps(config.to_dict(), sort_keys=True), point)) is not point:
            raise ValueError(f"--sweep: the grid points {_describe(other)} and {_describe(point)} are the same "
                             "config; give each value once")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = check_run_name(args.name) if args.name is not None else f"sweep-{stamp}"
    parent = Path(args.logdir) / name
    record = parent / "sweep.json"
    again = parent.is_dir() and record.is_file()  # the same sweep, run again: it goes on where it stopped
    if again:
        _check_same_sweep(parent, points, configs)
    else:
        exists = RunDirError(f"{parent} already exists and is not a sweep's folder; choose another --name")
        if parent.exists():
            raise exists
        parent.parent.mkdir(parents=True, exist_ok=True)
        try:
            parent.mkdir()
        except FileExistsError:
            raise exists from None
        write_text_atomic(record, "[]\n")  # marks the folder as this sweep's, to go on with after an interruption
    print(f"sweep: {len(points)} runs under {parent}" + (" (going on: finished runs are kept)" if again else ""))
    summary = []
    loaded = None  # (data config, channels, input size), dataset: consecutive points with the same data share it
    try:
        for i, (point, config) in enumerate(zip(points, configs)):
            folder = parent / run_name(point)
            if again and folder.is_dir():
                done = RunDir.open(folder).read_results()
                if done is not None and not done.get("interrupted"):
                    print(f"[{i + 1}/{len(points)}] {folder.name}: finished before, kept")
                    summary.append({"run": folder.name, "set": dict(point), "global_step": done.get("global_step"),
                                    "validation_accuracy": done.get("validation_accuracy"),
                                    "test_accuracy": done.get("test_accuracy")})
                    write_text_atomic(record, json.dumps(summary, indent=2) + "\n")
                    continue
            key = (config.data, config.model.channels, config.model.input_size)
            if loaded is None or loaded[0] != key:
                loaded = key, load_dataset(config.data, config.model.channels, size=config.model.input_size)
            if again and folder.is_dir():  # interrupted: resumed as --resume would
                run = RunDir.open(folder)
                with run.lock():
                    print(f"[{i + 1}/{len(points)}] {run.root.name}: resumed")
                    result = train(config, run, resume=True, progress=not args.no_progress, dataset=loaded[1])
            else:
                with RunDir.starting(parent, run_name(point)) as run, run.lock():
                    print(f"[{i + 1}/{len(points)}] {run.root.name}")
                    result = train(config, run, progress=not args.no_progress, dataset=loaded[1])
            summary.append({"run": run.root.name, "set": dict(point), "global_step": result.global_step,
                            "validation_accuracy": result.validation.accuracy if result.validation else None,
                            "test_accuracy": result.test.accuracy if result.test else None})
            write_text_atomic(record, json.dumps(summary, indent=2) + "\n")
            if result.interrupted:
                print(f"sweep interrupted in {run.root.name} at step {result.global_step}; "
                      f"{len(points) - i - 1} run(s) not started; the same command goes on with the rest")
                return 130  # graphcnn.cli.EXIT_INTERRUPTED
    finally:
        if not again and not any(p.is_dir() for p in parent.iterdir()):  # the first run failed before its
            with contextlib.suppress(OSError):                            # first checkpoint: nothing to keep
                record.unlink()
                parent.rmdir()
    width = max(len(s["run"]) for s in summary)
    for s in summary:
        val, test = s["validation_accuracy"], s["test_accuracy"]
        print(f"{s['run']:{width}s}  validation {val if val is None else f'{val:.4f}'}  "
              f"test {test if test is None else f'{test:.4f}'}")
    print(f"compare: graphcnn tensorboard {parent}   (HParams tab)")
    return 0
