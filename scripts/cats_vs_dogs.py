#!/usr/bin/env python
"""Cats vs dogs from folders: training_set/{cats,dogs}/ and test_set/{cats,dogs}/, 150x150 RGB.

    python scripts/cats_vs_dogs.py ~/data/cats_and_dogs
    python scripts/cats_vs_dogs.py ~/data/cats_and_dogs --preset cats_dogs_small --name small

As in the Keras tutorial it follows: ImageDataGenerator-style augmentation
(shear 0.2 -> about 11 degrees, zoom 0.2, horizontal flips, shifts 0.2), rescale 1/255,
early stopping with patience 3. Every option of ``graphcnn train`` works here too
(``--help`` lists them), e.g. another preset (cats_dogs_small, cats_dogs_4block) with --preset.
"""

import sys

from _tutorial import run_tutorial

if __name__ == "__main__":
    sys.exit(run_tutorial(
        __doc__.splitlines()[0], "cats_dogs_150",
        options=[
            "data.augment.shear_range=11.5", "data.augment.zoom_range=0.2", "data.augment.horizontal_flip=true",
            "data.augment.width_shift_range=0.2", "data.augment.height_shift_range=0.2",
            "train.early_stopping.patience=3",
        ],
        demo_options=["data.augment.horizontal_flip=false", "model.input_height=48", "model.input_width=48",
                      "train.max_steps=150"],
    ))
