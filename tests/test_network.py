import numpy as np
import pytest
import tensorflow as tf

from graphcnn.model.network import Network
from graphcnn.presets import PRESETS, get_preset

v1 = tf.compat.v1

BN_VARIABLES = ("weights", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance")
# conv-conv-pool-conv-conv-pool-fc, every layer batch-normalized (digits, fashion_vgg)
TWO_BN_BLOCKS = [f"{layer}/{v}" for layer in ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "fc1")
                 for v in BN_VARIABLES] + ["logits/weights", "logits/biases"]
EXPECTED_VARIABLES = {
    "digits": TWO_BN_BLOCKS,
    "fashion": [f"{layer}/{v}" for layer in ("conv1_1", "conv2_1", "fc1") for v in BN_VARIABLES]
    + ["logits/weights", "logits/biases"],
    "fashion_vgg": TWO_BN_BLOCKS,
    "ct_scan": ["conv1_1/weights", "conv1_1/biases", "conv2_1/weights", "conv2_1/biases", "fc1/weights",
                "fc1/biases", "logits/weights", "logits/biases"],
    "dog_breeds_vgg": ["conv1_1/weights", "conv1_1/biases", "conv1_2/weights", "conv1_2/biases",
                       "conv2_1/weights", "conv2_1/biases", "conv2_2/weights", "conv2_2/biases",
                       "fc1/weights", "fc1/biases", "logits/weights", "logits/biases"],
    "cats_dogs_small": ["conv1_1/weights", "conv1_1/biases", "conv2_1/weights", "conv2_1/biases",
                        "fc1/weights", "fc1/biases", "logits/weights", "logits/biases"],
    "cats_dogs_4block": [f"conv{i}_1/{k}" for i in range(1, 5) for k in ("weights", "biases")]
    + ["fc1/weights", "fc1/biases", "logits/weights", "logits/biases"],
    "cats_dogs_150": [f"conv{i}_1/{k}" for i in range(1, 4) for k in ("weights", "biases")]
    + ["fc1/weights", "fc1/biases", "fc2/weights", "fc2/biases", "logits/weights", "logits/biases"],
}
SHAPES = {"digits": {"conv1_1/weights": [3, 3, 1, 16], "fc1/weights": [7 * 7 * 32, 128]},
          "fashion": {"conv2_1/weights": [3, 3, 32, 96], "conv2_1/bn/gamma": [96], "fc1/weights": [7 * 7 * 96, 256]},
          "fashion_vgg": {"conv2_2/weights": [3, 3, 64, 64], "fc1/weights": [7 * 7 * 64, 256]},
          "dog_breeds_vgg": {"conv1_1/weights": [3, 3, 3, 32], "fc1/weights": [56 * 56 * 64, 512]},
          "cats_dogs_150": {"fc1/weights": [19 * 19 * 128, 128], "fc2/weights": [128, 512]}}
KEEP_GROUPS = {"digits": ("fc",), "dog_breeds_vgg": ("conv", "fc")}


# pretrained backbones: (variable count, first variables, pinned shapes); the head after them
BACKBONE_VARIABLES = {
    "vgg16": (30, ["vgg16/conv1/conv1_1/weights", "vgg16/conv1/conv1_1/biases"],
              {"vgg16/conv5/conv5_3/weights": [3, 3, 512, 512], "fc1/weights": [512, 256]}),
    "resnet50": (322, ["resnet50/conv1/weights", "resnet50/conv1/biases", "resnet50/conv1/bn/gamma"],
                 {"resnet50/conv2/block1/shortcut/weights": [1, 1, 64, 256],
                  "resnet50/conv5/block3/conv3/bn/moving_variance": [2048], "fc1/weights": [2048, 256]}),
    "inception_v3": (380, ["inception_v3/stem/conv1/weights", "inception_v3/stem/conv1/bn/beta"],
                     {"inception_v3/mixed9/branch3x3_2a/weights": [1, 3, 384, 384], "fc1/weights": [2048, 1024]}),
    "mobilenet_v2": (264, ["mobilenet_v2/conv1/weights", "mobilenet_v2/conv1/bn/gamma"],
                     {"mobilenet_v2/block7/depthwise/depthwise_weights": [3, 3, 384, 1],
                      "mobilenet_v2/conv_last/weights": [1, 1, 320, 1280], "fc1/weights": [1280, 128]}),
}


@pytest.mark.parametrize("name", list(BACKBONE_VARIABLES))
def test_backbone_preset_builds_with_pinned_names_and_shapes(name):
    cfg = get_preset(name).model
    count, first, shapes = BACKBONE_VARIABLES[name]
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, cfg.input_height, cfg.input_width, 3])
        net = Network(cfg, 7)
        out = net(images, tf.constant(False), {g: tf.constant(1.0) for g in net.keep_groups})
        variables = {v.op.name: v.shape.as_list() for v in v1.global_variables()}
        names = list(variables)
    assert len(names) == count
    assert names[:len(first)] == first
    assert names[-4:] == ["fc1/weights", "fc1/biases", "logits/weights", "logits/biases"]
    assert all(variables[n] == shape for n, shape in shapes.items())
    assert out.logits.shape.as_list() == [None, 7]
    assert list(out.end_points)[-4:] == ["global_avg_pool", "fc1", "dropout1", "logits"]


def test_frozen_batch_norm_stays_in_inference_mode():
    """Under trainable_scopes, a frozen layer's batch norm uses its moving averages and has no
    updates; a trained one normalizes training batches by their own statistics."""
    cfg = get_preset("mobilenet_v2").model
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, 32, 32, 3])
        net = Network(cfg, 2, trainable_scopes=("mobilenet_v2/conv_last", "fc1", "logits"))
        out = net(images, tf.constant(True), {g: tf.constant(1.0) for g in net.keep_groups})
        updated = {v.op.name for v, _ in out.updates}
        x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            block = sess.run(out.end_points["mobilenet_v2/block16"], {images: x})
            again = sess.run(out.end_points["mobilenet_v2/block16"], {images: x[:1]})
    assert updated == {"mobilenet_v2/conv_last/bn/moving_mean", "mobilenet_v2/conv_last/bn/moving_variance"}
    # inference mode: an image's features do not depend on the rest of the batch
    np.testing.assert_allclose(block[:1], again, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [p for p in PRESETS if p not in BACKBONE_VARIABLES])
def test_preset_builds_with_pinned_names_and_shapes(name):
    cfg = get_preset(name).model
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, cfg.input_height, cfg.input_width, cfg.channels])
        net = Network(cfg, 7)
        out = net(images, tf.constant(False), {g: tf.constant(1.0) for g in net.keep_groups})
        names = [v.op.name for v in v1.global_variables()]
        assert names == EXPECTED_VARIABLES[name]
        assert out.logits.shape.as_list() == [None, 7]
        assert list(out.end_points)[-1] == "logits"
        shapes = {v.op.name: v.shape.as_list() for v in v1.global_variables()}
        for var, shape in SHAPES.get(name, {}).items():
            assert shapes[var] == shape
        if name in KEEP_GROUPS:
            assert net.keep_groups == KEEP_GROUPS[name]


def test_second_connection_shares_weights_and_batch_norm_names():
    from conftest import tiny_config

    cfg = tiny_config().model
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 12, 12, 1])
        net = Network(cfg, 3)
        keep = {g: tf.constant(1.0) for g in net.keep_groups}
        net(x, tf.constant(True), keep)
        before = [v.op.name for v in v1.global_variables()]
        net(x, tf.constant(False), keep)
        assert [v.op.name for v in v1.global_variables()] == before
        assert "conv2_1/bn/moving_mean" in before and "conv2_1/biases" not in before


def test_keep_rate_defaults_give_deterministic_outputs():
    from conftest import tiny_config
    from graphcnn.data.pipeline import InputPipeline
    from graphcnn.model.graph import build_graph
    from conftest import synthetic_dataset

    ds = synthetic_dataset()
    cfg = tiny_config()
    with tf.Graph().as_default():
        net = Network(cfg.model, 3)
        inputs = InputPipeline(cfg.data, cfg.model, ds.train, 8, net.keep_groups, seed=0).build()
        g = build_graph(cfg, inputs, 3, 10, net)
        assert inputs.images.name == "input/images:0" and g.probabilities.name == "output/probabilities:0"
        assert sorted(t.name for t in inputs.keep_rates.values()) == ["input/keep_rate_conv:0", "input/keep_rate_fc:0"]
        # the rest of the README's naming contract (what restored checkpoints and plain-TF users look up)
        graph = tf.compat.v1.get_default_graph()
        contract = {"input/labels:0": (tf.int64, [None]), "input/is_training:0": (tf.bool, []),
                    "output/logits:0": (tf.float32, [None, 3]), "output/classes:0": (tf.int64, [None])}
        for name, (dtype, shape) in contract.items():
            tensor = graph.get_tensor_by_name(name)
            assert (tensor.dtype, tensor.shape.as_list()) == (dtype, shape), name
        by_name = {v.op.name: v for v in v1.global_variables()}
        assert by_name["input/pixel_mean"].shape.as_list() == [12, 12, 1]
        assert {"global_step", "train/learning_rate_scale", "conv1_1/weights", "conv1_1/biases",
                "fc1/weights", "logits/weights", "logits/biases"} <= set(by_name)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            x = np.random.default_rng(0).random((5, 12, 12, 1), np.float32)
            a = sess.run(g.logits, {inputs.images: x})
            b = sess.run(g.logits, {inputs.images: x})
            np.testing.assert_array_equal(a, b)
            # feeding low keep rates in training mode changes the output: the placeholders are live
            c = sess.run(g.logits, {inputs.images: x, inputs.keep_rates["fc"]: 0.3, inputs.is_training: True})
            assert not np.allclose(a, c)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_dropout_draws_no_mask_at_keep_rate_one_and_keeps_its_masks_below(dtype):
    from graphcnn.model import layers as L

    with tf.Graph().as_default():
        x = tf.ones([4, 8, 8, 16], dtype)
        keep = v1.placeholder_with_default(1.0, [], name="keep_rate")
        step = v1.placeholder_with_default(tf.constant(7, tf.int64), [])
        y = tf.cast(L.dropout(x, keep, "dropout1", seed=3, step=step), tf.float32)
        with v1.Session() as sess:
            meta = v1.RunMetadata()
            out = sess.run(y, options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE), run_metadata=meta)
            np.testing.assert_array_equal(out, np.ones(out.shape))
            ran = {n.node_name for d in meta.step_stats.dev_stats for n in d.node_stats}
            assert not [n for n in ran if "random" in n.lower()]  # evaluation: the identity branch alone
            meta = v1.RunMetadata()
            half = sess.run(y, {keep: 0.5}, options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE),
                            run_metadata=meta)
            assert [n for d in meta.step_stats.dev_stats for n in d.node_stats if "random" in n.node_name.lower()]
            assert set(np.unique(half)) == {0.0, 2.0} and 0.3 < (half == 0).mean() < 0.7
            np.testing.assert_array_equal(half, sess.run(y, {keep: 0.5}))  # keyed on (seed, step): the same mask
            assert not np.array_equal(half, sess.run(y, {keep: 0.5, step: 8}))
            # the mask drawn as before the identity branch existed: checkpoints resume onto the same masks
            key = tf.constant([3, 7], tf.int64)
            bare = tf.nn.experimental.stateless_dropout(tf.cast(x, tf.float32), rate=0.5, seed=key)
            np.testing.assert_array_equal(half, sess.run(tf.cast(tf.cast(bare, dtype), tf.float32)))


@pytest.mark.parametrize("shape", [(16, 5, 5, 3), (16, 3)])
def test_batch_norm_normalizes_with_batch_moments_and_moves_averages(shape):
    from graphcnn.model.layers import batch_norm

    x_val = np.random.default_rng(0).normal(3.0, 2.0, size=shape).astype(np.float32)
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, *shape[1:]])
        is_training = v1.placeholder(tf.bool, [])
        y, updates, _ = batch_norm(x, is_training, decay=0.9, epsilon=1e-3)
        assert y.shape.as_list() == [None, *shape[1:]]
        assign = [v1.assign_sub(var, delta) for var, delta in updates]
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            # evaluation before any update: moving mean 0, variance 1, so y = x / sqrt(1 + eps)
            np.testing.assert_allclose(sess.run(y, {x: x_val, is_training: False}), x_val / np.sqrt(1.001),
                                       rtol=1e-5)
            y_train = sess.run(y, {x: x_val, is_training: True})
            axes = tuple(range(len(shape) - 1))
            np.testing.assert_allclose(y_train.mean(axis=axes), 0.0, atol=1e-4)
            np.testing.assert_allclose(y_train.std(axis=axes), 1.0, atol=1e-3)
            sess.run(assign, {x: x_val, is_training: True})
            moving_mean_var = updates[0][0]
            assert moving_mean_var.op.name == "bn/moving_mean"
            moving_mean = sess.run(moving_mean_var)
            np.testing.assert_allclose(moving_mean, 0.1 * x_val.mean(axis=axes), rtol=1e-4)
            # an evaluation pass leaves the averages where they are
            sess.run(assign, {x: x_val, is_training: False})
            np.testing.assert_allclose(sess.run(moving_mean_var), moving_mean, rtol=1e-6)


def test_kept_evaluation_split_is_preprocessed_once_and_identical():
    """Arrays are evaluated without a tf.data iterator; a kept split is preprocessed once."""
    from conftest import synthetic_dataset, tiny_config
    from graphcnn.data.pipeline import InputPipeline

    ds = synthetic_dataset(size=10)  # 10x10 arrays for a 12x12 model: the pipeline resizes them
    cfg = tiny_config()
    with tf.Graph().as_default():
        pipeline = InputPipeline(cfg.data, cfg.model, ds.train, 8, ("fc",), seed=0)
        pipeline.build()
        with v1.Session() as sess:
            streamed = list(pipeline.eval_batches(sess, ds.validation))
            first = list(pipeline.eval_batches(sess, ds.validation, keep=True))
            runs = []
            real_run = sess.run
            sess.run = lambda *a, **k: runs.append(a) or real_run(*a, **k)
            second = list(pipeline.eval_batches(sess, ds.validation, keep=True))
            assert runs == []  # served from the kept arrays: no iterator, no session run
            other = list(pipeline.eval_batches(sess, ds.test))
            assert len(runs) == len(other)  # not kept: one preprocessing run per batch...
            list(pipeline.eval_batches(sess, ds.test))
            assert len(runs) == 2 * len(other)  # ...every time
    assert [x.shape for x, _ in second] == [(8, 12, 12, 1)] * (len(ds.validation) // 8) + (
        [(len(ds.validation) % 8, 12, 12, 1)] if len(ds.validation) % 8 else [])
    assert len(streamed) == len(first) == len(second)
    for a, b, c in zip(streamed, first, second):
        for x in (a, b):
            np.testing.assert_array_equal(x[0], c[0])
            np.testing.assert_array_equal(x[1], c[1])


def test_activation_before_a_max_pool_runs_after_it_with_the_same_values_and_gradients():
    """conv -> relu -> max pool is built as conv -> max pool -> relu: a quarter of the relu work."""
    from conftest import tiny_config
    from graphcnn.config import LayerConfig
    from graphcnn.model.network import _activation_commutes_with

    cfg = tiny_config()  # conv1_1 -> pool1 -> conv2_1 (batch norm) -> pool2 -> ...
    rng = np.random.default_rng(0)
    with tf.Graph().as_default() as graph:
        net = Network(cfg.model, 3)
        x = tf.constant(rng.random((4, 12, 12, 1), np.float32))
        out = net(x, tf.constant(True), {g: tf.constant(1.0) for g in net.keep_groups})
        ends = out.end_points
        assert ends["conv1_1"].op.name == "conv1_1/Relu" and ends["pool1"].op.name == "pool1/Relu"
        assert graph.get_operation_by_name("pool1/MaxPool2d").inputs[0].op.type in ("BiasAdd", "Conv2D")
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for conv, pool in (("conv1_1", "pool1"), ("conv2_1", "pool2")):
                pre = ends[conv].op.inputs[0]  # the conv's output before its activation
                reference = tf.nn.max_pool2d(tf.nn.relu(pre), 2, 2, "SAME")
                weights = tf.constant(rng.normal(size=reference.shape.as_list()).astype(np.float32))
                g_net = sess.run(tf.gradients(tf.reduce_sum(weights * ends[pool]), pre)[0])
                g_ref = sess.run(tf.gradients(tf.reduce_sum(weights * reference), pre)[0])
                np.testing.assert_array_equal(*sess.run([ends[pool], reference]))
                np.testing.assert_array_equal(g_net, g_ref)
                assert np.count_nonzero(g_net) > 0
    relu = LayerConfig(type="conv", filters=4)
    assert _activation_commutes_with(relu, LayerConfig(type="pool"))
    assert not _activation_commutes_with(relu, LayerConfig(type="pool", pool="avg"))
    tanh = LayerConfig(type="conv", filters=4, activation="tanh")
    assert not _activation_commutes_with(tanh, LayerConfig(type="pool"))
    assert not _activation_commutes_with(relu, LayerConfig(type="dropout"))


def test_registry_getters_list_the_choices():
    from graphcnn.config import TrainConfig
    from graphcnn.model import layers as L
    from graphcnn.model.optimizers import get_optimizer
    from graphcnn.registry import UnknownChoiceError

    assert L.get_activation("linear") is None and L.get_activation("elu") is tf.nn.elu
    with pytest.raises(UnknownChoiceError, match="unknown activation 'gelu'; choices: relu, elu, leaky_relu, tanh, "
                                                 "sigmoid, linear$"):
        L.get_activation("gelu")
    with pytest.raises(UnknownChoiceError,
                       match="unknown initializer 'orthogonal'; choices: truncated_normal, glorot, he$"):
        L.get_initializer("orthogonal")
    with tf.Graph().as_default():
        with pytest.raises(UnknownChoiceError, match="unknown pool 'min'; choices: max, avg$"):
            L.pool2d(tf.zeros([1, 4, 4, 1]), "pool1", kind="min")
        with pytest.raises(UnknownChoiceError,
                           match="unknown optimizer 'adamw'; choices: adam, sgd, momentum, rmsprop$"):
            get_optimizer(TrainConfig(optimizer="adamw"), 0.1)


def test_unknown_layer_type_lists_the_registered_types():
    import dataclasses

    from conftest import tiny_config
    from graphcnn.model.network import LAYERS
    from graphcnn.registry import UnknownChoiceError

    model = tiny_config().model
    model = dataclasses.replace(model, layers=(dataclasses.replace(model.layers[0], type="conv3d"),))
    assert tuple(LAYERS) == ("conv", "pool", "dense", "dropout", "batch_norm", "flatten", "global_avg_pool")
    with tf.Graph().as_default():
        net = Network(model, 3)  # a library caller that skipped config.validate
        with pytest.raises(UnknownChoiceError, match=f"unknown layer type 'conv3d'; choices: {', '.join(LAYERS)}$"):
            net(v1.placeholder(tf.float32, [None, 12, 12, 1]), tf.constant(False), {})


@pytest.mark.parametrize("name", ["truncated_normal", "he"])
def test_truncated_normal_initializers(name, monkeypatch):
    """Under BIG_TRUNCATED_NORMAL values the initializers draw what TensorFlow's own would (the
    presets' seeds keep their numbers); at or over it the inverse-CDF route draws the same
    distribution: N(0, s^2) cut at +-2 s, s = 0.1 or He's sqrt(2 / fan_in) / 0.8796."""
    from graphcnn.model import layers as L

    reference = {"truncated_normal": v1.truncated_normal_initializer(stddev=0.1),
                 "he": v1.variance_scaling_initializer(scale=2.0, mode="fan_in", distribution="truncated_normal")}

    def draw(initializer, shape):
        with tf.Graph().as_default():
            v1.set_random_seed(3)
            w = v1.get_variable("w", shape, initializer=initializer)
            with v1.Session() as sess:
                sess.run(v1.global_variables_initializer())
                return sess.run(w)

    small = (3, 3, 8, 16)
    np.testing.assert_array_equal(draw(L.get_initializer(name), small), draw(reference[name], small))
    monkeypatch.setattr(L, "BIG_TRUNCATED_NORMAL", 1000)
    big = (3, 3, 32, 64)  # 18,432 values; fan_in 288
    fast = draw(L.get_initializer(name), big)
    assert not np.array_equal(fast, draw(reference[name], big))  # the other route
    s = 0.1 if name == "truncated_normal" else np.sqrt(2.0 / 288) / 0.87962566103423978
    assert np.abs(fast).max() <= 2 * s * (1 + 1e-6) and np.abs(fast).max() > 1.95 * s
    assert abs(fast.mean()) < 0.02 * s
    assert fast.std() == pytest.approx(0.87962566 * s, rel=0.02)  # a cut N(0, 1) has stddev 0.8796
    assert np.mean(np.abs(fast) < s) == pytest.approx(0.6827 / 0.9545, abs=0.01)  # the share within 1 s


def test_rmsprop_computes_what_keras_rmsprop_does():
    """TF1's RMSProp started its mean square at 1 (small gradients held back for about a hundred
    steps, then ten times Keras's steps) and took train.momentum's 0.9: now Keras's numbers, on
    TF1's op and slot names."""
    from graphcnn.config import TrainConfig
    from graphcnn.model.optimizers import get_optimizer

    keras = pytest.importorskip("keras")
    gradient = np.array([0.5, -0.01, 2.0], np.float32)
    with tf.Graph().as_default():
        w = v1.get_variable("w", initializer=np.zeros(3, np.float32))
        step = get_optimizer(TrainConfig(optimizer="rmsprop"), 1e-3).apply_gradients([(tf.constant(gradient), w)])
        assert [v.op.name for v in v1.global_variables()] == ["w", "w/RMSProp", "w/RMSProp_1"]
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(5):
                sess.run(step)
            mine = sess.run(w)
    theirs = keras.Variable(np.zeros(3, np.float32))
    optimizer = keras.optimizers.RMSprop(1e-3)
    for _ in range(5):
        optimizer.apply_gradients([(tf.constant(gradient), theirs)])
    np.testing.assert_allclose(mine, np.asarray(theirs), rtol=1e-6)
    assert abs(mine[1]) > 0.01  # the small gradient moves from the first steps
