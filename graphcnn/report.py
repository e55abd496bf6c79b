"""``graphcnn report <run>``: the run's curves as PNG files, without TensorBoard.

Writes into ``<run>/report/``:

* ``loss.png`` and ``accuracy.png``: training vs validation. Validation points come from
  ``metrics.jsonl`` (one per evaluation); training points are the ``train/`` scalars of the
  event files averaged over each evaluation interval (so both lines are per-epoch figures;
  ``--raw`` plots every logged training value instead);
* ``learning_rate.png`` when the run logged it;
* ``confusion_matrix.png``: the last validation confusion matrix, when the run wrote one.

Plots are drawn with numpy (graphcnn.viz.bitmap) and written with viz.animation.write_png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphcnn.tensorboard_cli import read_images, read_scalars
from graphcnn.train.run_dir import RunDir
from graphcnn.viz import bitmap
from graphcnn.viz.animation import write_png


def _interval_means(points: list[tuple[int, float]], edges: list[int]) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([s for s, _ in points], np.int64)
    values = np.array([v for _, v in points], np.float64)
    xs, ys, lo = [], [], 0
    for edge in edges:
        inside = (steps > lo) & (steps <= edge)
        if inside.any():
            xs.append(edge)
            ys.append(values[inside].mean())
        lo = edge
    return np.array(xs), np.array(ys)


def write_report(run_path: str | Path, raw: bool = False) -> list[Path]:
    run = RunDir.open(run_path)
    out = run.root / "report"
    out.mkdir(exist_ok=True)
    train = read_scalars(run.train_logs) if run.train_logs.is_dir() else {}
    records = [r for r in run.read_metrics() if r.get("split") == "validation"]
    by_step = {r["step"]: r for r in records}  # a resumed run re-evaluates no step twice, but be safe
    val_steps = sorted(by_step)
    if not val_steps and run.validation_logs.is_dir():
        val = read_scalars(run.validation_logs)
        by_step = {s: {"loss": v} for s, v in val.get("loss", [])}
        for s, v in val.get("accuracy", []):
            by_step.setdefault(s, {})["accuracy"] = v
        val_steps = sorted(by_step)
    written = []
    for metric in ("loss", "accuracy"):
        series = []
        points = train.get(metric, [])
        if points:
            if raw or not val_steps:
                series.append(("train", np.array([s for s, _ in points]), np.array([v for _, v in points])))
            else:
                xs, ys = _interval_means(points, val_steps)
                series.append(("train (mean per evaluation interval)", xs, ys))
        vs = [s for s in val_steps if metric in by_step[s]]
        if vs:
            series.append(("validation", np.array(vs), np.array([by_step[s][metric] for s in vs])))
        if not series:
            continue
        path = out / f"{metric}.png"
        write_png(path, bitmap.line_plot(series, title=metric))
        written.append(path)
    if train.get("learning_rate"):
        lr = train["learning_rate"]
        path = out / "learning_rate.png"
        write_png(path, bitmap.line_plot([("train", np.array([s for s, _ in lr]), np.array([v for _, v in lr]))],
                                         title="learning rate"))
        written.append(path)
    if run.validation_logs.is_dir():
        confusion = read_images(run.validation_logs, "confusion_matrix").get("confusion_matrix")
        if confusion:
            path = out / "confusion_matrix.png"
            path.write_bytes(confusion[-1][1])
            written.append(path)
    if not written:
        raise ValueError(f"{run.root} has no metrics yet (metrics.jsonl and train/ events are empty)")
    return written
