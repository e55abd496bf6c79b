"""Grad-CAM and LayerCAM (graphcnn.explain): exact gradients, the heat map finds the object, PNGs per file."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import tiny_config
from graphcnn.config import Config, EarlyStoppingConfig, LayerConfig, LogConfig, ModelConfig, TrainConfig
from graphcnn.data.dataset import Dataset, Split
from graphcnn.explain import (METHODS, Explainer, explain_files, feature_gradient, gradcam, gradcam_grid,
                              gradcam_ops, head_method, overlay)
from graphcnn.model.network import Network
from graphcnn.predict import Predictor
from graphcnn.run_dir import RunDir
from graphcnn.train.trainer import train

v1 = tf.compat.v1

SIZE, SIDE = 24, 6
QUIET = LogConfig(scalars_every=0, histograms_every=0, filters_every=0, graph=False, custom_scalars=False,
                  gradients_every=0, activations_every=0, feature_maps_every=0, eval_images=False, pr_curves=False,
                  trace_every=0, hparams=False, projector_images=0)


def squares(n_per_class: int, seed: int) -> tuple[Split, np.ndarray]:
    """RGB noise with one 6x6 square at a random place: red is class 0, green class 1.
    Returns the split and each square's top-left corner (row, column)."""
    rng = np.random.default_rng(seed)
    images, labels, corners = [], [], []
    for i in range(2 * n_per_class):
        c = i % 2
        image = rng.integers(0, 60, (SIZE, SIZE, 3))
        r, q = rng.integers(0, SIZE - SIDE + 1, 2)
        image[r:r + SIDE, q:q + SIDE] = (230, 40, 40) if c == 0 else (40, 230, 40)
        images.append(image)
        labels.append(c)
        corners.append((r, q))
    return Split(labels=np.array(labels, np.int64), images=np.array(images, np.uint8)), np.array(corners)


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory):
    """conv8-pool-conv16-pool-fc16 trained on the squares: the last conv's ReLU is moved past its max pool."""
    test, corners = squares(50, 2)
    dataset = Dataset(name="squares", class_names=("red", "green"), train=squares(100, 0)[0],
                      validation=squares(10, 1)[0], test=test)
    layers = (LayerConfig(type="conv", filters=8), LayerConfig(type="pool"), LayerConfig(type="conv", filters=16),
              LayerConfig(type="pool"), LayerConfig(type="dense", units=16))
    cfg = Config(preset="squares",
                 model=ModelConfig(name="squares", input_height=SIZE, input_width=SIZE, channels=3, layers=layers),
                 train=TrainConfig(batch_size=16, epochs=3, learning_rate=0.01, precision="float32",
                                   early_stopping=EarlyStoppingConfig(restore_best=False)),
                 log=QUIET)
    run = RunDir.create(tmp_path_factory.mktemp("logs"), "squares")
    result = train(cfg, run, progress=False, dataset=dataset)
    return run, result, test, corners


def _inside(cams: np.ndarray, corners: np.ndarray) -> np.ndarray:
    peaks = [np.unravel_index(np.argmax(c), c.shape) for c in cams]
    return np.array([r <= y < r + SIDE and q <= x < q + SIDE for (y, x), (r, q) in zip(peaks, corners)])


@pytest.mark.parametrize("method", ["auto", "gradcam"])
def test_heatmap_peak_lies_inside_the_square(squares_run, method):
    run, result, test, corners = squares_run
    assert result.test.accuracy >= 0.95
    with Explainer(run.root, method=method) as explainer:
        assert explainer.layers == ("conv1_1", "conv2_1") and explainer.layer == "conv2_1"
        # the squares net ends in a flatten + dense head: auto is layercam
        assert explainer.method == ("layercam" if method == "auto" else method)
        cams, probs, classes = explainer.gradcam(test.images)
    assert cams.shape == (100, SIZE, SIZE) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1 and np.allclose(cams.max(axis=(1, 2)), 1)
    np.testing.assert_array_equal(classes, probs.argmax(axis=1))
    assert _inside(cams, corners).mean() >= 0.9
    # the module-level call: the same maps
    np.testing.assert_allclose(gradcam(run.root, test.images[:4], method=method), cams[:4], atol=1e-6)
    with pytest.raises(ValueError, match="unknown method 'cam'; choices: auto, gradcam, layercam"):
        Explainer(run.root, method="cam")


def _normalized(cam: np.ndarray) -> np.ndarray:
    cam = np.maximum(cam, 0)
    return (cam - cam.min()) / (cam.max() - cam.min())


def test_gradcam_and_layercam_maps_are_their_formulas():
    """Maps A [1, 2, 2, 2] flattened into logits = flatten(A) @ W: d logit_c / dA is W's column c,
    reshaped; Grad-CAM weighs channel k by its mean, LayerCAM each position by relu(gradient)."""
    rng = np.random.default_rng(3)
    maps = rng.uniform(0, 1, (1, 2, 2, 2)).astype(np.float32)
    w = rng.normal(size=(8, 3)).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as sess:
        images = v1.placeholder(tf.float32, [None, 2, 2, 1])  # the output size: 2x2, no resizing
        features = v1.placeholder(tf.float32, [None, 2, 2, 2])
        logits = tf.matmul(tf.reshape(features, [-1, 8]), w)
        ops = {m: gradcam_ops(images, logits, features, name=m, method=m) for m in ("gradcam", "layercam")}
        assert ops["gradcam"].method == "gradcam" and ops["layercam"].method == "layercam"
        feed = {images: np.zeros((1, 2, 2, 1), np.float32), features: maps}
        for c in range(3):
            got = {m: sess.run(o.cam, {**feed, o.class_index: [c]})[0] for m, o in ops.items()}
            grad = w[:, c].reshape(2, 2, 2)
            want_gradcam = _normalized((maps[0] * grad.mean(axis=(0, 1))).sum(axis=2))
            want_layercam = _normalized((maps[0] * np.maximum(grad, 0)).sum(axis=2))
            np.testing.assert_allclose(got["gradcam"], np.nan_to_num(want_gradcam), atol=1e-5)
            np.testing.assert_allclose(got["layercam"], np.nan_to_num(want_layercam), atol=1e-5)
        assert not np.allclose(got["gradcam"], got["layercam"])  # the two differ on these numbers
        with pytest.raises(ValueError, match="unknown method"):
            gradcam_ops(images, logits, features, method="gradcam++")


def test_auto_method_follows_the_head():
    """layercam behind a flatten, gradcam behind a global average pool, whatever else reads the maps."""
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 4, 4, 3])
        maps = tf.nn.relu(tf.nn.conv2d(x, tf.ones([3, 3, 3, 5]), 1, "SAME"))
        tf.reshape(maps, [-1, 80], name="a_summary_that_flattens")  # not on the way to the logits
        gap_logits = tf.matmul(tf.reduce_mean(maps, axis=[1, 2]), tf.ones([5, 2]))
        flat_logits = tf.matmul(tf.reshape(maps, [-1, 80]), tf.ones([80, 2]))
        assert head_method(maps, gap_logits) == "gradcam"
        assert head_method(maps, flat_logits) == "layercam"
    assert METHODS == ("auto", "gradcam", "layercam")
    from graphcnn.cli import EXPLAIN_METHODS
    assert EXPLAIN_METHODS == METHODS  # the CLI's copy, kept free of the TensorFlow import


def test_explainer_predicts_as_predictor_and_explains_any_class(squares_run):
    run, result, test, corners = squares_run
    with Predictor(run.root) as predictor, Explainer(run.root, layer="conv1_1") as explainer:
        expected = predictor.probabilities_for(predictor.preprocess_arrays(test.images[:10]))
        cams, probs, classes = explainer.gradcam(test.images[:10], class_index=1)
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
        assert (classes == 1).all() and cams.shape == (10, SIZE, SIZE)
        # preprocessed float input gives the same maps as uint8
        cams_f, _, _ = explainer.gradcam(predictor.preprocess_arrays(test.images[:10]), class_index=1)
        np.testing.assert_allclose(cams_f, cams, atol=1e-6)
        with pytest.raises(ValueError, match="'blue' is not a class of this model; its classes are: red, green"):
            explainer.class_index("blue")
    with pytest.raises(ValueError, match="'conv5_3' is not a conv layer of this model; its conv layers are: "
                                         "conv1_1, conv2_1"):
        Explainer(run.root, layer="conv5_3")


def test_explain_files_writes_captioned_pngs_and_names_bad_files(squares_run, tmp_path, caplog):
    run, result, test, corners = squares_run
    files = []
    for i in (0, 1):  # a red and a green square
        f = tmp_path / "in" / f"img {i}.png"
        f.parent.mkdir(exist_ok=True)
        Image.fromarray(test.images[i]).save(f)
        files.append(f)
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"not a png")
    with Explainer(run.root) as explainer:
        written, errors = explainer.explain_files([files[0], bad, files[1]], tmp_path / "out")
        assert [f for f, _ in errors] == [str(bad)] and errors[0][1].startswith("Unknown image file format")
        assert [p.name.rsplit("_", 2)[:2] for p in written] == [["img_0", "red"], ["img_1", "green"]]
        prob = float(written[0].stem.rsplit("_", 1)[1])
        assert 0.5 < prob <= 1
        one = np.asarray(Image.open(written[0]))
        assert one.ndim == 3 and one.shape[2] == 3 and one.shape[1] >= 224 and one.shape[0] > 224  # + caption
        # another class than the predicted one: named after it, with a second caption line
        other, _ = explainer.explain_files([files[0]], tmp_path / "other", class_name="green")
        assert other[0].name.startswith("img_0_green_")
        # two caption lines under each: the method and layer (for the other class), and the prediction
        assert min(np.asarray(Image.open(other[0])).shape[0], one.shape[0]) > 224 + 2 * 12
    assert explain_files(run.root, [files[1], bad], tmp_path / "fn") == [tmp_path / "fn" / written[1].name]
    assert "broken.png" in caplog.text
    # a file already there is kept (was overwritten); the conversions predict names are warned about
    mine = tmp_path / "fn" / written[1].name
    mine.write_text("my notes")
    rgba = tmp_path / "in" / "img 1.png"  # the same stem, probability and class as before
    Image.fromarray(np.dstack([test.images[1], np.full(test.images[1].shape[:2], 9, np.uint8)])).save(rgba)
    caplog.clear()
    again = explain_files(run.root, [rgba], tmp_path / "fn")
    assert mine.read_text() == "my notes" and again == [mine.with_name(mine.stem + "_2.png")]
    assert "alpha" in caplog.text and "img 1.png" in caplog.text
    with pytest.raises(ValueError, match="no image could be read: .*broken.png"):
        explain_files(run.root, [bad], tmp_path / "none")


def test_explainer_works_from_the_training_graph_meta(squares_run, tmp_path):
    """A checkpoint without inference.meta: its own .meta (the training graph) is imported."""
    run, result, test, corners = squares_run
    prefix = tf.train.latest_checkpoint(str(run.checkpoints))
    for f in run.checkpoints.iterdir():
        if f.name.startswith(Path(prefix).name) or f.name == "preprocessing.json":
            shutil.copy(f, tmp_path / f.name)
    with Explainer(tmp_path / Path(prefix).name) as full, Explainer(prefix) as lean:
        assert full.meta_graph.name != "inference.meta" and lean.meta_graph.name == "inference.meta"
        np.testing.assert_allclose(full.gradcam(test.images[:8])[0], lean.gradcam(test.images[:8])[0], atol=1e-5)


def test_deferred_activation_gradient_is_that_of_the_activated_output():
    """relu(conv) -> max pool, built as graphcnn builds it (pool, then relu; the layer's relu a side
    branch): the gradient at the side branch equals that of a network that pools relu(conv)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    dense = rng.normal(size=(4 * 4 * 4, 3)).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as sess:
        with tf.name_scope("conv1_1"):
            pre = tf.nn.conv2d(x, kernel, 1, "SAME") - 0.3
            side = tf.nn.relu(pre)  # the layer's activated output, reached by no gradient
        with tf.name_scope("pool1"):
            pooled = tf.nn.relu(tf.nn.max_pool2d(pre, 2, 2, "SAME"))
        logits = tf.matmul(tf.reshape(pooled, [3, -1]), dense)
        target = tf.reduce_sum(logits[:, 1])
        assert tf.gradients(target, side)[0] is None
        ours = feature_gradient(target, side)
        # the reference: the same network with the activation before the pool
        reference_input = tf.constant(sess.run(side))
        reference = tf.gradients(tf.reduce_sum(tf.matmul(tf.reshape(tf.nn.max_pool2d(reference_input, 2, 2, "SAME"),
                                                                    [3, -1]), dense)[:, 1]), reference_input)[0]
        got, want = sess.run([ours, reference])
    assert np.abs(want).sum() > 0
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with tf.Graph().as_default():
        a = tf.ones([1, 2, 2, 1])
        with pytest.raises(ValueError, match="no gradient flows"):
            feature_gradient(tf.reduce_sum(tf.ones([1])), tf.nn.relu(a))


@pytest.mark.parametrize("compute_dtype", [tf.float32, tf.bfloat16])
def test_gradcam_ops_on_the_training_networks_end_points(compute_dtype):
    """What the TensorBoard view builds: ops on a network's own end points (batch norm, dropout, bfloat16)."""
    model = tiny_config().model
    images_np = np.random.default_rng(1).uniform(size=(5, 12, 12, 1)).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as sess:
        images = v1.placeholder_with_default(tf.zeros([2, 12, 12, 1]), [None, 12, 12, 1])
        keep = {"conv": v1.placeholder_with_default(1.0, []), "fc": v1.placeholder_with_default(1.0, [])}
        net = Network(model, 3, compute_dtype=compute_dtype)(images, v1.placeholder_with_default(False, []), keep)
        ops = gradcam_ops(images, net.logits, net.end_points["conv2_1"])
        assert ops.method == "layercam"  # the tiny net's head is a flatten + dense, as the view's nets are
        sess.run(v1.global_variables_initializer())
        cams, classes, logits = sess.run([ops.cam, ops.class_index, net.logits], {images: images_np})
        assert cams.shape == (5, 12, 12) and cams.dtype == np.float32
        assert cams.min() >= 0 and cams.max() <= 1
        np.testing.assert_array_equal(classes, logits.argmax(axis=1))
        chosen = sess.run(ops.class_index, {images: images_np, ops.class_index: [2] * 5})
        assert list(chosen) == [2] * 5


def test_overlay_and_grid_shapes(monkeypatch):
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28, 1)).astype(np.uint8)
    cams = np.random.default_rng(1).uniform(size=(5, 14, 14)).astype(np.float32)
    one = overlay(images[0], cams[0])
    assert one.dtype == np.uint8 and one.shape == (224, 224, 3)
    grid = gradcam_grid(images, cams, [f"c{i}" for i in range(5)])
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] >= 3 * 112 and grid.shape[0] >= 2 * 112
    assert gradcam_grid(images[:0], cams[:0], []).shape[2] == 3
    # a right prediction's caption green, a mistake's red (all were red: right ones read as mistakes)
    from graphcnn.viz import images as viz_images

    captions = {}
    real = viz_images.labelled_grid

    def spy(tiles, texts, **kw):
        captions["colours"] = kw.get("colours")
        return real(np.full_like(tiles, 128), texts, **kw)  # gray tiles: the captions' colours alone

    monkeypatch.setattr(viz_images, "labelled_grid", spy)
    flagged = gradcam_grid(images, cams, ["right"] * 5, correct=[True, False, True, True, True])
    assert captions["colours"] == [viz_images.RIGHT, viz_images.CAPTION] + [viz_images.RIGHT] * 3
    pixels = flagged.reshape(-1, 3).astype(int)
    green = ((pixels[:, 1] > 80) & (pixels[:, 0] < 60) & (pixels[:, 2] < 60)).sum()
    red = ((pixels[:, 0] > 150) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)).sum()
    assert green == 4 * red > 0  # four green captions, one red, the same text
    with pytest.raises(ValueError, match="one map per image"):
        gradcam_grid(images, cams[:2], ["a"] * 5)


@pytest.mark.slow
def test_explain_deletion_script_reports_both_methods(tmp_path):
    """scripts/explain_deletion.py on a tiny digits run: its lines, with falls in [-1, 1]."""
    import os
    import re
    import subprocess
    import sys

    run = RunDir.create(tmp_path, "tiny")
    assert train(tiny_config(epochs=1, learning_rate=1e-3), run, progress=False).test.accuracy > 0.3  # chance: 0.1
    script = Path(__file__).resolve().parent.parent / "scripts" / "explain_deletion.py"
    proc = subprocess.run([sys.executable, str(script), str(run.root), "--images", "40", "--fractions", "0.1,0.2"],
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"{run.root}: 40 test images, layer conv2_1" in out
    for method in ("gradcam", "layercam"):
        assert re.search(rf"  {method}: maps with no positive evidence [\d.]+%", out)
        assert re.search(rf"  {method}: median share of the map on the object [\d.]+% \(the object covers", out)
    falls = re.findall(r"top (\d+)% of the pixels blacked out, mean fall of the class's probability: "
                       r"gradcam (-?[\d.]+), layercam (-?[\d.]+), random (-?[\d.]+)", out)
    assert [f[0] for f in falls] == ["10", "20"]
    assert all(-1 <= float(v) <= 1 for f in falls for v in f[1:])


def test_a_backbones_output_block_is_the_default_layer():
    """Grad-CAM on a pretrained backbone explains its output block, as Keras's examples do
    (resnet50's conv5_block3_out after the add and relu, inception_v3's whole mixed10), not the
    last conv op built (mixed10's pool branch: 192 of its 2,048 channels); VGG16 keeps its last
    conv (its output is a pool)."""
    from graphcnn.explain import backbone_block, conv_layers
    from graphcnn.model.graph import inference_graph
    from graphcnn.presets import get_preset

    expected = {"vgg16": None, "resnet50": ("resnet50/conv5/block3", "Relu", 2048),
                "inception_v3": ("inception_v3/mixed10", "ConcatV2", 2048),
                "mobilenet_v2": ("mobilenet_v2/conv_last", "Relu6", 1280)}
    for name, want in expected.items():
        graph, _ = inference_graph(get_preset(name).model, 2)
        block = backbone_block(graph, name)
        if want is None:
            assert block is None and conv_layers(graph)[-1] == "vgg16/conv5/conv5_3"
        else:
            assert (block[0], block[1].op.type, block[1].shape[-1]) == want, name
        if name == "mobilenet_v2":  # its depthwise convs are layers too (tf.nn names their op "depthwise")
            from graphcnn.explain import feature_map
            assert "mobilenet_v2/block1/depthwise" in conv_layers(graph)
            assert feature_map(graph, "mobilenet_v2/block1/depthwise").op.type == "Relu6"
    assert backbone_block(graph, "") is None
