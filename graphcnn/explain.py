"""Grad-CAM and LayerCAM: which part of an image made the network predict a class.

For a class c and a conv layer with feature maps A_k (the layer's activated output) and
gradients g_k = d logit_c / d A_k, both keep the positive part of a weighted sum of the maps,
upsampled (bilinear) to the input size and scaled to [0, 1] per image:

* Grad-CAM (Selvaraju et al., 2017) weighs each map by its gradient's spatial mean:
  ``relu(sum_k mean_ij(g_k) A_k)``. Right for a global-average-pool head, where the gradient
  is the same at every position.
* LayerCAM (Jiang et al., 2021) weighs each position by its own positive gradient:
  ``relu(sum_k relu(g_k) * A_k)``. Behind a flatten + dense head (every network built from
  layers here) each position has its own weights, the gradient's mean over positions mostly
  cancels, and Grad-CAM's map lands on the background or stays empty; LayerCAM's follows the
  object (studies, 2026-12-06). ``method="auto"`` picks LayerCAM for a flatten head, Grad-CAM
  otherwise.

Two ways in, both adding the gradient ops once, at graph-building time:

* :class:`Explainer` (and :func:`gradcam`, :func:`explain_files`): from a run, checkpoint
  folder or checkpoint prefix alone. A :class:`~graphcnn.predict.Predictor` (it imports
  ``inference.meta``, else the checkpoint's own ``.meta``) that adds ``tf.gradients`` to the
  imported graph, so any run of any preset is explained without graphcnn's network code. The
  conv layers are found in the graph (``<layer>/Conv2D``), the last one by default.
* :func:`gradcam_ops` on the training graph's own tensors (the TensorBoard view), with
  :func:`gradcam_grid` to draw the maps over the images.

A ReLU (or leaky ReLU) right before a max pool is applied after the pool in graphcnn's
networks (``network._activation_commutes_with``): the conv layer's activated output is then
a side branch that no gradient reaches. :func:`feature_gradient` handles it exactly: with
``R = act(maxpool(B))`` the pooled activation on the path to the logits and ``A = act(B)``
the layer's activated output, ``R == maxpool(A)``, so d logit / dA is the max-pool gradient
of ``maxpool(A)`` applied to d logit / dR.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from graphcnn.data import formats, scan
from graphcnn.predict import Predictor
from graphcnn.viz import images as viz_images

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.explain")

__all__ = ["METHODS", "Explainer", "GradCamOps", "colorize", "conv_layers", "explain_files", "feature_gradient",
           "feature_map", "gradcam", "gradcam_grid", "gradcam_ops", "gradcam_view", "head_method", "overlay"]

COLORMAP = "jet"
ALPHA = 0.45  # weight of the heat map over the image
MIN_SIDE = 224  # px: the long side of a written explanation, at least
# the op types of a conv layer, and the names their ops have in it (tf.nn.depthwise_conv2d names
# its op "depthwise": a MobileNet block's <block>/depthwise/depthwise)
_CONV_OPS = ("Conv2D", "DepthwiseConv2dNative")
_CONV_OP_NAMES = ("Conv2D", "DepthwiseConv2dNative", "depthwise")
# scopes of conv ops that are not a layer of the model itself: gradients, the towers' copies
_OTHER_COPY = re.compile(r"(^|/)(gradients|tower_\d+)(/|$)")
_ACTIVATIONS_AFTER_POOL = ("Relu", "LeakyRelu")  # network._activation_commutes_with


# ------------------------------------------------------------------------------ graph


def conv_layers(graph: tf.Graph) -> list[str]:
    """The conv layers of a graphcnn graph (the scopes of its ``<layer>/Conv2D`` ops, nested in a
    backbone's: ``vgg16/conv5/conv5_3``), input first.

    Gradient ops (``.../gradients/...``) and the towers' copies (``tower_0/...``) are left out.
    """
    layers = []
    for op in graph.get_operations():
        scope, _, last = op.name.rpartition("/")
        if op.type in _CONV_OPS and last in _CONV_OP_NAMES and scope and not _OTHER_COPY.search(scope):
            layers.append(scope)
    return list(dict.fromkeys(layers))


def backbone_block(graph: tf.Graph, backbone: str) -> tuple[str, tf.Tensor] | None:
    """A pretrained backbone's output, where it is a block's (``resnet50/conv5/block3``: after
    the residual add and relu; ``inception_v3/mixed10``: all four branches), as ``(its scope,
    the tensor)``: the layer Keras's Grad-CAM examples explain (``conv5_block3_out``,
    ``mixed10``). None without a backbone, or where its output is a pool (VGG16's ``pool5``:
    its last conv explains at twice the resolution)."""
    if not backbone:
        return None
    found = None
    for op in graph.get_operations():
        if op.name.startswith(backbone + "/") and not _OTHER_COPY.search(op.name):
            for t in op.outputs:
                if t.shape.rank == 4 and any(not c.name.startswith(backbone + "/") and "gradients" not in c.name
                                             for c in t.consumers()):
                    found = t  # the last 4-D tensor the head reads
    if found is None or found.op.type in ("MaxPool", "AvgPool"):
        return None
    return found.op.name.rpartition("/")[0], found


def feature_map(graph: tf.Graph, layer: str) -> tf.Tensor:
    """The activated output of conv layer ``layer``: float [N, h, w, filters].

    Followed from ``<layer>/Conv2D`` through the ops of the layer's own scope (bias or batch
    norm, then the activation) to the last one of the same shape. That may be the side branch
    of an activation deferred past a max pool: :func:`feature_gradient` knows.
    """
    layers = conv_layers(graph)
    if layer not in layers:
        raise ValueError(f"'{layer}' is not a conv layer of this model; its conv layers are: "
                         f"{', '.join(layers) or '(none)'}")
    conv = next(op for op in graph.get_operations()
                if op.type in _CONV_OPS and op.name in (f"{layer}/{t}" for t in _CONV_OP_NAMES))
    t = conv.outputs[0]
    shape = t.shape.as_list()[1:]
    seen = {t.op.name}
    while True:
        nxt = [c for c in t.consumers()
               if c.name.startswith(layer + "/") and c.name not in seen and "gradients" not in c.name
               and c.outputs and c.outputs[0].dtype.is_floating and c.outputs[0].shape.rank == 4
               and c.outputs[0].shape.as_list()[1:] == shape]
        if not nxt:
            return t
        t = nxt[0].outputs[0]
        seen.add(t.op.name)


def feature_gradient(target: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """d ``target`` / d ``features`` (same shape and dtype), ``features`` a conv layer's
    activated output, also when that activation was moved past a max pool (module docstring).

    Raises ValueError when no gradient reaches ``features``.
    """
    grad = tf.gradients(target, features)[0]
    if grad is not None:
        return grad
    act = features.op
    problem = f"no gradient flows from the logits to {features.name}"
    if act.type not in _ACTIVATIONS_AFTER_POOL or not act.inputs:
        raise ValueError(problem)
    pre = act.inputs[0]  # the pre-activation, on the path to the logits
    pools = [c for c in pre.consumers() if c.type == "MaxPool"]
    for pool in pools:
        for after in pool.outputs[0].consumers():
            if after.type != act.type or (act.type == "LeakyRelu" and after.get_attr("alpha") != act.get_attr("alpha")):
                continue
            upstream = tf.gradients(target, after.outputs[0])[0]
            if upstream is None:
                continue
            padding = pool.get_attr("padding")
            pooled = tf.nn.max_pool2d(features, ksize=list(pool.get_attr("ksize")),
                                      strides=list(pool.get_attr("strides")),
                                      padding=padding.decode() if isinstance(padding, bytes) else padding)
            return tf.gradients(pooled, features, grad_ys=upstream)[0]
    raise ValueError(problem + " (nor through a max pool after it)")


class _ModelError(Exception):
    """What no other checkpoint of the same run would change (a missing layer)."""


METHODS = ("auto", "gradcam", "layercam")
METHOD_LABELS = {"gradcam": "grad-cam", "layercam": "layercam"}  # in captions and messages


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choices: {', '.join(METHODS)}")


def head_method(features: tf.Tensor, logits: tf.Tensor) -> str:
    """``layercam`` when ``features`` [N, h, w, K] reach ``logits`` through a flatten (a reshape
    of the 4-D maps to [N, h*w*K]: each position its own weights), ``gradcam`` otherwise (a
    global average pool, or nothing that collapses the positions on the way).

    Walks forward from the features (and, for an activation deferred past a max pool, a side
    branch, from its input: module docstring) through the ops the logits are computed from, so
    that summaries and views hanging off the features do not count.
    """
    on_path, stack = set(), [logits.op]
    while stack:  # the logits' ancestors
        op = stack.pop()
        if op.name not in on_path:
            on_path.add(op.name)
            stack.extend(t.op for t in op.inputs)
    queue = [features, *features.op.inputs]
    seen: set[str] = set()
    while queue:
        t = queue.pop(0)
        for op in t.consumers():
            if op.name in seen or op.name not in on_path:
                continue
            seen.add(op.name)
            if op.inputs and op.inputs[0].shape.rank == 4 and op.outputs and op.outputs[0].shape.rank == 2:
                if op.type == "Reshape":
                    return "layercam"
                if op.type in ("Mean", "Max"):  # a global average (or max) pool
                    return "gradcam"
            if logits.op.name == op.name:
                return "gradcam"
            queue.extend(op.outputs)
    return "gradcam"


class GradCamOps(NamedTuple):
    """What :func:`gradcam_ops` adds to a graph."""

    # int64 [N]: the class explained per image; defaults to the predicted class (feed to choose).
    # Fetching it gives the classes used.
    class_index: tf.Tensor
    cam: tf.Tensor  # float32 [N, H, W] in [0, 1], H, W the input size
    method: str = "gradcam"  # the method the map is made with: gradcam or layercam


def gradcam_ops(images: tf.Tensor, logits: tf.Tensor, features: tf.Tensor, name: str = "gradcam",
                method: str = "auto") -> GradCamOps:
    """Class-activation-map ops for the images that ``logits`` [N, K] are computed from.

    Call once while building the graph (before it is finalized). ``images`` float [N, H, W, C]
    (its H, W are the output size), ``features`` the conv layer's activated output (e.g. a
    network's ``end_points[layer]``, or :func:`feature_map`). ``method``: ``gradcam``,
    ``layercam`` or ``auto`` (:func:`head_method`; module docstring). Run ``cam`` with the same
    feed as the logits (inference mode: batch norm's moving averages, keep rates 1).
    """
    _check_method(method)
    if method == "auto":
        method = head_method(features, logits)
    with tf.name_scope(name):
        predicted = tf.argmax(logits, axis=1)
        class_index = v1.placeholder_with_default(predicted, [None], name="class_index")
        target = tf.reduce_sum(tf.gather(tf.cast(logits, tf.float32), class_index, batch_dims=1))
        grads = tf.cast(feature_gradient(target, features), tf.float32)
        maps = tf.cast(features, tf.float32)
        if method == "layercam":
            weights = tf.nn.relu(grads)  # [N, h, w, K]: each position its own
        else:
            weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)  # [N, 1, 1, K]
        cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=3, keepdims=True))
        size = images.shape.as_list()[1:3]
        if None in size:
            size = tf.shape(images)[1:3]
        cam = tf.image.resize(cam, size, method="bilinear")[..., 0]
        low = tf.reduce_min(cam, axis=[1, 2], keepdims=True)
        high = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
        cam = tf.math.divide_no_nan(cam - low, high - low)  # a map with no positive evidence stays 0
        cam = tf.identity(cam, name="cam")
    return GradCamOps(class_index, cam, method)


# ------------------------------------------------------------------------------ drawing


def colorize(cam: np.ndarray, colormap: str = COLORMAP) -> np.ndarray:
    """float [..., H, W] in [0, 1] -> uint8 [..., H, W, 3] through a matplotlib colour map."""
    index = np.clip(np.round(np.nan_to_num(np.asarray(cam, np.float32)) * 255), 0, 255).astype(np.int64)
    return viz_images.colormap_lut(colormap)[index]


def _resize_map(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    cam = np.asarray(cam, np.float32)
    if cam.shape == (height, width):
        return cam
    return np.asarray(Image.fromarray(cam).resize((width, height), Image.Resampling.BILINEAR), np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, min_side: int = MIN_SIDE, alpha: float = ALPHA,
            colormap: str = COLORMAP) -> np.ndarray:
    """A heat map over an image: uint8 [h', w', 3].

    ``image`` uint8 [h, w] or [h, w, C] is upscaled (nearest neighbour, an integer factor) until
    its long side is at least ``min_side``; ``cam`` float [H, W] in [0, 1] (any size) is
    resized to it (bilinear), coloured and blended in with weight ``alpha``.
    """
    rgb = viz_images.to_rgb(image)
    rgb = viz_images.upscale(rgb, max(1, math.ceil(min_side / max(rgb.shape[:2]))))
    heat = colorize(_resize_map(cam, *rgb.shape[:2]), colormap)
    return np.round((1 - alpha) * rgb + alpha * heat).astype(np.uint8)


def gradcam_grid(images: np.ndarray, cams: np.ndarray, captions: Sequence[str], min_side: int = 96,
                 correct: Sequence[bool] | None = None) -> np.ndarray:
    """Maps over their images in a captioned grid (:func:`~graphcnn.viz.images.labelled_grid`): uint8 [H, W, 3].

    ``images`` uint8 [N, h, w, C] (C 1 or 3; e.g. a split's images as loaded), ``cams`` float
    [N, H, W] (any H, W: resized to each tile), ``captions`` N strings; ``correct``: N flags,
    the caption of a right prediction in green, of a mistake in red (default: all red).
    """
    images = np.asarray(images)
    if len(images) != len(cams):
        raise ValueError(f"need one map per image, got {len(cams)} for {len(images)}")
    if len(images) == 0:
        return viz_images.labelled_grid(np.zeros((0, 1, 1, 3), np.uint8), [], min_side=min_side)
    tiles = np.stack([overlay(img, cam, min_side=min_side) for img, cam in zip(images, cams)])
    colours = None if correct is None else [viz_images.RIGHT if ok else viz_images.CAPTION for ok in correct]
    return viz_images.labelled_grid(tiles, captions, min_side=min_side, colours=colours)


def gradcam_view(session, ops: GradCamOps, images_tensor: tf.Tensor, preprocessed: np.ndarray,
                 display: np.ndarray, labels: np.ndarray, class_names: Sequence[str], batch_size: int = 64,
                 probabilities: tf.Tensor | None = None) -> np.ndarray:
    """The TensorBoard ``gradcam`` grid of some images: uint8 [H, W, 3].

    Runs ``ops`` (built by :func:`gradcam_ops` on the training graph) on ``preprocessed``
    float32 [N, H, W, C] fed to ``images_tensor`` (inference mode: the other inputs keep their
    defaults), and draws the maps of the predicted classes over ``display`` uint8 [N, h, w, C]
    captioned ``true>predicted`` (with the predicted probability when ``probabilities``, the
    graph's softmax, is given), green when right and red when wrong. ``labels`` int [N] are the
    true classes.
    """
    fetches = [ops.cam, ops.class_index] + ([probabilities] if probabilities is not None else [])
    batches = [session.run(fetches, {images_tensor: preprocessed[i:i + batch_size]})
               for i in range(0, len(preprocessed), batch_size)]
    if not batches:
        return gradcam_grid(np.asarray(display)[:0], np.zeros((0, 1, 1), np.float32), [])
    cams, classes, *probs = (np.concatenate(column) for column in zip(*batches))
    names = [str(n) for n in class_names]
    captions = [f"{names[t]}>{names[c]}" for t, c in zip(labels, classes)]
    if probs:  # each image's probability of the class predicted
        captions = [f"{c} {p:.2f}" for c, p in zip(captions, probs[0][np.arange(len(classes)), classes])]
    return gradcam_grid(display, cams, captions, correct=[t == c for t, c in zip(labels, classes)])


def _file_part(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "_"


# ----------------------------------------------------------------------- from a checkpoint


class Explainer(Predictor):
    """Class activation maps for a model restored from a run directory, checkpoint folder or prefix.

    Checkpoints are chosen as :class:`~graphcnn.predict.Predictor` chooses them (the best,
    else the latest; a damaged one is skipped with a warning), and it predicts as a Predictor
    does, on each image alone (even for a run with ``model.test_time_flip``). ``layer``: a conv
    layer name (``conv2_2``), default the last conv layer. ``method``: ``auto`` (LayerCAM for a
    flatten head, Grad-CAM otherwise), ``gradcam`` or ``layercam``; ``.method`` is the one used.
    """

    def __init__(self, checkpoint: str | Path, layer: str | None = None, prefer_best: bool = True,
                 method: str = "auto"):
        _check_method(method)  # here, not when the graph is built: that error would read as a bad checkpoint
        self._layer_wanted = layer
        self._method_wanted = method
        self._model_error: _ModelError | None = None
        # Grad-CAM explains one forward pass: no mirror-image average (model.test_time_flip)
        super().__init__(checkpoint, prefer_best, test_time_flip=False)
        if self._model_error is not None:
            raise ValueError(str(self._model_error)) from None

    def _load(self, checkpoint: Path) -> None:
        try:
            super()._load(checkpoint)
        except _ModelError as err:  # the model's (a layer it does not have), not the checkpoint's: final
            self._model_error = err

    def _add_outputs(self) -> None:
        self.logits = self.graph.get_tensor_by_name("output/logits:0")
        convs = conv_layers(self.graph)
        block = backbone_block(self.graph, self.preprocessing.backbone)
        # a backbone's output block is the default (and a choice) beside its conv layers
        self.layers = tuple(convs + ([block[0]] if block and block[0] not in convs else []))
        if not self.layers:
            raise _ModelError(f"{self.meta_graph}: the model has no conv layer to explain")
        self.layer = self._layer_wanted or (block[0] if block else self.layers[-1])
        if self.layer not in self.layers:
            raise _ModelError(f"'{self.layer}' is not a conv layer of this model; its conv layers are: "
                              f"{', '.join(self.layers)}")
        features = block[1] if block and self.layer == block[0] else feature_map(self.graph, self.layer)
        self.ops = gradcam_ops(self.images, self.logits, features, method=self._method_wanted)
        self.method = self.ops.method

    def class_index(self, class_name: str) -> int:
        """The index of ``class_name``; ValueError listing the classes otherwise."""
        try:
            return self.class_names.index(class_name)
        except ValueError:
            raise ValueError(f"--class {class_name!r} is not a class of this model; its classes are: "
                             f"{', '.join(self.class_names)}") from None

    def gradcam(self, images: np.ndarray, class_index: int | Sequence[int] | None = None, batch_size: int = 64
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cams float32 [N, H, W] in [0, 1], probabilities float32 [N, K], classes int64 [N] explained).

        ``images``: uint8 [N, h, w, C] (any size: converted and resized as ``graphcnn predict``
        does) or float32 [N, H, W, C] already preprocessed. ``class_index``: the class to
        explain, for all images or one per image; default the predicted one.
        """
        images = np.asarray(images)
        if images.dtype == np.uint8:
            feed_key, images = self._fit, self.fit_arrays(images)
        else:
            feed_key = self.images
        n = len(images)
        chosen = None if class_index is None else np.broadcast_to(np.asarray(class_index, np.int64), [n])
        batches = []  # (cams, probabilities, classes) of each batch
        for i in range(0, n, batch_size):
            feed = {feed_key: images[i:i + batch_size]}
            if chosen is not None:
                feed[self.ops.class_index] = chosen[i:i + batch_size]
            batches.append(self.sess.run([self.ops.cam, self.probabilities, self.ops.class_index], feed))
        if not batches:
            return (np.zeros((0, *self.input_size[:2]), np.float32),
                    np.zeros((0, len(self.class_names)), np.float32), np.zeros((0,), np.int64))
        return tuple(np.concatenate(column) for column in zip(*batches))

    def explain_files(self, files: Sequence[str | Path], out_dir: str | Path, class_name: str | None = None,
                      batch_size: int = 32) -> tuple[list[Path], list[tuple[str, str]]]:
        """Write ``<stem>_<class>_<probability>.png`` per image file into ``out_dir``.

        Each PNG is the map (:attr:`method`) over the image as the network sees it (its input size,
        upscaled to >= 224 px), captioned ``<method> at <layer>`` (with ``class_name`` other than
        the prediction: ``... for <class_name> <its probability>``) and ``<predicted class> <probability>``.
        ``<class>`` and ``<probability>`` in the name are the explained class's; a name taken (by
        another file of this call, or a file already in ``out_dir``) gets ``_2``, ``_3``: nothing
        is overwritten. The conversions ``graphcnn predict`` warns about (alpha dropped, a frame of
        an animation, ...) are logged as warnings. Returns the files written (in order) and (file,
        error) for each image that could not be read.
        """
        target = None if class_name is None else self.class_index(class_name)
        out = Path(out_dir)  # made with the first map: no images read, no folder
        written: list[Path] = []
        errors: list[tuple[str, str]] = []
        used: set[str] = set()
        infos: dict[str, scan.ImageInfo] = {}
        names = [str(f) for f in files]
        for start in range(0, len(names), batch_size):
            good, fitted = [], []
            for f in names[start:start + batch_size]:
                if why := formats.file_problem(f):  # never decoded: the decoder crashes on, or misreads, it
                    errors.append((f, why))
                    continue
                try:
                    image, *info = self.sess.run([self._single, *self._single_info], {self._path: os.fsencode(f)})
                except tf.errors.OpError as err:
                    errors.append((f, scan.describe_failure(f, err.message)))
                    continue
                fitted.append(image)
                good.append(f)
                infos[f] = scan.image_info(*info)
            if not good:
                continue
            batch = np.stack(fitted)
            cams, probs, classes = self.gradcam(batch, target)
            for f, image, cam, p, k in zip(good, batch, cams, probs, classes):
                predicted = int(np.argmax(p))
                picture = overlay(image, cam)
                if k != predicted:
                    label = f"{METHOD_LABELS[self.method]} at {self.layer} for {self.class_names[k]} {p[k]:.3f}"
                else:  # the PNG says what made it, as the terminal does
                    label = f"{METHOD_LABELS[self.method]} at {self.layer}"
                picture = viz_images.caption_image(picture, label, min_side=MIN_SIDE, size=11)  # under the class
                picture = viz_images.caption_image(picture, f"{self.class_names[predicted]} {p[predicted]:.3f}",
                                                   min_side=MIN_SIDE)
                stem = f"{_file_part(Path(f).stem)}_{_file_part(self.class_names[k])}_{p[k]:.3f}"
                name, n = stem, 1
                # the same stem twice (files of two folders), or a file already there: keep both
                while name in used or (out / f"{name}.png").exists():
                    n += 1
                    name = f"{stem}_{n}"
                used.add(name)
                path = out / f"{name}.png"
                out.mkdir(parents=True, exist_ok=True)
                viz_images.write_png(path, picture)
                written.append(path)
        p = self.preprocessing  # the conversions predict warns about, as trained
        for message in scan.conversion_warnings(infos, p.channels, exif_transpose=p.exif_transpose):
            log.warning(message)
        return written, errors


def gradcam(run_or_checkpoint: str | Path, images: np.ndarray, class_name: str | None = None,
            layer: str | None = None, prefer_best: bool = True, method: str = "auto") -> np.ndarray:
    """Class activation maps float32 [N, H, W] in [0, 1] of a batch of images, from a run or checkpoint alone.

    ``images`` uint8 [N, h, w, C] (any size) or float32 [N, H, W, C] preprocessed; the map is
    that of ``class_name`` (default: each image's predicted class) at conv layer ``layer``
    (default: the last), made with ``method`` (see :class:`Explainer`). For many calls keep an
    :class:`Explainer` open instead.
    """
    with Explainer(run_or_checkpoint, layer=layer, prefer_best=prefer_best, method=method) as explainer:
        target = None if class_name is None else explainer.class_index(class_name)
        return explainer.gradcam(images, target)[0]


def explain_files(run_or_checkpoint: str | Path, files: Sequence[str | Path], out_dir: str | Path,
                  class_name: str | None = None, layer: str | None = None, prefer_best: bool = True,
                  method: str = "auto") -> list[Path]:
    """Write a class-activation-map PNG per image file (see :meth:`Explainer.explain_files`); the PNGs written.

    An unreadable file is skipped with a warning naming it (logger ``graphcnn.explain``);
    if no file can be read, ValueError names each one and why.
    """
    with Explainer(run_or_checkpoint, layer=layer, prefer_best=prefer_best, method=method) as explainer:
        written, errors = explainer.explain_files(files, out_dir, class_name)
    for f, error in errors:
        log.warning("cannot read %s: %s", f, error)
    if errors and not written:
        raise ValueError("no image could be read: " + "; ".join(f"{f} ({e})" for f, e in errors))
    return written
