"""The session side of a cluster: this task's server, how a worker's session starts, and the
hooks that let the workers stop together.

- The chief (worker 0) creates its session as a single-process run does (restore the latest
  checkpoint, or initialize), then shares it: in ps mode the variables it set are the ps's; in
  all-reduce mode it broadcasts them to the others.
- Any other worker waits for that: in ps mode until the ps variables are initialized
  (``SessionManager.wait_for_session``, as ``MonitoredTrainingSession`` does for a non-chief);
  in all-reduce mode the broadcast itself waits for the chief. A worker that restarts joins
  the same way, at the current global step.
- A lost task surfaces as one error naming it: gRPC fails fast (``GRPC_FAIL_FAST``) instead of
  retrying forever, and a session that cannot be created again is not retried.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from typing import Callable

import numpy as np
import tensorflow as tf

from graphcnn.cluster.graph import Broadcast, SharedState
from graphcnn.cluster.spec import ClusterError, ClusterTask, ClusterTaskLost

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.cluster")

# how often a waiting worker polls for the chief's variables (TensorFlow's default is 30 s)
POLL_SECONDS = 0.5
# how soon a ps task's main thread notices Ctrl-C or SIGTERM (serve)
SIGNAL_POLL_SECONDS = 0.2
# after the chief stops, how long it waits for a worker that neither stops nor steps
STRAGGLER_SECONDS = 10.0


def start_server(task: ClusterTask) -> tf.distribute.Server:
    """This task's gRPC server (a ps task then serves until it is stopped: :func:`serve`)."""
    # a dead peer fails the step at once (UnavailableError) instead of being waited for forever
    os.environ.setdefault("GRPC_FAIL_FAST", "true")
    _check_port_free(task.address)
    config = v1.ConfigProto()
    if task.mode == "allreduce":
        config.experimental.collective_group_leader = "/job:worker/replica:0/task:0"
    return tf.distribute.Server(task.cluster_spec(), job_name=task.job, task_index=task.index, config=config,
                                start=True)


def _check_port_free(address: str) -> None:
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("" if host in ("localhost", "0.0.0.0") else host, int(port)))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ClusterError(f"{address}: port {port} is in use (another process, or a task of a cluster "
                                   "that is still running); free it or choose other ports") from None
            if err.errno == errno.EADDRNOTAVAIL:
                return  # an address of another machine in the cluster file: this one's server binds 0.0.0.0
            raise


def serve(task: ClusterTask, server: tf.distribute.Server) -> None:
    """A ps task: hold the variables and serve the workers until the process is stopped.

    The server's threads serve; this one waits in Python, where Ctrl-C and SIGTERM reach it (as
    ``KeyboardInterrupt``; the command ends there, exit 0): ``server.join()`` waits in native
    code, which no signal handler interrupts, so only SIGKILL stopped a ps.

    Short sleeps, not one long one: Python runs a signal's handler between bytecodes, and a
    signal that arrives after the log line but before the sleep has begun (or one the kernel
    hands to a gRPC thread) does not cut the main thread's sleep short, so ``sleep(3600)``
    missed it for an hour (a loaded machine's SIGTERM, one start in 25)."""
    log.info("%s serving at %s; stop it with Ctrl-C when training is done", task.describe(), task.address)
    while True:
        time.sleep(SIGNAL_POLL_SECONDS)


def lost_task(err: tf.errors.OpError) -> str:
    """The task an UnavailableError/AbortedError names, e.g. ``/job:ps/replica:0/task:0``."""
    text = err.message
    for marker in ("remote target ", "From "):
        if marker in text:
            return text.split(marker, 1)[1].split()[0].rstrip(":")
    return "a task of the cluster"


class _ClusterSessionCreator(v1.train.SessionCreator):
    """Creates a session with :meth:`_create`. The first time, a task that is not up yet (the
    processes of a cluster start in any order) is waited for, up to ``startup_seconds``; once
    training has begun, a task that stops answering is an error naming it (MonitoredSession
    would otherwise try to create the session again and again)."""

    who = "worker"

    def __init__(self, startup_seconds: float):
        self.startup_seconds, self.started = startup_seconds, False

    def _create(self) -> v1.Session:
        raise NotImplementedError

    def create_session(self) -> v1.Session:
        deadline, waiting = time.monotonic() + self.startup_seconds, None
        while True:
            try:
                sess = self._create()
                if not self.started:  # a cluster's user sees each worker join (and tests wait for it)
                    log.info("%s: session ready, training", self.who)
                self.started = True
                return sess
            except (tf.errors.UnavailableError, tf.errors.AbortedError) as err:
                task = lost_task(err)
                if self.started or time.monotonic() > deadline:
                    raise ClusterTaskLost(f"{self.who}: {task} is unreachable (stopped, or not started): "
                                          f"{err.message.splitlines()[0]}") from None
                if waiting != task:
                    log.info("%s: waiting for %s to start", self.who, task)
                    waiting = task
                time.sleep(POLL_SECONDS)


class WorkerSessionCreator(_ClusterSessionCreator):
    """The session of a worker other than the chief.

    ps mode: wait until the chief has initialized the variables on the ps, then start this
    worker's input pipeline at the global step. all-reduce mode: initialize this worker's
    copy, then receive the chief's values by broadcast (which waits for the chief).
    """

    def __init__(self, task: ClusterTask, graph: tf.Graph, target: str, config: v1.ConfigProto,
                 init_op: tf.Operation, broadcast: Broadcast | None, ready_op: tf.Tensor,
                 start_pipeline: Callable[[v1.Session], None], startup_seconds: float = 600.0):
        super().__init__(startup_seconds)
        self.task, self.graph, self.target, self.config = task, graph, target, config
        self.init_op, self.broadcast, self.ready_op = init_op, broadcast, ready_op
        self.start_pipeline = start_pipeline
        self.who = f"worker {task.index}"

    def _create(self) -> v1.Session:
        if self.task.mode == "ps":
            manager = v1.train.SessionManager(ready_op=self.ready_op, graph=self.graph,
                                              recovery_wait_secs=POLL_SECONDS)
            sess = manager.wait_for_session(self.target, config=self.config, max_wait_secs=self.startup_seconds)
            if sess is None:
                raise ClusterError(f"{self.who}: the chief (worker 0) did not initialize the variables on the ps "
                                   f"within {self.startup_seconds:.0f} s; is it running?")
        else:
            sess = v1.Session(self.target, graph=self.graph, config=self.config)
            sess.run(self.init_op)
            sess.run(self.broadcast.receive)
        self.start_pipeline(sess)
        return sess


class ChiefSessionCreator(_ClusterSessionCreator):
    """Wraps the single-process session creator: then resets the cluster's shared state and,
    in all-reduce mode, broadcasts the variables to the other workers."""

    who = "the chief (worker 0)"

    def __init__(self, task: ClusterTask, creator: v1.train.SessionCreator, state: SharedState,
                 broadcast: Broadcast | None, probe: Callable[[], None], startup_seconds: float = 600.0):
        super().__init__(startup_seconds)
        self.task, self.creator, self.state, self.broadcast = task, creator, state, broadcast
        self.probe = probe

    def _create(self) -> v1.Session:
        # every task reachable first: a restore that fails for a lost ps is not a bad checkpoint
        self.probe()
        sess = self.creator.create_session()
        sess.run(self.state.initializer)
        if self.broadcast is not None:
            sess.run(self.broadcast.send)
        return sess


class PsStopHook(v1.train.SessionRunHook):
    """ps mode. On a worker other than the chief: stop when the chief has stopped (early
    stopping, Ctrl-C, the last step), then say so. On the chief: at the end, tell the others
    and wait until they have stopped, so that nothing updates the variables it evaluates."""

    def __init__(self, task: ClusterTask, state: SharedState):
        self.task, self.state = task, state

    def before_run(self, run_context):
        return None if self.task.is_chief else v1.train.SessionRunArgs(self.state.stop)

    def after_run(self, run_context, run_values) -> None:
        if not self.task.is_chief and run_values.results:
            run_context.request_stop()

    def end(self, session) -> None:
        if not self.task.is_chief:
            session.run(self.state.mark_done)
            return
        session.run(self.state.set_stop)
        others = np.arange(self.task.num_workers) != self.task.index
        last_steps, still = session.run(self.state.steps), time.monotonic()
        while True:
            done, steps = session.run([self.state.done, self.state.steps])
            if done[others].all():
                break
            if (steps != last_steps).any():
                last_steps, still = steps, time.monotonic()
            elif time.monotonic() - still > STRAGGLER_SECONDS:
                missing = [int(i) for i in np.flatnonzero(others & (done == 0))]
                log.info("worker(s) %s did not stop within %.0f s of the chief (not running?)",
                         ", ".join(map(str, missing)), STRAGGLER_SECONDS)
                break
            time.sleep(0.1)
        log.info("steps per worker since the chief's session began: %s",
                 ", ".join(f"worker {i}: {n}" for i, n in enumerate(steps)))


class AllReduceStopHook(v1.train.SessionRunHook):
    """all-reduce mode: the workers stop at the same step. Every step's all-reduce carries each
    worker's stop vote; a worker that stops on its own (the chief's early stopping, Ctrl-C)
    runs one more step with its vote set, whose gradients the others are waiting for, and
    every worker that sees a vote stops after it. That last step is applied everywhere but
    saved nowhere: the stopping worker's checkpoint was written before it (this hook is the
    last of the list)."""

    def __init__(self, votes: tf.Tensor, vote: tf.Tensor, train_op: tf.Operation, feed: dict,
                 step: Callable[[], int], total_steps: int):
        self.votes, self.vote, self.train_op, self.feed = votes, vote, train_op, feed
        self.step, self.total_steps = step, total_steps
        self.peers_stopped = False

    def before_run(self, run_context):
        return v1.train.SessionRunArgs(self.votes)

    def after_run(self, run_context, run_values) -> None:
        if run_values.results > 0:
            self.peers_stopped = True
            run_context.request_stop()

    def end(self, session) -> None:
        if not self.peers_stopped and self.step() < self.total_steps:
            session.run(self.train_op, {**self.feed, self.vote: 1.0})
