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

import contextlib
import os
import re
from typing import Callable, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from graphcnn.config import Config, ConfigError, ModelConfig, TrainConfig
from graphcnn.data.pipeline import InputHandles
from graphcnn.model import schedules
from graphcnn.model.devices import parameter_device, place
from graphcnn.model.network import Network, NetworkOutput
from graphcnn.model.optimizers import get_optimizer
from graphcnn.model.precision import PRECISIONS, resolve_precision
from graphcnn.model.scopes import trainable_variables

v1 = tf.compat.v1
AVERAGE_SUFFIX = "ExponentialMovingAverage"  # the shadow of conv1/weights is conv1/weights/ExponentialMovingAverage


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
    gradients: list[tuple[tf.Tensor, tf.Variable]]  # as applied (an all-reduce worker: its own, before the mean)
    train_op: tf.Operation
    stop_votes: tf.Tensor | None = None  # all-reduce workers: the workers' stop votes of the step
    # train.moving_average_decay: exchanges the trained weights with their moving averages
    # (run it twice to exchange them back); None without averages
    swap_averages: tf.Operation | None = None
    averages: tuple = ()  # (variable, its moving average) pairs


class Replication(NamedTuple):
    """How one worker of a cluster joins the training step (:mod:`graphcnn.cluster`)."""

    index: int  # this worker's: its dropout masks differ from the others'
    count: int
    # (gradient, variable) pairs -> the pairs averaged over the workers, and the stop votes
    reduce: Callable[[list], tuple[list, tf.Tensor]] | None = None
    step_ops: Sequence[tf.Operation] = ()  # run with every update (the per-worker step count)


def inference(network: Network, inputs: InputHandles, step: tf.Tensor | None = None
              ) -> tuple[NetworkOutput, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Connect the network to ``input/images``; name its outputs under ``output/``.
    ``step``: what keys the dropout masks (the global step when training)."""
    out = network(inputs.images, inputs.is_training, inputs.keep_rates, step)
    return (out, *_outputs(out.logits))


def _outputs(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    with tf.name_scope("output"):
        logits = tf.identity(logits, name="logits")
        probabilities = tf.nn.softmax(logits, name="probabilities")
        classes = tf.argmax(logits, axis=1, name="classes")
    return logits, probabilities, classes


def inference_graph(model: ModelConfig, num_classes: int, averaged_scopes: Sequence[Sequence[str]] | None = None
                    ) -> tuple[tf.Graph, v1.train.Saver]:
    """A graph of the forward pass alone, and a Saver over its variables, for serving.

    ``input/images`` is a float32 [None, H, W, C] placeholder; ``input/is_training``
    (default False) and ``input/keep_rate_<group>`` (default 1.0) keep the training graph's
    names, as do ``output/{logits,probabilities,classes}`` and every variable, so a training
    checkpoint restores it. No input pipeline, loss, optimizer or summaries: imported and
    run cold, it costs a fraction of the training graph (BENCHMARKS.md, Q5). It
    computes in float32 whatever ``train.precision`` was, so it runs on any machine.

    ``averaged_scopes`` (a run with ``train.moving_average_decay``: the trainable scopes of
    each of its stages, () for all): the saver restores each weight that every stage trained
    from its moving average (``<name>/ExponentialMovingAverage``), so a checkpoint of
    ``checkpoints/`` predicts as validation measured it; ``best/`` holds the averages under
    the weights' own names. A weight only a later stage trains is read as itself: the earlier
    stages' checkpoints have no average of it, and every checkpoint of the run must restore.
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
        variables: list | dict = v1.global_variables()
        if averaged_scopes is not None:
            averaged = set.intersection(*[{v.op.name for v in trainable_variables(v1.trainable_variables(), scopes)}
                                          for scopes in averaged_scopes])
            variables = {(f"{v.op.name}/{AVERAGE_SUFFIX}" if v.op.name in averaged else v.op.name): v
                         for v in variables}
        saver = v1.train.Saver(variables, sharded=False)
    return graph, saver


def loss(logits: tf.Tensor, labels: tf.Tensor, weight_decay: tf.Tensor, label_smoothing: float = 0.0):
    """Mean softmax cross entropy (optionally label-smoothed), and it plus weight decay."""
    with tf.name_scope("cross_entropy"):
        if label_smoothing > 0:
            onehot = tf.one_hot(labels, tf.shape(logits)[1])
            per_example = tf.nn.softmax_cross_entropy_with_logits(
                labels=v1.stop_gradient(
                    onehot * (1 - label_smoothing) + label_smoothing / tf.cast(tf.shape(logits)[1], tf.float32)),
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


def training(tower_losses: Sequence[tuple[tf.Tensor, str | None]], cfg: TrainConfig, total_steps: int,
             moving_updates, var_list, param_device: str | None = None, replication: Replication | None = None,
             schedule_start: int = 0):
    """The ``train`` scope: global step, learning rate, gradients, clipping, the train op.

    ``tower_losses``: (total loss, device) per tower (one, device None, without towers); each
    tower's gradients are computed on its device and averaged on ``param_device``, where the
    variables live. With ``cfg.check_numerics`` the loss and the gradients' global norm pass
    check_numerics ops the update depends on, so a NaN/Inf raises before any weight is updated.
    ``replication``: a cluster worker's gradients are averaged over the workers before clipping.
    ``schedule_start``: the global step the learning-rate schedule counts from (a stage of a
    staged run has its own schedule, over its own steps, as a new Keras ``fit()``).
    With ``cfg.moving_average_decay`` the train op also updates the weights' moving averages,
    and the last item returned is [swap op, (variable, average) pairs] (:func:`moving_averages`),
    else None.
    """
    global_step = v1.train.get_or_create_global_step()
    with v1.variable_scope("train"):  # one scope for variables and ops: no "train_1" in the graph view
        scale = v1.get_variable("learning_rate_scale", [], initializer=v1.ones_initializer(), trainable=False)
        step = global_step if not schedule_start else tf.subtract(global_step, schedule_start, name="stage_step")
        lr = tf.multiply(schedules.learning_rate(step, cfg.learning_rate, cfg.schedule, total_steps - schedule_start),
                         scale, name="learning_rate")
        optimizer = get_optimizer(cfg, lr)
        per_tower = []
        for i, (total_loss, device) in enumerate(tower_losses):
            if cfg.check_numerics:
                total_loss = tf.debugging.check_numerics(total_loss, "loss is NaN or Inf")
            # GATE_NONE: no per-op tuple of gradients. Its control edges (BiasAddGrad -> Conv2DBackpropFilter)
            # stop oneDNN from fusing the bias gradient into the filter gradient, the kernel Keras gets
            # (BENCHMARKS.md, "Why it is fast"). The updates below still wait for every gradient, so no
            # update races a gradient's read.
            with _tower_scope(i, device, len(tower_losses)):
                per_tower.append([(g, v) for g, v in optimizer.compute_gradients(
                    total_loss, var_list=var_list, gate_gradients=v1.train.Optimizer.GATE_NONE) if g is not None])
        gradients = per_tower[0] if len(per_tower) == 1 else _average(per_tower, param_device)
        votes, own = None, None
        if replication is not None and replication.reduce is not None:
            # views and traces get this worker's own gradients: computing them runs no collective,
            # which the other workers would have to join
            own = gradients
            gradients, votes = replication.reduce(gradients)
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
        step_ops = list(replication.step_ops) if replication is not None else []
        with tf.control_dependencies(checks + update_ops + step_ops):
            train_op = optimizer.apply_gradients(gradients, global_step=global_step, name="step")
    averages = None
    if cfg.moving_average_decay > 0:
        train_op, *averages = moving_averages(train_op, var_list, cfg.moving_average_decay, global_step)
    return global_step, lr, scale, own or gradients, train_op, votes, averages


def moving_averages(train_op: tf.Operation, var_list, decay: float, global_step: tf.Variable
                    ) -> tuple[tf.Operation, tf.Operation, tuple]:
    """Keep an exponential moving average of ``var_list``, updated after each train step.

    Returns the train op that also updates the averages, an op that exchanges each variable
    with its average (run it once to evaluate with the averages, once more to go back), and
    the (variable, average) pairs. ``num_updates`` is the global step, so early on the decay is
    ``min(decay, (1 + step) / (10 + step))`` and the averages follow the weights closely. The
    shadows are named as TensorFlow's cifar10 tutorial has them (``<variable>/
    ExponentialMovingAverage``, created outside the ``train`` variable scope) and live beside
    their variables.
    """
    with tf.name_scope("train/"):
        ema = v1.train.ExponentialMovingAverage(decay, num_updates=global_step, name=AVERAGE_SUFFIX)
        with tf.control_dependencies([train_op]):
            train_op = ema.apply(var_list)
    with tf.name_scope("moving_average_swap"):
        pairs = [(var, ema.average(var)) for var in var_list]
        values = [(var.read_value(), shadow.read_value()) for var, shadow in pairs]
        with tf.control_dependencies([t for pair in values for t in pair]):  # both read before either is written
            swap = tf.group(*[op for (var, shadow), (v, s) in zip(pairs, values)
                              for op in (var.assign(s, read_value=False), shadow.assign(v, read_value=False))],
                            name="swap")
    return train_op, swap, tuple(pairs)


def _tower_scope(index: int, device: str | None, count: int):
    """Tower ``index``'s name scope and device; nothing when there is one tower."""
    if count == 1:
        return contextlib.nullcontext()
    scope = contextlib.ExitStack()
    scope.enter_context(tf.device(device))
    scope.enter_context(tf.name_scope(f"tower_{index}"))
    return scope


def _average(per_tower: list[list[tuple[tf.Tensor, tf.Variable]]], device: str | None):
    """The mean of each variable's gradients over the towers (equal slices of the batch: the
    gradient of the whole batch's mean loss), computed on ``device``."""
    with tf.device(device), tf.name_scope("average_gradients"):
        return [(tf.add_n([tower[i][0] for tower in per_tower]) / len(per_tower), var)
                for i, (_, var) in enumerate(per_tower[0])]


def network_for(config: Config, num_classes: int, precision: str | None = None) -> Network:
    """The training network of ``config``: its weight decay, seed and compute precision.

    ``precision``: ``config.train.precision`` already resolved, where the caller has it.
    """
    t = config.train
    dtype = PRECISIONS[resolve_precision(precision or t.precision)]
    return Network(config.model, num_classes, t.weight_decay, seed=t.seed, compute_dtype=dtype,
                   trainable_scopes=t.trainable_scopes)


def check_network_fits(config: Config) -> None:
    """ConfigError naming the layer if ``config``'s network cannot be connected to its input
    size (a VALID convolution or pool larger than what reaches it, say): found by connecting it
    to a placeholder in a graph of its own, before any data is read (else after the scan of a
    whole folder, in TensorFlow's words). Not for a pretrained backbone's network: its base
    takes 1-2 s to connect, and fits the sizes it was trained at."""
    m = config.model
    if m.backbone:
        return
    graph = tf.Graph()
    with graph.as_default():
        network = network_for(config, 2)
        images = v1.placeholder(tf.float32, [None, m.input_height, m.input_width, m.channels])
        keep = {g: v1.placeholder(tf.float32, []) for g in network.keep_groups}
        try:
            network(images, v1.placeholder(tf.bool, []), keep)
        except ValueError as err:
            text = " ".join(str(err).split())
            node = re.search(r"node ([\w.-]+?)/", text)
            where = f"layer {node.group(1)}" if node else "a layer"
            detail = text.split(" for '")[0]  # TensorFlow's words, without its node dump
            raise ConfigError(f"model.layers: {where} does not fit the {m.input_width}x{m.input_height} input "
                              f"(model.input_width x model.input_height), after the layers before it: {detail}. "
                              "Use padding SAME, smaller kernels or pools, fewer pools, or a larger input") from None
        _check_network_size(v1.global_variables())


# training holds each weight about four times in float32: itself, its gradient, and an optimizer's two slots
TRAINING_BYTES_PER_WEIGHT = 16


def _check_network_size(variables: Sequence[tf.Variable]) -> None:
    """ConfigError naming the largest layer when the network cannot be trained here: a variable over
    TensorFlow's 2 GB tensor limit (the start failed with "Cannot parse tensor from proto"), or
    weights whose training needs more than this machine's memory (the process died, exit 139,
    after the data had loaded)."""
    if not variables:
        return
    sizes = {v.op.name: int(np.prod(v.shape.as_list())) for v in variables}
    largest = max(sizes, key=sizes.get)
    layer, total = largest.split("/")[0], sum(sizes.values())
    fix = "use fewer units or filters, or a pool or global_avg_pool before it"
    if sizes[largest] * 4 >= 2**31:
        raise ConfigError(f"model.layers: {layer} has {sizes[largest]:,} weights in one tensor ({largest}: "
                          f"{sizes[largest] * 4 / 1e9:.1f} GB), over TensorFlow's 2 GB limit for one tensor; {fix}")
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): TensorFlow's own error, later
        return
    if total * TRAINING_BYTES_PER_WEIGHT > memory:
        raise ConfigError(f"model.layers: the network has {total:,} weights ({layer}: {sizes[largest]:,}); "
                          f"training them needs about {total * TRAINING_BYTES_PER_WEIGHT / 1e9:.0f} GB (each "
                          "weight, its gradient and the optimizer's two slots), more than this machine's "
                          f"{memory / 1e9:.0f} GB of memory; {fix}")


def build_graph(config: Config, inputs: InputHandles, num_classes: int, total_steps: int,
                network: Network | None = None, devices: Sequence[str] = (),
                replication: Replication | None = None, schedule_start: int = 0) -> GraphHandles:
    """Chain inference, loss, evaluation and training on ``inputs`` in the default graph.

    ``devices``: with two or more, one tower per device (see :func:`towers`); else the one graph.
    ``replication``: this process is one worker of a cluster.
    ``schedule_start``: the step the learning-rate schedule counts from (:func:`training`).
    """
    network = network or network_for(config, num_classes)
    # dropout masks keyed on the global step: a resumed run draws what the uninterrupted one would
    global_step = v1.train.get_or_create_global_step()
    var_list = lambda: trainable_variables(v1.trainable_variables(), config.train.trainable_scopes)  # noqa: E731
    if len(devices) > 1:
        return towers(config, inputs, num_classes, total_steps, network, list(devices), global_step, var_list,
                      replication, schedule_start)
    key = global_step if replication is None else _replica_key(global_step, replication.index, replication.count)
    net, logits, probabilities, classes = inference(network, inputs, key)
    cross_entropy, total = loss(logits, inputs.labels, net.weight_decay, config.train.label_smoothing)
    accuracy, correct = evaluation(classes, inputs.labels)
    global_step, lr, scale, gradients, train_op, votes, averages = training(
        [(total, None)], config.train, total_steps, net.updates, var_list(), replication=replication,
        schedule_start=schedule_start)
    return GraphHandles(inputs, net, logits, probabilities, classes, cross_entropy, total, accuracy, correct,
                        global_step, lr, scale, gradients, train_op, votes, *(averages or ()))


def _replica_key(global_step: tf.Variable, index: int, count: int) -> tf.Tensor:
    """The dropout key of replica ``index`` of ``count`` at the global step: each its own masks."""
    return tf.cast(global_step, tf.int64) * count + index


def towers(config: Config, inputs: InputHandles, num_classes: int, total_steps: int, network: Network,
           devices: list[str], global_step: tf.Variable, var_list, replication: Replication | None = None,
           schedule_start: int = 0) -> GraphHandles:
    """In-graph replication: the training batch split into one slice per device.

    Tower ``i`` (scope ``tower_<i>``) connects the network to slice ``i`` on ``devices[i]``,
    sharing the variables, which keep their names and live on one device
    (:func:`graphcnn.model.devices.parameter_device`); the gradients are averaged there and
    applied once. Batch norm normalizes each slice by its own statistics, and its moving
    averages are updated from tower 0 (as TensorFlow's multi-GPU cifar10 and tensorpack do).
    The train step's loss and accuracy are the means over the towers. ``output/*``,
    ``cross_entropy`` and ``accuracy`` (what evaluation and prediction fetch) come from one
    more connection on the whole input, which only evaluation runs.
    """
    n, cfg = len(devices), config.train
    if cfg.batch_size % n:
        raise ValueError(f"train.batch_size {cfg.batch_size} does not split evenly over {n} devices "
                         f"({', '.join(devices)}); make it a multiple of {n}")
    param_device = parameter_device(devices)
    images, labels = tf.split(inputs.images, n, name="split_images"), tf.split(inputs.labels, n, name="split_labels")
    tower_losses, accuracies, first = [], [], None
    for i, device in enumerate(devices):
        with tf.name_scope(f"tower_{i}"), v1.device(place(device, param_device)):
            # each tower its own dropout masks: the key is (step, tower), one tower's is the step's
            worker, workers = (replication.index, replication.count) if replication is not None else (0, 1)
            out = network(images[i], inputs.is_training, inputs.keep_rates,
                          _replica_key(global_step, worker * n + i, workers * n))
            _, total = loss(out.logits, labels[i], out.weight_decay, cfg.label_smoothing)
            accuracies.append(evaluation(tf.argmax(out.logits, axis=1), labels[i])[0])
            tower_losses.append((total, device))
            first = first or out
    with tf.name_scope("towers"):
        mean_loss = tf.reduce_mean(tf.stack([t for t, _ in tower_losses]), name="loss")
        mean_accuracy = tf.reduce_mean(tf.stack(accuracies), name="accuracy")
    global_step, lr, scale, gradients, train_op, votes, averages = training(
        tower_losses, cfg, total_steps, first.updates, var_list(), param_device, replication, schedule_start)
    net, logits, probabilities, classes = inference(network, inputs)  # the whole input, for evaluation
    cross_entropy, _ = loss(logits, inputs.labels, net.weight_decay, cfg.label_smoothing)
    _, correct = evaluation(classes, inputs.labels)
    return GraphHandles(inputs, net, logits, probabilities, classes, cross_entropy, mean_loss, mean_accuracy,
                        correct, global_step, lr, scale, gradients, train_op, votes, *(averages or ()))
