"""Shared plumbing for the tutorial scripts: arguments, config resolution, train, report.

Each tutorial script states its preset and the options its tutorial used; this module
turns that into a run. Without a data directory a script runs on the embedded digits,
shrunk where needed so that the demonstration ends in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json

from graphcnn import runtime

runtime.configure()  # before TensorFlow is imported

from graphcnn import config as C  # noqa: E402
from graphcnn.presets import get_preset  # noqa: E402
from graphcnn.train.run_dir import RunDir  # noqa: E402
from graphcnn.train.trainer import train  # noqa: E402


def run_tutorial(description: str, preset: str, options: list[str], demo_options: list[str]) -> int:
    """Parse ``[DATA_DIR] [--logdir D] [--set k=v ...]``, train, print the test accuracy."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("data_dir", nargs="?", default="", help="dataset folder (default: the embedded digits)")
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    overrides = list(options)
    if args.data_dir:
        overrides.append(f"data.path={json.dumps(args.data_dir)}")
    else:
        shrunk = f" ({', '.join(demo_options)})" if demo_options else ""
        print(f"no data directory given: demonstrating {preset} on the embedded digits{shrunk}")
        overrides += demo_options
    config = C.load(get_preset(preset), None, overrides + args.overrides)
    run = RunDir.create(args.logdir, prefix=preset)
    print(f"run directory: {run.root}")
    result = train(config, run)
    if result.test is not None:
        print(f"test accuracy: {result.test.accuracy:.4f} on {result.test.count} images")
    print(f"predict with: graphcnn predict {run.root} <images>   TensorBoard: tensorboard --logdir {run.root}")
    return 0
