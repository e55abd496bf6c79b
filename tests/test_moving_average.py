"""train.moving_average_decay: the weights' exponential moving averages, and where they are used."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn.config import ConfigError, EarlyStoppingConfig, validate
from graphcnn.data.pipeline import InputPipeline
from graphcnn.model.graph import build_graph
from graphcnn.predict import Predictor
from graphcnn.run_dir import RunDir
from graphcnn.train.trainer import train

v1 = tf.compat.v1
SUFFIX = "/ExponentialMovingAverage"


def test_the_decay_is_checked():
    with pytest.raises(ConfigError, match="train.moving_average_decay"):
        validate(tiny_config(moving_average_decay=1.0))


def test_shadows_follow_the_weights_and_swap_exchanges_them():
    cfg = tiny_config(moving_average_decay=0.9, precision="float32")
    data = synthetic_dataset()
    with tf.Graph().as_default() as graph:
        pipeline = InputPipeline(cfg.data, cfg.model, data.train, 8, ("conv", "fc"), seed=0)
        g = build_graph(cfg, pipeline.build(), 3, 20)
        weights = [v for v, _ in g.averages]
        assert [s.op.name for _, s in g.averages] == [v.op.name + SUFFIX for v in weights]
        assert "conv1_1/weights" in [v.op.name for v in weights]  # the trainable variables, batch-norm stats not
        assert not any("moving_mean" in v.op.name for v in weights)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            pipeline.initialize(sess)
            start = sess.run(weights)
            assert all(np.array_equal(a, b) for a, b in zip(start, sess.run([s for _, s in g.averages])))
            graph.finalize()
            sess.run(g.train_op, {g.inputs.is_training: True})
            new, shadows = sess.run(weights), sess.run([s for _, s in g.averages])
            # shadow = a * start + (1 - a) * new, one a (the decay of this update) for every element
            w0, w1, s1 = start[0].ravel(), new[0].ravel(), shadows[0].ravel()
            moved = np.abs(w1 - w0) > 1e-4
            a = (s1[moved] - w1[moved]) / (w0[moved] - w1[moved])
            assert 0 < a.mean() <= 0.9 and np.allclose(a, a.mean(), atol=1e-3)
            sess.run(g.swap_averages)
            np.testing.assert_array_equal(sess.run(weights[0]), shadows[0])
            np.testing.assert_array_equal(sess.run(g.averages[0][1]), new[0])
            sess.run(g.swap_averages)
            np.testing.assert_array_equal(sess.run(weights[0]), new[0])


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    cfg = tiny_config(epochs=3, moving_average_decay=0.9, precision="float32", checkpoints_to_keep=5,
                      early_stopping=EarlyStoppingConfig(restore_best=True))
    run = RunDir.create(tmp_path_factory.mktemp("logs"), "ema")
    result = train(cfg, run, progress=False, dataset=synthetic_dataset())
    return run, result


def test_best_holds_the_averages_that_validation_measured(averaged_run):
    run, result = averaged_run
    step = result.best_step
    latest = tf.train.load_checkpoint(str(run.checkpoints / f"model.ckpt-{step}"))
    best = tf.train.load_checkpoint(str(run.best / f"model.ckpt-{step}"))
    names = [n for n in best.get_variable_to_shape_map() if n.endswith(("weights", "biases", "gamma", "beta"))
             and not n.startswith("train/")]
    assert "conv1_1/weights" in names and not any(n.endswith(SUFFIX) for n in best.get_variable_to_shape_map())
    for name in names:
        # best/ keeps the averages under the weights' own names; checkpoints/ keeps both
        np.testing.assert_array_equal(best.get_tensor(name), latest.get_tensor(name + SUFFIX))
    assert not np.array_equal(latest.get_tensor("conv1_1/weights"), latest.get_tensor("conv1_1/weights" + SUFFIX))


def test_predicting_from_either_folder_uses_the_averages(averaged_run):
    run, result = averaged_run
    test = synthetic_dataset().test
    with Predictor(run.checkpoints / f"model.ckpt-{result.best_step}") as p:
        from_latest = p.probabilities_for(p.preprocess_arrays(test.images))
    with Predictor(run.root) as p:
        from_best = p.probabilities_for(p.preprocess_arrays(test.images))
    np.testing.assert_allclose(from_latest, from_best, rtol=1e-5, atol=1e-6)
    # the final evaluation restored best/: the same probabilities
    np.testing.assert_allclose(from_best, result.test.probabilities, rtol=1e-5, atol=1e-6)


def test_without_best_the_final_evaluation_swaps_in_the_averages(tmp_path):
    cfg = tiny_config(epochs=2, moving_average_decay=0.9, precision="float32",
                      early_stopping=EarlyStoppingConfig(restore_best=False))
    result = train(cfg, RunDir.create(tmp_path, "r"), progress=False, dataset=synthetic_dataset())
    with Predictor(result.run.root, prefer_best=False) as p:  # checkpoints/: the averages, by inference.meta
        expected = p.probabilities_for(p.preprocess_arrays(synthetic_dataset().test.images))
    np.testing.assert_allclose(result.test.probabilities, expected, rtol=1e-5, atol=1e-6)


def test_fine_tuning_starts_the_averages_from_the_restored_weights(averaged_run, tmp_path):
    run, result = averaged_run
    cfg = tiny_config(max_steps=1, moving_average_decay=0.999, precision="float32", init_from=str(run.best),
                      keep_rates={"conv": 1.0, "fc": 1.0})
    train(cfg, (new := RunDir.create(tmp_path, "tuned")), progress=False, dataset=synthetic_dataset())
    restored = tf.train.load_checkpoint(str(run.best / f"model.ckpt-{result.best_step}"))
    after = tf.train.load_checkpoint(str(new.checkpoints / "model.ckpt-1"))
    w0, w1 = restored.get_tensor("conv1_1/weights").ravel(), after.get_tensor("conv1_1/weights").ravel()
    s1 = after.get_tensor("conv1_1/weights" + SUFFIX).ravel()
    moved = np.abs(w1 - w0) > 1e-4
    a = (s1[moved] - w1[moved]) / (w0[moved] - w1[moved])
    # one update from the restored weights (an average started from the random initial values would not
    # be a mix of these two)
    assert moved.any() and 0 < a.mean() < 1 and np.allclose(a, a.mean(), atol=1e-3)


def test_every_checkpoint_of_a_staged_run_still_predicts(tmp_path):
    """Stage 2 trains a layer stage 1 froze: stage 1's checkpoints have no average of it, so
    checkpoints/inference.meta reads that layer as itself (the others from their averages)
    and every checkpoint of the run restores."""
    data = synthetic_dataset()
    stage1 = tiny_config(epochs=1, moving_average_decay=0.9, precision="float32", checkpoints_to_keep=5,
                         trainable_scopes=("fc1", "logits"))
    run = RunDir.create(tmp_path, "staged")
    first = train(stage1, run, progress=False, dataset=data)
    stage2 = tiny_config(epochs=2, moving_average_decay=0.9, precision="float32", checkpoints_to_keep=5,
                         trainable_scopes=("conv2_1", "fc1", "logits"))
    second = train(stage2, run, resume=True, progress=False, dataset=data, new_stage=True)
    for step in (first.global_step, second.global_step):
        with Predictor(run.checkpoints / f"model.ckpt-{step}") as p:
            probabilities = p.probabilities_for(p.preprocess_arrays(data.test.images))
        assert probabilities.shape == (len(data.test), 3) and np.isfinite(probabilities).all()
    # stage 1's checkpoint predicts as its own validation measured it: fc1 and logits from their averages
    with Predictor(run.checkpoints / f"model.ckpt-{first.global_step}") as p:
        probabilities = p.probabilities_for(p.preprocess_arrays(data.validation.images))
    recorded = [r for r in run.read_metrics() if r.get("split") == "validation" and r["step"] == first.global_step]
    assert recorded and np.mean(probabilities.argmax(1) == data.validation.labels) == pytest.approx(
        recorded[0]["accuracy"])
