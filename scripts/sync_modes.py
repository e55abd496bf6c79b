#!/usr/bin/env python
"""Measure which synchronous multi-worker mode to use: graphcnn's all-reduce or TF1's SyncReplicasOptimizer.

    python scripts/sync_modes.py [--params 6100000] [--steps 60] [--rounds 2] [--warmup 10] [--grace 2]

A model of about ``--params`` float32 parameters shaped like a CNN's (a conv kernel, a dense matrix), with a
tiny compute (2 random 16x16x3 images made in the graph) and plain SGD: a step costs mostly communication.

* ``allreduce``     2 workers, each with its own copy; gradients averaged by graphcnn's ``allreduce_gradients``
                    (one packed ``CollectiveReduce`` a step), the chief's variables broadcast at start
* ``syncreplicas``  1 ps + 2 workers; variables on the ps (``replica_device_setter``), TF1's
                    ``SyncReplicasOptimizer`` aggregating 2 gradients a step, ``MonitoredTrainingSession``

Every task is a subprocess of this script (``--role``) on free 127.0.0.1 ports, bounded by ``--timeout`` and
killed at the end; the chief (worker 0) times its global steps after ``--warmup`` and prints one JSON line.
Rounds are interleaved (A B, then B A, ...); the report is a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("allreduce", "syncreplicas")
FEATURES, CONV = 8 * 8 * 32, 3 * 3 * 3 * 32 + 32  # the dense layer's inputs; the conv layer's parameters


def model(params: int):
    """The loss of a conv layer and a dense layer of about ``params`` parameters, on random data."""
    import tensorflow as tf

    classes = max(2, round((params - CONV) / (FEATURES + 1)))
    images = tf.random.uniform([2, 16, 16, 3])
    labels = tf.random.uniform([2], maxval=classes, dtype=tf.int32)
    var = tf.compat.v1.get_variable
    x = tf.nn.relu(tf.nn.conv2d(images, var("conv/kernel", [3, 3, 3, 32]), 2, "SAME") + var("conv/bias", [32]))
    logits = tf.matmul(tf.reshape(x, [2, FEATURES]), var("dense/kernel", [FEATURES, classes]))
    logits += var("dense/bias", [classes])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def retry(create, seconds: float = 120.0):
    """``create()``, again while a peer of the cluster is not up yet (gRPC fails fast: ``start_server``)."""
    import tensorflow as tf

    deadline = time.monotonic() + seconds
    while True:
        try:
            return create()
        except (tf.errors.UnavailableError, tf.errors.AbortedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def task_main(args) -> None:
    """One task of the cluster: a ps serves; a worker trains ``--steps`` steps, the chief prints its times."""
    import tensorflow as tf

    from graphcnn.cluster import graph as cg
    from graphcnn.cluster.session import start_server
    from graphcnn.cluster.spec import ClusterTask

    v1 = tf.compat.v1
    cluster = {job: tuple(hosts) for job, hosts in json.loads(args.cluster).items()}
    task = ClusterTask(cluster, args.role, args.index)
    server = start_server(task)
    if task.job == "ps":
        server.join()
    stamps = {"server": time.time()}  # the start-up's milestones; then the time and global step after each run
    marks: list[tuple[float, int]] = []
    with tf.Graph().as_default():
        sgd = v1.train.GradientDescentOptimizer(0.01)
        if task.mode == "allreduce":
            with v1.device(task.device):
                loss, step = model(args.params), v1.train.get_or_create_global_step()
                state = cg.shared_state(task)
                averaged, _ = cg.allreduce_gradients(task, state)(sgd.compute_gradients(loss))
                train_op = after(sgd.apply_gradients(averaged, step), step.read_value)
                bcast = cg.broadcast(task, v1.global_variables())
                init = tf.group(v1.global_variables_initializer(), state.initializer)

            def start():
                sess = v1.Session(server.target, config=cg.session_config(task))
                sess.run(init)
                sess.run(bcast.send if task.is_chief else bcast.receive)
                return sess

            with retry(start) as sess:
                stamps["session"] = time.time()
                while len(marks) < args.steps:
                    global_step = sess.run(train_op)
                    marks.append((time.time(), global_step))
        else:
            setter = v1.train.replica_device_setter(cluster=task.cluster_spec(), worker_device=task.device)
            with v1.device(setter):
                loss, step = model(args.params), v1.train.get_or_create_global_step()
                sync = v1.train.SyncReplicasOptimizer(sgd, replicas_to_aggregate=task.num_workers,
                                                      total_num_replicas=task.num_workers)
                train_op = after(sync.minimize(loss, step), step.read_value)
            config = v1.ConfigProto(device_filters=["/job:ps", task.device])
            if not task.is_chief:  # wait for the chief's variables polling often, not every 30 s
                ready = v1.report_uninitialized_variables(v1.global_variables())
                manager = v1.train.SessionManager(ready_op=ready, recovery_wait_secs=0.2)
                retry(lambda: manager.wait_for_session(server.target, config=config, max_wait_secs=120)).close()
            hooks = [sync.make_session_run_hook(task.is_chief), v1.train.StopAtStepHook(last_step=args.steps)]
            with v1.train.MonitoredTrainingSession(master=server.target, is_chief=task.is_chief, hooks=hooks,
                                                   config=config, stop_grace_period_secs=args.grace,
                                                   save_checkpoint_secs=None, save_summaries_steps=None,
                                                   save_summaries_secs=None, log_step_count_steps=None) as sess:
                stamps["session"] = time.time()
                while not sess.should_stop():
                    global_step = sess.run(train_op)
                    marks.append((time.time(), global_step))
        params = sum(v.shape.num_elements() for v in v1.trainable_variables())
    if task.is_chief:  # after the session's close; the exit time counts from the last step's timestamp
        times = step_times(marks, args.warmup)
        print(json.dumps({"median_ms": 1000 * statistics.median(times), "steps_per_s": len(times) / sum(times),
                          "runs": len(marks), "params": params, "first": marks[0][0], "last": marks[-1][0],
                          "closed": time.time(), **stamps}), flush=True)


def after(op, read):
    """``read()`` once ``op`` has run (the global step, after a train op)."""
    import tensorflow as tf

    with tf.control_dependencies([op]):
        return read()


def step_times(marks: list[tuple[float, int]], warmup: int) -> list[float]:
    """Seconds per global step after ``warmup`` global steps. A SyncReplicas worker's run pushes one gradient,
    and the chief may push two of a step's (``replicas_to_aggregate`` counts gradients): a run that does not
    advance the global step is merged into the next that does."""
    times, (last_time, last_step) = [], marks[0]
    for now, step in marks[1:]:
        if step > last_step:
            if last_step >= warmup:
                times += [(now - last_time) / (step - last_step)] * (step - last_step)
            last_time, last_step = now, step
    return times


def run_mode(mode: str, args, workdir: Path) -> dict:
    """Run one mode's cluster to its end; the chief's JSON line, with start-up and exit seconds."""
    from graphcnn.cluster.local import free_ports

    ports = iter(free_ports(3 if mode == "syncreplicas" else 2))
    cluster = {"worker": [f"127.0.0.1:{next(ports)}" for _ in range(2)]}
    if mode == "syncreplicas":
        cluster["ps"] = [f"127.0.0.1:{next(ports)}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    common = ["--cluster", json.dumps(cluster), "--params", str(args.params), "--steps", str(args.steps),
              "--warmup", str(args.warmup), "--grace", str(args.grace)]
    procs, exits, start = {}, {}, time.time()
    try:
        for job in cluster:
            for index in range(len(cluster[job])):
                name = f"{mode}-{job}{index}"
                with open(workdir / f"{name}.out", "w") as out, open(workdir / f"{name}.err", "w") as err:
                    procs[name] = subprocess.Popen([sys.executable, __file__, "--role", job, "--index", str(index),
                                                    *common], stdout=out, stderr=err, env=env)
        workers = [name for name in procs if "-worker" in name]
        while len(exits) < len(workers):
            for name in workers:
                code = procs[name].poll()
                if code is not None and name not in exits:
                    exits[name] = time.time()
                    if code != 0:
                        raise SystemExit(f"{name} exited with code {code}:\n{tail(workdir, name)}")
            if time.time() - start > args.timeout:
                raise SystemExit(f"{mode}: timed out after {args.timeout} s:\n"
                                 + "\n".join(tail(workdir, name) for name in workers if name not in exits))
            time.sleep(0.02)
        result = json.loads((workdir / f"{mode}-worker0.out").read_text().splitlines()[-1])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return dict(result, startup_s=result["first"] - start, server_s=result["server"] - start,
                session_s=result["session"] - start, close_s=result["closed"] - result["last"],
                exit_s=max(exits.values()) - result["last"])


def tail(workdir: Path, name: str) -> str:
    return f"--- {name} stderr:\n" + (workdir / f"{name}.err").read_text()[-2000:]


def report(args, results: dict[str, list[dict]]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    medians = {mode: statistics.median(r["median_ms"] for r in runs) for mode, runs in results.items()}
    rounds = " | ".join(f"round {i + 1} ms" for i in range(args.rounds))
    lines = [f"CPU: {cpu} ({os.cpu_count()} cores); params: {results[MODES[0]][0]['params']:,}; "
             f"{args.steps} steps, {args.warmup} warm-up; stop_grace_period_secs {args.grace}", "",
             f"| mode | {rounds} | median ms | steps/s | start-up s | chief close s | exit s |",
             "|---" * (args.rounds + 6) + "|"]
    for mode, runs in results.items():
        rate = statistics.median(r["steps_per_s"] for r in runs)
        cells = [f"{r['median_ms']:.1f}" for r in runs] + [f"{medians[mode]:.1f}", f"{rate:.1f}"]
        cells.append(", ".join(f"{r['startup_s']:.1f} ({r['server_s']:.1f}/{r['session_s']:.1f})" for r in runs))
        cells += [", ".join(f"{r[key]:.2f}" for r in runs) for key in ("close_s", "exit_s")]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    ratio = medians["syncreplicas"] / medians["allreduce"]
    notes = ["", f"syncreplicas / allreduce (median step time): {ratio:.2f}", "",
             "steps/s: global steps over the timed span (median over rounds); start-up: launch to the chief's first "
             "step (to its server started / its session created); chief close: its last step to its session "
             "closed; exit: its last step to the last worker's exit (seconds, per round)"]
    return "\n".join(lines + notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=6_100_000, help="about this many float32 parameters")
    parser.add_argument("--steps", type=int, default=60, help="steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=10, help="the chief's first steps left out of the timing")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both modes, in alternating order")
    parser.add_argument("--grace", type=float, default=2.0, help="SyncReplicas' stop_grace_period_secs")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take")
    parser.add_argument("--role", choices=["ps", "worker"], help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cluster", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps <= args.warmup + 1:
        parser.error("--steps must exceed --warmup by at least 2")
    if args.role:
        return task_main(args)
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="sync_modes-") as tmp:
        for i in range(args.rounds):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                results[mode].append(run_mode(mode, args, Path(tmp)))
                print(f"round {i + 1} {mode}: {json.dumps(results[mode][-1])}", file=sys.stderr, flush=True)
    print(report(args, results))


if __name__ == "__main__":
    main()
