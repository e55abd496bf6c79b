#!/usr/bin/env python
"""A fault campaign: SIGKILL `graphcnn train` at random moments, resume, repeat; then compare.

    python scripts/fault_campaign.py --kills 100 --max-steps 6000 --out RELIABILITY.md

One uninterrupted reference run, then the campaign run with the same seed and config
(digits, float32, dropout and augmentation on, a checkpoint every ``--checkpoint-every``
steps). Each cycle starts the trainer (the first time as a new run, then with ``--resume``),
waits until its progress bar moves (or, one time in ten, kills it while it starts up), sleeps
a random moment, and kills it with SIGKILL: in a step, a validation, or a checkpoint save. After
every kill it checks what is on disk:

* every complete checkpoint in ``checkpoints/`` and ``best/`` restores (all tensors read);
* ``best/best.json`` names a step whose checkpoint is complete;

and once the run has finished:

* ``metrics.jsonl`` and the validation events (as TensorBoard reads them) have no step twice
  and none going backwards;
* the final weights against the reference run's (the largest absolute difference).

Steps lost per kill: the last step the progress bar showed before the kill, minus the step the
next start resumed from. It is a benchmark-style script, not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROGRESS = re.compile(rb"(\d+)/(\d+) \[")
RESUMED = re.compile(r"resumed from .*model\.ckpt-(\d+)")


def train_command(logdir: Path, name: str, args: argparse.Namespace, resume: bool) -> list[str]:
    base = [sys.executable, "-m", "graphcnn", "train"]
    if resume:
        return base + ["--resume", str(logdir / name)]
    sets = [f"train.max_steps={args.max_steps}", f"train.checkpoint_every_steps={args.checkpoint_every}",
            "train.precision=float32", "train.seed=0", "data.augment.rotation_range=10",
            "data.augment.zoom_range=0.1", "train.early_stopping.patience=0", "log.trace_every=0"]
    return base + ["--logdir", str(logdir), "--name", name] + [x for s in sets for x in ("--set", s)]


def restorable(prefix: Path) -> bool:
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
        return True
    except Exception:  # noqa: BLE001 - any failure to read is what is counted
        return False


def check_after_kill(run: Path) -> tuple[int, int, bool]:
    """(complete checkpoints, unrestorable ones, best/ complete) of the run on disk now."""
    from graphcnn.checkpoints import checkpoints_on_disk

    found = checkpoints_on_disk(run / "checkpoints") + checkpoints_on_disk(run / "best")
    bad = [p for p in found if not restorable(p)]
    best_ok = True
    record = run / "best" / "best.json"
    if record.exists():
        step = json.loads(record.read_text())["step"]
        best = [p for p in checkpoints_on_disk(run / "best") if p.name == f"model.ckpt-{step}"]
        best_ok = bool(best) and restorable(best[0])
    return len(found), len(bad), best_ok


def last_progress(log: bytes) -> int:
    matches = PROGRESS.findall(log)
    return int(matches[-1][0]) if matches else -1


def final_weights(run: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run / "checkpoints"))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if not n.startswith("train/")}


def monotonic(steps: list[int]) -> bool:
    return all(a < b for a, b in zip(steps, steps[1:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=6000)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--max-delay", type=float, default=4.0, help="seconds of training before a kill, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--out", default="", help="append the report to this markdown file")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="graphcnn-faults-"))
    # unbuffered: the progress bar's carriage-return lines reach the log as they are drawn
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    started = time.time()

    print(f"reference run in {workdir}", flush=True)
    subprocess.run(train_command(workdir, "reference", args, False) + ["--no-progress"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run = workdir / "campaign"
    kills = failed = unrestorable = 0
    best_incomplete = 0
    lost: list[int] = []
    shown_before_kill = -1
    finished = False
    while not finished:
        resume = (run / "config.json").exists()
        log_path = workdir / "campaign.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(train_command(workdir, "campaign", args, resume), env=env,
                                    stdout=log_file, stderr=subprocess.STDOUT)
            deadline = None if kills >= args.kills else time.time() + 120
            during_start = rng.random() < 0.1
            kill_at, first_shown = None, -1
            while proc.poll() is None:
                time.sleep(0.05)
                if deadline is None:
                    continue
                shown = last_progress(log_path.read_bytes())
                first_shown = shown if first_shown < 0 else first_shown
                # the clock starts once the bar has moved past the restored step: the session is
                # built and warm, so the delay is time spent training, validating and saving
                if kill_at is None and (during_start or shown > first_shown >= 0):
                    kill_at = time.time() + rng.uniform(0.0, 3.0 if during_start else args.max_delay)
                if kill_at is not None and time.time() >= kill_at or time.time() > deadline:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    break
        text = log_path.read_bytes()
        match = RESUMED.search(text.decode(errors="replace"))
        if resume and shown_before_kill >= 0 and match:
            lost.append(max(0, shown_before_kill - int(match.group(1))))
        if proc.returncode == -signal.SIGKILL:
            shown_before_kill = last_progress(text)
            found, bad, best_ok = check_after_kill(run)
            unrestorable += bad
            best_incomplete += not best_ok
            print(f"kill {kills}: showed step {shown_before_kill}; {found} checkpoints on disk, {bad} unrestorable"
                  f"{'' if best_ok else ', best/ incomplete'}", flush=True)
        elif proc.returncode == 0:
            finished = True
        else:
            failed += 1
            print(f"start failed with exit code {proc.returncode}:\n{text.decode(errors='replace')[-2000:]}",
                  flush=True)
            if failed > 3:
                break

    from graphcnn.tensorboard.events import read_scalars

    metric_steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                    if r["split"] == "validation"]
    event_steps = [s for s, _ in read_scalars(run / "validation").get("accuracy", [])]
    reference, campaign = final_weights(workdir / "reference"), final_weights(run)
    diff = max(float(np.max(np.abs(reference[n] - campaign[n]))) for n in reference)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    report = "\n".join([
        f"## Fault campaign, {time.strftime('%Y-%m-%d %H:%M')} UTC",
        "",
        f"- command: `python scripts/fault_campaign.py --kills {args.kills} --max-steps {args.max_steps} "
        f"--checkpoint-every {args.checkpoint_every} --max-delay {args.max_delay} --seed {args.seed}`",
        f"- CPU: {cpu}, {os.cpu_count()} cores; {time.time() - started:.0f} s in all",
        "",
        "| what | result |",
        "|---|---|",
        f"| SIGKILLs | {kills} |",
        f"| failed resumes | {failed} |",
        f"| unrestorable checkpoints (all checks after every kill) | {unrestorable} |",
        f"| times best/ was incomplete or named a missing step | {best_incomplete} |",
        f"| validation steps in metrics.jsonl: unique and increasing | {monotonic(metric_steps)} "
        f"({len(metric_steps)} steps) |",
        f"| validation steps in TensorBoard's events: unique and increasing | {monotonic(event_steps)} "
        f"({len(event_steps)} steps) |",
        f"| steps lost per kill (max, median; checkpoint every {args.checkpoint_every}) | "
        f"{max(lost, default=0)}, {int(np.median(lost)) if lost else 0} |",
        f"| final weights: max abs difference from the uninterrupted run | {diff:g} |",
        "",
    ])
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + report)
    ok = failed == 0 and unrestorable == 0 and best_incomplete == 0 and diff == 0.0 and monotonic(metric_steps)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
