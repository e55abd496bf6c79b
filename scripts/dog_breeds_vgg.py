#!/usr/bin/env python
"""The dog-breed VGG: conv32-conv32-pool-conv64-conv64-pool-fc512 on 224x224 RGB, two keep-rates.

    python scripts/dog_breeds_vgg.py ~/data/dog_breeds      # one subfolder per breed
    python scripts/dog_breeds_vgg.py ~/data/dog_breeds --set train.batch_size=16 --no-progress

Dropout after each conv block (keep rate ``train.keep_rates.conv``, the tutorial's
keepRate1 = 0.75) and after fc1 (``train.keep_rates.fc``, keepRate2 = 0.5), horizontal
flips and small shifts, early stopping with patience 3.

Every option of ``graphcnn train`` works here too (``--help`` lists them).
"""

import sys

from _tutorial import run_tutorial

if __name__ == "__main__":
    sys.exit(run_tutorial(
        __doc__.splitlines()[0], "dog_breeds_vgg",
        options=[
            "train.keep_rates.conv=0.75", "train.keep_rates.fc=0.5",
            "data.augment.horizontal_flip=true", "data.augment.width_shift_range=0.1",
            "data.augment.height_shift_range=0.1", "train.early_stopping.patience=3",
        ],
        # digits are not mirror-symmetric: no flips in the demo; 48x48 keeps it to a minute
        demo_options=["data.augment.horizontal_flip=false", "model.input_height=48", "model.input_width=48",
                      "train.max_steps=150"],
    ))
