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

:func:`learning_rate` builds the TF op, :func:`learning_rate_value` is its numpy twin; both
evaluate the same function of :data:`SCHEDULES` (under its ``train.schedule.name``).
Reduce-on-plateau is a decision of the training loop (``PlateauReducer``, next to early
stopping in the train package); the graph only multiplies its scale into the rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from graphcnn.config import ScheduleConfig

__all__ = ["SCHEDULES", "Schedule", "learning_rate", "learning_rate_value"]


class _Ops(NamedTuple):
    """What a schedule computes with: TensorFlow ops on float64 tensors, or Python and numpy on numbers."""

    to_float: Callable
    minimum: Callable
    cos: Callable


_TF_OPS = _Ops(lambda x: tf.cast(x, tf.float64), tf.minimum, tf.cos)
_NUMPY_OPS = _Ops(float, min, np.cos)

# A schedule (before warm-up), written once for both forms: ``fn(ops, step_int, step, base, cfg, length)``
# with the global step as an integer and as a float, the base rate, and the decay length (cosine: T).
# In the TF form the steps and ``base`` are int64 / float64 scalar tensors (Python scalars in the
# arithmetic take their dtype), in the numpy form Python numbers.
Schedule = Callable[[_Ops, Any, Any, Any, ScheduleConfig, int], Any]


def _constant(ops: _Ops, step_int, step, base, cfg: ScheduleConfig, length: int):
    return base


def _step(ops: _Ops, step_int, step, base, cfg: ScheduleConfig, length: int):
    # integer division on the integer step: exact at every period boundary
    return base * cfg.decay_rate ** ops.to_float(step_int // length)


def _exponential(ops: _Ops, step_int, step, base, cfg: ScheduleConfig, length: int):
    return base * cfg.decay_rate ** (step / length)


def _cosine(ops: _Ops, step_int, step, base, cfg: ScheduleConfig, length: int):
    progress = ops.minimum(step, float(length)) / length
    return cfg.min_learning_rate + (base - cfg.min_learning_rate) * 0.5 * (1.0 + ops.cos(math.pi * progress))


SCHEDULES: dict[str, Schedule] = {
    "constant": _constant,
    "step": _step,
    "exponential": _exponential,
    "cosine": _cosine,
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
    """The scheduled learning rate (float32 scalar) at ``global_step``, an int32/int64 scalar
    tensor (see the module docstring). ``base_rate``: ``train.learning_rate``; ``total_steps``:
    the run's planned steps, the cosine length when ``cfg.decay_steps == 0``. Computed in float64,
    so it agrees with :func:`learning_rate_value` to float32 precision.
    """
    schedule, length = _check(cfg, total_steps)
    with tf.name_scope("learning_rate"):
        step_int = tf.cast(global_step, tf.int64)
        step = tf.cast(step_int, tf.float64)
        base = tf.constant(base_rate, tf.float64)
        rate = schedule(_TF_OPS, step_int, step, base, cfg, length)
        if cfg.warmup_steps > 0:
            warmup = tf.minimum((step + 1.0) / cfg.warmup_steps, 1.0)
            rate = rate * warmup
        return tf.cast(rate, tf.float32)


def learning_rate_value(step: int, base_rate: float, cfg: ScheduleConfig, total_steps: int) -> float:
    """Numpy twin of :func:`learning_rate`: the rate at integer ``step`` as a Python float."""
    schedule, length = _check(cfg, total_steps)
    step = int(step)
    rate = schedule(_NUMPY_OPS, step, step, base_rate, cfg, length)
    if cfg.warmup_steps > 0:
        rate = rate * min((step + 1) / cfg.warmup_steps, 1.0)
    return float(rate)
