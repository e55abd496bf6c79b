"""Tests for graphcnn.train.finetune and graphcnn.model.scopes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from graphcnn.checkpoints import resolve_checkpoint
from graphcnn.model.scopes import filter_variables, scope_matches, trainable_variables
from graphcnn.train.finetune import build_init_from_checkpoint, training_state_names


def make_variables(classes: int, extra: bool = False, training: bool = False):
    """conv1/{weights,biases} and logits/{weights,biases}; logits has ``classes`` outputs.

    extra: also a conv2 layer that no checkpoint has. training: also training state as
    graphcnn builds it (global step, train/learning_rate_scale, Adam slots); then the
    Adam step op is returned.
    """
    init = tf.compat.v1.random_normal_initializer(seed=1)
    with tf.compat.v1.variable_scope("conv1"):
        tf.compat.v1.get_variable("weights", [3, 3, 1, 2], initializer=init)
        tf.compat.v1.get_variable("biases", [2], initializer=init)
    with tf.compat.v1.variable_scope("logits"):
        tf.compat.v1.get_variable("weights", [8, classes], initializer=tf.compat.v1.constant_initializer(0.5))
        tf.compat.v1.get_variable("biases", [classes], initializer=tf.compat.v1.zeros_initializer())
    if extra:
        with tf.compat.v1.variable_scope("conv2"):
            tf.compat.v1.get_variable("weights", [3, 3, 2, 2], initializer=tf.compat.v1.zeros_initializer())
    if training:
        global_step = tf.compat.v1.train.get_or_create_global_step()
        with tf.compat.v1.variable_scope("train"):
            scale = tf.compat.v1.get_variable("learning_rate_scale", [], initializer=tf.compat.v1.ones_initializer(),
                                              trainable=False)
        loss = tf.add_n([tf.reduce_sum(tf.square(v)) for v in tf.compat.v1.trainable_variables()])
        with tf.name_scope("train"):
            optimizer = tf.compat.v1.train.AdamOptimizer(0.1 * scale)
            return optimizer.minimize(loss, global_step=global_step)
    return None


@pytest.fixture
def saved(tmp_path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """A checkpoint of a 10-class graph saved in <run>/checkpoints; its prefix and values."""
    ckpt_dir = tmp_path / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    with tf.Graph().as_default():
        train_op = make_variables(10, training=True)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(train_op)
            scale = next(v for v in tf.compat.v1.global_variables() if v.op.name == "train/learning_rate_scale")
            sess.run(scale.assign(0.25))
            values = {v.op.name: sess.run(v) for v in tf.compat.v1.global_variables()}
            prefix = saver.save(sess, str(ckpt_dir / "model.ckpt"), global_step=7)
    return prefix, values


def values_after_init(checkpoint: str, classes: int, **kwargs):
    with tf.Graph().as_default():
        make_variables(classes, extra=True, training=True)
        variables = tf.compat.v1.global_variables()
        result = build_init_from_checkpoint(checkpoint, variables, **kwargs)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            result.init_fn(sess)
            values = {v.op.name: sess.run(v) for v in variables}
    return result, values


def test_mismatched_shape_error_names_each_variable_and_both_shapes(saved):
    prefix, _ = saved
    with tf.Graph().as_default():
        make_variables(3)
        with pytest.raises(ValueError) as err:
            build_init_from_checkpoint(prefix, tf.compat.v1.global_variables(), exclude_scopes=(),
                                       skip_mismatched=False)
    message = str(err.value)
    assert "logits/weights: graph [8, 3], checkpoint [8, 10]" in message
    assert "logits/biases: graph [3], checkpoint [10]" in message
    assert "--exclude-scopes logits" in message and "train.skip_mismatched=true" in message
    assert "conv1" not in message


def test_exclude_scopes_restores_conv1_exactly_and_keeps_logits_init(saved):
    prefix, saved_values = saved
    result, values = values_after_init(prefix, 3, exclude_scopes=("logits",))
    assert result.restored == ["conv1/weights", "conv1/biases"]
    assert result.excluded == ["logits/weights", "logits/biases"]
    assert result.missing_in_checkpoint == ["conv2/weights"]
    assert result.mismatched == []
    assert set(result.training_state) == {
        # as graph.py names them
        "global_step", "train/learning_rate_scale", "train_1/beta1_power", "train_1/beta2_power",
        *(f"{v}/Adam{s}" for v in ("conv1/weights", "conv1/biases", "logits/weights", "logits/biases", "conv2/weights")
          for s in ("", "_1")),
    }
    np.testing.assert_array_equal(values["conv1/weights"], saved_values["conv1/weights"])
    np.testing.assert_array_equal(values["conv1/biases"], saved_values["conv1/biases"])
    np.testing.assert_array_equal(values["logits/weights"], np.full((8, 3), 0.5, np.float32))
    np.testing.assert_array_equal(values["logits/biases"], np.zeros(3, np.float32))
    # training state starts afresh although the checkpoint has it
    assert saved_values["global_step"] == 1 and values["global_step"] == 0
    assert saved_values["train/learning_rate_scale"] == 0.25 and values["train/learning_rate_scale"] == 1.0
    assert np.abs(saved_values["conv1/weights/Adam"]).max() > 0
    np.testing.assert_array_equal(values["conv1/weights/Adam"], 0.0)
    # a scope that matches nothing (logit for logits) was accepted, and restored the old head
    with pytest.raises(ValueError, match=r"^train.exclude_scopes: 'logit' matches no variable of the model; "
                                         r"top-level scopes are: conv1, logits"):
        values_after_init(prefix, 3, exclude_scopes=("logit",))


def test_skip_mismatched_skips(saved):
    prefix, saved_values = saved
    result, values = values_after_init(prefix, 3, skip_mismatched=True)
    assert result.restored == ["conv1/weights", "conv1/biases"]
    assert [(m.name, m.graph_shape, m.checkpoint_shape) for m in result.mismatched] == [
        ("logits/weights", (8, 3), (8, 10)), ("logits/biases", (3,), (10,)),
    ]
    np.testing.assert_array_equal(values["conv1/weights"], saved_values["conv1/weights"])
    np.testing.assert_array_equal(values["logits/weights"], np.full((8, 3), 0.5, np.float32))


def test_same_shapes_restore_everything(saved):
    prefix, saved_values = saved
    result, values = values_after_init(prefix, 10)
    assert result.restored == ["conv1/weights", "conv1/biases", "logits/weights", "logits/biases"]
    for name in result.restored:
        np.testing.assert_array_equal(values[name], saved_values[name])


def test_checkpoint_locations(saved):
    prefix, _ = saved
    ckpt_dir = os.path.dirname(prefix)
    run_dir = os.path.dirname(ckpt_dir)
    assert str(resolve_checkpoint(prefix)) == prefix
    assert str(resolve_checkpoint(prefix + ".index")) == prefix
    assert str(resolve_checkpoint(ckpt_dir)) == prefix
    assert str(resolve_checkpoint(run_dir)) == prefix


def test_missing_checkpoint_names_path(tmp_path):
    missing = str(tmp_path / "nope" / "model.ckpt-3")
    with tf.Graph().as_default():
        make_variables(3)
        with pytest.raises(FileNotFoundError, match="nope/model.ckpt-3"):
            build_init_from_checkpoint(missing, tf.compat.v1.global_variables(), (), False)
        with pytest.raises(FileNotFoundError, match=str(tmp_path)):
            build_init_from_checkpoint(str(tmp_path), tf.compat.v1.global_variables(), (), False)


def test_nothing_to_restore_is_an_error(saved):
    prefix, _ = saved
    with tf.Graph().as_default():
        make_variables(10)
        with pytest.raises(ValueError, match="no variable"):
            build_init_from_checkpoint(prefix, tf.compat.v1.global_variables(), exclude_scopes=("conv1", "logits"))


def test_scope_matching_boundaries():
    assert scope_matches("logits/weights", "logits")
    assert scope_matches("logits/weights", "logits/")
    assert scope_matches("logits", "logits")
    assert scope_matches("logits/weights", "logits/weights")
    assert not scope_matches("logits2/weights", "logits")
    assert not scope_matches("logits/weights", "logits/w")
    assert not scope_matches("model/logits/weights", "logits")
    assert scope_matches("model/logits/weights", "model/logits")
    assert not scope_matches("logits/weights", "")


def test_filter_variables():
    with tf.Graph().as_default():
        make_variables(3)
        tf.compat.v1.get_variable("logits2/weights", [1])
        variables = tf.compat.v1.global_variables()
        names = lambda vs: [v.op.name for v in vs]  # noqa: E731
        assert names(filter_variables(variables)) == names(variables)
        assert names(filter_variables(variables, include_scopes=("logits",))) == ["logits/weights", "logits/biases"]
        assert names(filter_variables(variables, exclude_scopes=("logits", "conv1/biases"))) == [
            "conv1/weights", "logits2/weights",
        ]
        assert names(filter_variables(variables, ("conv1", "logits2"), ("conv1/weights",))) == [
            "conv1/biases", "logits2/weights",
        ]


def test_trainable_variables():
    with tf.Graph().as_default():
        make_variables(3)
        variables = tf.compat.v1.trainable_variables()
        assert trainable_variables(variables, ()) == variables
        assert [v.op.name for v in trainable_variables(variables, ("logits",))] == ["logits/weights", "logits/biases"]
        with pytest.raises(ValueError, match="'fc9'.*conv1, logits"):
            trainable_variables(variables, ("logits", "fc9"))


def test_training_state_names_rules():
    with tf.Graph().as_default():
        make_variables(3)
        tf.compat.v1.get_variable("conv1/weights/Momentum", [3, 3, 1, 2])
        tf.compat.v1.get_variable("trainer/weights", [1])  # not the train scope
        tf.compat.v1.get_variable("head/beta1_power", [])
        state = training_state_names(tf.compat.v1.global_variables())
    assert state == {"conv1/weights/Momentum", "head/beta1_power"}


def test_the_mean_image_is_never_taken_from_another_run(tmp_path):
    """input/pixel_mean is the new run's own (its data; here another input size): fine-tuning
    leaves it out, where a shape check would otherwise refuse the run."""
    prefix = str(tmp_path / "model.ckpt")
    with tf.Graph().as_default():
        make_variables(3)
        tf.compat.v1.get_variable("input/pixel_mean", [32, 32, 3], initializer=tf.compat.v1.ones_initializer())
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(sess, prefix)
    with tf.Graph().as_default():
        make_variables(3)
        tf.compat.v1.get_variable("input/pixel_mean", [40, 40, 3], initializer=tf.compat.v1.zeros_initializer())
        result = build_init_from_checkpoint(prefix, tf.compat.v1.global_variables())
    assert "input/pixel_mean" in result.training_state and not result.mismatched
    assert result.restored == ["conv1/weights", "conv1/biases", "logits/weights", "logits/biases"]
