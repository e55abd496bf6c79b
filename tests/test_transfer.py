"""Transfer learning in two stages on a pretrained backbone (vgg16, weights from a seeded Keras model).

Stage 1 trains the head on the frozen backbone; stage 2 (``new_stage``) unfreezes the top
block at a lower learning rate, in the same run directory and TensorBoard run.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from graphcnn.config import LogConfig, validate
from graphcnn.data.dataset import Dataset, Split
from graphcnn.presets import get_preset
from graphcnn.run_dir import RunDir
from graphcnn.tensorboard.events import read_scalars
from graphcnn.train.trainer import train

from conftest import synthetic_dataset

keras = pytest.importorskip("keras")

HEAD = ("fc1", "logits")


def rgb(dataset: Dataset, size: int) -> Dataset:
    def convert(split: Split) -> Split:
        images = tf.image.resize(np.repeat(split.images, 3, axis=-1), [size, size]).numpy()
        return Split(labels=split.labels, images=images.round().clip(0, 255).astype(np.uint8))
    return dataclasses.replace(dataset, train=convert(dataset.train), validation=convert(dataset.validation),
                               test=convert(dataset.test))


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("keras") / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path, {f"{layer.name}/{w.path.split('/')[-1]}": np.asarray(w) for layer in model.layers
                  for w in layer.weights}


def stage_config(keras_path, **train):
    config = get_preset("vgg16")
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, input_height=32, input_width=32),
        train=dataclasses.replace(config.train, batch_size=8, init_from=f"keras:{keras_path}", **train),
        log=LogConfig(scalars_every=2, histograms_every=0, filters_every=0, gradients_every=0, activations_every=0,
                      feature_maps_every=0, trace_every=0, projector_images=0, pr_curves=False))
    return validate(config)


def weights(run: RunDir) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(run.checkpoints))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "Adam" not in name and "power" not in name}


@pytest.mark.parametrize("how", ["next_stage", "killed_before_its_first_checkpoint_then_resumed"])
def test_two_stages_train_only_their_scopes_in_one_run(tmp_path, keras_file, how):
    path, keras_weights = keras_file
    data = rgb(synthetic_dataset(n_per_class=8, num_classes=2), 32)
    run = RunDir.create(tmp_path, "transfer")
    stage1 = stage_config(path, epochs=1, trainable_scopes=HEAD)
    train(stage1, run, progress=False, dataset=data)
    after1 = weights(run)
    # stage 1: the backbone is exactly the Keras file's, the head moved
    np.testing.assert_array_equal(after1["vgg16/conv1/conv1_1/weights"], keras_weights["block1_conv1/kernel"])
    np.testing.assert_array_equal(after1["vgg16/conv5/conv5_3/biases"], keras_weights["block5_conv3/bias"])
    step1 = int(after1["global_step"])
    assert step1 > 0
    # the head has no conv layer: the Grad-CAM view is the backbone's last block's
    if how == "next_stage":
        from graphcnn.tensorboard.events import read_images
        from graphcnn.train.view_hooks import last_block
        assert "gradcam" in read_images(run.validation_logs)
        with tf.Graph().as_default():
            from graphcnn.model.network import Network
            net = Network(stage1.model, 2)
            out = net(tf.zeros([1, 32, 32, 3]), tf.constant(False), {g: tf.constant(1.0) for g in net.keep_groups})
            assert last_block(out.end_points) == "vgg16/conv5/conv5_3"

    stage2 = dataclasses.replace(stage1, train=dataclasses.replace(
        stage1.train, epochs=2, learning_rate=1e-4, trainable_scopes=("vgg16/conv5", *HEAD)))
    if how == "next_stage":
        result = train(stage2, run, resume=True, progress=False, dataset=data, new_stage=True)
    else:  # stage 2 began (its config in force), then a kill: a plain --resume must go on from stage 1's checkpoint
        run.start_stage(stage2)
        result = train(stage2, run, resume=True, progress=False, dataset=data)
    after2 = weights(run)
    assert result.global_step == 2 * step1  # the step goes on: one more epoch
    for name, value in after2.items():
        if name == "global_step" or "moving" in name:
            continue
        changed = not np.array_equal(value, after1[name])
        unfrozen = name.startswith(("vgg16/conv5/", "fc1/", "logits/"))
        assert changed == unfrozen, name
    # the run keeps both configs, and TensorBoard shows where stage 2 began
    assert json.loads(run.stage_config(1).read_text())["train"]["trainable_scopes"] == list(HEAD)
    assert json.loads(run.config.read_text())["train"]["learning_rate"] == 1e-4
    stage_scalars = read_scalars(run.train_logs)["stage"]
    assert stage_scalars[0][0] > step1 and {v for _, v in stage_scalars} == {2.0}
    texts = [(e.step, v.tensor.string_val[0].decode()) for f in sorted(run.train_logs.glob("events.*"))
             for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value if v.tag == "stage/begins"]
    assert texts == [(step1 + 1, f"stage 2 from step {step1 + 1}: trains vgg16/conv5, fc1, logits at learning "
                                 f"rate 0.0001, until epoch 2 (step {2 * step1})")]
    # resumed once it ended, the stage takes no step and marks its beginning no second time
    assert train(stage2, run, resume=True, progress=False, dataset=data).global_step == 2 * step1
    assert sum(v.tag == "stage/begins" for f in run.train_logs.glob("events.*")
               for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value) == 1


def test_resume_before_the_first_checkpoint_starts_from_init_from_again(tmp_path, keras_file):
    """A run killed in its first epoch has its config and no checkpoint: --resume starts it as
    it first started, from the Keras file (not from random weights)."""
    path, keras_weights = keras_file
    data = rgb(synthetic_dataset(n_per_class=8, num_classes=2), 32)
    run = RunDir.create(tmp_path, "killed")
    config = stage_config(path, epochs=1, trainable_scopes=HEAD)
    run.write_config(config)
    train(config, run, resume=True, progress=False, dataset=data)
    after = weights(run)
    assert int(after["global_step"]) > 0
    np.testing.assert_array_equal(after["vgg16/conv1/conv1_1/weights"], keras_weights["block1_conv1/kernel"])
    np.testing.assert_array_equal(after["vgg16/conv5/conv5_3/biases"], keras_weights["block5_conv3/bias"])


def test_a_new_stage_has_its_own_learning_rate_schedule(tmp_path):
    """A cosine schedule ran over the whole run's steps: a stage begun near the end of it got a
    small fraction of the learning rate it asked for (9e-6 of 1e-4). Its schedule now counts
    from its first step over its own steps, as a new Keras fit() does, also once resumed."""
    from conftest import tiny_config
    from graphcnn.config import ScheduleConfig
    from graphcnn.model.schedules import learning_rate_value

    data = synthetic_dataset()
    cosine = ScheduleConfig(name="cosine")
    stage1 = tiny_config(epochs=2, schedule=cosine)
    run = RunDir.create(tmp_path, "staged")
    step1 = train(stage1, run, progress=False, dataset=data).global_step
    stage2 = dataclasses.replace(stage1, train=dataclasses.replace(stage1.train, epochs=3, learning_rate=1e-3))
    total = train(stage2, run, resume=True, progress=False, dataset=data, new_stage=True).global_step
    assert json.loads(run.stages.read_text()) == {"2": step1} and run.stage_start() == step1
    rates = dict(read_scalars(run.train_logs)["learning_rate"])
    stage_steps = [s for s in rates if s > step1]
    assert stage_steps
    for step in stage_steps:  # the scalar of step s is the rate its update used: the schedule at s - 1
        expected = learning_rate_value(step - 1 - step1, 1e-3, cosine, total - step1)
        np.testing.assert_allclose(rates[step], expected, rtol=1e-5)
    assert rates[stage_steps[0]] > 0.5e-3  # near the rate asked for, not the whole run's cosine tail


def test_a_new_stage_has_its_own_patience_and_learning_rate(tmp_path):
    """Stage 1 stops early after its learning rate was halved; stage 2, like a new Keras fit(),
    trains: its counts start again and its learning rate is its own. A stage that would train
    nothing is refused and leaves the run as it was."""
    from conftest import tiny_config
    from graphcnn.checkpoints import checkpoints_on_disk
    from graphcnn.config import EarlyStoppingConfig, ScheduleConfig

    data = synthetic_dataset()
    never_improves = EarlyStoppingConfig(patience=1, min_delta=0.9, restore_best=False)
    stage1 = tiny_config(epochs=6, early_stopping=never_improves, checkpoints_to_keep=1,
                         schedule=ScheduleConfig(plateau_factor=0.5, plateau_patience=1))
    run = RunDir.create(tmp_path, "stages")
    first = train(stage1, run, progress=False, dataset=data)
    steps = len(data.train) // stage1.train.batch_size
    assert first.stopped_early and first.global_step == 2 * steps  # the second validation did not improve
    reader = tf.train.load_checkpoint(str(run.checkpoints))
    assert reader.get_tensor("train/learning_rate_scale") == 0.5

    stage2 = dataclasses.replace(stage1, train=dataclasses.replace(
        stage1.train, epochs=6, learning_rate=0.001, schedule=ScheduleConfig()))
    second = train(stage2, run, resume=True, progress=False, dataset=data, new_stage=True)
    assert second.global_step == 3 * steps and second.stopped_early  # one epoch: patience 1 again
    # the last stage's checkpoints count towards checkpoints_to_keep (they were left forever)
    assert [p.name for p in checkpoints_on_disk(run.checkpoints)] == [f"model.ckpt-{3 * steps}"]
    assert tf.train.load_checkpoint(str(run.checkpoints)).get_tensor("train/learning_rate_scale") == 1.0

    config_before, preprocessing_before = run.config.read_text(), (run.best / "preprocessing.json").read_text()
    stage3 = dataclasses.replace(stage2, train=dataclasses.replace(stage2.train, epochs=3))
    with pytest.raises(ValueError, match=rf"--next-stage: the run has trained {3 * steps} steps and this stage's "
                                         rf"train.epochs \(or train.max_steps\) ends at step {3 * steps}"):
        train(stage3, run, resume=True, progress=False, dataset=data, new_stage=True)
    assert run.config.read_text() == config_before and not run.stage_config(2).exists()
    # a stage that cannot start (other classes) leaves every file of the run
    with pytest.raises(ValueError, match=r"its classes \(c0, c1, c2, c3\) are not the ones"):
        train(stage2, run, resume=True, progress=False, dataset=synthetic_dataset(num_classes=4), new_stage=True)
    assert (run.best / "preprocessing.json").read_text() == preprocessing_before
    assert run.config.read_text() == config_before and not run.stage_config(2).exists()
