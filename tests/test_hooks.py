"""Hooks: what rides along with the train step, what runs on its own, and what gets written."""

import dataclasses

import numpy as np
import tensorflow as tf

from conftest import tiny_config
from graphcnn.train.hooks import PeriodicImageHook, PeriodicSummaryHook, due
from graphcnn.train.run_dir import RunDir
from graphcnn.train.summaries import encode_png
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
        op = tf.raw_ops.HistogramSummary(tag="w", values=w)
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
            histo = alone.writer.written[-1][1].value[0].histo
            assert (histo.min, histo.max, histo.num) == (5.0, 5.0, 3)  # the weights after the update


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

    monkeypatch.setattr(v1.Session, "run", run)
    config = tiny_config(epochs=3)
    config = dataclasses.replace(config, log=dataclasses.replace(
        config.log, histograms_every=2, filters_every=3, gradients_every=4, activations_every=4, trace_every=0))
    run = RunDir.create(tmp_path, "hooks")
    result = train(config, run, dataset=dataset, progress=False)
    assert result.global_step == 3 * (len(dataset.train) // 8) > 8
    base = frozenset({"train", "loss", "accuracy", "lr"})
    assert seen == {base, base | {"view_gradients", "view_activations"}}
    tags = set()
    for path in run.train_logs.glob("events.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    assert {"conv1_1/weights", "filters/conv1_1"} <= tags and np.any([t.startswith("gradients/") for t in tags])
