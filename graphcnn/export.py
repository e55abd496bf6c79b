"""Ship a trained model: a TF2 SavedModel (TF Serving, ``tf.saved_model.load``) and a TFLite file.

The SavedModel is made from ``inference.meta`` and a checkpoint alone, as
:class:`~graphcnn.predict.Predictor` restores them: the meta graph is imported inside
``tf.compat.v1.wrap_function`` (its variables become TF2 variables), the checkpoint restored
through the graph's own Saver, and the forward pass pruned to ``input/images`` ->
``output/probabilities``. ``input/is_training`` and every ``input/keep_rate_<group>`` are
frozen as constants (False, 1.0) at import, so no signature lists them (a
placeholder-with-default in a signature would become a required input); with the keep rates
fixed at 1.0 each dropout mask is all ones, and the mask's random draw is taken out of the
graph (TFLite has no kernel for it).

Two signatures, each doing graphcnn's preprocessing inside (channel conversion, antialiased
bilinear resize and rounding, / 255, minus the training pixel mean when the run used it):

* ``serving_default``: ``image_bytes`` string [N], encoded JPEG/PNG/BMP/GIF/WebP files of any
  size and channels, decoded as ``graphcnn predict`` decodes files (a file predict refuses, an
  animated WebP or a BMP with a colour table, is an InvalidArgumentError saying why: see
  :mod:`graphcnn.data.formats`). The name ends in ``_bytes`` so
  that TF Serving's REST API takes ``{"b64": ...}`` values for it.
* ``serving_uint8``: ``images`` uint8 [N, H, W, C], already of the model's input size and
  channels (no decoding, no resizing: the signature the TFLite file is converted from, since
  TFLite decodes no images and its builtin ops have no antialiased resize).

Both return ``probabilities`` float32 [N, K], ``classes`` int64 [N] and ``class_names``
string [N] (the predicted class's name); for a run trained with ``model.test_time_flip`` the
probabilities are the mean of the image's and its mirror image's, as ``predict`` gives them.
``assets.extra/graphcnn.json`` records the
checkpoint, the input size and the class names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework.variable_pb2 import VariableDef
from tensorflow.lite.python.convert_phase import ConverterError

from graphcnn.atomic import naming, write_bytes_atomic
from graphcnn.checkpoints import checkpoint_candidates, load_first, serving_meta_graph
from graphcnn.data.formats import check_bytes
from graphcnn.data.pipeline import Preprocessing, decode_image_bytes, fit_images

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.export")

__all__ = ["BYTES_INPUT", "BYTES_SIGNATURE", "UINT8_INPUT", "UINT8_SIGNATURE", "ExportError", "export_saved_model",
           "export_tflite"]

BYTES_SIGNATURE, BYTES_INPUT = "serving_default", "image_bytes"
UINT8_SIGNATURE, UINT8_INPUT = "serving_uint8", "images"
INFO_FILE = "assets.extra/graphcnn.json"
_KEEP_RATE_PREFIX = "input/keep_rate_"
_RANDOM_OPS = ("StatelessRandomUniform", "StatelessRandomUniformV2", "RandomUniform")


class ExportError(ValueError):
    """The model cannot be exported where or as asked; the message says why."""


# ------------------------------------------------------------------------ the graph


def _node_name(tensor_name: str) -> str:
    return tensor_name.lstrip("^").split(":")[0]


def _frozen_inputs(graph_def) -> dict[str, object]:
    """``input/is_training`` and ``input/keep_rate_<group>`` of a graph: tensor name -> frozen value."""
    frozen = {}
    for node in graph_def.node:
        if node.op in ("Placeholder", "PlaceholderWithDefault"):
            if node.name.startswith(_KEEP_RATE_PREFIX):
                frozen[node.name + ":0"] = 1.0
            elif node.name == "input/is_training":
                frozen[node.name + ":0"] = False
    return frozen


def _returned_argument(function) -> int | None:
    """The index of the argument that ``function`` (a FunctionDef) returns unchanged, through
    Identity ops, as its first output; None if it returns something else."""
    args = [a.name for a in function.signature.input_arg]
    nodes = {n.name: n for n in function.node_def}
    name = function.ret.get(function.signature.output_arg[0].name, "").split(":")[0] \
        if function.signature.output_arg else ""
    while name in nodes and nodes[name].op == "Identity" and nodes[name].input:
        name = nodes[name].input[0].split(":")[0]
    return args.index(name) if name in args else None


def drop_dropout_masks(graph_def) -> int:
    """Bypass each dropout of ``graph_def`` whose keep rate is frozen at 1.0; the number bypassed.

    graphcnn's dropout is ``cond(keep_rate < 1, drop, identity)`` (a ``StatelessIf``) whose
    ``drop`` branch is ``tf.nn.experimental.stateless_dropout``; runs trained before that
    have the bare ``SelectV2(uniform >= rate, x / (1 - rate), 0)`` with ``rate = 1 -
    input/keep_rate_<group>``. At keep rate 1.0 both are their input ``x``. Qualify: an If
    whose condition is computed from a keep-rate input, whose true branch draws random
    numbers and whose false branch returns one of its inputs (that input); a select whose
    condition compares a random draw with a value computed from a keep-rate input (its
    second input). Their consumers are rewired (in place) to that input, of the same shape;
    the dropout and its random draw are left without consumers, for the pruning to drop.
    """
    nodes = {n.name: n for n in graph_def.node}
    functions = {f.signature.name: f for f in graph_def.library.function}

    def reaches(name: str, test, depth: int) -> bool:
        node = nodes.get(_node_name(name))
        if node is None or depth < 0:
            return False
        if test(node):
            return True
        return any(reaches(i, test, depth - 1) for i in node.input if not i.startswith("^"))

    def from_keep_rate(name: str) -> bool:
        return reaches(name, lambda n: n.name.startswith(_KEEP_RATE_PREFIX), 3)

    bypass = {}
    for node in graph_def.node:
        if node.op in ("StatelessIf", "If") and node.input and from_keep_rate(node.input[0]):
            then_branch = functions.get(node.attr["then_branch"].func.name)
            else_branch = functions.get(node.attr["else_branch"].func.name)
            if then_branch is None or else_branch is None:
                continue
            passed = _returned_argument(else_branch)
            if passed is not None and any(n.op in _RANDOM_OPS for n in then_branch.node_def):
                bypass[node.name] = node.input[1 + passed]
            continue
        if node.op not in ("SelectV2", "Select") or len(node.input) != 3:
            continue
        cond = nodes.get(_node_name(node.input[0]))
        if cond is None or cond.op != "GreaterEqual" or len(cond.input) != 2:
            continue
        if reaches(cond.input[0], lambda n: n.op in _RANDOM_OPS, 3) and from_keep_rate(cond.input[1]):
            bypass[node.name] = node.input[1]
    for node in graph_def.node:
        for i, name in enumerate(node.input):
            source = _node_name(name)
            if source in bypass and name in (source, source + ":0"):  # not a control input
                node.input[i] = bypass[source]
    return len(bypass)


def rename_functions(meta_graph_def, suffix: str) -> int:
    """Give every function of the graph's library a new name, ``<name>_<suffix>`` (edited in place).

    A v1 graph's functions (the batch-norm ``tf.cond`` branches, ``conv2_1_bn_cond_false_56``) are
    named per graph, and the graphs built earlier in this process (training, then
    ``inference.meta``) may have put a function of the same name but another definition (the
    meta graph is saved with its default attributes stripped) into the eager context, which a
    wrapped function's import then collides with. Returns the number of functions renamed.
    """
    library = meta_graph_def.graph_def.library
    new = {f.signature.name: f"{f.signature.name}_{suffix}" for f in library.function}
    if not new:
        return 0

    def fix_attrs(attrs) -> None:
        for value in attrs.values():
            if value.HasField("func") and value.func.name in new:
                value.func.name = new[value.func.name]
            if value.HasField("list"):
                for func in value.list.func:
                    if func.name in new:
                        func.name = new[func.name]

    def fix_node(node) -> None:
        if node.op in new:  # a function called as an op
            node.op = new[node.op]
        fix_attrs(node.attr)

    for node in meta_graph_def.graph_def.node:
        fix_node(node)
    for function in library.function:
        function.signature.name = new[function.signature.name]
        for node in function.node_def:
            fix_node(node)
    for gradient in library.gradient:
        gradient.function_name = new.get(gradient.function_name, gradient.function_name)
        gradient.gradient_func = new.get(gradient.gradient_func, gradient.gradient_func)
    return len(new)


_VARIABLE_COLLECTIONS = ("variables", "trainable_variables", "local_variables", "model_variables")


def forward_meta_graph(meta_graph_def) -> None:
    """Cut a meta graph (edited in place) down to the forward pass and its Saver.

    ``input/images`` becomes a plain placeholder (in a training graph it defaults to the
    input pipeline's batch); the nodes kept are those ``output/probabilities`` and the Saver's
    restore op need (no input pipeline, loss, gradients or summaries, whose shape inference
    can fail once the keep rates are constants); only the variable collections are kept.
    """
    graph_def = meta_graph_def.graph_def
    nodes = {n.name: n for n in graph_def.node}
    images = nodes.get("input/images")
    if images is None or "output/probabilities" not in nodes:
        raise ExportError("the meta graph has no input/images or no output/probabilities (graphcnn's names)")
    if images.op == "PlaceholderWithDefault":
        images.op = "Placeholder"
        del images.input[:]
    saver_def = meta_graph_def.saver_def
    for key in list(meta_graph_def.collection_def):
        if key not in _VARIABLE_COLLECTIONS:
            del meta_graph_def.collection_def[key]
    named = [saver_def.restore_op_name, saver_def.filename_tensor_name]
    for collection in meta_graph_def.collection_def.values():  # what each variable's Python object names
        for data in collection.bytes_list.value:
            variable = VariableDef.FromString(data)
            named += [variable.variable_name, variable.initializer_name, variable.snapshot_name,
                      variable.initial_value_name]
    roots = ["output/probabilities"] + [_node_name(n) for n in named if n]
    graph_def.CopyFrom(v1.graph_util.extract_sub_graph(graph_def, [r for r in roots if r in nodes]))


class _Restored:
    """A checkpoint's forward pass as a TF2 function: float32 [N, H, W, C] -> probabilities [N, K]."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint
        self.preprocessing, self.mean = Preprocessing.load(checkpoint.parent)
        self.meta_graph = serving_meta_graph(checkpoint)
        meta = tf.compat.v1.MetaGraphDef()
        meta.ParseFromString(self.meta_graph.read_bytes())
        forward_meta_graph(meta)
        self.dropouts_removed = drop_dropout_masks(meta.graph_def)
        rename_functions(meta, f"export{secrets.token_hex(4)}")
        frozen = _frozen_inputs(meta.graph_def)
        state = {}

        def load():
            constants = {name: tf.constant(value, name=_node_name(name).replace("/", "_") + "_frozen")
                         for name, value in frozen.items()}
            saver = v1.train.import_meta_graph(meta, clear_devices=True, input_map=constants)
            if saver is None:
                raise ExportError(f"{self.meta_graph} has no variables to restore")
            state["saver_def"] = saver.as_saver_def()

        wrapped = v1.wrap_function(load, signature=[])
        graph = wrapped.graph
        saver_def = state["saver_def"]
        restore = wrapped.prune(feeds=[graph.as_graph_element(saver_def.filename_tensor_name)],
                                fetches=[graph.as_graph_element(saver_def.restore_op_name)])
        restore(tf.constant(str(checkpoint)))
        images = graph.get_tensor_by_name("input/images:0")
        self.forward = wrapped.prune(feeds=[images], fetches=graph.get_tensor_by_name("output/probabilities:0"))
        captured = {id(t) for t in self.forward.captured_inputs}
        # only what the forward pass reads (a training graph's .meta also holds optimizer slots)
        self.variables = [v for v in wrapped.variables if id(v.handle) in captured]
        p = self.preprocessing
        if images.shape.as_list()[1:] != [p.input_height, p.input_width, p.channels]:
            raise ExportError(f"{self.meta_graph}: input/images is {images.shape}, but preprocessing.json says "
                              f"{p.input_height}x{p.input_width}x{p.channels}")


class ServingModule(tf.Module):
    """What the SavedModel holds: the restored variables, the pixel mean and the two signatures."""

    def __init__(self, restored: _Restored):
        super().__init__(name="graphcnn")
        p = restored.preprocessing
        self._size = (p.input_height, p.input_width, p.channels)
        self._forward = restored.forward
        self._test_time_flip = p.test_time_flip
        self._exif_transpose = p.exif_transpose
        # keyed by their graph names (``conv1_1/weights``), as the SavedModel's variables/ lists them
        self.model_variables = {v.name.split(":")[0]: v for v in restored.variables}
        self.pixel_mean = (None if restored.mean is None
                           else tf.Variable(np.asarray(restored.mean, np.float32), trainable=False, name="pixel_mean"))
        self.class_name_table = tf.constant(list(p.class_names), tf.string)
        h, w, c = self._size
        self.serve_bytes = tf.function(self._serve_bytes, autograph=False,
                                       input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
        self.serve_uint8 = tf.function(self._serve_uint8, autograph=False,
                                       input_signature=[tf.TensorSpec([None, h, w, c], tf.uint8, name=UINT8_INPUT)])

    def _outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 [N, H, W, C] of the model's size -> the signature outputs (pipeline.preprocess)."""
        x = tf.cast(images, tf.float32) / 255.0
        if self.pixel_mean is not None:
            x = x - self.pixel_mean
        probabilities = self._forward(x)
        if self._test_time_flip:  # as predict and the run's evaluation computed them
            probabilities = (probabilities + self._forward(tf.reverse(x, [2]))) / 2
        classes = tf.argmax(probabilities, axis=1)
        return {"probabilities": tf.identity(probabilities, name="probabilities"),
                "classes": tf.identity(classes, name="classes"),
                "class_names": tf.gather(self.class_name_table, classes, name="class_names")}

    def _serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        h, w, c = self._size

        def decode(data):  # pipeline.decode_file without the file read; what predict refuses, refused
            return fit_images(decode_image_bytes(check_bytes(data), c, self._exif_transpose), h, w, c)

        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([h, w, c], tf.uint8))
        return self._outputs(images)

    def _serve_uint8(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        # a signature call does not check shapes: a clear error rather than one deep in the network
        return self._outputs(tf.ensure_shape(images, [None, *self._size], name="check_image_size"))


def _restore(run_or_checkpoint: str | Path, prefer_best: bool) -> _Restored:
    """The first candidate checkpoint that restores (a damaged one: a warning, then the next)."""
    found: list[_Restored] = []
    load_first(run_or_checkpoint, lambda prefix: found.append(_Restored(prefix)), prefer_best)
    return found[-1]


# ----------------------------------------------------------------------------- export


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is a file" if not out.is_dir() else "is a folder that is not empty"
        raise ExportError(f"{out} already exists and {what}: export into a new folder "
                          "(TF Serving reads <model>/<version>/, e.g. models/digits/1)")


def export_saved_model(run_or_checkpoint: str | Path, out_dir: str | Path, prefer_best: bool = True) -> Path:
    """Write the SavedModel of a run (its best checkpoint, else the latest) or a checkpoint into ``out_dir``.

    ``out_dir`` must not exist or be empty; it is written in a temporary folder beside it and
    renamed into place, so a failed export leaves nothing. Signatures: see the module docstring.
    Returns ``out_dir``.
    """
    out = Path(out_dir).expanduser()
    _check_out_dir(out)
    restored = _restore(run_or_checkpoint, prefer_best)
    module = ServingModule(restored)
    with _folder_for(out):
        _write_saved_model(module, restored, out)
    return out


@contextlib.contextmanager
def _folder_for(out: Path) -> Iterator[None]:
    """``out``'s parent folders made for the block, and those it made removed again if the
    block fails (a failed export leaves nothing); an error creating one names ``out``."""
    missing = [q for q in (out.parent, *out.parent.parents) if not q.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise naming(err, out) from None
    try:
        yield
    except BaseException:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _write_saved_model(module: "ServingModule", restored: _Restored, out: Path) -> None:
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"  # mkdir, not mkdtemp: the umask's modes
    try:
        tmp.mkdir()
    except OSError as err:  # name the folder asked for, not the temporary one
        raise naming(err, out) from None
    try:
        tf.saved_model.save(module, str(tmp), signatures={BYTES_SIGNATURE: module.serve_bytes,
                                                          UINT8_SIGNATURE: module.serve_uint8})
        p = restored.preprocessing
        info = {"checkpoint": str(restored.checkpoint.resolve()), "meta_graph": restored.meta_graph.name,
                "input_height": p.input_height, "input_width": p.input_width, "channels": p.channels,
                "mean_subtraction": p.mean_subtraction, "class_names": list(p.class_names),
                "signatures": {BYTES_SIGNATURE: {BYTES_INPUT: "string [N]: encoded image files"},
                               UINT8_SIGNATURE: {UINT8_INPUT: f"uint8 [N, {p.input_height}, {p.input_width}, "
                                                              f"{p.channels}]"}},
                "outputs": {"probabilities": "float32 [N, K]", "classes": "int64 [N]", "class_names": "string [N]"}}
        (tmp / INFO_FILE).parent.mkdir(parents=True, exist_ok=True)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_saved_model(path: str | Path) -> bool:
    return (Path(path) / "saved_model.pb").is_file()


def export_tflite(run_or_checkpoint: str | Path, out_path: str | Path, prefer_best: bool = True) -> Path:
    """Write a float32 TFLite model converted from the SavedModel's ``serving_uint8`` signature.

    ``run_or_checkpoint``: a run, checkpoint folder or prefix (its SavedModel is exported to a
    temporary folder first), or a SavedModel folder written by :func:`export_saved_model`.
    ``out_path``: a ``.tflite`` file, or a folder to write ``model.tflite`` into. The model
    takes uint8 [N, H, W, C] of the model's input size (``images``; N is 1 until
    ``resize_tensor_input``) and returns ``probabilities``, ``classes`` and ``class_names``.
    Returns the file written.
    """
    out = Path(out_path).expanduser()
    if out.is_dir() or (not out.suffix and not out.exists()):
        out = out / "model.tflite"
    if out.exists():  # as a SavedModel's folder: nothing a user has is overwritten
        raise ExportError(f"{out} already exists: export to a new file (or delete it first)")
    source = Path(run_or_checkpoint)
    if not is_saved_model(source):
        checkpoint_candidates(source)  # a missing or empty source fails before any folder is made
    with _folder_for(out):
        try:
            scratch_folder = tempfile.TemporaryDirectory(prefix=".graphcnn-export-", dir=out.parent)
        except OSError as err:
            raise naming(err, out) from None
        with scratch_folder as scratch:
            if not is_saved_model(source):
                source = export_saved_model(run_or_checkpoint, Path(scratch) / "saved_model", prefer_best)
            converter = tf.lite.TFLiteConverter.from_saved_model(str(source), signature_keys=[UINT8_SIGNATURE])
            try:
                data = converter.convert()
            except ConverterError as err:  # an op without a TFLite builtin kernel (a graph graphcnn did not build?)
                ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", str(err))))
                detail = ", ".join(ops) or next((line.strip() for line in str(err).splitlines() if line.strip()),
                                                "")[:300]
                raise ExportError(f"TFLite's builtin ops do not cover this model: {detail}") from None
        write_bytes_atomic(out, data)
    return out
