"""Optimizers by ``train.optimizer`` name (the ``tf.compat.v1.train`` ones: they build slot
variables named ``<variable>/<Optimizer>`` that fine-tuning recognizes as training state)."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from graphcnn.config import TrainConfig
from graphcnn.registry import lookup

__all__ = ["OPTIMIZERS", "get_optimizer"]

v1 = tf.compat.v1

class RMSProp(v1.train.RMSPropOptimizer):
    """RMSProp as Keras's ``RMSprop`` computes it (rho 0.9, epsilon 1e-7 inside the square
    root, the mean square starting at 0), built on TF1's op and its slot names
    (``<variable>/RMSProp``, ``<variable>/RMSProp_1``). TF1 starts the mean square at 1, which
    holds small gradients back for about a hundred steps, then lets them move ten times faster
    than Keras's."""

    def __init__(self, learning_rate, momentum: float = 0.0):
        super().__init__(learning_rate, decay=0.9, momentum=momentum, epsilon=1e-7)

    def _create_slots(self, var_list):
        for v in var_list:  # TF1's order (mean square, then momentum): the same slot names
            self._zeros_slot(v, "rms", self._name)
            self._zeros_slot(v, "momentum", self._name)


# name -> (learning rate, train config) -> optimizer; the momenta are read only by those that use them
OPTIMIZERS: dict[str, Callable[[tf.Tensor, TrainConfig], v1.train.Optimizer]] = {
    "adam": lambda lr, cfg: v1.train.AdamOptimizer(lr),
    "sgd": lambda lr, cfg: v1.train.GradientDescentOptimizer(lr),
    "momentum": lambda lr, cfg: v1.train.MomentumOptimizer(lr, cfg.momentum),
    "rmsprop": lambda lr, cfg: RMSProp(lr, momentum=cfg.rmsprop_momentum),
}


def get_optimizer(cfg: TrainConfig, learning_rate: tf.Tensor) -> v1.train.Optimizer:
    """The optimizer ``cfg.optimizer`` at ``learning_rate``; the error lists the choices."""
    return lookup(OPTIMIZERS, cfg.optimizer, "optimizer")(learning_rate, cfg)
