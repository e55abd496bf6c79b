"""The training graph, in the four steps of TensorFlow's cifar10 tutorial.

``inference`` (the network and the ``output`` scope), ``loss`` (``cross_entropy``),
``evaluation`` (``accuracy``) and ``training`` (``train``); :func:`build_graph` chains them
on the inputs from :class:`~graphcnn.data.pipeline.InputPipeline` and returns every handle
the trainer needs in one :class:`GraphHandles`.

Names a plain TensorFlow script can rely on (the checkpoint contract, see README):
``input/images``, ``input/labels``, ``input/is_training``, ``input/keep_rate_<group>``,
``output/logits``, ``output/probabilities``, ``output/classes``, ``global_step``.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from graphcnn.config import Config, ModelConfig, TrainConfig
from graphcnn.data.pipeline import InputHandles
from graphcnn.model.network import Network, NetworkOutput
from graphcnn.model.precision import PRECISIONS, resolve_precision

v1 = tf.compat.v1


class GraphHandles(NamedTuple):
    """Every tensor and op of the training graph the trainer and hooks use."""

    inputs: InputHandles
    net: NetworkOutput
    logits: tf.Tensor  # output/logits: float32 [B, K]
    probabilities: tf.Tensor  # output/probabilities: float32 [B, K]
    classes: tf.Tensor  # output/classes: int64 [B]
    cross_entropy: tf.Tensor  # float32 scalar, mean over the batch
    loss: tf.Tensor  # float32 scalar, cross entropy + weight decay
    accuracy: tf.Tensor  # float32 scalar, batch accuracy
    correct: tf.Tensor  # int32 scalar, correct predictions in the batch
    global_step: tf.Variable
    learning_rate: tf.Tensor  # float32 scalar: schedule(global_step) * learning_rate_scale
    learning_rate_scale: tf.Variable  # reduce-on-plateau multiplier, saved in checkpoints
    gradients: list[tuple[tf.Tensor, tf.Variable]]
    train_op: tf.Operation


def inference(network: Network, inputs: InputHandles) -> tuple[NetworkOutput, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Connect the network to ``input/images``; name its outputs under ``output/``."""
    out = network(inputs.images, inputs.is_training, inputs.keep_rates)
    return (out, *_outputs(out.logits))


def _outputs(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    with tf.name_scope("output"):
        logits = tf.identity(logits, name="logits")
        probabilities = tf.nn.softmax(logits, name="probabilities")
        classes = tf.argmax(logits, axis=1, name="classes")
    return logits, probabilities, classes


def inference_graph(model: ModelConfig, num_classes: int) -> tuple[tf.Graph, v1.train.Saver]:
    """A graph of the forward pass alone, and a Saver over its variables, for serving.

    ``input/images`` is a float32 [None, H, W, C] placeholder; ``input/is_training``
    (default False) and ``input/keep_rate_<group>`` (default 1.0) keep the training graph's
    names, as do ``output/{logits,probabilities,classes}`` and every variable, so a training
    checkpoint restores it. No input pipeline, loss, optimizer or summaries: imported and
    run cold, it costs a fraction of the training graph (BENCHMARKS.md, cold predict). It
    computes in float32 whatever ``train.precision`` was, so it runs on any machine.
    """
    graph = tf.Graph()
    with graph.as_default():
        network = Network(model, num_classes)
        with tf.name_scope("input"):
            images = v1.placeholder(tf.float32, [None, model.input_height, model.input_width, model.channels],
                                    name="images")
            is_training = v1.placeholder_with_default(False, [], name="is_training")
            keep_rates = {g: v1.placeholder_with_default(1.0, [], name=f"keep_rate_{g}") for g in network.keep_groups}
        _outputs(network(images, is_training, keep_rates).logits)
        saver = v1.train.Saver(v1.global_variables(), sharded=False)
    return graph, saver


def loss(logits: tf.Tensor, labels: tf.Tensor, weight_decay: tf.Tensor, label_smoothing: float = 0.0):
    """Mean softmax cross entropy (optionally label-smoothed), and it plus weight decay."""
    with tf.name_scope("cross_entropy"):
        if label_smoothing > 0:
            onehot = tf.one_hot(labels, tf.shape(logits)[1])
            per_example = tf.nn.softmax_cross_entropy_with_logits(
                labels=v1.stop_gradient(onehot * (1 - label_smoothing) + label_smoothing / tf.cast(tf.shape(logits)[1], tf.float32)),
                logits=logits)
        else:
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        cross_entropy = tf.reduce_mean(per_example, name="mean")
        total = tf.add(cross_entropy, weight_decay, name="total")
    return cross_entropy, total


def evaluation(classes: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Batch accuracy and the number of correct predictions."""
    with tf.name_scope("accuracy"):
        hits = tf.equal(classes, labels)
        correct = tf.reduce_sum(tf.cast(hits, tf.int32), name="correct")
        accuracy = tf.reduce_mean(tf.cast(hits, tf.float32), name="accuracy")
    return accuracy, correct


OPTIMIZERS = {
    "adam": lambda lr, cfg: v1.train.AdamOptimizer(lr),
    "sgd": lambda lr, cfg: v1.train.GradientDescentOptimizer(lr),
    "momentum": lambda lr, cfg: v1.train.MomentumOptimizer(lr, cfg.momentum),
    "rmsprop": lambda lr, cfg: v1.train.RMSPropOptimizer(lr, momentum=cfg.momentum),
}


def get_optimizer(cfg: TrainConfig, learning_rate: tf.Tensor) -> v1.train.Optimizer:
    """The optimizer ``cfg.optimizer``; the error lists the choices."""
    try:
        make = OPTIMIZERS[cfg.optimizer]
    except KeyError:
        raise ValueError(f"unknown optimizer '{cfg.optimizer}'; choices: {', '.join(OPTIMIZERS)}") from None
    return make(learning_rate, cfg)


def training(total_loss: tf.Tensor, cfg: TrainConfig, total_steps: int, moving_updates, var_list):
    """The ``train`` scope: global step, learning rate, gradients, clipping, the train op.

    With ``cfg.check_numerics`` the loss and the gradients' global norm pass check_numerics
    ops the update depends on, so a NaN/Inf raises before any weight is updated.
    """
    from graphcnn.train.schedules import learning_rate as schedule

    global_step = v1.train.get_or_create_global_step()
    with v1.variable_scope("train"):  # one scope for variables and ops: no "train_1" in the graph view
        scale = v1.get_variable("learning_rate_scale", [], initializer=v1.ones_initializer(), trainable=False)
        lr = tf.multiply(schedule(global_step, cfg.learning_rate, cfg.schedule, total_steps), scale,
                         name="learning_rate")
        if cfg.check_numerics:
            total_loss = tf.debugging.check_numerics(total_loss, "loss is NaN or Inf")
        optimizer = get_optimizer(cfg, lr)
        # GATE_NONE: no per-op tuple of gradients. Its control edges (BiasAddGrad -> Conv2DBackpropFilter)
        # stop oneDNN from fusing the bias gradient into the filter gradient, the kernel Keras gets;
        # unfused, the bfloat16 bias gradients took ~5 ms of a ~23 ms digits step (BENCHMARKS.md,
        # sweep row "gate_op"). The updates below still wait for every gradient, so no update
        # races a gradient's read.
        gradients = optimizer.compute_gradients(total_loss, var_list=var_list,
                                                gate_gradients=v1.train.Optimizer.GATE_NONE)
        gradients = [(g, v) for g, v in gradients if g is not None]
        grads, variables = [g for g, _ in gradients], [v for _, v in gradients]
        checks = list(grads)  # tensors as control inputs: wait for them, copy nothing
        if cfg.check_numerics:
            # a finite loss can still have overflowing gradients: check them (one reduction per
            # variable) before any update is applied, so the weights stay the last good ones
            checks.append(tf.debugging.check_numerics(tf.linalg.global_norm(grads), "gradients are NaN or Inf"))
        if cfg.clip_global_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, cfg.clip_global_norm)
        gradients = list(zip(grads, variables))
        with tf.control_dependencies(checks):
            update_ops = [v1.assign_sub(var, delta).op for var, delta in moving_updates]
        with tf.control_dependencies(checks + update_ops):
            train_op = optimizer.apply_gradients(gradients, global_step=global_step, name="step")
    return global_step, lr, scale, gradients, train_op


def network_for(config: Config, num_classes: int, precision: str | None = None) -> Network:
    """The training network of ``config``: its weight decay, seed and compute precision.

    ``precision``: ``config.train.precision`` already resolved, where the caller has it.
    """
    t = config.train
    dtype = PRECISIONS[resolve_precision(precision or t.precision)]
    return Network(config.model, num_classes, t.weight_decay, seed=t.seed, compute_dtype=dtype)


def build_graph(config: Config, inputs: InputHandles, num_classes: int, total_steps: int,
                network: Network | None = None) -> GraphHandles:
    """Chain inference, loss, evaluation and training on ``inputs`` in the default graph."""
    from graphcnn.train.finetune import trainable_variables

    network = network or network_for(config, num_classes)
    net, logits, probabilities, classes = inference(network, inputs)
    cross_entropy, total = loss(logits, inputs.labels, net.weight_decay, config.train.label_smoothing)
    accuracy, correct = evaluation(classes, inputs.labels)
    var_list = trainable_variables(v1.trainable_variables(), config.train.trainable_scopes)
    global_step, lr, scale, gradients, train_op = training(total, config.train, total_steps, net.updates, var_list)
    return GraphHandles(inputs, net, logits, probabilities, classes, cross_entropy, total, accuracy, correct,
                        global_step, lr, scale, gradients, train_op)
