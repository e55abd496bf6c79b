"""Early stopping, best restore, NaN stop, resume keeping the learning rate, fine-tuning."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn.config import EarlyStoppingConfig, ScheduleConfig
from graphcnn.predict import Predictor
from graphcnn.run_dir import RunDir
from graphcnn.train.trainer import train

v1 = tf.compat.v1


def checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_early_stopping_stops_and_final_evaluation_uses_best(tmp_path, caplog):
    # min_delta larger than any possible change: only the first evaluation counts as best
    # float32: the check below is exact agreement with the (float32) inference graph
    cfg = tiny_config(epochs=10, early_stopping=EarlyStoppingConfig(monitor="loss", patience=2, min_delta=100.0),
                      precision="float32")
    run = RunDir.create(tmp_path, "early")
    with caplog.at_level("INFO", logger="graphcnn"):
        result = train(cfg, run, progress=False, dataset=synthetic_dataset())
    assert result.stopped_early and result.global_step == 27
    assert "restored the best checkpoint (step 9" in caplog.text
    with Predictor(run.root) as p:  # best checkpoint
        probs = p.probabilities_for(p.preprocess_arrays(synthetic_dataset().test.images))
    np.testing.assert_allclose(probs, result.test.probabilities, rtol=1e-5, atol=1e-6)
    assert json.loads(run.results.read_text())["evaluated_step"] == 9

    # resumed once it has stopped: no further step, no validation, the same best (it once
    # trained one more step, validated it, and could move best/)
    metrics = run.metrics.read_text()
    with caplog.at_level("INFO", logger="graphcnn"):
        again = train(cfg, run, resume=True, progress=False, dataset=synthetic_dataset())
    assert again.global_step == 27 and again.stopped_early and again.best_step == 9
    assert "early stopping had ended this run" in caplog.text
    assert [line for line in run.metrics.read_text().splitlines() if '"validation"' in line] == [
        line for line in metrics.splitlines() if '"validation"' in line]


@pytest.mark.parametrize("snapshots", [False, True], ids=["plain", "histograms_every_step"])
def test_nan_loss_stops_before_the_update_and_leaves_finite_weights(tmp_path, snapshots):
    """With histograms of the gradients and activations fetched by the same step, the NaN check
    still names the error (their op refused NaN values first: exit 1, no checkpoint)."""
    cfg = tiny_config(epochs=5, optimizer="sgd", learning_rate=1e15)
    if snapshots:
        cfg = dataclasses.replace(cfg, log=dataclasses.replace(cfg.log, histograms_every=1, gradients_every=1,
                                                               activations_every=1))
    run = RunDir.create(tmp_path, "nan")
    with pytest.raises(FloatingPointError, match="NaN or Inf.*not applied"):
        train(cfg, run, progress=False, dataset=synthetic_dataset())
    latest = tf.train.latest_checkpoint(str(run.checkpoints))
    assert latest is not None
    for name, value in checkpoint_values(latest).items():
        assert np.all(np.isfinite(value)), name


def test_nan_loss_without_the_guard_still_stops_and_says_nan(tmp_path):
    cfg = tiny_config(epochs=5, optimizer="sgd", learning_rate=1e15, check_numerics=False)
    with pytest.raises(FloatingPointError, match="the loss is NaN.*check_numerics is off"):
        train(cfg, RunDir.create(tmp_path, "nan"), progress=False, dataset=synthetic_dataset())


def test_resume_keeps_learning_rate_schedule_and_scale(tmp_path):
    schedule = ScheduleConfig(name="exponential", decay_steps=9, decay_rate=0.5)
    cfg = tiny_config(epochs=1, schedule=schedule)
    run = RunDir.create(tmp_path, "lr")
    train(cfg, run, progress=False, dataset=synthetic_dataset())
    assert checkpoint_values(run.checkpoints / "model.ckpt-9")["train/learning_rate_scale"] == 1.0
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))
    longer.save(run.config)
    train(longer, run, resume=True, progress=False, dataset=synthetic_dataset())
    lrs = {}
    for f in sorted(run.train_logs.glob("events.out.tfevents.*")):
        for e in v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                if v.tag == "learning_rate":
                    lrs[e.step] = v.simple_value
    # logged after step s's update, i.e. the rate of global step s - 1: 0.01 * 0.5 ** ((s - 1) / 9)
    for step in (2, 10, 12, 18):
        assert lrs[step] == pytest.approx(0.01 * 0.5 ** ((step - 1) / 9), rel=1e-5), step


def test_fine_tune_excluded_and_frozen_scopes(tmp_path):
    base = RunDir.create(tmp_path, "base")
    train(tiny_config(epochs=1), base, progress=False, dataset=synthetic_dataset(num_classes=3))
    base_values = checkpoint_values(tf.train.latest_checkpoint(str(base.checkpoints)))

    four = synthetic_dataset(num_classes=4)
    bad = tiny_config(epochs=1, init_from=str(base.root))
    with pytest.raises(ValueError, match=r"logits/weights: graph \[16, 4\], checkpoint \[16, 3\]"):
        train(bad, RunDir.create(tmp_path, "bad"), progress=False, dataset=four)

    cfg = tiny_config(epochs=1, init_from=str(base.root), exclude_scopes=("logits",),
                      trainable_scopes=("fc1", "logits"))
    tuned = RunDir.create(tmp_path, "tuned")
    train(cfg, tuned, progress=False, dataset=four)
    tuned_values = checkpoint_values(tf.train.latest_checkpoint(str(tuned.checkpoints)))
    for name in ("conv1_1/weights", "conv1_1/biases", "conv2_1/weights", "conv2_1/bn/gamma"):
        np.testing.assert_array_equal(tuned_values[name], base_values[name])  # frozen, bit-identical
    assert not np.array_equal(tuned_values["fc1/weights"], base_values["fc1/weights"])  # trained
    assert tuned_values["logits/weights"].shape == (16, 4)


def test_skipped_mismatched_variables_are_named(tmp_path, caplog):
    """train.skip_mismatched left a wider head at its initial values without a word."""
    base = RunDir.create(tmp_path, "base")
    train(tiny_config(epochs=1), base, progress=False, dataset=synthetic_dataset(num_classes=3))
    cfg = tiny_config(epochs=1, init_from=str(base.root), skip_mismatched=True)
    with caplog.at_level("INFO", logger="graphcnn"):
        train(cfg, RunDir.create(tmp_path, "four"), progress=False, dataset=synthetic_dataset(num_classes=4))
    assert "other shape: 2)" in caplog.text
    (warning,) = [r.getMessage() for r in caplog.records if "keep their initial values" in r.getMessage()]
    assert "logits/weights [16, 4], checkpoint [16, 3]; logits/biases [4], checkpoint [3]" in warning
