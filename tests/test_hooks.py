"""Hooks: what rides along with the train step, what runs on its own, and what gets written."""

import dataclasses

import numpy as np
import tensorflow as tf

from conftest import tiny_config
from graphcnn.train.hooks import PeriodicImageHook, PeriodicSummaryHook, due
from graphcnn.train.run_dir import RunDir
from graphcnn.train.summaries import encode_png, histogram_summary
from graphcnn.train.trainer import train

v1 = tf.compat.v1


class RecordingWriter:
    def __init__(self):
        self.written: list[tuple[int, v1.Summary]] = []

    def add_summary(self, summary, step):
        if isinstance(summary, bytes):
            summary = v1.Summary.FromString(summary)
        self.written.append((step, summary))


def test_due_every_n_and_at_step_one():
    assert [s for s in range(1, 11) if due(s, 4)] == [1, 4, 8]
    assert [s for s in range(1, 11) if due(s, 4, first=False)] == [4, 8]
    assert not any(due(s, 0) for s in range(1, 11))


def test_summary_hook_rides_along_without_session_and_runs_alone_with_one():
    with tf.Graph().as_default():
        w = tf.Variable([1.0, 2.0, 3.0], name="w")
        op = histogram_summary("w", w)
        with v1.Session() as sess:
            sess.run(w.initializer)
            along = PeriodicSummaryHook("h", op, 2, RecordingWriter())
            assert along.fetches(2) == {"h": op} and along.fetches(3) == {}
            along.after_step(2, sess.run(along.fetches(2)))
            along.after_step(3, {})
            assert [s for s, _ in along.writer.written] == [2]

            alone = PeriodicSummaryHook("h", op, 2, RecordingWriter(), sess)
            assert all(alone.fetches(s) == {} for s in range(1, 5))  # never in the train step's fetches
            sess.run(w.assign([5.0, 5.0, 5.0]))  # "the step's update"
            for step in range(1, 5):
                alone.after_step(step, {})
            assert [s for s, _ in alone.writer.written] == [1, 2, 4]
            value = alone.writer.written[-1][1].value[0]
            buckets = tf.make_ndarray(value.tensor)  # (left, right, count) rows
            assert value.tag == "w" and value.metadata.plugin_data.plugin_name == "histograms"
            assert buckets[:, 0].min() <= 5.0 <= buckets[:, 1].max() and buckets[:, 2].sum() == 3  # after the update


def test_image_hook_writes_exact_tags_alone_or_along():
    with tf.Graph().as_default():
        image = encode_png(tf.zeros([1, 4, 6, 1], tf.uint8))
        with v1.Session() as sess:
            for session in (None, sess):
                hook = PeriodicImageHook({"filters/conv1": image}, 3, RecordingWriter(), session)
                fetched = hook.fetches(3)
                assert (fetched == {}) == (session is not None)
                hook.after_step(3, sess.run(fetched) if fetched else {})
                hook.after_step(4, {})
                [(step, summary)] = hook.writer.written
                value = summary.value[0]
                assert (step, value.tag, value.image.height, value.image.width) == (3, "filters/conv1", 4, 6)
                assert value.image.encoded_image_string.startswith(b"\x89PNG")


def test_train_step_runs_with_two_fetch_sets_only(tmp_path, dataset, monkeypatch):
    """Each new set of fetches beside the train op costs a new executor for the whole training
    graph (0.2-0.35 s on 2 cores), so weight summaries must not add sets of their own."""
    seen: set[frozenset] = set()
    original = v1.Session.run

    def run(self, fetches, *args, **kwargs):
        if isinstance(fetches, dict) and "train" in fetches:
            seen.add(frozenset(fetches))
        return original(self, fetches, *args, **kwargs)

    callables = []  # plain steps (no hook fetches) run through one prepared callable
    original_callable = v1.Session.make_callable

    def make_callable(self, fetches, *args, **kwargs):
        callables.append(len(fetches))
        return original_callable(self, fetches, *args, **kwargs)

    monkeypatch.setattr(v1.Session, "run", run)
    monkeypatch.setattr(v1.Session, "make_callable", make_callable)
    config = tiny_config(epochs=3)
    config = dataclasses.replace(config, log=dataclasses.replace(
        config.log, histograms_every=2, filters_every=3, gradients_every=4, activations_every=4, trace_every=0))
    run = RunDir.create(tmp_path, "hooks")
    result = train(config, run, dataset=dataset, progress=False)
    assert result.global_step == 3 * (len(dataset.train) // 8) > 8
    base = frozenset({"train", "loss", "accuracy", "lr"})
    assert seen == {base | {"view_gradients", "view_activations"}} and callables == [len(base)]
    tags = set()
    for path in run.train_logs.glob("events.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    assert {"conv1_1/weights", "filters/conv1_1"} <= tags and np.any([t.startswith("gradients/") for t in tags])


def test_histogram_summary_counts_as_numpy_does_under_its_exact_tag():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((64, 5, 5)).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as sess:
        ops = [histogram_summary("activations/conv1_1", tf.constant(values)),
               histogram_summary("flat", tf.constant([2.0, 2.0])),
               histogram_summary("none", tf.zeros([0])),
               histogram_summary("bf16", tf.constant(values, tf.bfloat16))]
        summaries = [v1.Summary.FromString(b) for b in sess.run(ops)]
    value = summaries[0].value[0]
    assert value.tag == "activations/conv1_1" and value.metadata.plugin_data.plugin_name == "histograms"
    buckets = tf.make_ndarray(value.tensor)
    counts, edges = np.histogram(values, bins=30, range=(values.min(), values.max()))
    assert buckets.shape == (30, 3) and buckets.dtype == np.float64
    np.testing.assert_allclose(buckets[:, 0], edges[:-1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(buckets[:, 1], edges[1:], rtol=1e-6, atol=1e-6)
    # float32 edges in TensorFlow vs float64 in numpy: a value on an edge may land one bucket over
    assert buckets[:, 2].sum() == values.size and np.abs(buckets[:, 2] - counts).sum() <= 2
    flat = tf.make_ndarray(summaries[1].value[0].tensor)
    assert flat[0, 0] == 1.5 and flat[-1, 1] == 2.5 and flat[:, 2].sum() == 2
    assert tf.make_ndarray(summaries[2].value[0].tensor)[:, 2].sum() == 0
    assert tf.make_ndarray(summaries[3].value[0].tensor)[:, 2].sum() == values.size
