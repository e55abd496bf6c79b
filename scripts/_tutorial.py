"""Shared plumbing for the tutorial scripts: each is ``graphcnn train`` with its preset and
the options its tutorial used.

A script takes every option of ``graphcnn train`` (``--set``, ``--name``, ``--logdir``,
``--no-progress``, ``--resume``, ``--config``, ``--init-from``, ``--verbose``, ``--debug``,
...) plus a positional DATA_DIR; its own options come first, so a ``--set`` of yours wins.
Without a data directory it runs on the embedded digits, shrunk where needed so that the
demonstration ends in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys

from graphcnn import cli


def run_tutorial(description: str, preset: str, options: list[str], demo_options: list[str]) -> int:
    """Parse ``[DATA_DIR] [graphcnn train options]`` and train ``preset`` with ``options``
    (``KEY=VALUE`` as for ``--set``), plus ``demo_options`` on the embedded digits."""
    parser = argparse.ArgumentParser(
        description=description, epilog=f"The same as: graphcnn train --preset {preset} "
        + " ".join(f"--set {o}" for o in options) + " --data DATA_DIR [options]")
    parser.add_argument("data_dir", nargs="?", default="", metavar="DATA_DIR",
                        help="dataset folder (default: the embedded digits, a short demonstration)")
    cli.add_train_arguments(parser)
    cli.add_global_arguments(parser)
    args = parser.parse_args()

    args.command = "train"
    args.data = args.data_dir or args.data
    if not args.resume:  # a resumed run continues with its own saved config
        args.preset = args.preset or preset
        script_options = list(options)
        if not args.data:
            # the demo's settings, but for the keys you set (train.max_steps would replace your train.epochs)
            yours = {o.split("=", 1)[0] for o in args.overrides}
            if yours & {"train.epochs", "train.max_steps"}:
                yours |= {"train.epochs", "train.max_steps"}
            demo = [o for o in demo_options if o.split("=", 1)[0] not in yours]
            shrunk = f" ({', '.join(demo)})" if demo else ""
            print(f"no data directory given: demonstrating {preset} on the embedded digits{shrunk}")
            script_options += demo
        args.overrides = script_options + args.overrides  # yours come last: they win
    return cli.run(args)


if __name__ == "__main__":
    sys.exit("run one of the tutorial scripts, e.g. python scripts/digits_tutorial.py")
