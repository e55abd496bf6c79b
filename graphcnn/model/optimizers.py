"""Optimizers by ``train.optimizer`` name (the ``tf.compat.v1.train`` ones: they build slot
variables named ``<variable>/<Optimizer>`` that fine-tuning recognizes as training state)."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from graphcnn.config import TrainConfig
from graphcnn.registry import lookup

__all__ = ["OPTIMIZERS", "get_optimizer"]

v1 = tf.compat.v1

# name -> (learning rate, train config) -> optimizer; momentum is read only by those that use it
OPTIMIZERS: dict[str, Callable[[tf.Tensor, TrainConfig], v1.train.Optimizer]] = {
    "adam": lambda lr, cfg: v1.train.AdamOptimizer(lr),
    "sgd": lambda lr, cfg: v1.train.GradientDescentOptimizer(lr),
    "momentum": lambda lr, cfg: v1.train.MomentumOptimizer(lr, cfg.momentum),
    "rmsprop": lambda lr, cfg: v1.train.RMSPropOptimizer(lr, momentum=cfg.momentum),
}


def get_optimizer(cfg: TrainConfig, learning_rate: tf.Tensor) -> v1.train.Optimizer:
    """The optimizer ``cfg.optimizer`` at ``learning_rate``; the error lists the choices."""
    return lookup(OPTIMIZERS, cfg.optimizer, "optimizer")(learning_rate, cfg)
