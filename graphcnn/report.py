"""``graphcnn report <run>``: the run's curves and its last confusion matrix as PNG figures,
drawn with matplotlib, without TensorBoard.

Writes into ``<run>/report/``:

* ``loss.png`` and ``accuracy.png``: training and validation in one chart. Validation points
  come from ``metrics.jsonl`` (one per evaluation; from the ``validation/`` events when it has
  none); training points are the ``train/`` scalars of the event files averaged over each
  evaluation interval (so both lines are per-evaluation figures; ``raw=True`` plots every
  logged training value instead);
* ``learning_rate.png`` when the run logged it;
* ``loss.png`` and ``accuracy.png`` also mark the final test's figure (results.json) at the step
  of the weights it measured (``evaluated_step``: best/'s);
* ``confusion_matrix.png`` and ``per_class.png`` (precision and recall of every class) from the
  ``confusion`` counts of the validation record at that step (else the last one with them), class
  names from ``checkpoints/preprocessing.json``. Runs whose records have no ``confusion``: the
  last ``confusion_matrix`` image of the ``validation/`` events, as logged, and no per-class chart.

With ``--compare`` (:func:`write_comparison`), also ``compare.png``: the per-epoch curves and
test accuracy of this run beside other runs, graphcnn's or Keras's (a ``keras.callbacks.
TensorBoard`` log folder), so that the same job run both ways can be read off one figure.

Figures are ``matplotlib.figure.Figure`` objects rendered by the Agg canvas: no pyplot, so no
global state and no display is touched.
"""

from __future__ import annotations

import json
import re
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from graphcnn.run_dir import RunDir, RunDirError
from graphcnn.tensorboard.events import read_images, read_scalars

DPI = 100
MANY_CLASSES = 30  # more: class names in 6 pt, upright (_class_ticks)
TRAIN_COLOR, VALIDATION_COLOR = "tab:orange", "tab:blue"  # TensorBoard's colours of the two runs
Series = tuple[str, np.ndarray, np.ndarray]  # (legend label, steps, values)


# ------------------------------------------------------------------------------ data


def _points(points: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([s for s, _ in points], np.int64), np.array([v for _, v in points], np.float64)


def _interval_means(points: list[tuple[int, float]], edges: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the ``(step, value)`` points in each interval (previous edge, edge], at the edge."""
    steps, values = _points(points)
    xs, ys, lo = [], [], 0
    for edge in edges:
        inside = (steps > lo) & (steps <= edge)
        if inside.any():
            xs.append(edge)
            ys.append(values[inside].mean())
        lo = edge
    return np.array(xs), np.array(ys)


def _confusion(records: list[dict[str, Any]], step: Any = None) -> tuple[int, np.ndarray] | None:
    """(step, int [K, K] counts, rows true) of the validation record at ``step`` (the checkpoint
    the run tested and ships) carrying ``confusion``, else of the last record carrying one."""
    found = [r for r in records if r.get("confusion")]
    chosen = next((r for r in found if r.get("step") == step), found[-1] if found else None)
    return None if chosen is None else (int(chosen.get("step", 0)), np.asarray(chosen["confusion"], np.int64))


def _class_names(run: RunDir, k: int) -> list[str]:
    """The run's class names (checkpoints/, else best/ preprocessing.json), or 0..K-1."""
    for directory in (run.checkpoints, run.best):
        path = directory / "preprocessing.json"
        if path.is_file():
            names = json.loads(path.read_text()).get("class_names") or []
            if len(names) == k:
                return [str(n) for n in names]
    return [str(i) for i in range(k)]


def precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (of the predictions of a class, the fraction right) and recall (of the
    images of a class, the fraction found) of an int [K, K] confusion matrix (rows true): float [K]
    each, 0 where a class was never predicted / never present."""
    matrix = np.asarray(matrix, np.float64)
    hits = np.diag(matrix)
    predicted, present = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, present, out=np.zeros_like(hits), where=present > 0)
    return precision, recall


# --------------------------------------------------------------------------- figures


LABEL_LINE = 20  # a class name longer than this is wrapped at its _, - or spaces (_class_ticks)


def wrap_name(name: str, width: int = LABEL_LINE) -> str:
    """``name`` in lines of at most ``width`` characters where it has places to break (after
    ``_``, ``-`` or a space; a part longer than ``width`` stays whole): the whole name, shown
    in less width than one line of it (``golden_retriever_from_`` / ``the_imagenet_list``)."""
    if len(name) <= width:
        return name
    lines = [""]
    for part in re.findall(r"[^_\-\s]*[_\-\s]*", name):
        if lines[-1] and len(lines[-1]) + len(part.rstrip()) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(line.rstrip() for line in lines if line)


def _class_ticks(axis, names: Sequence[str], which: str) -> None:
    """Full class names as tick labels: a long one wrapped (:func:`wrap_name`) where it stays
    level (rows; columns whose wrapped names fit side by side), long column names otherwise
    slanted, on one line, so they never overlap (wrapped lines slanted run into the next), and
    many classes (dog breeds: 120) in small upright columns: a figure at its size cap gives each
    about 16 px, room for 6 pt text turned 90 degrees, not for a 45-degree slant."""
    ticks = range(len(names))
    many = len(names) > MANY_CLASSES
    wrapped = names if many else [wrap_name(n) for n in names]
    if which == "y":
        rows = 2 if len(names) > 6 else 4  # the lines a row has room for (confusion_figure's row height)
        wrapped = names if many else [wrap_name(n, max(LABEL_LINE, -(-len(n) // rows) + 4)) for n in names]
        axis.set_yticks(ticks, wrapped, fontsize=6 if many else None)
    elif many:
        axis.set_xticks(ticks, names, rotation=90, fontsize=6)
    elif max(len(line) for n in wrapped for line in n.splitlines()) * len(names) > 60:  # slanted
        axis.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    else:
        axis.set_xticks(ticks, wrapped)


def line_figure(series: Sequence[Series], title: str, ylabel: str, test: tuple[int, float] | None = None) -> Figure:
    """Curves over steps in one chart: the x axis ``step`` from 0, a legend, a grid; ``test``
    (step, value): the test split's figure as a marker at the step of the weights it measured."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axis = figure.add_subplot()
    colors = [TRAIN_COLOR, VALIDATION_COLOR]
    named = {"train": TRAIN_COLOR, "validation": VALIDATION_COLOR}  # a run's colours, whichever curves it has
    last = 0
    for i, (label, steps, values) in enumerate(series):
        sparse = len(steps) <= 60  # validation: one point per evaluation, worth marking
        axis.plot(steps, values, label=label, color=named.get(label, colors[i % 2]), marker="o" if sparse else None,
                  markersize=4, linewidth=1.8)
        last = max(last, int(np.max(steps)) if len(steps) else 0)
    if test is not None:
        axis.plot([test[0]], [test[1]], linestyle="none", marker="*", markersize=13, color="black",
                  label=f"test {test[1]:.4f} (the weights of step {test[0]})")
    axis.set_xlim(0, max(last, 1) * 1.02)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend()
    return figure


def confusion_figure(matrix: np.ndarray, names: Sequence[str], step: int, note: str = "") -> Figure:
    """int [K, K] counts (rows true) as an image: Blues by the fraction of the true class, every
    count written in its cell (white on dark cells) when K <= 40, full class names on both axes."""
    k = len(names)
    side = min(20.0, max(5.0, 0.55 * k + 2.5))
    # "compressed": constrained layout for a fixed-aspect image (plain constrained layout put a
    # short matrix's "true" half outside the figure's left edge)
    figure = Figure(figsize=(side + 1.2, side), layout="compressed")
    axis = figure.add_subplot()
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fraction = matrix / totals
    shown = axis.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    # colorbar at its default size: fraction=/pad= break constrained layout's room for the row names
    figure.colorbar(shown, ax=axis, label="fraction of the true class")
    if k <= 40:
        size = 11 if k <= 12 else 8 if k <= 25 else 6
        for i in range(k):
            for j in range(k):
                axis.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=size,
                          color="white" if fraction[i, j] > 0.5 else "black")
    _class_ticks(axis, names, "x")
    _class_ticks(axis, names, "y")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    # the figure's title, not the axis's: long class names leave a narrow matrix that a title
    # centred over it would overrun
    figure.suptitle(f"confusion matrix (validation, step {step}{note})")
    return figure


def per_class_figure(matrix: np.ndarray, names: Sequence[str], step: int, note: str = "") -> Figure:
    """Precision and recall of every class as grouped bars (values written when K <= 12)."""
    k = len(names)
    precision, recall = precision_recall(matrix)
    # long names are slanted under the chart: the figure grows by their height, not the chart shrinking
    # the names' extent below the chart: a slanted one's length, or a wrapped one's lines
    wrapped = [wrap_name(n) for n in names]
    level = k <= MANY_CLASSES and max(len(line) for w in wrapped for line in w.splitlines()) * k <= 60
    longest = max(4 * w.count("\n") for w in wrapped) + LABEL_LINE if level else max(len(n) for n in names)
    height = 5.0 + (min(4.0, 0.055 * (longest - 12)) if longest > 12 and k <= MANY_CLASSES else 0.0)
    figure = Figure(figsize=(min(24.0, max(6.0, 0.7 * k + 2.0)), height), layout="constrained")
    axis = figure.add_subplot()
    x = np.arange(k)
    width = 0.4
    bars = [axis.bar(x - width / 2, precision, width, label="precision", color="tab:blue"),
            axis.bar(x + width / 2, recall, width, label="recall", color="tab:orange")]
    upright = k > 6  # side by side, two values a class overlapped ("0.000.00") in narrow columns
    if k <= 12:
        for group in bars:
            axis.bar_label(group, fmt="%.2f", fontsize=8, padding=2, rotation=90 if upright else 0)
    _class_ticks(axis, names, "x")
    axis.set_ylim(0, 1.22 if upright else 1.12)  # room above 1.0 for the values
    axis.set_yticks(np.linspace(0.0, 1.0, 6))
    axis.set_xlabel("class")
    axis.set_ylabel("precision / recall")
    axis.grid(True, axis="y", alpha=0.3)
    figure.suptitle(f"per-class precision and recall (validation, step {step}{note})")
    figure.legend(loc="outside right center")  # beside the chart: never over a bar, its value or the title
    return figure


# ---------------------------------------------------------------------------- report


def _validation_by_step(run: RunDir, records: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} of the validations: metrics.jsonl, else the validation/ events."""
    by_step = {r["step"]: r for r in records}  # a resumed run re-evaluates no step twice, but be safe
    if by_step or not run.validation_logs.is_dir():
        return by_step
    scalars = read_scalars(run.validation_logs)
    for metric in ("loss", "accuracy"):
        for step, value in scalars.get(metric, []):
            by_step.setdefault(step, {})[metric] = value
    return by_step


def write_report(run_path: str | Path, raw: bool = False) -> list[Path]:
    """Write the figures of the run at ``run_path`` into ``<run>/report/`` (see the module
    docstring) and return their paths. Raises RunDirError for a folder that is not a run and
    ValueError for a run with nothing logged yet."""
    run = RunDir.open(run_path)
    out = run.report  # made with the first figure: a run with nothing to draw gets no empty folder
    train = read_scalars(run.train_logs)
    records = [r for r in run.read_metrics() if r.get("split") == "validation"]
    by_step = _validation_by_step(run, records)
    val_steps = sorted(by_step)
    written: list[Path] = []

    def save(figure: Figure, name: str) -> None:
        out.mkdir(exist_ok=True)
        _save(figure, out / name)
        written.append(out / name)

    results = _read_results(run.results)
    evaluated = results.get("evaluated_step")
    for metric in ("loss", "accuracy"):
        series: list[Series] = []
        points = train.get(metric, [])
        if points:
            if raw or not val_steps:
                series.append(("train", *_points(points)))
            else:
                series.append(("train (mean per evaluation interval)", *_interval_means(points, val_steps)))
        steps = [s for s in val_steps if metric in by_step[s]]
        if steps:
            series.append(("validation", np.array(steps), np.array([by_step[s][metric] for s in steps], np.float64)))
        test = None  # the final test's figure, at the step of the weights it tested (best/)
        value = results.get(f"test_{metric}")
        if isinstance(evaluated, int) and isinstance(value, (int, float)):
            test = (evaluated, float(value))
        if series:
            save(line_figure(series, f"{metric}: train and validation", metric, test), f"{metric}.png")
    if train.get("learning_rate"):
        save(line_figure([("train", *_points(train["learning_rate"]))], "learning rate", "learning rate"),
             "learning_rate.png")
    confusion = _confusion(records, evaluated)
    if confusion is not None:
        step, matrix = confusion
        names = _class_names(run, len(matrix))
        # the weights the run tested and ships (best/), not its last step's, when they differ
        note = ", the tested checkpoint" if step == evaluated and val_steps and step != val_steps[-1] else ""
        save(confusion_figure(matrix, names, step, note), "confusion_matrix.png")
        save(per_class_figure(matrix, names, step, note), "per_class.png")
    else:
        logged = read_images(run.validation_logs, "confusion_matrix").get("confusion_matrix")
        if logged:
            path = out / "confusion_matrix.png"
            out.mkdir(exist_ok=True)
            path.write_bytes(logged[-1][1])
            written.append(path)
    if not written:
        raise ValueError(f"{run.root} has no metrics yet (metrics.jsonl and train/ events are empty)")
    return written


# ------------------------------------------------------------------------ comparison

Curve = tuple[np.ndarray, np.ndarray]  # (epochs float [N], values float [N])


class RunCurves(NamedTuple):
    """One run's per-epoch curves and test accuracy, whichever tool trained it."""

    label: str
    train: dict[str, Curve]  # "loss" / "accuracy" -> per-epoch training figure
    validation: dict[str, Curve]
    test_accuracy: float | None  # None: not recorded
    test_epoch: float | None = None  # the epoch of the checkpoint the test evaluated (best/), when known


def _graphcnn_curves(run: RunDir, label: str) -> RunCurves:
    records = [r for r in run.read_metrics() if r.get("split") == "validation" and "epoch" in r]
    train_scalars = read_scalars(run.train_logs)
    results = _read_results(run.results)
    if records:
        steps = [int(r["step"]) for r in records]
        epoch_of = {int(r["step"]): float(r["epoch"]) for r in records}
    elif isinstance(results.get("steps_per_epoch"), int) and results["steps_per_epoch"] > 0:
        # no validation split: the training curves by epoch, each epoch's mean (as Keras logs them)
        per_epoch = results["steps_per_epoch"]
        last = max((s for points in train_scalars.values() for s, _ in points), default=0)
        steps = list(range(per_epoch, last + per_epoch, per_epoch))
        epoch_of = {s: s / per_epoch for s in steps}
    else:
        raise ValueError(f"{run.root} has no validation records with an epoch in metrics.jsonl (trained without "
                         "a validation split, or not validated yet): nothing to draw by epoch")
    train, validation = {}, {}
    for metric in ("loss", "accuracy"):
        kept = [r for r in records if metric in r]
        if kept:
            validation[metric] = (np.array([float(r["epoch"]) for r in kept]), np.array([r[metric] for r in kept]))
        if train_scalars.get(metric):
            # the mean over each evaluation interval: what Keras logs as an epoch's training figure
            at, means = _interval_means(train_scalars[metric], steps)
            train[metric] = (np.array([epoch_of[int(s)] for s in at]), means)
    evaluated = results.get("evaluated_step")
    test_epoch = epoch_of.get(int(evaluated)) if isinstance(evaluated, int) else None
    return RunCurves(label, train, validation, _test_accuracy(run.results), test_epoch)


def _keras_curves(folder: Path, label: str) -> RunCurves:
    def per_epoch(subfolder: str) -> dict[str, Curve]:
        scalars, curves = read_scalars(folder / subfolder), {}
        for metric in ("loss", "accuracy"):
            if scalars.get(f"epoch_{metric}"):
                steps, values = _points(scalars[f"epoch_{metric}"])
                curves[metric] = (steps + 1.0, values)
        return curves

    train, validation = per_epoch("train"), per_epoch("validation")
    if not train and not validation:
        raise ValueError(f"{folder} is neither a graphcnn run directory (no config.json) nor a Keras TensorBoard "
                         "log folder (train/ or validation/ events with epoch_loss or epoch_accuracy)")
    return RunCurves(label, train, validation, _test_accuracy(folder / "results.json"))


def _read_results(results: Path) -> dict:
    """A results.json ({} without the file); one that is not a JSON object is an error naming it."""
    if not results.is_file():
        return {}
    try:
        data = json.loads(results.read_text())
    except ValueError as err:
        raise ValueError(f"{results}: not a results file ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{results}: not a results file (not a JSON object)")
    return data


def _test_accuracy(results: Path) -> float | None:
    """``test_accuracy`` of a results.json (None without the file or the figure); a figure that
    is not a number is an error naming the file."""
    value = _read_results(results).get("test_accuracy")
    if value is not None and not isinstance(value, (int, float)):
        raise ValueError(f"{results}: test_accuracy is {value!r}, not a number")
    return value


def read_curves(path: str | Path, label: str = "") -> RunCurves:
    """The per-epoch curves of a graphcnn run directory or of a Keras ``TensorBoard(log_dir)`` folder.

    graphcnn: validation from ``metrics.jsonl`` (each record's ``epoch``), training as the mean
    of the ``train/`` scalars over each evaluation interval, test accuracy from ``results.json``.
    Keras: ``epoch_loss`` / ``epoch_accuracy`` of ``train/`` and ``validation/`` (Keras writes
    epoch e at step e - 1); the test accuracy from a ``results.json`` beside them
    (``{"test_accuracy": ...}``) when the script wrote one: Keras's callback logs ``evaluate``
    at the step of the last validation, so the events cannot tell the two apart.
    """
    path = Path(path)
    label = label or path.name
    try:
        return _graphcnn_curves(RunDir.open(path), label)
    except RunDirError:
        if not path.is_dir():
            raise ValueError(f"{path} is not a folder") from None
        return _keras_curves(path, label)


def comparison_figure(runs: Sequence[RunCurves]) -> Figure:
    """Accuracy and loss by epoch (validation solid with markers, training dashed, one colour per
    run) and the test accuracies as bars, side by side."""
    figure = Figure(figsize=(16, 5), layout="constrained")
    accuracy_axis, loss_axis, test_axis = figure.subplots(1, 3, width_ratios=[1.0, 1.0, 0.6])
    last = 1.0
    for i, run in enumerate(runs):
        for axis, metric in ((accuracy_axis, "accuracy"), (loss_axis, "loss")):
            for curves, style, what in ((run.validation, "-", "validation"), (run.train, "--", "train")):
                if metric in curves:
                    epochs, values = curves[metric]
                    axis.plot(epochs, values, style, color=f"C{i}", marker="o" if what == "validation" else "x",
                              markersize=4, linewidth=1.8 if what == "validation" else 1.2,
                              label=f"{run.label} {what}")
                    last = max(last, float(epochs.max()))
    for axis, metric in ((accuracy_axis, "accuracy"), (loss_axis, "loss")):
        axis.set_xlim(0, last * 1.04)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.set_title(f"{metric} by epoch")
        axis.grid(True, alpha=0.3)
    # one legend for both charts (they have the same runs and curves), below them: with many
    # runs (a sweep) a legend inside a chart covers its curves
    handles, labels = max((a.get_legend_handles_labels() for a in (accuracy_axis, loss_axis)), key=lambda h: len(h[1]))
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8)
    rows = np.arange(len(runs))
    tests = [run.test_accuracy for run in runs]
    bars = test_axis.barh(rows, [t or 0.0 for t in tests], color=[f"C{i}" for i in rows])
    test_axis.bar_label(bars, [f"{t:.4f}" if t is not None else "not recorded" for t in tests], padding=4)
    test_axis.set_yticks(rows, [_wrap(run.label) for run in runs])  # sweep runs have long names
    test_axis.invert_yaxis()  # the first run on top, as in the legends
    test_axis.set_xlim(0, 1.3)  # room right of a bar at 1.0 for its value
    test_axis.set_xticks(np.linspace(0.0, 1.0, 6))
    test_axis.set_xlabel("test accuracy")
    test_axis.set_title("test accuracy")
    test_axis.grid(True, axis="x", alpha=0.3)
    return figure


def _wrap(label: str, width: int = 28) -> str:
    """``label`` in lines of about ``width``, broken after commas (a sweep run's
    ``learning_rate=0.001,batch_size=64``), a part longer than that broken where it must."""
    lines = [""]
    for part in re.split(r"(?<=,)", label):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in lines)


def write_comparison(run_path: str | Path, others: Sequence[str | Path]) -> tuple[Path, list[RunCurves]]:
    """Draw the run at ``run_path`` beside ``others`` (graphcnn runs or Keras TensorBoard log
    folders, see :func:`read_curves`) into ``<run>/report/compare.png``; labels are the folder
    names (numbered where two are the same). Returns the path and the curves drawn."""
    run = RunDir.open(run_path)
    paths = [run.root, *(Path(p) for p in others)]
    names = [p.resolve().name for p in paths]
    labels = [name if names.count(name) == 1 else f"{name} ({i + 1})" for i, name in enumerate(names)]
    runs = [read_curves(p, label) for p, label in zip(paths, labels)]
    run.report.mkdir(exist_ok=True)
    figure = comparison_figure(runs)
    out = run.report / "compare.png"
    _save(figure, out)
    return out, runs


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)  # attaches itself to the figure: render with Agg, whatever the backend
    with warnings.catch_warnings():
        # a class name in a script DejaVu Sans lacks (CJK) is drawn with boxes; matplotlib's
        # warning per glyph, with its source line, is not for graphcnn's users
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        figure.savefig(path, dpi=DPI)
