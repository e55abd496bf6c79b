"""Pretrained backbones: graphcnn's TF1 graph loaded from Keras weights files gives Keras's features.

For each backbone, ``keras.applications.<Net>(weights=None, include_top=False)`` with a fixed
seed (and random batch-norm statistics and biases, so that a swapped tensor shows) is saved in
the legacy HDF5 layout, as Keras 3 ``.weights.h5`` and as ``.keras``; the graph loaded through
``--init-from keras:<file>``'s code gives the same features on the same random batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from graphcnn.model.backbones import BACKBONES, connect_backbone, keras_file_order
from graphcnn.train.keras_init import KerasWeightsError, build_init_from_keras, read_keras_weights

keras = pytest.importorskip("keras")
v1 = tf.compat.v1

def _size(name: str, full: bool) -> int:
    backbone = BACKBONES[name]
    return (299 if name == "inception_v3" else 224) if full else max(backbone.min_size, 32)


def keras_model(name: str, size: int, seed: int = 0):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, BACKBONES[name].keras_application)(
        weights=None, include_top=False, input_shape=(size, size, 3))
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # non-trivial statistics and biases: a swapped tensor must show
        for w in layer.weights:
            short = w.path.split("/")[-1]
            if short in ("gamma", "moving_variance"):
                w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
            elif short in ("beta", "moving_mean", "bias"):
                w.assign(rng.normal(0.0, 0.1, w.shape).astype("float32"))
    return model


def save(model, layout: str, tmp_path):
    if layout == "legacy":
        import h5py
        from keras.src.legacy.saving import legacy_h5_format
        path = tmp_path / "weights_tf_dim_ordering_tf_kernels_notop.h5"
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
    elif layout == "keras3":
        path = tmp_path / "model.weights.h5"
        model.save_weights(path)
    else:
        path = tmp_path / "model.keras"
        model.save(path)
    return path


def graph_features(name: str, path, images: np.ndarray) -> np.ndarray:
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, *images.shape[1:]])
        out = connect_backbone(name, x, tf.constant(False))
        init = build_init_from_keras(path, name, out.keras_layers, v1.global_variables())
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            init.init_fn(sess)
            assert not init.missing_in_checkpoint  # every backbone variable came from the file
            return sess.run(out.features, {x: images})


def check_equivalent(name: str, layout: str, size: int, tmp_path) -> None:
    model = keras_model(name, size)
    path = save(model, layout, tmp_path)
    images = np.random.default_rng(1).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    module = getattr(keras.applications, name)  # its preprocess_input
    expected = np.asarray(model(module.preprocess_input(images * 255.0), training=False))
    got = graph_features(name, path, images)
    assert got.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 0
    assert np.abs(got - expected).max() <= 1e-4 * scale, (np.abs(got - expected).max(), scale)


@pytest.mark.parametrize("layout", ["legacy", "keras3", "keras"])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_features_equal_keras(name, layout, tmp_path):
    check_equivalent(name, layout, _size(name, full=False), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_features_equal_keras_full_size(name, tmp_path):
    check_equivalent(name, "legacy", _size(name, full=True), tmp_path)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_layer_order_file_matches_installed_keras(name):
    model = keras_model(name, _size(name, full=False))
    assert [entry[0] for entry in keras_file_order(name)] == [layer.name for layer in model.layers if layer.weights]


def test_variable_names_follow_the_contract():
    with tf.Graph().as_default():
        connect_backbone("vgg16", v1.placeholder(tf.float32, [None, 32, 32, 3]), tf.constant(False))
        names = [v.op.name for v in v1.global_variables()]
    assert names[:2] == ["vgg16/conv1/conv1_1/weights", "vgg16/conv1/conv1_1/biases"]
    assert names[-1] == "vgg16/conv5/conv5_3/biases"
    assert len(names) == 26


def test_a_file_of_another_network_is_an_error_naming_it(tmp_path):
    path = save(keras_model("mobilenet_v2", 32), "legacy", tmp_path)
    with tf.Graph().as_default():
        out = connect_backbone("vgg16", v1.placeholder(tf.float32, [None, 32, 32, 3]), tf.constant(False))
        with pytest.raises(KerasWeightsError, match="backbone vgg16"):
            build_init_from_keras(path, "vgg16", out.keras_layers, v1.global_variables())


def test_a_misshapen_tensor_is_an_error_naming_it(tmp_path):
    model = keras_model("vgg16", 32)
    path = save(model, "legacy", tmp_path)
    import h5py
    with h5py.File(path, "r+") as f:  # block5_conv3's bias one element short
        del f["block5_conv3"]["block5_conv3"]["bias"]
        f["block5_conv3"]["block5_conv3"].create_dataset("bias", data=np.zeros(511, np.float32))
    with tf.Graph().as_default():
        out = connect_backbone("vgg16", v1.placeholder(tf.float32, [None, 32, 32, 3]), tf.constant(False))
        with pytest.raises(KerasWeightsError, match=r"block5_conv3.*\[511\].*vgg16/conv5/conv5_3/biases"):
            build_init_from_keras(path, "vgg16", out.keras_layers, v1.global_variables())


def test_reading_a_file_that_is_not_keras_weights(tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("hello")
    with pytest.raises(KerasWeightsError, match="notes.h5"):
        read_keras_weights(bad)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_keras_weights(tmp_path / "missing.h5")
