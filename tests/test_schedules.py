"""Tests for graphcnn.model.schedules and graphcnn.train.early_stopping.PlateauReducer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from graphcnn.config import ScheduleConfig
from graphcnn.model.schedules import SCHEDULES, learning_rate, learning_rate_value
from graphcnn.train.early_stopping import PlateauReducer

BASE = 0.1


def tf_rates(cfg: ScheduleConfig, steps, total_steps: int = 0, base: float = BASE) -> np.ndarray:
    with tf.Graph().as_default():
        step = tf.compat.v1.placeholder(tf.int64, [])
        rate = learning_rate(step, base, cfg, total_steps)
        assert rate.dtype == tf.float32 and rate.shape.rank == 0
        with tf.compat.v1.Session() as sess:
            return np.array([sess.run(rate, {step: s}) for s in steps])


def np_rate(cfg: ScheduleConfig, step: int, total_steps: int = 0) -> float:
    return learning_rate_value(step, BASE, cfg, total_steps)


def test_constant():
    cfg = ScheduleConfig(name="constant")
    assert np_rate(cfg, 0) == BASE and np_rate(cfg, 10**6) == BASE


def test_step_boundaries():
    cfg = ScheduleConfig(name="step", decay_steps=10, decay_rate=0.5)
    assert np_rate(cfg, 0) == pytest.approx(BASE)
    assert np_rate(cfg, 9) == pytest.approx(BASE)
    assert np_rate(cfg, 10) == pytest.approx(BASE * 0.5)
    assert np_rate(cfg, 19) == pytest.approx(BASE * 0.5)
    assert np_rate(cfg, 20) == pytest.approx(BASE * 0.25)


def test_exponential_boundaries():
    cfg = ScheduleConfig(name="exponential", decay_steps=10, decay_rate=0.5)
    assert np_rate(cfg, 0) == pytest.approx(BASE)
    assert np_rate(cfg, 9) == pytest.approx(BASE * 0.5 ** 0.9)
    assert np_rate(cfg, 10) == pytest.approx(BASE * 0.5)
    assert np_rate(cfg, 5) == pytest.approx(BASE * math.sqrt(0.5))


def test_cosine_boundaries_and_flat_after():
    cfg = ScheduleConfig(name="cosine", decay_steps=100, min_learning_rate=0.01)
    assert np_rate(cfg, 0) == pytest.approx(BASE)
    assert np_rate(cfg, 50) == pytest.approx(0.01 + (BASE - 0.01) / 2)
    assert np_rate(cfg, 99) == pytest.approx(0.01 + (BASE - 0.01) * 0.5 * (1 + math.cos(math.pi * 0.99)))
    assert np_rate(cfg, 100) == pytest.approx(0.01)
    assert np_rate(cfg, 1000) == pytest.approx(0.01)


def test_cosine_over_total_steps_when_decay_steps_is_zero():
    cfg = ScheduleConfig(name="cosine", decay_steps=0)
    assert np_rate(cfg, 0, total_steps=40) == pytest.approx(BASE)
    assert np_rate(cfg, 20, total_steps=40) == pytest.approx(BASE / 2)
    assert np_rate(cfg, 40, total_steps=40) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="decay_steps"):
        np_rate(cfg, 0, total_steps=0)


def test_warmup_composes_with_schedule():
    cfg = ScheduleConfig(name="step", warmup_steps=4, decay_steps=10, decay_rate=0.5)
    assert np_rate(cfg, 0) == pytest.approx(BASE * 1 / 4)
    assert np_rate(cfg, 2) == pytest.approx(BASE * 3 / 4)
    assert np_rate(cfg, 3) == pytest.approx(BASE)  # warm-up end
    assert np_rate(cfg, 4) == pytest.approx(BASE)
    assert np_rate(cfg, 10) == pytest.approx(BASE * 0.5)
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, decay_steps=100)
    no_warmup = learning_rate_value(4, BASE, ScheduleConfig(name="cosine", decay_steps=100), 0)
    assert np_rate(cfg, 4) == pytest.approx(no_warmup * 0.5)


def test_invalid_configs():
    with pytest.raises(ValueError, match="decay_steps"):
        np_rate(ScheduleConfig(name="step", decay_steps=0), 0)
    with pytest.raises(ValueError, match="not one of"):
        np_rate(ScheduleConfig(name="linear"), 0)


def test_unknown_schedule_lists_the_registered_ones():
    expected = f"train.schedule.name: 'linear' is not one of {', '.join(SCHEDULES)}$"
    with pytest.raises(ValueError, match=expected):
        np_rate(ScheduleConfig(name="linear"), 0)
    with tf.Graph().as_default(), pytest.raises(ValueError, match=expected):
        learning_rate(tf.constant(0), BASE, ScheduleConfig(name="linear"), 0)


TWIN_CASES = [
    (ScheduleConfig(name="constant", warmup_steps=5), 0),
    (ScheduleConfig(name="step", decay_steps=7, decay_rate=0.3), 0),
    (ScheduleConfig(name="exponential", decay_steps=13, decay_rate=0.5, warmup_steps=3), 0),
    (ScheduleConfig(name="cosine", decay_steps=50, min_learning_rate=0.001, warmup_steps=10), 0),
    (ScheduleConfig(name="cosine", decay_steps=0), 60),
]


def test_every_registered_schedule_has_a_twin_case():
    assert {cfg.name for cfg, _ in TWIN_CASES} == set(SCHEDULES)


@pytest.mark.parametrize("cfg,total", TWIN_CASES, ids=["constant", "step", "exponential", "cosine", "cosine-total"])
def test_tf_matches_numpy(cfg, total):
    steps = list(range(0, 70)) + [99, 100, 1000, 123457]
    expected = np.array([np_rate(cfg, s, total) for s in steps])
    np.testing.assert_allclose(tf_rates(cfg, steps, total), expected, rtol=1e-6, atol=1e-9)


def test_tf_accepts_int32_global_step():
    with tf.Graph().as_default():
        rate = learning_rate(tf.constant(10, tf.int32), BASE,
                             ScheduleConfig(name="step", decay_steps=10, decay_rate=0.5), 0)
        with tf.compat.v1.Session() as sess:
            assert sess.run(rate) == pytest.approx(BASE * 0.5)


def test_plateau_reduces_after_patience_and_floors():
    cfg = ScheduleConfig(plateau_factor=0.5, plateau_patience=2, plateau_min_learning_rate=0.02)
    reducer = PlateauReducer(cfg, "max", base_rate=BASE)
    scale = 1.0
    scales = []
    for metric in [0.5, 0.6, 0.6, 0.55, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]:
        scale = reducer.update(metric, scale)
        scales.append(scale)
    # 0.6 after 0.6 is not an improvement; floor 0.02 / 0.1 = 0.2
    assert scales == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert reducer.best == 0.7


def test_plateau_min_mode_and_disabled():
    reducer = PlateauReducer(ScheduleConfig(plateau_factor=0.1, plateau_patience=1), "min")
    assert reducer.update(1.0, 1.0) == 1.0
    assert reducer.update(0.9, 1.0) == 1.0
    assert reducer.update(0.95, 1.0) == pytest.approx(0.1)
    assert reducer.update(float("nan"), 0.1) == pytest.approx(0.01)
    off = PlateauReducer(ScheduleConfig(plateau_factor=0.0, plateau_patience=1), "min")
    assert [off.update(m, 1.0) for m in (1.0, 2.0, 3.0)] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="base_rate"):
        PlateauReducer(ScheduleConfig(plateau_factor=0.5, plateau_min_learning_rate=1e-4), "min")
    with pytest.raises(ValueError, match="mode"):
        PlateauReducer(ScheduleConfig(), "up")


def test_plateau_state_round_trip():
    cfg = ScheduleConfig(plateau_factor=0.5, plateau_patience=3)
    metrics = [0.5, 0.6, 0.55, 0.58, 0.59, 0.57, 0.56, 0.61, 0.6]
    full = PlateauReducer(cfg, "max")
    scale_full = 1.0
    for m in metrics:
        scale_full = full.update(m, scale_full)
    first = PlateauReducer(cfg, "max")
    scale = 1.0
    for m in metrics[:4]:
        scale = first.update(m, scale)
    resumed = PlateauReducer(cfg, "max")
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for m in metrics[4:]:
        scale = resumed.update(m, scale)
    assert scale == scale_full == 0.5
    assert resumed.state_dict() == full.state_dict()
