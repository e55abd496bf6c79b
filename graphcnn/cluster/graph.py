"""The graph side of between-graph replication: where ops go, and what the workers share.

Every worker builds the same graph as a single-process run, with the same names (the
checkpoint contract holds), plus:

- **ps mode** (a ``ps`` job): :func:`device_function` puts every variable on a ps task
  (spread over the tasks by byte size, ``GreedyLoadBalancingStrategy``) and every other op on
  this worker; each worker applies its own gradients to the shared variables when they
  arrive (asynchronous, as TF1's ``replica_device_setter`` was made for).
- **all-reduce mode** (workers only): each worker keeps its own copy of the variables;
  :func:`allreduce_gradients` averages the gradients over the workers with one collective
  op a step (TensorFlow's ``CollectiveReduce`` over its gRPC runtime, the op
  ``MultiWorkerMirroredStrategy`` runs), so every copy applies the same update;
  :class:`Broadcast` copies the chief's variables to the others when a session starts.

:class:`SharedState` holds what the workers tell each other during training: how many steps
each did, and whether the chief has stopped. It is local state (not in checkpoints).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from graphcnn.cluster.spec import ClusterTask

v1 = tf.compat.v1

# a collective group of the workers; instance keys name each collective op within it (the
# same graph on every worker gives the same keys)
GROUP_KEY = 1
REDUCE_INSTANCE = 1
BROADCAST_INSTANCE = 100
# how long a collective waits for the other workers before it fails (DeadlineExceeded, one error
# line) instead of forever: a peer that died before it joined (a graph that does not match, say)
# left the chief blocked in the broadcast, past any signal. Long enough for a worker's start
# and for the chief's validations, which the others wait for in their next step's reduce.
COLLECTIVE_TIMEOUT_SECONDS = 1800.0


def session_config(task: ClusterTask, base: v1.ConfigProto | None = None, peers: bool = True) -> v1.ConfigProto:
    """``base`` for a session on this task's server: it sees only the ps tasks and itself (a
    worker never waits on another worker's graph), with soft placement (a resource variable's
    helper ops follow the variable to the ps); all-reduce names its group leader and sees the
    other workers, unless ``peers`` is False (the chief's final evaluation, after they stopped)."""
    config = v1.ConfigProto()
    if base is not None:
        config.CopyFrom(base)
    config.allow_soft_placement = True
    if task.mode == "ps":
        config.device_filters[:] = ["/job:ps", task.device]
    elif peers:
        config.device_filters[:] = ["/job:worker"]
        config.experimental.collective_group_leader = "/job:worker/replica:0/task:0"
    else:
        config.device_filters[:] = [task.device]
    return config


def device_function(task: ClusterTask):
    """The device function the training graph is built under (``tf.compat.v1.device``)."""
    if task.mode == "allreduce":
        return task.device
    return v1.train.replica_device_setter(cluster=task.cluster_spec(), worker_device=task.device,
                                          ps_strategy=GreedyBySize(task.num_ps))


class GreedyBySize:
    """A ``replica_device_setter`` strategy: each variable to the ps task holding the fewest
    bytes so far (contrib's GreedyLoadBalancingStrategy, gone from TensorFlow 2). Every worker
    builds the same graph in the same order, so each places every variable alike."""

    def __init__(self, num_tasks: int):
        self.loads = [0] * num_tasks

    def __call__(self, op: tf.Operation) -> int:
        task = min(range(len(self.loads)), key=self.loads.__getitem__)
        self.loads[task] += variable_bytes(op)
        return task


def variable_bytes(op: tf.Operation) -> int:
    """The bytes of the variable ``op`` creates (VarHandleOp/VariableV2: its shape and dtype)."""
    shape = tf.TensorShape(op.get_attr("shape"))
    dtype = tf.as_dtype(op.get_attr("dtype"))
    return (shape.num_elements() or 1) * dtype.size


class SharedState(NamedTuple):
    """Per-worker step counts and the chief's stop flag (ps mode: on the ps, seen by all)."""

    steps: tf.Variable  # int64 [num_workers]: the steps each worker has run (ps mode)
    count_step: tf.Operation  # adds 1 to this worker's count; the train op depends on it (ps mode)
    stop: tf.Variable  # bool scalar: the chief has finished; the others stop (ps mode)
    set_stop: tf.Operation
    done: tf.Variable  # int64 [num_workers]: 1 once a worker has stopped after the chief (ps mode)
    mark_done: tf.Operation
    stop_vote: tf.Tensor  # float32 scalar input, default 0: this worker wants to stop (all-reduce)
    initializer: tf.Operation


def shared_state(task: ClusterTask) -> SharedState:
    """Create the cluster's shared state in the default graph (scope ``cluster``)."""
    local = [v1.GraphKeys.LOCAL_VARIABLES]  # never saved: a restarted cluster counts afresh
    with v1.variable_scope("cluster"):
        steps = v1.get_variable("worker_steps", [task.num_workers], tf.int64, v1.zeros_initializer(),
                                trainable=False, collections=local)
        stop = v1.get_variable("chief_stopped", [], tf.bool, v1.zeros_initializer(), trainable=False,
                               collections=local)
        done = v1.get_variable("workers_done", [task.num_workers], tf.int64, v1.zeros_initializer(),
                               trainable=False, collections=local)
        count_step = v1.scatter_add(steps, [task.index], tf.ones([1], tf.int64)).op
        set_stop = stop.assign(True).op
        mark_done = v1.scatter_update(done, [task.index], tf.ones([1], tf.int64)).op
        vote = v1.placeholder_with_default(0.0, [], name="stop_vote")
        initializer = v1.variables_initializer([steps, stop, done], name="init")
    return SharedState(steps, count_step, stop, set_stop, done, mark_done, vote, initializer)


def allreduce_gradients(task: ClusterTask, state: SharedState
                        ) -> Callable[[list[tuple[tf.Tensor, tf.Variable]]],
                                      tuple[list[tuple[tf.Tensor, tf.Variable]], tf.Tensor]]:
    """A function from this worker's (gradient, variable) pairs to the pairs averaged over all
    workers, and the sum of the workers' stop votes.

    Every gradient and the vote travel in one float32 vector through one ``CollectiveReduce``
    a step: one round trip instead of one per variable, and no ordering between collectives
    to get wrong.
    """
    def reduce(pairs):
        grads = [tf.convert_to_tensor(g) for g, _ in pairs]
        with tf.name_scope("allreduce"):
            flat = tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads]
                             + [tf.reshape(state.stop_vote, [1])], axis=0)
            summed = tf.raw_ops.CollectiveReduce(
                input=flat, group_size=task.num_workers, group_key=GROUP_KEY, instance_key=REDUCE_INSTANCE,
                merge_op="Add", final_op="Id", subdiv_offsets=[0], timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
            sizes = [int(np.prod(g.shape.as_list())) for g in grads]
            parts = tf.split(summed, sizes + [1])
            averaged = [tf.cast(tf.reshape(p / task.num_workers, tf.shape(g)), g.dtype)
                        for p, g in zip(parts, grads)]
            votes = tf.identity(parts[-1][0], name="stop_votes")
        return list(zip(averaged, [v for _, v in pairs])), votes

    return reduce


class Broadcast(NamedTuple):
    """Copies the chief's variables to every worker (all-reduce mode), one collective per
    dtype: run ``send`` on the chief and ``receive`` on the others, once per session."""

    send: tf.Operation
    receive: tf.Operation


def broadcast(task: ClusterTask, variables: Sequence[tf.Variable]) -> Broadcast:
    by_dtype: dict[tf.DType, list[tf.Variable]] = {}
    for var in variables:
        by_dtype.setdefault(var.dtype.base_dtype, []).append(var)
    sends, receives = [], []
    with tf.name_scope("broadcast"):
        for i, (dtype, group) in enumerate(sorted(by_dtype.items(), key=lambda item: item[0].name)):
            sizes = [int(np.prod(v.shape.as_list())) for v in group]
            common = dict(group_size=task.num_workers, group_key=GROUP_KEY, instance_key=BROADCAST_INSTANCE + i,
                          shape=[sum(sizes)], timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
            flat = tf.concat([tf.reshape(v.read_value(), [-1]) for v in group], axis=0)
            sends.append(tf.raw_ops.CollectiveBcastSend(input=flat, **common).op)
            received = tf.raw_ops.CollectiveBcastRecv(T=dtype, **common)
            receives += [v.assign(tf.reshape(part, v.shape)).op
                         for v, part in zip(group, tf.split(received, sizes))]
        return Broadcast(tf.group(*sends, name="send"), tf.group(*receives, name="receive"))
