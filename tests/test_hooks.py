"""Hooks: what rides along with the train step, what runs on its own, what gets written, and
that train() takes a user's SessionRunHook."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from graphcnn.tensorboard.ops import encode_png, histogram_summary
from graphcnn.train.hooks import PeriodicImageHook, PeriodicSummaryHook, StepClock, due
from graphcnn.run_dir import RunDir
from graphcnn.train.trainer import train

v1 = tf.compat.v1


class RecordingWriter:
    def __init__(self):
        self.written: list[tuple[int, v1.Summary]] = []

    def add_summary(self, summary, step):
        if isinstance(summary, bytes):
            summary = v1.Summary.FromString(summary)
        self.written.append((step, summary))


class CountingSession:
    def __init__(self, sess):
        self.sess, self.runs = sess, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.sess.run(*args, **kwargs)


class FakeClock:
    """Counts the steps run_steps drives, one at a time, as StepClock does in one process."""

    crossed = StepClock.crossed
    next_is_last = StepClock.next_is_last
    snapshot_due = StepClock.snapshot_due

    def __init__(self, last: int = 0):
        self.step = self.previous = self.steps_run = 0
        self.last = last


def run_steps(sess, hooks, clock, op, steps):
    """Drive ``hooks`` through ``steps`` runs of ``op`` as MonitoredSession does."""
    for _ in range(steps):
        context = v1.train.SessionRunContext(original_args=v1.train.SessionRunArgs(op), session=sess)
        requests = [hook.before_run(context) for hook in hooks]
        fetches = [r.fetches if r is not None else [] for r in requests]
        results = sess.run([op, fetches])[1]
        clock.previous, clock.step = clock.step, clock.step + 1
        clock.steps_run += 1
        for hook, result in zip(hooks, results):
            hook.after_run(context, v1.train.SessionRunValues(result, None, None))


def test_due_every_n_and_at_step_one():
    assert [s for s in range(1, 11) if due(s, 4)] == [1, 4, 8]
    assert [s for s in range(1, 11) if due(s, 4, first=False)] == [4, 8]
    assert not any(due(s, 0) for s in range(1, 11))


def test_summary_hook_rides_along_or_runs_alone_after_the_step():
    with tf.Graph().as_default():
        w = tf.Variable([1.0, 2.0, 3.0], name="w")
        op = histogram_summary("w", w)
        update = w.assign_add([1.0, 1.0, 1.0])
        with v1.Session() as sess:
            sess.run(w.initializer)
            clock = FakeClock()
            along = PeriodicSummaryHook(clock, op, 2, RecordingWriter())
            alone = PeriodicSummaryHook(clock, op, 2, RecordingWriter(), alone=True)
            context = v1.train.SessionRunContext(None, sess)
            assert along.before_run(context).fetches is op  # step 1 is due
            assert alone.before_run(context) is None  # never in the train step's fetches
            run_steps(sess, [along, alone], clock, update, 4)
            assert [s for s, _ in along.writer.written] == [1, 2, 4]
            assert [s for s, _ in alone.writer.written] == [1, 2, 4]
            ridden = tf.make_ndarray(along.writer.written[-1][1].value[0].tensor)  # (left, right, count)
            after = tf.make_ndarray(alone.writer.written[-1][1].value[0].tensor)
            # along: read in the same run as the update; alone: after it, so it sees w = [5, 6, 7]
            assert after[:, 0].min() == pytest.approx(5.0) and after[:, 2].sum() == 3
            assert ridden[:, 2].sum() == 3


def test_snapshots_ride_along_with_the_last_step_instead_of_running_after_it():
    with tf.Graph().as_default():
        w = tf.Variable([1.0, 2.0, 3.0])
        update = w.assign_add([1.0, 1.0, 1.0])
        op = histogram_summary("w", w.read_value())
        with v1.Session() as sess:
            sess.run(w.initializer)
            for last, written in ((5, [1, 2, 4, 5]), (0, [1, 2, 4])):
                clock = FakeClock(last)
                hook = PeriodicSummaryHook(clock, op, 2, RecordingWriter())
                run_steps(sess, [hook], clock, update, 5)
                assert [s for s, _ in hook.writer.written] == written
                counting = CountingSession(sess)
                hook.end(counting)
                # a known last step was snapshotted in the step itself: nothing runs after it
                assert (counting.runs, hook.writer.written[-1][0]) == ((0, 5) if last else (1, 5))


def test_image_hook_writes_exact_tags_with_its_feed():
    with tf.Graph().as_default():
        x = v1.placeholder_with_default(tf.zeros([1, 4, 6, 1], tf.uint8), [1, 4, 6, 1])
        image = encode_png(x)
        with v1.Session() as sess:
            clock = FakeClock()
            hook = PeriodicImageHook(clock, {"filters/conv1": image}, 3, RecordingWriter(),
                                     feed={x: np.full([1, 4, 6, 1], 9, np.uint8)})
            run_steps(sess, [hook], clock, tf.no_op(), 4)
            assert [s for s, _ in hook.writer.written] == [1, 3]
            value = hook.writer.written[0][1].value[0]
            assert (value.tag, value.image.height, value.image.width) == ("filters/conv1", 4, 6)
    assert tf.io.decode_png(value.image.encoded_image_string).numpy().max() == 9  # the feed was used


class StepTimes(v1.train.SessionRunHook):
    """A hook as a user (or the benchmark) writes one: the global step seen after each run."""

    def __init__(self):
        self.steps = []
        self.ended = None

    def begin(self):
        self.global_step = v1.train.get_global_step()

    def before_run(self, run_context):
        return v1.train.SessionRunArgs(self.global_step)

    def after_run(self, run_context, run_values):
        self.steps.append(int(run_values.results))

    def end(self, session):
        self.ended = int(session.run(self.global_step))


def test_train_step_runs_with_few_fetch_sets_and_takes_extra_hooks(tmp_path, dataset, monkeypatch):
    """Each new set of fetches beside the train op costs a new executor for the whole training
    graph (0.2-0.35 s on 2 cores), so weight summaries must not add sets of their own."""
    seen: set[int] = set()
    original = v1.Session.run

    def run(self, fetches, *args, **kwargs):
        # MonitoredSession's step: the caller's and hooks' fetches
        if isinstance(fetches, dict) and "caller" in fetches:
            seen.add(len(tf.nest.flatten(list(fetches.values()))))
        return original(self, fetches, *args, **kwargs)

    monkeypatch.setattr(v1.Session, "run", run)
    config = tiny_config(epochs=3)
    config = dataclasses.replace(config, log=dataclasses.replace(
        config.log, histograms_every=2, filters_every=3, gradients_every=4, activations_every=4, trace_every=0))
    run = RunDir.create(tmp_path, "hooks")
    times = StepTimes()
    result = train(config, run, dataset=dataset, progress=False, hooks=[times])
    steps = 3 * (len(dataset.train) // 8)
    assert result.global_step == steps > 8
    # the train op, the clock's loss/accuracy/learning rate, the extra hook's global step: and
    # the gradient and activation summaries on their steps (4, 8, ... and step 1)
    assert len(seen) == 2 and max(seen) - min(seen) == 2
    assert len(times.steps) == steps and times.ended == steps
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


def test_large_histograms_are_counted_on_an_even_sample_with_exact_edges(monkeypatch):
    import graphcnn.tensorboard.ops as tb_ops
    monkeypatch.setattr(tb_ops, "HISTOGRAM_SAMPLE_VALUES", 4000)
    # a [rows, 8] weight whose column j holds j + noise: 8,000 values want a stride of 2, which
    # would see the even columns only; the extremes sit where the stride taken, 3, skips them
    rng = np.random.default_rng(1)
    values = (np.arange(8) + rng.uniform(0.0, 0.5, (1000, 8))).astype(np.float32)
    values[1, 2], values[2, 3] = -3.0, 11.0

    def histogram(dtype: tf.DType, rows: int | None) -> np.ndarray:
        with tf.Graph().as_default(), v1.Session() as sess:
            tensor = v1.placeholder(dtype, [rows, 8])
            summary = sess.run(histogram_summary("w", tensor), {tensor: values})
        return tf.make_ndarray(v1.Summary.FromString(summary).value[0].tensor)

    exact, _ = np.histogram(values, bins=30, range=(-3.0, 11.0))
    for buckets in (histogram(tf.float32, 1000), histogram(tf.float32, None), histogram(tf.bfloat16, 1000)):
        assert buckets[0, 0] == -3.0 and buckets[-1, 1] == 11.0  # min and max of every value
        assert buckets[:, 2].sum() == pytest.approx(values.size)
        # every column's bucket is sampled alike: each estimate within 25% of its exact count
        full = exact > 1000
        np.testing.assert_allclose(buckets[full, 2], exact[full], rtol=0.25)
    # the stride: 3 (2 would share a factor with 8), in Python for a static shape, in the graph
    # for an unknown batch; a small tensor is counted whole
    assert tb_ops._sample_stride(tf.constant(0), tf.TensorShape([1000, 8])) == 3
    assert tb_ops._sample_stride(tf.constant(0), tf.TensorShape([1000])) == 1
    with tf.Graph().as_default(), v1.Session() as sess:
        assert sess.run(tb_ops._sample_stride(tf.constant(values.size), tf.TensorShape([None, 8]))) == 3


def test_progress_rate_is_unknown_until_measured_and_leaves_out_the_warm_up(monkeypatch):
    """The bar showed img_s=0 for the first steps, then the first window's rate (warm-up
    included: 611 images/s for a run at 5,000) until the second window."""
    import types

    from graphcnn.train import hooks

    clock = types.SimpleNamespace(step=0, previous=0, values={}, crossed=lambda every: False)
    scalars = hooks.ScalarsHook(clock, writer=None, every=100, batch_size=10)
    times = iter([0.0, 2.0, 2.0, 2.1, 2.1, 2.2])  # a 2 s first step, then 0.1 s steps
    monkeypatch.setattr(hooks.time, "perf_counter", lambda: next(times))
    rates = []
    for _ in range(3):
        scalars.before_run(None)
        clock.previous, clock.step = clock.step, clock.step + 1
        scalars.after_run(None, None)
        rates.append(scalars.recent_speed)
    assert rates[0] is None and rates[1] == pytest.approx(100.0) and rates[2] == pytest.approx(100.0)
