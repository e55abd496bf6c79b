"""Tests for graphcnn.train.early_stopping."""

from __future__ import annotations

import json

import pytest

from graphcnn.config import EarlyStoppingConfig
from graphcnn.train.early_stopping import EarlyStopping


def test_accuracy_sequence_stops_after_patience():
    stopper = EarlyStopping(EarlyStoppingConfig(monitor="accuracy", patience=2))
    assert stopper.best is None and stopper.best_step is None and not stopper.should_stop
    assert stopper.update(100, 0.5)
    assert stopper.update(200, 0.6)
    assert not stopper.update(300, 0.6)  # equal is not better
    assert not stopper.should_stop
    assert not stopper.update(400, 0.55)
    assert stopper.should_stop
    assert stopper.best == 0.6 and stopper.best_step == 200


def test_improvement_resets_wait():
    stopper = EarlyStopping(EarlyStoppingConfig(monitor="accuracy", patience=2))
    for step, metric in [(1, 0.5), (2, 0.4), (3, 0.7), (4, 0.6)]:
        stopper.update(step, metric)
    assert not stopper.should_stop and stopper.best_step == 3


def test_loss_min_delta():
    stopper = EarlyStopping(EarlyStoppingConfig(monitor="loss", patience=3, min_delta=0.1))
    assert stopper.update(1, 1.0)
    assert not stopper.update(2, 0.95)  # improved by less than min_delta
    assert not stopper.update(3, 1.2)
    assert stopper.update(4, 0.85)
    assert stopper.best == 0.85 and stopper.best_step == 4
    for step in (5, 6):
        assert not stopper.update(step, 0.8)
    assert not stopper.should_stop
    assert not stopper.update(7, float("nan"))
    assert stopper.should_stop


def test_patience_zero_never_stops():
    stopper = EarlyStopping(EarlyStoppingConfig(monitor="accuracy", patience=0))
    stopper.update(1, 0.9)
    for step in range(2, 20):
        stopper.update(step, 0.1)
    assert not stopper.should_stop and stopper.best == 0.9


def test_state_round_trip():
    cfg = EarlyStoppingConfig(monitor="loss", patience=3)
    metrics = [(10, 1.0), (20, 0.8), (30, 0.9), (40, 0.85), (50, 0.82)]
    full = EarlyStopping(cfg)
    for step, metric in metrics:
        full.update(step, metric)
    first = EarlyStopping(cfg)
    for step, metric in metrics[:3]:
        first.update(step, metric)
    resumed = EarlyStopping(cfg)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for step, metric in metrics[3:]:
        resumed.update(step, metric)
    assert resumed.state_dict() == full.state_dict()
    assert resumed.should_stop and resumed.best == 0.8 and resumed.best_step == 20
    # a state saved while monitoring another metric is not applied
    other = EarlyStopping(EarlyStoppingConfig(monitor="accuracy", patience=3))
    other.load_state_dict(full.state_dict())
    assert other.best is None


def test_invalid_monitor():
    with pytest.raises(ValueError, match="monitor"):
        EarlyStopping(EarlyStoppingConfig(monitor="f1"))
