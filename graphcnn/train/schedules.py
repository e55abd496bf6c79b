"""Learning-rate schedules as a pure function of the global step, and reduce-on-plateau.

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
:class:`PlateauReducer` computes the extra multiplicative scale of reduce-on-plateau; the
trainer multiplies it into the rate (e.g. through a placeholder or a variable).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from graphcnn.config import ScheduleConfig

__all__ = ["PlateauReducer", "learning_rate", "learning_rate_value"]

SCHEDULES = ("constant", "step", "exponential", "cosine")


def _check(cfg: ScheduleConfig, total_steps: int) -> int:
    """Validate ``cfg``; return the decay length in steps (cosine: T)."""
    if cfg.name not in SCHEDULES:
        raise ValueError(f"train.schedule.name: '{cfg.name}' is not one of {', '.join(SCHEDULES)}")
    if cfg.warmup_steps < 0:
        raise ValueError(f"train.schedule.warmup_steps: must be >= 0, got {cfg.warmup_steps}")
    if cfg.name in ("step", "exponential") and cfg.decay_steps <= 0:
        raise ValueError(f"train.schedule.decay_steps: the {cfg.name} schedule needs decay_steps > 0, got {cfg.decay_steps}")
    if cfg.name == "cosine":
        length = cfg.decay_steps if cfg.decay_steps > 0 else total_steps
        if length <= 0:
            raise ValueError(
                "train.schedule.decay_steps: the cosine schedule needs decay_steps > 0, "
                f"or decay_steps = 0 and a known number of training steps (got {total_steps})"
            )
        return length
    return cfg.decay_steps


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
    length = _check(cfg, total_steps)
    with tf.name_scope("learning_rate"):
        step_int = tf.cast(global_step, tf.int64)
        step = tf.cast(step_int, tf.float64)
        base = tf.constant(base_rate, tf.float64)
        if cfg.name == "constant":
            rate = base * tf.ones_like(step)
        elif cfg.name == "step":
            periods = tf.cast(tf.math.floordiv(step_int, length), tf.float64)
            rate = base * tf.pow(tf.constant(cfg.decay_rate, tf.float64), periods)
        elif cfg.name == "exponential":
            rate = base * tf.pow(tf.constant(cfg.decay_rate, tf.float64), step / length)
        else:  # cosine
            progress = tf.minimum(step, float(length)) / length
            low = tf.constant(cfg.min_learning_rate, tf.float64)
            rate = low + (base - low) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        if cfg.warmup_steps > 0:
            warmup = tf.minimum((step + 1.0) / cfg.warmup_steps, 1.0)
            rate = rate * warmup
        return tf.cast(rate, tf.float32)


def learning_rate_value(step: int, base_rate: float, cfg: ScheduleConfig, total_steps: int) -> float:
    """Numpy twin of :func:`learning_rate`: the rate at integer ``step`` as a Python float."""
    length = _check(cfg, total_steps)
    step = int(step)
    if cfg.name == "constant":
        rate = float(base_rate)
    elif cfg.name == "step":
        rate = base_rate * np.power(cfg.decay_rate, float(step // length))
    elif cfg.name == "exponential":
        rate = base_rate * np.power(cfg.decay_rate, step / length)
    else:
        progress = min(step, length) / length
        rate = cfg.min_learning_rate + (base_rate - cfg.min_learning_rate) * 0.5 * (1.0 + np.cos(np.pi * progress))
    if cfg.warmup_steps > 0:
        rate = rate * min((step + 1) / cfg.warmup_steps, 1.0)
    return float(rate)


class PlateauReducer:
    """Reduce-on-plateau, as a multiplicative scale on the scheduled learning rate.

    After ``cfg.plateau_patience`` consecutive evaluations without improvement (a strictly
    better metric than the best so far: higher for ``mode="max"``, lower for ``"min"``) the
    scale is multiplied by ``cfg.plateau_factor`` and the count restarts. The scale never
    drops below ``cfg.plateau_min_learning_rate / base_rate``, so that ``base_rate * scale``
    stays at or above the floor, and it never rises. ``cfg.plateau_factor <= 0`` switches
    reduction off (the scale is returned unchanged). A NaN metric counts as no improvement.

    Pure Python; the state (:meth:`state_dict`) is JSON-serializable.
    """

    def __init__(self, cfg: ScheduleConfig, mode: str = "max", base_rate: float | None = None) -> None:
        """
        Args:
            cfg: ``plateau_factor``, ``plateau_patience`` and ``plateau_min_learning_rate``.
            mode: ``"max"`` (accuracy) or ``"min"`` (loss).
            base_rate: the base learning rate; needed only when
                ``cfg.plateau_min_learning_rate > 0`` (to turn the floor into a scale).
        """
        if mode not in ("max", "min"):
            raise ValueError(f"PlateauReducer: mode must be 'max' or 'min', got {mode!r}")
        if cfg.plateau_factor >= 1.0:
            raise ValueError(f"train.schedule.plateau_factor: must be < 1 to reduce the rate, got {cfg.plateau_factor}")
        if cfg.plateau_min_learning_rate > 0 and not base_rate:
            raise ValueError("PlateauReducer: base_rate is required when plateau_min_learning_rate > 0")
        self.cfg = cfg
        self.mode = mode
        self.min_scale = cfg.plateau_min_learning_rate / base_rate if cfg.plateau_min_learning_rate > 0 else 0.0
        self.best: float | None = None
        self.wait = 0  # evaluations since the last improvement or reduction
        self.num_reductions = 0

    @property
    def enabled(self) -> bool:
        return self.cfg.plateau_factor > 0

    def _improved(self, metric: float) -> bool:
        if math.isnan(metric):
            return False
        if self.best is None:
            return True
        return metric > self.best if self.mode == "max" else metric < self.best

    def update(self, metric: float, current_scale: float) -> float:
        """Record one evaluation's metric; return the new learning-rate scale."""
        metric = float(metric)
        if self._improved(metric):
            self.best = metric
            self.wait = 0
            return current_scale
        self.wait += 1
        if not self.enabled or self.wait < self.cfg.plateau_patience:
            return current_scale
        self.wait = 0
        new_scale = min(current_scale, max(current_scale * self.cfg.plateau_factor, self.min_scale))
        if new_scale < current_scale:
            self.num_reductions += 1
        return new_scale

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state (the scale itself is the caller's to keep)."""
        return {"best": self.best, "wait": self.wait, "num_reductions": self.num_reductions, "mode": self.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a state saved for the other mode is ignored (fresh start)."""
        if state.get("mode", self.mode) != self.mode:
            return
        self.best = None if state.get("best") is None else float(state["best"])
        self.wait = int(state.get("wait", 0))
        self.num_reductions = int(state.get("num_reductions", 0))
