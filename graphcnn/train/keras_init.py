"""``--init-from keras:<file>``: start a backbone from the weights files Keras applications use.

Three layouts are read, with h5py (installed with TensorFlow):

- the legacy HDF5 weights files that ``keras.applications`` downloads to ``~/.keras/models/``
  (``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``): one group per layer, listed in the
  root's ``layer_names`` attribute, each with a ``weight_names`` attribute;
- Keras 3 ``.weights.h5`` (``model.save_weights``): ``layers/<class>[_<k>]/vars/<i>``, the
  layers named by their class and counted in the order of the model's ``layers``;
- Keras 3 ``.keras`` archives: the same ``model.weights.h5`` inside a zip.

Both keep the layers in the order of the Keras model's ``layers`` (it is how Keras itself
loads a legacy file), so the k-th convolution of the file is the k-th convolution of that
order (``graphcnn/model/backbones/<name>_keras_layers.json``), whose name the backbone's
builder recorded with the graph variables it maps to. A file with another number of layers
of a kind, a layer whose name (legacy files) or tensor shape differs, is an error that names
the layer and tensor.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from graphcnn.model.backbones import KerasLayer, keras_file_order
from graphcnn.model.scopes import require_matches, scope_matches, variable_name
from graphcnn.train.finetune import InitFromCheckpoint, training_state_names

__all__ = ["KERAS_PREFIX", "KerasWeightsError", "FileLayer", "build_init_from_keras", "read_keras_weights"]

KERAS_PREFIX = "keras:"
_AUTO_NAME = re.compile(r"^(conv2d|depthwise_conv2d|batch_normalization|dense)(?:_(\d+))?$")


class KerasWeightsError(ValueError):
    """The file cannot be read or does not fit the backbone; the message names the file and the layer."""


class FileLayer(NamedTuple):
    """One weighted layer of a Keras weights file."""

    label: str  # where it is in the file: its layer name (legacy) or group path (Keras 3)
    kind: str  # conv2d | depthwise_conv2d | batch_normalization | dense
    arrays: tuple[np.ndarray, ...]  # in the layer's weight order


def _kind_of_legacy(names: Sequence[str], arrays: Sequence[np.ndarray]) -> str:
    short = [n.split("/")[-1].split(":")[0] for n in names]
    if "depthwise_kernel" in short:
        return "depthwise_conv2d"
    if "moving_mean" in short:
        return "batch_normalization"
    if "kernel" in short:
        return "conv2d" if arrays[short.index("kernel")].ndim == 4 else "dense"
    return "other"


def _read_h5(file, label: str) -> list[FileLayer]:
    import h5py  # a dependency of TensorFlow; imported here so that a plain graphcnn import skips it

    try:
        h5 = h5py.File(file, "r")
    except OSError as err:
        raise KerasWeightsError(f"{label}: not an HDF5 weights file ({err})") from None
    with h5:
        root = h5["model_weights"] if "model_weights" in h5 else h5  # a whole-model legacy .h5
        if "layer_names" in root.attrs:
            layers = []
            for name in (n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]):
                group = root[name]
                names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
                if names:
                    arrays = tuple(np.asarray(group[n]) for n in names)
                    layers.append(FileLayer(name, _kind_of_legacy(names, arrays), arrays))
            return layers
        if "layers" in root:
            found = []
            for name, group in root["layers"].items():
                match = _AUTO_NAME.match(name)
                if "vars" not in group or not len(group["vars"]) or not match:
                    continue
                arrays = tuple(np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"])))
                found.append((match.group(1), int(match.group(2) or 0), FileLayer(f"layers/{name}", match.group(1),
                                                                                  arrays)))
            # within a kind, the class counter gives the model order; the kinds are mapped apart
            return [layer for _, _, layer in sorted(found, key=lambda t: (t[0], t[1]))]
    raise KerasWeightsError(f"{label}: neither a legacy Keras weights file (no 'layer_names') "
                            "nor a Keras 3 weights file (no 'layers' group)")


def read_keras_weights(path: str | Path) -> list[FileLayer]:
    """The weighted layers of a Keras weights file (``.h5``, ``.weights.h5`` or ``.keras``).

    Legacy files: in the file's order. Keras 3 files: grouped by kind, each kind in the model's
    order. Raises FileNotFoundError, or :class:`KerasWeightsError` naming the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"init_from: Keras weights file {path} does not exist")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                raise KerasWeightsError(f"{path}: a zip without model.weights.h5, not a .keras model")
            return _read_h5(io.BytesIO(archive.read("model.weights.h5")), str(path))
    return _read_h5(str(path), str(path))


def _by_kind(items: Iterable, kind_of) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for item in items:
        grouped.setdefault(kind_of(item), []).append(item)
    return grouped


def build_init_from_keras(path: str | Path, backbone: str, keras_layers: Sequence[KerasLayer],
                          variables: Sequence[tf.Variable], exclude_scopes: Sequence[str] = ()) -> InitFromCheckpoint:
    """Prepare loading backbone ``backbone``'s variables from Keras weights file ``path``.

    ``keras_layers``: what the backbone's builder recorded (``NetworkOutput.keras_layers``);
    ``variables``: the graph's candidates (``tf.compat.v1.global_variables()``). Variables
    under ``exclude_scopes`` keep their initializers, as do the head's (listed as missing).
    ``init_fn(sess)``, called after the global variables initializer, runs the variables'
    initializers fed with the file's values: no op is added, so it works on a finalized graph.

    Raises FileNotFoundError or :class:`KerasWeightsError` (which names the layer and tensor).
    """
    path = Path(path).expanduser()
    file_layers = read_keras_weights(path)
    expected = keras_file_order(backbone)  # (keras name, kind) in the Keras model's order
    # a legacy file names its layers: their kind is the backbone's (Keras 3 writes a DepthwiseConv2D's
    # weight as plain "kernel" there, and a [k, k, C, 1] kernel could also be a conv's)
    kind_of = dict(expected)
    file_layers = [layer._replace(kind=kind_of[layer.label]) if layer.label in kind_of else layer
                   for layer in file_layers]
    recorded = {layer.keras_name: layer for layer in keras_layers}
    by_name = {variable_name(v): v for v in variables}
    require_matches("train.exclude_scopes", exclude_scopes, list(by_name), "variable of the model")
    file_kinds = _by_kind((layer for layer in file_layers if layer.kind != "other"), lambda layer: layer.kind)
    want_kinds = _by_kind(expected, lambda entry: entry[1])
    for kind in sorted(set(file_kinds) | set(want_kinds)):
        have, want = len(file_kinds.get(kind, [])), len(want_kinds.get(kind, []))
        if have != want:
            raise KerasWeightsError(f"{path}: {have} {kind} layer(s), but backbone {backbone} has {want}: "
                                    f"not weights of keras.applications' {backbone} with include_top=False?")
    values: dict[str, np.ndarray] = {}
    excluded: list[str] = []
    for kind, entries in want_kinds.items():
        for (keras_name, _), file_layer in zip(entries, file_kinds[kind]):
            is_legacy = not file_layer.label.startswith("layers/")
            if is_legacy and not _AUTO_NAME.match(keras_name) and file_layer.label != keras_name:
                raise KerasWeightsError(f"{path}: layer '{file_layer.label}' is where {backbone} has "
                                        f"'{keras_name}': not a {backbone} weights file?")
            graph_layer = recorded[keras_name]
            if len(file_layer.arrays) != len(graph_layer.variables):
                raise KerasWeightsError(
                    f"{path}: layer '{file_layer.label}' ({keras_name}) has {len(file_layer.arrays)} tensors; "
                    f"{', '.join(graph_layer.variables)} need {len(graph_layer.variables)}")
            for i, (array, name) in enumerate(zip(file_layer.arrays, graph_layer.variables)):
                variable = by_name[name]
                if tuple(array.shape) != tuple(variable.shape.as_list()):
                    raise KerasWeightsError(
                        f"{path}: tensor {i} of layer '{file_layer.label}' ({keras_name}) has shape "
                        f"{list(array.shape)}, variable {name} has {variable.shape.as_list()}")
                if any(scope_matches(name, s) for s in exclude_scopes):
                    excluded.append(name)
                    continue
                values[name] = array.astype(variable.dtype.base_dtype.as_numpy_dtype)
    state = training_state_names(variables)
    missing = [n for n in by_name if n not in values and n not in excluded and n not in state]
    targets = [by_name[n] for n in values]

    def init_fn(sess: tf.compat.v1.Session) -> None:
        # a variable's initializer assigns its initial value, a tensor that can be fed
        sess.run([v.initializer for v in targets],
                 feed_dict={v.initializer.inputs[1]: values[variable_name(v)] for v in targets})

    return InitFromCheckpoint(init_fn, None, f"{KERAS_PREFIX}{path}", list(values), excluded, missing, [],
                              sorted(state))
