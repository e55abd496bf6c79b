"""Smoke test of scripts/benchmark.py: a tiny run writes a report with the expected sections.

It checks structure and that the measured numbers are positive, never speed.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"


def test_benchmark_quick_writes_report(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--paths", "graphcnn", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# graphcnn benchmarks")
    for section in ("## Run ", "- command: `python scripts/benchmark.py --quick", "- CPU: ", "TensorFlow ",
                    "### Training throughput (images/s)", "(a) graphcnn trainer, defaults", "### Achieved GFLOP/s"):
        assert section in text, section
    row = next(line for line in text.splitlines() if line.startswith("| (a) graphcnn trainer"))
    numbers = [float(x.replace(",", "")) for x in re.findall(r"\| ([\d,]+(?:\.\d+)?) ", row)]
    assert len(numbers) == 3 and all(x > 0 for x in numbers)  # median, min, max
    gflops = re.search(r"\| oneDNN on \(graphcnn default\) \| ([\d.]+) \| ([\d.]+)", text)
    assert gflops and float(gflops.group(1)) > 0 and float(gflops.group(2)) > 0


def test_benchmark_paired_turns_report(tmp_path):
    """The six paths of ``paired`` run as processes taking turns, each with its own oneDNN setting."""
    out = tmp_path / "BENCHMARKS.md"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # as on a user's machine: graphcnn turns it on, Keras's default does not
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--paths", "paired", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "### Paired: the paths take turns" in text
    assert ("TF_ENABLE_ONEDNN_OPTS seen by each process: graphcnn 1, ingraph 1, keras unset, keras_onednn 1, "
            "graphcnn_fp32 1, keras_bf16 unset.") in text
    precision = re.search(r"graphcnn's default precision here: (\w+); \(c\) uses the same", text)
    assert precision and precision.group(1) in ("float32", "mixed_bfloat16")
    for label in ("(b) Keras 3 train step, TF defaults", "(b) Keras 3 train step, TF_ENABLE_ONEDNN_OPTS=1",
                  "(c) in-graph limit", "Keras 3 train step, mixed_bfloat16 policy",
                  "graphcnn trainer, train.precision=float32"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {label}"))
        rate, ratio = re.match(r"\| [^|]+ \| ([\d,]+) \| ([\d.]+)x \|", row).groups()
        assert float(rate.replace(",", "")) > 0 and float(ratio) > 0


def test_benchmark_inprocess_turns_report(tmp_path):
    """The trainer and (c) take turns inside one process; every pair of blocks gives a ratio."""
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--paths", "inprocess", "--out", str(out)],
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "### In one process: the trainer and (c) take turns" in text
    assert re.search(r"after each block of 3 steps, [1-4] pairs of blocks over 1 round", text)
    row = next(line for line in text.splitlines() if line.startswith("| (c) in-graph limit"))
    rate, ratio = re.match(r"\| [^|]+ \| ([\d,]+) \| ([\d.]+)x \|", row).groups()
    assert float(rate.replace(",", "")) > 0 and float(ratio) > 0


def _benchmark_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("graphcnn_benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logging_cost_in_run_counts_only_due_steps_against_their_neighbours():
    bench = _benchmark_module()
    # 100 steps of 50 ms on a machine that slows down halfway (drift), 7 epochs of 14 steps
    # whose epoch-end intervals take 0.5 s; summaries due every 10 steps cost 5 ms, those due
    # every 50 another 25 ms; a 40 ms load spike lands on the scalar step 70
    steps = []
    for s in range(2, 101):
        dt = 0.050 if s < 45 else 0.060
        if s % 10 == 0:
            dt += 0.005 + (0.025 if s % 50 == 0 else 0.0) + (0.040 if s == 70 else 0.0)
        if bench.after_epoch_end(s, 14):
            dt += 0.5
        steps.append((s, dt))
    cost = bench.logging_cost_in_run(steps, [10, 50], warmup=5, steps_per_epoch=14)
    assert cost["logging_steps"] == 10 and cost["timed_steps"] == 95 - 7  # epoch ends: 15, 29, ..., 99
    extra = 10 * 0.005 + 2 * 0.025
    total = sum(dt for s, dt in steps if s > 5 and not bench.after_epoch_end(s, 14))
    # drift cancelled (neighbours on both sides), the spike left out (the median of the 8 scalar-only steps)
    assert abs(cost["logging_share"] - extra / total) < 1e-9
    assert abs(cost["raw_share"] - (extra + 0.040) / total) < 1e-9
    assert cost["largest_ms"][0] == (45.0, 70)
    # the steady rate leaves the epoch ends out, the other figure keeps them
    steady, with_ends, n = bench._steady_rate(steps, 5, 14, 128)
    assert n == 95 and with_ends < steady
    assert abs(steady - 88 * 128 / total) < 1e-6
