"""What the training loop decides from each validation metric: stop early, reduce the rate.

:class:`EarlyStopping` says when the monitored metric has stopped improving;
:class:`PlateauReducer` says by how much to scale the learning rate when it plateaus (the
graph multiplies that scale into the scheduled rate, see :mod:`graphcnn.model.schedules`).
Both are pure Python on numbers, and resumable through JSON-serializable state.
"""

from __future__ import annotations

import math
from typing import Any

from graphcnn.config import EarlyStoppingConfig, ScheduleConfig

__all__ = ["EarlyStopping", "PlateauReducer"]


def _improves(metric: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``metric`` beats ``best`` by more than ``min_delta`` (higher for ``mode="max"``,
    lower for ``"min"``): the first metric (``best`` None) always does, a NaN never does."""
    if math.isnan(metric):
        return False
    if best is None:
        return True
    return metric > best + min_delta if mode == "max" else metric < best - min_delta


class EarlyStopping:
    """Track the best validation metric and say when to stop.

    ``cfg.monitor == "accuracy"`` improves upwards, ``"loss"`` downwards. An evaluation
    improves when it beats the best so far by more than ``cfg.min_delta``; the first
    evaluation always does (a NaN never does). Training should stop once
    ``cfg.patience > 0`` evaluations in a row have not improved.
    """

    def __init__(self, cfg: EarlyStoppingConfig) -> None:
        if cfg.monitor not in ("accuracy", "loss"):
            raise ValueError(f"train.early_stopping.monitor: '{cfg.monitor}' is not one of accuracy, loss")
        self.cfg = cfg
        self.mode = "max" if cfg.monitor == "accuracy" else "min"
        self._best: float | None = None
        self._best_step: int | None = None
        self.wait = 0  # evaluations since the best one

    @property
    def best(self) -> float | None:
        """The best metric so far, None before the first evaluation."""
        return self._best

    @property
    def best_step(self) -> int | None:
        """The global step of the best evaluation, None before the first."""
        return self._best_step

    @property
    def should_stop(self) -> bool:
        return self.cfg.patience > 0 and self.wait >= self.cfg.patience

    def update(self, step: int, metric: float) -> bool:
        """Record the metric of the evaluation at global ``step``; True when it is a new best."""
        metric = float(metric)
        improved = _improves(metric, self._best, self.mode, self.cfg.min_delta)
        if improved:
            self._best = metric
            self._best_step = int(step)
            self.wait = 0
        else:
            self.wait += 1
        return improved

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state."""
        return {"best": self._best, "best_step": self._best_step, "wait": self.wait, "monitor": self.cfg.monitor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a state saved for another monitor is ignored (fresh start)."""
        if state.get("monitor", self.cfg.monitor) != self.cfg.monitor:
            return
        self._best = None if state.get("best") is None else float(state["best"])
        self._best_step = None if state.get("best_step") is None else int(state["best_step"])
        self.wait = int(state.get("wait", 0))


class PlateauReducer:
    """Reduce-on-plateau, as a multiplicative scale on the scheduled learning rate.

    After ``cfg.plateau_patience`` consecutive evaluations without improvement (a strictly
    better metric than the best so far: higher for ``mode="max"``, lower for ``"min"``) the
    scale is multiplied by ``cfg.plateau_factor`` and the count restarts. The scale never
    drops below ``cfg.plateau_min_learning_rate / base_rate``, so that ``base_rate * scale``
    stays at or above the floor, and it never rises. ``cfg.plateau_factor <= 0`` switches
    reduction off (the scale is returned unchanged). A NaN metric counts as no improvement.
    ``mode``: ``"max"`` (accuracy) or ``"min"`` (loss); ``base_rate``: the base learning rate,
    needed only when ``cfg.plateau_min_learning_rate > 0`` (to turn the floor into a scale).

    Pure Python; the state (:meth:`state_dict`) is JSON-serializable.
    """

    def __init__(self, cfg: ScheduleConfig, mode: str = "max", base_rate: float | None = None) -> None:
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

    def update(self, metric: float, current_scale: float) -> float:
        """Record one evaluation's metric; return the new learning-rate scale."""
        metric = float(metric)
        if _improves(metric, self.best, self.mode):
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
