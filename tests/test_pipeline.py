"""The training source for in-memory arrays: each step takes its batch of indices in the graph and gathers it."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn.data.pipeline import InputPipeline
from graphcnn.data.dataset import Split

v1 = tf.compat.v1


def _numbered(n: int, size: int = 12) -> Split:
    """Image i is filled with the value i (n <= 256), so a batch names the images it holds."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, size, size, 1)).copy()
    return Split(labels=np.arange(n, dtype=np.int64) % 3, images=images)


def _batches(split: Split, batch: int, steps: int, start: int = 0, seed: int = 0) -> list[np.ndarray]:
    """The image numbers of ``steps`` training batches from ``start``, and checks labels travel along."""
    cfg = tiny_config()
    with tf.Graph().as_default() as graph:
        pipeline = InputPipeline(cfg.data, cfg.model, split, batch, ("fc",), seed=seed)
        inputs = pipeline.build()
        with v1.Session() as sess:
            pipeline.initialize(sess, start)
            graph.finalize()
            out = []
            for _ in range(steps):
                images, labels = sess.run([inputs.images, inputs.labels], {inputs.is_training: True})
                assert images.dtype == np.float32 and images.shape == (min(batch, len(split)), 12, 12, 1)
                numbers = np.round(images[:, 0, 0, 0] * 255).astype(np.int64)
                np.testing.assert_array_equal(labels, split.labels[numbers])
                out.append(numbers)
    return out


def _variable_shape(graph: tf.Graph, name: str) -> list[int]:
    op = graph.get_operation_by_name(name)
    assert op.type == "VarHandleOp"
    return tf.TensorShape(op.get_attr("shape")).as_list()


def test_each_epoch_is_a_new_permutation_of_full_batches():
    split = _numbered(50)
    batches = _batches(split, 16, 9)  # 50 // 16 = 3 batches per epoch: 3 epochs
    epochs = [np.concatenate(batches[i:i + 3]) for i in (0, 3, 6)]
    for e in epochs:
        assert len(set(e.tolist())) == 48  # no image twice within an epoch; 2 of 50 left out
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    again = _batches(split, 16, 9)
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate(again))  # a pure function of the seed
    other = _batches(split, 16, 3, seed=1)
    assert not np.array_equal(np.concatenate(other), epochs[0])


def test_batch_k_is_a_slice_of_the_stateless_permutation_of_its_epoch():
    """The order is pinned: the seeded stateless shuffle of each epoch, sliced batch by batch
    (what the tf.data index iterator of earlier versions handed out, so accuracy records stand)."""
    batches = _batches(_numbered(50), 16, 7, seed=3)
    for k, numbers in enumerate(batches):
        epoch, position = divmod(k, 3)
        order = tf.random.experimental.stateless_shuffle(tf.range(50, dtype=tf.int64),
                                                         tf.constant([3, epoch], tf.int64)).numpy()
        np.testing.assert_array_equal(numbers, order[position * 16:(position + 1) * 16])


def test_the_step_takes_its_batch_without_an_iterator():
    cfg = tiny_config()
    with tf.Graph().as_default() as graph:
        InputPipeline(cfg.data, cfg.model, _numbered(50), 16, ("fc",), seed=0).build()
    types = {op.type for op in graph.get_operations()}
    assert not any("Iterator" in t for t in types), sorted(t for t in types if "Iterator" in t)


def test_a_resumed_stream_continues_where_the_step_is():
    split = _numbered(50)
    full = _batches(split, 16, 8)
    np.testing.assert_array_equal(np.concatenate(_batches(split, 16, 4, start=4)), np.concatenate(full[4:]))


def test_a_split_smaller_than_the_batch_is_one_batch_per_epoch():
    batches = _batches(_numbered(5), 16, 2)
    assert [sorted(b.tolist()) for b in batches] == [list(range(5))] * 2


def test_arrays_are_resized_once_and_kept_out_of_checkpoints_and_graph():
    ds = synthetic_dataset(size=10)  # 10x10 arrays, 12x12 model
    cfg = tiny_config()
    with tf.Graph().as_default() as graph:
        pipeline = InputPipeline(cfg.data, cfg.model, ds.train, 8, ("fc",), seed=0)
        inputs = pipeline.build()
        assert _variable_shape(graph, "input/train_pipeline/images") == [len(ds.train), 12, 12, 1]
        names = {v.op.name for v in v1.global_variables() + v1.local_variables()}
        assert "input/train_pipeline/images" not in names and "input/train_pipeline/labels" not in names
        # the data enters at initialization: no constant in the graph holds it
        assert max(len(n.attr["value"].tensor.tensor_content) for n in graph.as_graph_def().node) < 1000
        with v1.Session() as sess:
            pipeline.initialize(sess)
            images = sess.run(inputs.images, {inputs.is_training: True})
            expected = pipeline.eval_batches(sess, Split(labels=ds.train.labels, images=ds.train.images))
            all_eval = np.concatenate([x for x, _ in expected])
        # each training image is one of the split's images, preprocessed as evaluation does it
        for x in images:
            assert np.min(np.abs(all_eval - x).reshape(len(all_eval), -1).max(axis=1)) < 1e-6


def test_no_resize_cache_resizes_in_each_step():
    ds = synthetic_dataset(size=10)
    cfg = tiny_config()
    with tf.Graph().as_default() as graph:
        pipeline = InputPipeline(dataclasses.replace(cfg.data, cache="none"), cfg.model, ds.train, 8, ("fc",), seed=0)
        inputs = pipeline.build()
        assert _variable_shape(graph, "input/train_pipeline/images") == [len(ds.train), 10, 10, 1]
        with v1.Session() as sess:
            pipeline.initialize(sess)
            assert sess.run(inputs.images, {inputs.is_training: True}).shape == (8, 12, 12, 1)


def test_augmentation_is_keyed_on_the_batch_number():
    """augment_fn gets (seed, global batch number): the same batch gets the same draws after a resume."""
    def number(images, seed):  # every pixel becomes the batch number the pipeline hands over
        return tf.zeros_like(images) + tf.cast(seed[1], tf.float32) + 1000.0 * tf.cast(seed[0], tf.float32)

    cfg = tiny_config()
    with tf.Graph().as_default():
        pipeline = InputPipeline(cfg.data, cfg.model, _numbered(50), 16, ("fc",), seed=7, augment_fn=number)
        inputs = pipeline.build()
        with v1.Session() as sess:
            pipeline.initialize(sess, 5)
            seen = [float(sess.run(inputs.images, {inputs.is_training: True})[0, 0, 0, 0]) for _ in range(2)]
    assert seen == [7005.0, 7006.0]


def test_an_empty_training_split_is_a_clear_error():
    cfg = tiny_config()
    empty = Split(labels=np.zeros(0, np.int64), images=np.zeros((0, 12, 12, 1), np.uint8))
    with tf.Graph().as_default(), pytest.raises(ValueError, match="training split is empty"):
        InputPipeline(cfg.data, cfg.model, empty, 8, ("fc",), seed=0).build()


def test_evaluation_over_files_runs_without_the_autotuner(tmp_path):
    """The evaluation iterator is re-initialized for every validation; with tf.data's autotuner on,
    dropping the last one waited for the autotuner's sleep (up to the length of an epoch)."""
    from PIL import Image
    from tensorflow.core.framework import dataset_options_pb2

    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((10 + i, 14, 3), 40 * i, np.uint8)).save(paths[-1])
    split = Split(labels=np.arange(5, dtype=np.int64) % 2, paths=tuple(paths))
    cfg = tiny_config()
    with tf.Graph().as_default() as graph:
        pipeline = InputPipeline(cfg.data, cfg.model, split, 2, ("fc",), seed=0)
        pipeline.build()
        options = [op for op in graph.get_operations() if op.type == "OptionsDataset"]
        by_scope = {op.name.split("/")[1]: dataset_options_pb2.Options.FromString(op.get_attr("serialized_options"))
                    for op in options}
        assert by_scope["eval_pipeline"].autotune_options.HasField("enabled")
        assert by_scope["eval_pipeline"].autotune_options.enabled is False
        # training keeps it: one iterator for the whole run, whose parallelism it tunes
        assert "train_pipeline" not in by_scope
        with v1.Session() as sess:
            for _ in range(2):  # re-initialized, as for every validation
                batches = list(pipeline.eval_batches(sess, split))
                assert [len(y) for _, y in batches] == [2, 2, 1]
                np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), split.labels)
                assert batches[0][0].shape == (2, 12, 12, 1)


def _image_folder(root, per_class: int = 6):
    """Two class folders of RGB JPEGs and PNGs of mixed sizes, and one GIF."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (9 + 3 * i, 15 - i, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}{i}.{'jpg' if i % 2 else 'png'}")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "a" / "a9.gif")
    return root


def test_a_folder_kept_in_memory_feeds_the_pixels_its_files_would(tmp_path):
    """The scan's kept decode (data.cache auto) and the streamed files give the same batches."""
    from graphcnn.config import DataConfig
    from graphcnn.data.sources import load_dataset

    cfg = tiny_config()
    data = DataConfig(path=str(_image_folder(tmp_path)), validation_fraction=0.25, test_fraction=0.25)
    streamed = load_dataset(data, cfg.model.channels, log_warnings=False)
    kept = load_dataset(data, cfg.model.channels, log_warnings=False, size=cfg.model.input_size)
    assert streamed.train.images is None and kept.train.images is not None
    seen = []
    for ds in (streamed, kept):
        with tf.Graph().as_default():
            pipeline = InputPipeline(cfg.data, cfg.model, ds.train, 4, ("fc",), seed=0)
            pipeline.build()
            with v1.Session() as sess:
                seen.append([np.concatenate([x for x, _ in pipeline.eval_batches(sess, split)])
                             for split in (ds.train, ds.validation, ds.test)])
    for from_files, from_memory in zip(*seen):
        # the same pixels; scaled to [0, 1] in a tf.data function or in the graph: within an ulp
        np.testing.assert_array_equal(np.round(from_files * 255), np.round(from_memory * 255))
        np.testing.assert_allclose(from_files, from_memory, rtol=0, atol=1e-7)


def test_a_folder_trains_from_memory_or_streamed_from_its_files(tmp_path, caplog):
    import logging

    from graphcnn import cli

    data = _image_folder(tmp_path / "data", per_class=10)
    for cache in ("auto", "none"):
        with caplog.at_level(logging.INFO, "graphcnn"):
            caplog.clear()
            assert cli.main(["train", "--data", str(data), "--logdir", str(tmp_path / "logs"), "--name", cache,
                             "--no-progress", "--set", "model.input_height=12", "--set", "model.input_width=12",
                             "--set", "train.max_steps=4", "--set", "train.batch_size=4",
                             "--set", "data.augment.horizontal_flip=true", "--set", f"data.cache={cache}"]) == 0
        kept = [r.getMessage() for r in caplog.records if "kept in memory" in r.getMessage()]
        assert len(kept) == (1 if cache == "auto" else 0), kept
        results = json.loads((tmp_path / "logs" / cache / "results.json").read_text())
        assert results["global_step"] == 4 and results["test_count"] > 0
        examples = sorted(p.suffix for p in (tmp_path / "logs" / cache / "examples").iterdir())
        assert examples and set(examples) <= {".jpg", ".png", ".gif"}  # the files themselves, also when kept


def _clip(images, seed):
    """An augmentation that keeps the pixels and, as augment_batch does, clips to [0, 1]."""
    return tf.clip_by_value(images, 0.0, 1.0)


def _gray_files(root, classes: int, per_class: int) -> Split:
    """Class-ordered PNG paths; file k of class c is filled with the value 10 * c + k."""
    from PIL import Image

    paths, labels = [], []
    for c in range(classes):
        for k in range(per_class):
            paths.append(str(root / f"{c}_{k}.png"))
            Image.fromarray(np.full((12, 12), 10 * c + k, np.uint8)).save(paths[-1])
            labels.append(c)
    return Split(labels=np.asarray(labels, np.int64), paths=tuple(paths))


@pytest.mark.parametrize("source", ["arrays", "files"])
def test_the_mean_comes_off_after_augmentation(tmp_path, source):
    """Augmentation clips to [0, 1]: with the mean taken off first, every pixel under the mean
    became the mean (0 after the clip) and training saw other inputs than evaluation."""
    cfg = tiny_config()
    data = dataclasses.replace(cfg.data, mean_subtraction=True)
    split = _numbered(16) if source == "arrays" else _gray_files(tmp_path, 2, 8)
    with tf.Graph().as_default():
        pipeline = InputPipeline(data, cfg.model, split, 8, ("fc",), seed=0, augment_fn=_clip)
        inputs = pipeline.build()
        with v1.Session() as sess:
            sess.run(inputs.pixel_mean.assign(np.full([12, 12, 1], 0.5, np.float32)))
            pipeline.initialize(sess)
            images = sess.run(inputs.images, {inputs.is_training: True})
            evaluated = np.concatenate([x for x, _ in pipeline.eval_batches(sess, split)])
    values = split.images[:, 0, 0, 0] if source == "arrays" else 10 * split.labels + np.arange(16) % 8
    np.testing.assert_allclose(evaluated[:, 0, 0, 0], values / 255.0 - 0.5, atol=1e-6)
    got = images[:, 0, 0, 0]  # every value is 17 or less: all under the mean
    numbers = np.round((got + 0.5) * 255)
    assert set(numbers.tolist()) <= set(values.tolist()), numbers  # not clipped to 0 (128 here)
    np.testing.assert_allclose(got, numbers / 255.0 - 0.5, atol=1e-6)  # as evaluation computes them


def test_a_cached_file_split_is_shuffled_whole_before_its_buffer(tmp_path):
    """A split lists its files class by class; with a cache (data.cache) and a buffer smaller than
    the split, the first batches held only the first classes when the paths were not shuffled."""
    cfg = tiny_config()
    data = dataclasses.replace(cfg.data, cache="memory", shuffle_buffer=4)
    split = _gray_files(tmp_path, 4, 10)
    with tf.Graph().as_default():
        pipeline = InputPipeline(data, cfg.model, split, 8, ("fc",), seed=0)
        inputs = pipeline.build()
        with v1.Session() as sess:
            pipeline.initialize(sess)
            epochs = [np.concatenate([sess.run(inputs.labels) for _ in range(5)]) for _ in range(2)]
    for labels in epochs:
        assert sorted(labels.tolist()) == sorted(split.labels.tolist())  # each file once an epoch
        # a buffer of 4 over class-ordered paths gives 8 labels from the first 11 files: classes 0-1
        assert len(set(labels[:8].tolist())) >= 3, labels
    assert not np.array_equal(epochs[0], epochs[1])  # the buffer reshuffles each epoch


def _noise(images, seed):
    """An augmentation whose draw shows in every pixel: uniform noise keyed on the batch seed."""
    return tf.clip_by_value(images + tf.random.stateless_uniform(tf.shape(images), seed, 0.0, 0.1), 0.0, 1.0)


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_a_streamed_file_split_resumes_where_the_step_is(tmp_path, cache):
    """A resumed run streaming its files (data.cache none, or a split too big to keep) goes on
    with batch ``step`` of the uninterrupted order, files and augmentation alike; it restarted
    at batch 0 (the same images, the same draws) before."""
    cfg = tiny_config()
    data = dataclasses.replace(cfg.data, cache=cache, shuffle_buffer=5)
    split = _gray_files(tmp_path, 2, 7)  # 14 files, 4 a batch: batches cross the epochs' edges

    def batches(start, steps):
        with tf.Graph().as_default():
            pipeline = InputPipeline(data, cfg.model, split, 4, ("fc",), seed=0, augment_fn=_noise)
            inputs = pipeline.build()
            with v1.Session() as sess:
                pipeline.initialize(sess, start)
                return [sess.run([inputs.images, inputs.labels], {inputs.is_training: True}) for _ in range(steps)]

    straight = batches(0, 9)
    resumed = batches(5, 4)
    for (images, labels), (want_images, want_labels) in zip(resumed, straight[5:]):
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_array_equal(images, want_images)
    assert not np.array_equal(resumed[0][0], straight[0][0])
