#!/usr/bin/env python
"""Transfer learning on a pretrained backbone, in two stages, as the Keras tutorials do it.

    python scripts/transfer_learning.py --preset vgg16 --data DIR \\
        --weights ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5

1. Stage 1 trains the head (``model.layers`` and ``logits``) on the frozen backbone, whose
   weights come from the Keras file (``--init-from keras:<file>``); frozen batch norm stays
   in inference mode.
2. Stage 2 (``graphcnn train --resume RUN --next-stage``) also unfreezes the backbone's top
   block at a 10x lower learning rate, from the latest checkpoint, in the same run directory
   and TensorBoard run (the ``stage`` scalar and the ``stage/begins`` text mark the boundary).

The recipe (epochs, rates, what to unfreeze, other config keys) is ``--recipe``, by default
``scripts/transfer_learning.toml``. Each stage is a ``graphcnn train`` command line, printed
before it runs, so the recipe can be replayed by hand.

``--scratch`` also trains the same network from random weights for the same epochs and
compares. ``--make-weights FILE`` writes the weights of a seeded, untrained Keras model of the
backbone in the legacy layout (no download: only the code path, not ImageNet's features).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

from graphcnn import cli, runtime
from graphcnn.config import merge
from graphcnn.presets import get_preset

RECIPE = Path(__file__).with_suffix(".toml")


def head_scopes(preset: str) -> list[str]:
    """The variable scopes of the head: the preset's weighted layers and ``logits``."""
    from graphcnn.model.network import resolve_layer_names

    layers = resolve_layer_names(get_preset(preset).model.layers)
    return [layer.name for layer in layers if layer.type in ("conv", "dense", "batch_norm")] + ["logits"]


def make_weights(preset: str, path: Path, seed: int = 0) -> None:
    """A seeded, untrained ``keras.applications`` model's weights, legacy HDF5 layout."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from graphcnn.model.backbones import get_backbone

    backbone, config = get_backbone(get_preset(preset).model.backbone), get_preset(preset)
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, backbone.keras_application)(
        weights=None, include_top=False, input_shape=(config.model.input_height, config.model.input_width, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    print(f"wrote {path}: {backbone.keras_application}, seed {seed}, untrained (not ImageNet weights)")


# the train keys each stage sets itself, and where the recipe says them
STAGE_KEYS = {"train.epochs": "stage1.epochs, stage2.epochs", "train.learning_rate":
              "stage1.learning_rate, stage2.learning_rate_factor", "train.max_steps": "stage1.epochs, stage2.epochs"}


def config_sets(recipe: dict, extra: list[str]) -> list[str]:
    """The recipe's [config] table and the --set values, as --set arguments."""
    sets = []
    if recipe.get("config"):
        merge(get_preset("digits"), recipe["config"])  # an unknown key fails here, naming it
        flat = {}

        def walk(prefix: str, table: dict) -> None:
            for key, value in table.items():
                if isinstance(value, dict):
                    walk(f"{prefix}{key}.", value)
                else:
                    flat[f"{prefix}{key}"] = value
        walk("", recipe["config"])
        sets = [f"{key}={json.dumps(value)}" for key, value in flat.items()]
    return [arg for s in sets + extra for arg in ("--set", s)]


def train(argv: list[str]) -> None:
    print("$ graphcnn train " + " ".join(argv), flush=True)
    code = cli.main(["train", *argv])
    if code:
        sys.exit(code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilenet_v2", help="vgg16 | resnet50 | inception_v3 | mobilenet_v2")
    parser.add_argument("--data", help="the images (a class-folder tree, or any graphcnn data source)")
    parser.add_argument("--weights", help="the Keras weights file of the backbone (.h5, .weights.h5 or .keras)")
    parser.add_argument("--recipe", default=str(RECIPE), help="the recipe TOML (default: %(default)s)")
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--name", default="", help="run name (default: <preset>-transfer-<time>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--scratch", action="store_true", help="also train from scratch for comparison")
    parser.add_argument("--make-weights", metavar="FILE", help="write seeded Keras weights for --preset, then stop")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    staged = sorted({s.split("=", 1)[0].strip() for s in args.set} & set(STAGE_KEYS))
    if staged:  # the recipe sets them per stage, after --set: a --set of them would be overridden without a word
        recipe_keys = ", ".join(dict.fromkeys(k for key in staged for k in STAGE_KEYS[key].split(", ")))
        parser.error(f"{', '.join(staged)}: each stage's is the recipe's ({recipe_keys}); "
                     f"change them in a copy of {RECIPE.name} given with --recipe")
    runtime.configure()  # TensorFlow's environment, before it is imported (not for --help)
    with runtime.native_stderr_filter():  # TensorFlow's banner and C++ log lines, as the graphcnn command drops them
        return _transfer(parser, args)


def _transfer(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from graphcnn.model.backbones import get_backbone

    if args.make_weights:
        make_weights(args.preset, Path(args.make_weights).expanduser())
        return 0
    if not args.data or not args.weights:
        parser.error("--data and --weights are needed (or --make-weights FILE)")
    recipe = tomllib.loads(Path(args.recipe).read_text())
    s1, s2 = recipe.get("stage1", {}), recipe.get("stage2", {})
    backbone = get_backbone(get_preset(args.preset).model.backbone)
    head = head_scopes(args.preset)
    unfreeze = list(s2.get("unfreeze") or backbone.top_blocks)
    rate1 = float(s1.get("learning_rate", 1e-3))
    epochs1, epochs2 = int(s1.get("epochs", 5)), int(s2.get("epochs", 5))
    name = args.name or f"{args.preset}-transfer-{time.strftime('%Y%m%d-%H%M%S')}"
    common = config_sets(recipe, args.set) + (["--no-progress"] if args.no_progress else [])
    started = time.perf_counter()
    train(["--preset", args.preset, "--data", args.data, "--logdir", args.logdir, "--name", name, *common,
           "--init-from", f"keras:{args.weights}", "--trainable-scopes", ",".join(head),
           "--set", f"train.epochs={epochs1}", "--set", f"train.learning_rate={rate1}"])
    run = Path(args.logdir) / name
    train(["--resume", str(run), "--next-stage", *common, "--trainable-scopes", ",".join(unfreeze + head),
           "--set", f"train.epochs={epochs1 + epochs2}",
           "--set", f"train.learning_rate={rate1 * float(s2.get('learning_rate_factor', 0.1))}"])
    print(f"transfer ({epochs1} + {epochs2} epochs): {accuracy(run)} "
          f"({time.perf_counter() - started:.0f} s); TensorBoard: graphcnn tensorboard {run}")
    if args.scratch:
        started = time.perf_counter()
        train(["--preset", args.preset, "--data", args.data, "--logdir", args.logdir, "--name", f"{name}-scratch",
               *common,
               "--set", f"train.epochs={epochs1 + epochs2}", "--set", f"train.learning_rate={rate1}"])
        print(f"from scratch ({epochs1 + epochs2} epochs): {accuracy(Path(args.logdir) / f'{name}-scratch')} "
              f"({time.perf_counter() - started:.0f} s)")
    return 0


def accuracy(run: Path) -> str:
    """The run's test accuracy from results.json, or its last validation's without a test split."""
    results = json.loads((run / "results.json").read_text())
    if results.get("test_accuracy") is not None:
        return f"test accuracy {results['test_accuracy']:.4f}"
    if results.get("validation_accuracy") is not None:
        return f"validation accuracy {results['validation_accuracy']:.4f} (no test split)"
    return "no test or validation split"


if __name__ == "__main__":
    sys.exit(main())
