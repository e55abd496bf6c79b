#!/usr/bin/env python
"""Does training wait for its input? Trace every ``--every``-th step of a real run and time the iterator.

    python scripts/input_wait.py [--preset cats_dogs_150] [--data DIR] [--every 5] [--set KEY=VALUE ...]

``graphcnn train``'s own ``train()`` runs the job, with one extra ``SessionRunHook`` (``train(hooks=[...])``)
that asks for a full trace (``RunOptions.FULL_TRACE``) of every ``--every``-th training step after the
first ``--warmup``. In each traced step's ``StepStats`` the ``IteratorGetNext`` ops (the batch handed
from ``tf.data`` to the step) are timed: when the pipeline keeps up, a prepared batch is waiting in the
prefetch buffer and the op takes microseconds; when it does not, the op blocks until the decode, resize
and augmentation of the next batch are done. A step *waited* when its ``IteratorGetNext`` took longer than
``--threshold-ms``. Printed: the share of traced steps that waited, the median and largest wait, and the
waits' share of the traced steps' time, as one JSON line (and a sentence). Training from memory (the
embedded digits, arrays, a folder the data scan kept decoded) has no iterator: each step takes its
batch in the graph, so nothing can wait; the line then says so, with the time the step's own input ops
(``input/train_pipeline/``: index, gather, scale, augment) took, summed over ops.

A traced step is slower than an untraced one (the tracer records every op), which can only make the
input look *less* of a bottleneck for that step; the pipeline runs in its own threads and is not slowed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cats_dogs_150")
    p.add_argument("--data", default="", help="the dataset (default: the embedded digits)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--every", type=int, default=5, help="trace every N-th step")
    p.add_argument("--warmup", type=int, default=10, help="steps left untraced at the start")
    p.add_argument("--threshold-ms", type=float, default=1.0, help="a longer IteratorGetNext is a wait")
    p.add_argument("--workdir", type=Path, default=None, help="where the run goes (default: a temporary folder)")
    args = p.parse_args()

    from graphcnn import runtime

    runtime.configure(verbose=False)
    import tensorflow as tf

    from graphcnn.config import load
    from graphcnn.presets import get_preset
    from graphcnn.run_dir import RunDir
    from graphcnn.train.trainer import train

    v1 = tf.compat.v1
    trace = v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE)

    class InputWaitHook(v1.train.SessionRunHook):
        """Full-traces every ``every``-th step; keeps (step wall ms, IteratorGetNext ms, IteratorGetNext ops,
        input/train_pipeline ops ms) per traced step."""

        def __init__(self):
            self.count, self.samples = 0, []
            self._start = 0.0

        def before_run(self, run_context):
            self.count += 1
            self._start = time.perf_counter()
            if self.count > args.warmup and self.count % args.every == 0:
                return v1.train.SessionRunArgs(None, options=trace)
            return None

        def after_run(self, run_context, run_values):
            meta = run_values.run_metadata
            if meta is None or not meta.step_stats.dev_stats:
                return
            wall = (time.perf_counter() - self._start) * 1e3
            nodes = [node for dev in meta.step_stats.dev_stats for node in dev.node_stats]
            waits = [node.all_end_rel_micros / 1e3 for node in nodes
                     if "IteratorGetNext" in node.timeline_label or node.node_name.endswith("IteratorGetNext")]
            own = sum(node.all_end_rel_micros / 1e3 for node in nodes
                      if node.node_name.startswith("input/train_pipeline/"))
            self.samples.append((wall, sum(waits), len(waits), own))

    overrides = list(args.set) + ([f"data.path={args.data}"] if args.data else [])
    config = load(get_preset(args.preset), None, overrides)
    hook = InputWaitHook()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        train(config, RunDir.create(root, f"input-wait-{int(time.time())}"), progress=False, hooks=[hook])
    if not hook.samples:
        print("no step was traced: a longer run, or a smaller --warmup/--every", file=sys.stderr)
        return 1
    walls, waits = [s[0] for s in hook.samples], [s[1] for s in hook.samples]
    waited = [w for w in waits if w > args.threshold_ms]
    result = {
        "preset": args.preset, "traced_steps": len(waits), "waited_steps": len(waited),
        "waited_share": len(waited) / len(waits), "median_wait_ms": statistics.median(waits),
        "max_wait_ms": max(waits), "wait_share_of_time": sum(waits) / sum(walls),
        "median_traced_step_ms": statistics.median(walls), "threshold_ms": args.threshold_ms,
        "iterator_ops": sum(s[2] for s in hook.samples),
        "in_step_input_share": sum(s[3] for s in hook.samples) / sum(walls),
    }
    print(json.dumps(result))
    if result["iterator_ops"] == 0:
        print(f"no traced step ran an iterator op: each of the {len(waits)} traced steps took its batch in the "
              f"graph, so none waited for input; the step's own input ops took "
              f"{100 * result['in_step_input_share']:.1f}% of its time, summed over ops (median traced step "
              f"{result['median_traced_step_ms']:.0f} ms)", file=sys.stderr)
        return 0
    print(f"{len(waited)} of {len(waits)} traced steps ({100 * result['waited_share']:.1f}%) waited more than "
          f"{args.threshold_ms:g} ms for their batch; median IteratorGetNext {result['median_wait_ms']:.3f} ms, "
          f"largest {result['max_wait_ms']:.1f} ms; waiting was {100 * result['wait_share_of_time']:.1f}% of the "
          f"traced steps' time (median traced step {result['median_traced_step_ms']:.0f} ms)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
