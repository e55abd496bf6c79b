"""Evaluate a restored model on any dataset source: accuracy, per-class metrics, confusion.

Which images: a split of the run's own data, split exactly as training split it, or
another dataset (``data_path``): all of it, or one split of it made as training would make
it, with the run's ``data.validation_fraction`` / ``data.test_fraction`` / ``data.seed``
(a source with its own test set, such as ``training_set/`` + ``test_set/`` folders, keeps
it). Its class names must be among the model's; they are checked before any image is
decoded. A single class is fine (the accuracy on it is its recall).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from graphcnn.config import Config, ConfigError, DataConfig, apply_overrides, from_json_file
from graphcnn.data.dataset import DataError, Dataset, Split, accuracy_margin, split_changes
from graphcnn.data.sources import load_dataset
from graphcnn.predict import Predictor
from graphcnn.run_dir import RunDir
from graphcnn.terminal import columns, ljust

SPLITS = ("train", "validation", "test", "all")


@dataclass(frozen=True)
class Metrics:
    class_names: tuple[str, ...]
    confusion: np.ndarray  # int64 [K, K], rows true class, columns predicted
    count: int
    images: str = ""  # which images were evaluated, e.g. "all 200 images of folder /data/x"

    @classmethod
    def from_predictions(cls, labels: np.ndarray, predictions: np.ndarray, class_names: tuple[str, ...],
                         images: str = "") -> "Metrics":
        k = len(class_names)
        confusion = np.zeros((k, k), np.int64)
        np.add.at(confusion, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
        return cls(class_names, confusion, int(len(labels)), images)

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.count, 1))

    @property
    def precision(self) -> np.ndarray:
        predicted = self.confusion.sum(axis=0)
        return np.divide(np.diag(self.confusion), predicted, out=np.zeros(len(predicted)), where=predicted > 0)

    @property
    def recall(self) -> np.ndarray:
        actual = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), actual, out=np.zeros(len(actual)), where=actual > 0)

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        return np.divide(2 * p * r, p + r, out=np.zeros(len(p)), where=(p + r) > 0)

    def to_dict(self) -> dict:
        return {
            **({"images": self.images} if self.images else {}),
            "count": self.count,
            "accuracy": self.accuracy,
            # the largest 95% interval half-width, in accuracy points, on this many images (as the text says)
            "accuracy_margin": accuracy_margin(self.count) if self.count else None,
            "per_class": {
                name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for name, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1,
                                            self.confusion.sum(axis=1))
            },
            "confusion_matrix": self.confusion.tolist(),
        }

    def to_text(self) -> str:
        names = self.class_names
        width = max(8, *(columns(n) for n in names))
        margin = f" (95% interval: up to +/-{accuracy_margin(self.count):.1f} points)" if self.count else ""
        lines = ([f"images: {self.images}"] if self.images else []) + [
                 f"accuracy {self.accuracy:.4f} on {self.count} images{margin}", "",
                 f"{'class':<{width}}  precision  recall     f1  support"]
        for name, p, r, f, s in zip(names, self.precision, self.recall, self.f1, self.confusion.sum(axis=1)):
            lines.append(f"{ljust(name, width)}  {p:9.4f}  {r:6.4f}  {f:5.4f}  {s:7d}")
        # columns headed by the rows' numbers: names cut to a column's width could not be told
        # apart (covid_negative and covid_positive both read "covi")
        lines += ["", "confusion matrix (rows: true class, columns: predicted, numbered as the rows)"]
        numbered = any(name != str(i) for i, name in enumerate(names))  # digits' "0".."9" are their numbers
        rows = [f"{i:>{len(str(len(names) - 1))}} {name}" if numbered else name for i, name in enumerate(names)]
        label = max(columns(r) for r in rows)
        cell = max(5, len(str(self.confusion.max())) + 1, len(str(len(names) - 1)) + 1)
        lines.append(" " * label + "".join(f"{j:>{cell}}" for j in range(len(names))))
        for row_label, row in zip(rows, self.confusion):
            lines.append(ljust(row_label, label) + "".join(f"{v:>{cell}}" for v in row))
        return "\n".join(lines)

    def to_csv(self) -> str:
        """``class,precision,recall,f1,support``: a row per class of the model, then a row
        ``accuracy`` with the accuracy in the f1 column and the image count as its support
        (the layout of scikit-learn's classification report)."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["class", "precision", "recall", "f1", "support"])
        for name, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1, self.confusion.sum(axis=1)):
            w.writerow([name, f"{p:.6f}", f"{r:.6f}", f"{f:.6f}", int(s)])
        w.writerow(["accuracy", "", "", f"{self.accuracy:.6f}", self.count])
        return out.getvalue()


def predict_split(predictor: Predictor, split: Split) -> np.ndarray:
    """Predicted class indices int64 [N] for a split (arrays or files)."""
    if split.images is not None:
        probs = [predictor.probabilities_for(predictor.preprocess_arrays(split.images[i:i + 512]))
                 for i in range(0, len(split), 512)]
        return np.concatenate(probs).argmax(axis=1) if probs else np.zeros(0, np.int64)
    predictions, errors = predictor.predict_files(split.paths, top_k=1)
    if errors:  # the dataset scan already excluded unreadable files; this would be a race
        raise OSError("could not read: " + ", ".join(f for f, _ in errors))
    index = {n: i for i, n in enumerate(predictor.class_names)}
    return np.array([index[p.class_name] for p in predictions], np.int64)


def evaluate_run(run_or_checkpoint: str | Path, data_path: str = "", split: str | None = None,
                 prefer_best: bool = True, data_overrides: Sequence[str] = (), precision: str = "float32") -> Metrics:
    """Evaluate a run's checkpoint on its own data's ``split`` (default ``test``), or on
    another dataset (``data_path``, any source graphcnn reads; default split ``all``).
    ``data_overrides``: ``data.*`` overrides (``--set``) of how ``data_path`` is read, as
    training takes them: ``data.source`` (``auto`` detects only the built-in sources; a pickle
    also needs ``data.trust_pickle=true``), the fractions of a ``split`` other than ``all``, ...
    ``precision``: the forward pass's (:class:`~graphcnn.predict.Predictor`); ``auto`` computes
    as the run's own final test did where that was bfloat16 (``graphcnn evaluate``'s default).

    A damaged best checkpoint falls back to the run's latest ones, with a warning naming it
    (:class:`~graphcnn.predict.Predictor`). :attr:`Metrics.images` says which images were used.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if data_overrides and not data_path:
        raise ConfigError("--set goes with --data (how that data is read); the run's own data is read as it trained")
    for text in data_overrides:
        key = text.split("=", 1)[0].strip()
        if not key.startswith("data.") or key in ("data.path", "data.test_path"):
            raise ConfigError(f"{key}: evaluate takes data.* keys (how --data is read), and the data as --data")
    with Predictor(run_or_checkpoint, prefer_best, precision=precision) as predictor:
        run_data = _run_data_config(Path(run_or_checkpoint))
        if data_path:
            split = split or "all"
            data_cfg = replace(run_data or DataConfig(), source="auto", path=data_path, test_path="",
                               trust_pickle=False)
            data_cfg = apply_overrides(replace(Config(), data=data_cfg), list(data_overrides)).data
            if split == "all":  # nothing is split off: even a handful of images can be evaluated
                data_cfg = replace(data_cfg, validation_fraction=0.0, test_fraction=0.0)
        elif run_data is None:
            raise ValueError(f"{run_or_checkpoint}: no run directory (config.json) around this checkpoint, so no "
                             "data to evaluate on; give one with --data")
        else:
            split = split or "test"
            data_cfg = run_data
        # JPEGs read as the checkpoint's preprocessing.json says the model was trained (a bare checkpoint too)
        data_cfg = replace(data_cfg, exif_transpose=predictor.preprocessing.exif_transpose)
        dataset = load_dataset(replace(data_cfg, strict=False), predictor.preprocessing.channels,
                               model_classes=predictor.class_names)
        if not data_path:
            _check_run_splits(Path(run_or_checkpoint), dataset, split)
        parts = [dataset.train, dataset.validation, dataset.test] if split == "all" else [getattr(dataset, split)]
        model_index = {n: i for i, n in enumerate(predictor.class_names)}
        remap = np.array([model_index[n] for n in dataset.class_names], np.int64)
        labels, preds = [], []
        for part in parts:
            if len(part):
                labels.append(remap[part.labels])
                preds.append(predict_split(predictor, part))
        if not labels:
            raise ValueError(f"the {split} split of {data_path or 'the data'} is empty")
        images = _which_images(dataset, data_cfg, split, sum(len(p) for p in parts))
        if predictor.test_time_flip:
            images += "; each image's probabilities averaged with its mirror image's (model.test_time_flip)"
        images += f"; forward pass in {predictor.precision}"
        return Metrics.from_predictions(np.concatenate(labels), np.concatenate(preds), predictor.class_names,
                                        images=images)


def _run_folder(path: Path) -> RunDir | None:
    """The run that ``path`` (a run, its checkpoint folder or a checkpoint prefix in it)
    belongs to, or None when there is no run around it."""
    for folder in (path, path.parent, path.parent.parent):
        if (folder / "config.json").is_file():
            return RunDir(folder)
    return None


def _run_data_config(path: Path) -> DataConfig | None:
    """The data config of the run that ``path`` belongs to (:func:`_run_folder`), or None."""
    run = _run_folder(path)
    return from_json_file(run.config).data if run is not None else None


def _check_run_splits(path: Path, dataset: Dataset, split: str) -> None:
    """DataError if the run's data changed since it trained (its ``data_split.json``): a file
    added or removed reshuffles the seeded split, and the test split would hold images the
    run trained on, its accuracy measured on them."""
    run = _run_folder(path)
    try:
        recorded = json.loads(run.data_split.read_text()) if run is not None else None
    except (OSError, ValueError):
        return  # a run from before data_split.json: nothing to compare with
    changes = split_changes(recorded, dataset.split_record()) if recorded else None
    if changes:
        raise DataError(f"{dataset.name}: changed since {run.root} trained on it: {changes}. Its {split} split would "
                        "now hold other images, some of which it may have trained on. Put the data back as it was, "
                        "or evaluate on other data (all of it): --data DIR")


def _which_images(dataset: Dataset, cfg: DataConfig, split: str, count: int) -> str:
    total = len(dataset.train) + len(dataset.validation) + len(dataset.test)
    if split == "all":
        return f"all {count} images of {dataset.name}"
    if split == "test" and dataset.own_test_split:
        how = "its own test set"
    else:
        how = (f"split as training splits it: data.validation_fraction={cfg.validation_fraction:g}, "
               f"data.test_fraction={cfg.test_fraction:g}, data.seed={cfg.seed}")
    return f"the {split} split of {dataset.name}: {count} of {total} images ({how})"
