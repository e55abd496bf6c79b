#!/usr/bin/env python
"""The 2-class CT-scan classifier: folders covid_negative/ and covid_positive/, 100x100 gray.

    python scripts/ct_scan_classifier.py ~/data/ct_scans    # one subfolder per class
    python scripts/ct_scan_classifier.py ~/data/ct_scans --set train.epochs=30 --name ct

As in its tutorial: conv16-pool-conv32-pool-fc1024 with dropout, light augmentation
(scans are not mirror-symmetric in content, so only small shifts, rotation and zoom), and
early stopping with patience 3.

Every option of ``graphcnn train`` works here too (``--help`` lists them).
"""

import sys

from _tutorial import run_tutorial

if __name__ == "__main__":
    sys.exit(run_tutorial(
        __doc__.splitlines()[0], "ct_scan",
        options=[
            "data.augment.rotation_range=10", "data.augment.width_shift_range=0.1",
            "data.augment.height_shift_range=0.1", "data.augment.zoom_range=0.1",
            "train.early_stopping.patience=3",
        ],
        demo_options=["model.input_height=48", "model.input_width=48", "train.max_steps=150"],
    ))
