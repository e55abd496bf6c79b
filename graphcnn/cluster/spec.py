"""Which cluster this process belongs to, and its place in it: TensorFlow's ``TF_CONFIG``.

The format is TensorFlow's own (what ``tf.distribute`` and every TF1 launcher read)::

    {"cluster": {"ps": ["10.0.0.1:2222"], "worker": ["10.0.0.2:2222", "10.0.0.3:2222"]},
     "task": {"type": "worker", "index": 0}}

A cluster with a ``ps`` job trains asynchronously with parameter servers; one with workers
only trains synchronously with collective all-reduce (README, "Scaling out"). Worker 0 is
the chief (a ``chief`` job is not used: the chief is a worker that also writes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

PS, WORKER = "ps", "worker"
MODES = {"ps": "asynchronous, parameter servers", "allreduce": "synchronous, collective all-reduce"}


class ClusterError(ValueError):
    """A cluster description that cannot be used; the message names the file or key."""


class ClusterTaskLost(RuntimeError):
    """Another task of the cluster stopped answering during training; the message names it."""


@dataclass(frozen=True)
class ClusterTask:
    """This process's task in ``cluster`` (job name -> ``host:port`` addresses)."""

    cluster: Mapping[str, tuple[str, ...]]
    job: str
    index: int

    @property
    def mode(self) -> str:
        """``ps`` (asynchronous, variables on the ps tasks) or ``allreduce`` (synchronous)."""
        return "ps" if self.cluster.get(PS) else "allreduce"

    @property
    def num_workers(self) -> int:
        return len(self.cluster[WORKER])

    @property
    def num_ps(self) -> int:
        return len(self.cluster.get(PS, ()))

    @property
    def is_chief(self) -> bool:
        """Worker 0: it initializes or restores the variables and alone writes the run directory."""
        return self.job == WORKER and self.index == 0

    @property
    def device(self) -> str:
        """This task's device prefix, e.g. ``/job:worker/task:1``."""
        return f"/job:{self.job}/task:{self.index}"

    @property
    def address(self) -> str:
        return self.cluster[self.job][self.index]

    def cluster_spec(self):
        import tensorflow as tf

        return tf.compat.v1.train.ClusterSpec({job: list(hosts) for job, hosts in self.cluster.items()})

    def describe(self) -> str:
        jobs = ", ".join(f"{len(hosts)} {job}" for job, hosts in self.cluster.items())
        return f"{self.job} {self.index} of a cluster of {jobs} ({MODES[self.mode]})"

    def to_tf_config(self) -> str:
        return json.dumps({"cluster": {job: list(hosts) for job, hosts in self.cluster.items()},
                           "task": {"type": self.job, "index": self.index}})


def parse(record: Any, where: str) -> ClusterTask:
    """A :class:`ClusterTask` from a ``TF_CONFIG``-shaped mapping; ``where`` names its origin
    in errors (``TF_CONFIG``, or the file)."""
    if not isinstance(record, Mapping):
        raise ClusterError(f"{where}: expected a JSON object with keys 'cluster' and 'task'")
    cluster, task = record.get("cluster"), record.get("task")
    if not isinstance(cluster, Mapping) or not cluster:
        raise ClusterError(f"{where}: 'cluster' must map job names to lists of host:port, e.g. "
                           '{"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}')
    jobs: dict[str, tuple[str, ...]] = {}
    for job, hosts in cluster.items():
        if job not in (PS, WORKER):
            raise ClusterError(f"{where}: cluster.{job}: unknown job; graphcnn runs 'ps' and 'worker' tasks "
                               "(worker 0 is the chief)")
        if not isinstance(hosts, list) or not all(isinstance(h, str) and _is_address(h) for h in hosts):
            raise ClusterError(f"{where}: cluster.{job} must be a list of host:port strings, got {hosts!r}")
        if len(set(hosts)) != len(hosts):
            raise ClusterError(f"{where}: cluster.{job} lists an address twice: {hosts}")
        jobs[job] = tuple(hosts)
    if not jobs.get(WORKER):
        raise ClusterError(f"{where}: cluster.worker is missing or empty: training needs at least one worker")
    if not isinstance(task, Mapping):
        raise ClusterError(f"{where}: 'task' must be an object like {{\"type\": \"worker\", \"index\": 0}}")
    job, index = task.get("type"), task.get("index", 0)
    if job not in jobs:
        raise ClusterError(f"{where}: task.type {job!r} is not a job of the cluster ({', '.join(jobs)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(jobs[job]):
        raise ClusterError(f"{where}: task.index {index!r} is not in 0..{len(jobs[job]) - 1} "
                           f"(cluster.{job} has {len(jobs[job])} addresses)")
    return ClusterTask(jobs, job, index)


def from_environment(environ: Mapping[str, str] = os.environ) -> ClusterTask:
    """The task of ``TF_CONFIG``."""
    text = environ.get("TF_CONFIG", "")
    if not text.strip():
        raise ClusterError("--cluster without a file reads TF_CONFIG, which is not set")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ClusterError(f"TF_CONFIG is not valid JSON: {err}") from None
    return parse(record, "TF_CONFIG")


def from_file(path: str | Path, job: str | None, index: int | None) -> ClusterTask:
    """The task of a cluster file: a ``TF_CONFIG`` object, or its ``cluster`` part alone (then
    ``job`` and ``index`` say which task this process is)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterError(f"{path}: no such cluster file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ClusterError(f"{path}: not a readable JSON cluster file ({err})") from None
    if isinstance(record, Mapping) and "cluster" not in record:
        record = {"cluster": record}
    if isinstance(record, Mapping) and (job is not None or index is not None):
        task = dict(record.get("task") or {})
        task.update({k: v for k, v in (("type", job), ("index", index)) if v is not None})
        record = {**record, "task": task}
    return parse(record, str(path))


def _is_address(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536
