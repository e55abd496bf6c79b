"""Learning-rate schedules as a pure function of the global step.

The rate at step ``s`` is ``warmup(s) * schedule(s)``:

* ``constant``:    ``base``
* ``step``:        ``base * decay_rate ** floor(s / decay_steps)``
* ``exponential``: ``base * decay_rate ** (s / decay_steps)``
* ``cosine``:      ``min + (base - min) * (1 + cos(pi * min(s, T) / T)) / 2`` with
  ``T = decay_steps``, or ``total_steps`` when ``decay_steps == 0``; flat at ``min`` after T.
* warm-up (any schedule): for ``s < warmup_steps`` the rate is multiplied by
  ``(s + 1) / warmup_steps``, so it reaches the schedule at step ``warmup_steps - 1``.
  The schedule itself is evaluated at the global step (it does not restart after warm-up).

:func:`learning_rate` builds the TF op, :func:`learning_rate_value` is its numpy twin.
:data:`SCHEDULES` holds both forms of each schedule under its ``train.schedule.name``.
Reduce-on-plateau is a decision of the training loop (``PlateauReducer``, next to early
stopping in the train package); the graph only multiplies its scale into the rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from graphcnn.config import ScheduleConfig

__all__ = ["SCHEDULES", "Schedule", "learning_rate", "learning_rate_value"]


class Schedule(NamedTuple):
    """One schedule (before warm-up) in its two forms, which must agree to float32 precision.

    ``op(step_int, step, base, cfg, length)``: int64 and float64 scalar tensors of the global
    step, the float64 base rate; returns a float64 tensor. ``value(step, base, cfg, length)``:
    the same for a Python int step, as a float. ``length`` is the decay length (cosine: T).
    """

    op: Callable[[tf.Tensor, tf.Tensor, tf.Tensor, ScheduleConfig, int], tf.Tensor]
    value: Callable[[int, float, ScheduleConfig, int], float]


def _constant_op(step_int: tf.Tensor, step: tf.Tensor, base: tf.Tensor, cfg: ScheduleConfig, length: int) -> tf.Tensor:
    return base * tf.ones_like(step)


def _constant_value(step: int, base: float, cfg: ScheduleConfig, length: int) -> float:
    return float(base)


def _step_op(step_int: tf.Tensor, step: tf.Tensor, base: tf.Tensor, cfg: ScheduleConfig, length: int) -> tf.Tensor:
    # integer division on the int64 step: exact at every period boundary
    periods = tf.cast(tf.math.floordiv(step_int, length), tf.float64)
    return base * tf.pow(tf.constant(cfg.decay_rate, tf.float64), periods)


def _step_value(step: int, base: float, cfg: ScheduleConfig, length: int) -> float:
    return base * np.power(cfg.decay_rate, float(step // length))


def _exponential_op(
    step_int: tf.Tensor, step: tf.Tensor, base: tf.Tensor, cfg: ScheduleConfig, length: int
) -> tf.Tensor:
    return base * tf.pow(tf.constant(cfg.decay_rate, tf.float64), step / length)


def _exponential_value(step: int, base: float, cfg: ScheduleConfig, length: int) -> float:
    return base * np.power(cfg.decay_rate, step / length)


def _cosine_op(step_int: tf.Tensor, step: tf.Tensor, base: tf.Tensor, cfg: ScheduleConfig, length: int) -> tf.Tensor:
    progress = tf.minimum(step, float(length)) / length
    low = tf.constant(cfg.min_learning_rate, tf.float64)
    return low + (base - low) * 0.5 * (1.0 + tf.cos(math.pi * progress))


def _cosine_value(step: int, base: float, cfg: ScheduleConfig, length: int) -> float:
    progress = min(step, length) / length
    return cfg.min_learning_rate + (base - cfg.min_learning_rate) * 0.5 * (1.0 + np.cos(np.pi * progress))


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(_constant_op, _constant_value),
    "step": Schedule(_step_op, _step_value),
    "exponential": Schedule(_exponential_op, _exponential_value),
    "cosine": Schedule(_cosine_op, _cosine_value),
}


def _check(cfg: ScheduleConfig, total_steps: int) -> tuple[Schedule, int]:
    """Validate ``cfg``; return its schedule and the decay length in steps (cosine: T).

    The errors name the config key, as :func:`graphcnn.config.validate` does, because a
    schedule built without that validation (a library caller) should read the same.
    """
    if cfg.name not in SCHEDULES:
        raise ValueError(f"train.schedule.name: '{cfg.name}' is not one of {', '.join(SCHEDULES)}")
    if cfg.warmup_steps < 0:
        raise ValueError(f"train.schedule.warmup_steps: must be >= 0, got {cfg.warmup_steps}")
    if cfg.name in ("step", "exponential") and cfg.decay_steps <= 0:
        raise ValueError(f"train.schedule.decay_steps: the {cfg.name} schedule needs decay_steps > 0, "
                         f"got {cfg.decay_steps}")
    if cfg.name == "cosine":
        length = cfg.decay_steps if cfg.decay_steps > 0 else total_steps
        if length <= 0:
            raise ValueError(
                "train.schedule.decay_steps: the cosine schedule needs decay_steps > 0, "
                f"or decay_steps = 0 and a known number of training steps (got {total_steps})"
            )
        return SCHEDULES[cfg.name], length
    return SCHEDULES[cfg.name], cfg.decay_steps


def learning_rate(global_step: tf.Tensor, base_rate: float, cfg: ScheduleConfig, total_steps: int) -> tf.Tensor:
    """The scheduled learning rate at ``global_step`` (see the module docstring).

    Args:
        global_step: integer (int32/int64) scalar tensor, the number of updates applied so far.
        base_rate: the base (peak) learning rate, ``train.learning_rate``.
        cfg: the schedule.
        total_steps: the planned number of training steps; used by ``cosine`` when
            ``cfg.decay_steps == 0``, ignored otherwise.

    Returns:
        float32 scalar tensor. Computed in float64 internally, so it agrees with
        :func:`learning_rate_value` to float32 precision.
    """
    schedule, length = _check(cfg, total_steps)
    with tf.name_scope("learning_rate"):
        step_int = tf.cast(global_step, tf.int64)
        step = tf.cast(step_int, tf.float64)
        base = tf.constant(base_rate, tf.float64)
        rate = schedule.op(step_int, step, base, cfg, length)
        if cfg.warmup_steps > 0:
            warmup = tf.minimum((step + 1.0) / cfg.warmup_steps, 1.0)
            rate = rate * warmup
        return tf.cast(rate, tf.float32)


def learning_rate_value(step: int, base_rate: float, cfg: ScheduleConfig, total_steps: int) -> float:
    """Numpy twin of :func:`learning_rate`: the rate at integer ``step`` as a Python float."""
    schedule, length = _check(cfg, total_steps)
    step = int(step)
    rate = schedule.value(step, base_rate, cfg, length)
    if cfg.warmup_steps > 0:
        rate = rate * min((step + 1) / cfg.warmup_steps, 1.0)
    return float(rate)
