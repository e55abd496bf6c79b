#!/usr/bin/env python
"""Build a cats-vs-dogs-style JPEG class-folder tree from Fashion-MNIST (no download).

    python scripts/make_folder_data.py OUT [--classes 7,9] [--size 150] [--train 600] [--test 200]

Each image is a Fashion-MNIST item (``apt-get install dataset-fashion-mnist``) upscaled to
about ``--size`` pixels (sizes vary from 0.8x to 1.3x, as photos do), tinted with a random
colour on a random background shade, and saved as JPEG (quality 90) under
``OUT/training_set/<class>/`` and ``OUT/test_set/<class>/``: the layout of the tutorials'
cats-vs-dogs data, which ``graphcnn train --data OUT`` reads. Deterministic for a ``--seed``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from graphcnn.data.arrays import read_idx

FASHION = Path("/usr/share/datasets/fashion-mnist")
NAMES = ("t_shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")


def coloured(item: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
    """A 28x28 uint8 item as an RGB image of about ``size`` pixels, tinted on a shaded background."""
    side = int(size * rng.uniform(0.8, 1.3))
    alpha = np.asarray(Image.fromarray(item).resize((side, side), Image.BICUBIC), np.float32)[..., None] / 255.0
    tint = rng.uniform(0.3, 1.0, 3) * 255.0
    background = rng.uniform(0, 90) + rng.normal(0, 8, (side, side, 3))
    pixels = alpha * tint + (1.0 - alpha) * background
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--fashion", default=str(FASHION))
    parser.add_argument("--classes", default="7,9", help="Fashion-MNIST labels (default 7,9: sneaker, ankle_boot)")
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--train", type=int, default=600, help="training images per class")
    parser.add_argument("--test", type=int, default=200, help="test images per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root, rng = Path(args.out), np.random.default_rng(args.seed)
    images = read_idx(Path(args.fashion) / "train-images-idx3-ubyte.gz", 2051)
    labels = read_idx(Path(args.fashion) / "train-labels-idx1-ubyte.gz", 2049)
    for label in (int(c) for c in args.classes.split(",")):
        members = rng.permutation(np.flatnonzero(labels == label))
        for split, chosen in (("training_set", members[:args.train]),
                              ("test_set", members[args.train:args.train + args.test])):
            folder = root / split / NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                coloured(images[i], args.size, rng).save(folder / f"{NAMES[label]}.{i}.jpg", quality=90)
    print(f"{root}: {len(args.classes.split(','))} classes, {args.train} + {args.test} JPEGs each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
