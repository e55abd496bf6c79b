"""``graphcnn cluster-local``: a whole cluster on this machine, to try it or test it.

Starts one ``graphcnn train --cluster`` process per task on 127.0.0.1, each with its own
``TF_CONFIG`` (what each machine of a real cluster gets), prints their output line by line
labelled by task, and stops them together: when every worker has finished (the ps tasks then
have nothing left to serve), when one of them fails, or on Ctrl-C (each worker saves as a
single run does on Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence, TextIO

from graphcnn.cluster.spec import PS, WORKER, ClusterError, ClusterTask

# after Ctrl-C or a failure, how long the others get to save and stop before they are killed
GRACE_SECONDS = 30.0


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` ports nobody listens on now (the OS picks them)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def check_ports(ports: Sequence[int], host: str = "127.0.0.1") -> None:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                raise ClusterError(f"cluster-local: port {port} on {host} is in use; free it or give another "
                                   f"--port (tasks use {len(ports)} consecutive ports from it)") from None


def local_cluster(num_ps: int, num_workers: int, base_port: int | None = None,
                  host: str = "127.0.0.1") -> dict[str, tuple[str, ...]]:
    """The cluster's addresses: consecutive ports from ``base_port``, or free ones."""
    if num_workers < 1 or num_ps < 0:
        raise ClusterError("cluster-local: --workers must be at least 1 and --ps at least 0")
    count = num_ps + num_workers
    if base_port is None:
        ports = free_ports(count, host)
    else:
        ports = list(range(base_port, base_port + count))
        check_ports(ports, host)
    addresses = [f"{host}:{p}" for p in ports]
    cluster = {WORKER: tuple(addresses[num_ps:])}
    if num_ps:
        cluster[PS] = tuple(addresses[:num_ps])
    return cluster


class _Task:
    def __init__(self, task: ClusterTask, argv: list[str], out: TextIO, lock: threading.Lock):
        env = dict(os.environ, TF_CONFIG=task.to_tf_config(), PYTHONUNBUFFERED="1")
        self.task, self.label = task, f"[{task.job}{task.index}]"
        # a session of its own: Ctrl-C in the terminal reaches this launcher only, which decides
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        bufsize=1, start_new_session=True)
        self.reader = threading.Thread(target=self._copy, args=(out, lock), daemon=True)
        self.reader.start()

    def _copy(self, out: TextIO, lock: threading.Lock) -> None:
        for line in self.process.stdout:
            with lock:
                out.write(f"{self.label} {line.rstrip()}\n")
                out.flush()

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass


def run_local(num_ps: int, num_workers: int, train_args: Sequence[str], base_port: int | None = None,
              out: TextIO = sys.stdout, python: str = sys.executable) -> int:
    """Run the cluster until it is done; return the exit code (the first failing worker's,
    130 after Ctrl-C, else 0). ``train_args``: the ``graphcnn train`` options of every task."""
    cluster = local_cluster(num_ps, num_workers, base_port)
    lock = threading.Lock()
    base = [python, "-m", "graphcnn", "train", *train_args, "--cluster", "--no-progress"]
    with lock:
        out.write("cluster-local: " + ", ".join(f"{job} {','.join(hosts)}" for job, hosts in cluster.items()) + "\n")
    tasks: list[_Task] = []
    code = 0
    try:
        for job in (PS, WORKER):  # the ps first: the workers connect to it
            for index in range(len(cluster.get(job, ()))):
                tasks.append(_Task(ClusterTask(cluster, job, index), base, out, lock))
        workers = [t for t in tasks if t.task.job == WORKER]
        while True:
            failed = [t for t in tasks if t.process.poll() not in (None, 0)]
            if failed:
                code = failed[0].process.returncode
                with lock:
                    out.write(f"cluster-local: {failed[0].label} exited with code {code}; stopping the others\n")
                break
            if all(t.process.poll() == 0 for t in workers):
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        code = 130
        with lock:
            out.write("cluster-local: interrupted; the workers save and stop\n")
        for t in tasks:
            if t.task.job == WORKER:
                t.signal(signal.SIGINT)
        _wait([t for t in tasks if t.task.job == WORKER], GRACE_SECONDS)
    finally:
        for t in tasks:
            t.signal(signal.SIGTERM)
        try:
            _wait(tasks, GRACE_SECONDS)
        except KeyboardInterrupt:  # another Ctrl-C: no more waiting, but never a task left running
            code = 130
        for t in tasks:
            if t.process.poll() is None:
                t.process.kill()
            t.process.wait()
            t.reader.join(timeout=5)
    return code


def _wait(tasks: Sequence[_Task], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for t in tasks:
        try:
            t.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
