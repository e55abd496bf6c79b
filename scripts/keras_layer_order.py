"""Write graphcnn/model/backbones/<name>_keras_layers.json: each weighted layer of the
``keras.applications`` model (include_top=False) in the order of ``model.layers``.

That is the order of a Keras weights file, legacy or Keras 3, which
``--init-from keras:<file>`` maps onto the backbone's variables. Run it when Keras changes
the applications; tests/test_backbones.py checks the files against the installed Keras.

    python scripts/keras_layer_order.py [vgg16 resnet50 inception_v3 mobilenet_v2]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "graphcnn" / "model" / "backbones"


def keras_layers(application: str, size: int) -> list[list[str]]:
    """[name, kind] of each layer with weights, in model order, for a freshly built model."""
    import keras

    keras.backend.clear_session()  # fresh name counters: auto names (conv2d_7) as in a new process
    model = getattr(keras.applications, application)(weights=None, include_top=False, input_shape=(size, size, 3))
    kind = lambda layer: re.sub(r"(?<!^)(?=[A-Z])", "_", type(layer).__name__).lower()  # noqa: E731
    return [[layer.name, kind(layer).replace("conv2_d", "conv2d")] for layer in model.layers if layer.weights]


def main(names: list[str]) -> None:
    from graphcnn.model.backbones import BACKBONES

    unknown = [name for name in names if name not in BACKBONES]
    if unknown:
        sys.exit(f"keras_layer_order.py: unknown backbone {', '.join(unknown)}; choices: {', '.join(BACKBONES)}")
    for name in names or list(BACKBONES):
        backbone = BACKBONES[name]
        layers = keras_layers(backbone.keras_application, max(backbone.min_size, 75))
        path = OUT / f"{name}_keras_layers.json"
        path.write_text("[\n" + ",\n".join(json.dumps(entry) for entry in layers) + "\n]\n")
        print(f"{path}: {len(layers)} layers")


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main(sys.argv[1:])
