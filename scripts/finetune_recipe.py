#!/usr/bin/env python
"""Two-stage transfer learning: pretrain on a large dataset, fine-tune the head on a small one.

    python scripts/finetune_recipe.py [--fashion /usr/share/datasets/fashion-mnist] [--per-class 20]

1. Pretrain the ``digits`` preset on Fashion-MNIST (``apt-get install dataset-fashion-mnist``).
2. Build a small two-class folder dataset (PNG files of the embedded digits 3 and 8,
   ``--per-class`` training images per class) - a different domain with very little data.
3. Fine-tune: ``--init-from`` the pretrained run, ``--exclude-scopes logits`` (10 classes
   there, 2 here) and ``--trainable-scopes fc1,logits`` (the conv blocks stay frozen).
4. Train the same network on the small dataset from scratch, and compare test accuracy.

The figures of one run are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from graphcnn import config as C
from graphcnn import runtime
from graphcnn.data.arrays import load_digits
from graphcnn.presets import get_preset
from graphcnn.run_dir import RunDir
from graphcnn.viz.images import write_png


def small_two_class_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """Write digits 3 and 8 as PNG files: ``per_class`` to train on, 100 per class to test."""
    images, labels = load_digits()
    rng = np.random.default_rng(seed)
    for digit, name in ((3, "three"), (8, "eight")):
        members = rng.permutation(np.flatnonzero(labels == digit))
        for split, chosen in (("training_set", members[:per_class]), ("test_set", members[-100:])):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                write_png(folder / f"{i:04d}.png", images[i])
    return root


def run(name: str, logdir: Path, overrides: list[str]) -> tuple[float, float]:
    from graphcnn.train.trainer import train

    config = C.load(get_preset("digits"), None, overrides)
    start = time.perf_counter()
    result = train(config, RunDir.create(logdir, name), progress=False)
    return result.test.accuracy, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=20, help="training images per class in the small set")
    parser.add_argument("--logdir", default=f"logs/finetune-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args()
    runtime.configure()  # TensorFlow's environment, before it is imported (not for --help)
    logdir = Path(args.logdir)

    acc, secs = run("pretrain", logdir, [f'data.path="{args.fashion}"', f"train.epochs={args.pretrain_epochs}"])
    print(f"1. pretrained on Fashion-MNIST: test accuracy {acc:.4f} ({secs:.0f} s)")

    small = small_two_class_folder(logdir / "small_dataset", args.per_class)
    common = [f'data.path="{small}"', "data.validation_fraction=0.2", "train.epochs=40", "train.batch_size=8",
              "train.early_stopping.patience=5"]
    tuned, secs_t = run("finetuned", logdir, common + [
        f'train.init_from="{logdir / "pretrain"}"', 'train.exclude_scopes=["logits"]',
        'train.trainable_scopes=["fc1", "logits"]'])
    scratch, secs_s = run("scratch", logdir, common)
    print(f"2. small two-class set: {args.per_class} training images per class, 200 test images")
    print(f"3. fine-tuned head:  test accuracy {tuned:.4f} ({secs_t:.0f} s)")
    print(f"4. from scratch:     test accuracy {scratch:.4f} ({secs_s:.0f} s)")
    print(f"fine-tuning {'beats' if tuned > scratch else 'does not beat'} training from scratch "
          f"by {100 * (tuned - scratch):+.1f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
