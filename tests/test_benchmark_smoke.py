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
