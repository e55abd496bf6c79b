#!/usr/bin/env python
"""The MNIST-style digits tutorial: conv16-conv16-pool-conv32-conv32-pool-fc128, batch norm, dropout 0.5.

    python scripts/digits_tutorial.py                 # the embedded digits
    python scripts/digits_tutorial.py /usr/share/datasets/fashion-mnist
    python scripts/digits_tutorial.py --set train.epochs=3 --name quick --no-progress

Every option of ``graphcnn train`` works here too (``--help`` lists them).
"""

import sys

from _tutorial import run_tutorial

if __name__ == "__main__":
    sys.exit(run_tutorial(
        __doc__.splitlines()[0], "digits",
        options=["train.early_stopping.patience=3"],   # stop when validation accuracy stalls for 3 epochs
        demo_options=[],
    ))
