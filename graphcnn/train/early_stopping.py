"""Early stopping on a validation metric (pure Python, resumable)."""

from __future__ import annotations

import math
from typing import Any

from graphcnn.config import EarlyStoppingConfig

__all__ = ["EarlyStopping"]


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
        if math.isnan(metric):
            improved = False
        elif self._best is None:
            improved = True
        elif self.mode == "max":
            improved = metric > self._best + self.cfg.min_delta
        else:
            improved = metric < self._best - self.cfg.min_delta
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
