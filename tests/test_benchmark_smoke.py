"""Smoke test of scripts/benchmark.py: ``--quick`` over the in-process training paths writes a report
with the expected structure and positive numbers. It never checks speed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"
PATHS = ("graphcnn", "ingraph", "nolog", "keras")
NUMBER = r"(-?[\d,]+(?:\.\d+)?)"


@pytest.mark.slow
def test_benchmark_quick_report(tmp_path):
    out = tmp_path / "report.md"
    out.write_text("# earlier content\n")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--paths", ",".join(PATHS), "--out", str(out)],
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# earlier content\n")  # appended, not overwritten
    report = text.split("\n", 1)[1]
    assert report.strip() in proc.stdout  # the same report on stdout
    for line in ("## Benchmark ", f"- command: `python scripts/benchmark.py --quick --paths {','.join(PATHS)} --out ",
                 "- CPU: ", "AMX: ", "- TensorFlow ", "- commit: ", "- 1 round(s), paths interleaved",
                 "### Training throughput (images/s over all timed steps)",
                 "### Training throughput at the median step (images/s: batch / median step time)"):
        assert line in report, line
    assert "### A/B" not in report and "### Cold start" not in report  # paths not asked for
    for path in PATHS:  # median, min, max, per round: one round, so all the same positive number (both tables)
        rows = re.findall(rf"^\| {path}: [^|]+ \| {NUMBER} \| {NUMBER} \| {NUMBER} \| [\d.]+% \| {NUMBER} \|$",
                          report, re.M)
        assert len(rows) == 2, path
        for row in rows:
            values = {float(x.replace(",", "")) for x in row}
            assert len(values) == 1 and values.pop() > 0, row
    assert len(re.findall(r"\(oneDNN (?:on|off)\) \|", report)) == 2 * len(PATHS)
    for other in ("keras", "ingraph", "nolog"):  # ratio, interval, per-round ratio
        rows = re.findall(rf"^\| graphcnn / {other} \| ([\d.]+) \| ([\d.]+) to ([\d.]+) \| ([\d.]+) \|$", report, re.M)
        assert len(rows) == 2, other
        for ratio, low, high, per_round in rows:
            assert float(ratio) > 0 and float(per_round) > 0 and float(low) <= float(ratio) <= float(high)
    assert re.search(r"^Logging cost, 1 - graphcnn / nolog: -?[\d.]+%\.$", report, re.M)


def test_bootstrap_interval_holds_the_ratio_of_medians():
    bench = _bench_module()
    a, b = [110.0, 100.0, 120.0, 105.0, 115.0], [100.0, 95.0, 105.0, 100.0, 102.0]
    low, high = bench.bootstrap(a, b, "ratio")
    assert low <= 110 / 100 <= high and low >= min(a) / max(b) and high <= max(a) / min(b)
    assert bench.bootstrap([2.0] * 3, [1.5] * 3, "difference") == (0.5, 0.5)


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("graphcnn_benchmark_script", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--pinned needs two CPUs")
def test_run_pins_the_child_and_counts_its_own_cpu_time():
    """``--pinned`` relies on run(cpu=N): the child sees one CPU, and its CPU time is its own (wait4),
    also while another child runs."""
    bench = _bench_module()
    cpu = sorted(os.sched_getaffinity(0))[1]
    busy = "import os, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n" \
           "print(sorted(os.sched_getaffinity(0)))"
    out, seconds, cpu_s = bench.run([sys.executable, "-c", busy], dict(os.environ), cpu=cpu)
    assert out.strip() == f"[{cpu}]"
    assert 0.3 <= cpu_s < seconds + 0.05
    with pytest.raises(RuntimeError, match="exit 3"):
        bench.run([sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ))
