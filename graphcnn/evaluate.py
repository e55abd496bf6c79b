"""Evaluate a restored model on any dataset source: accuracy, per-class metrics, confusion."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from graphcnn.config import DataConfig, from_json_file
from graphcnn.data.sources import Split, load_dataset
from graphcnn.predict import Predictor
from graphcnn.train.run_dir import RunDir


@dataclass(frozen=True)
class Metrics:
    class_names: tuple[str, ...]
    confusion: np.ndarray  # int64 [K, K], rows true class, columns predicted
    count: int

    @classmethod
    def from_predictions(cls, labels: np.ndarray, predictions: np.ndarray, class_names: tuple[str, ...]) -> "Metrics":
        k = len(class_names)
        confusion = np.zeros((k, k), np.int64)
        np.add.at(confusion, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
        return cls(class_names, confusion, int(len(labels)))

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
            "count": self.count,
            "accuracy": self.accuracy,
            "per_class": {
                name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for name, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1,
                                            self.confusion.sum(axis=1))
            },
            "confusion_matrix": self.confusion.tolist(),
        }

    def to_text(self) -> str:
        names = self.class_names
        width = max(8, *(len(n) for n in names))
        lines = [f"accuracy {self.accuracy:.4f} on {self.count} images", "",
                 f"{'class':<{width}}  precision  recall     f1  support"]
        for name, p, r, f, s in zip(names, self.precision, self.recall, self.f1, self.confusion.sum(axis=1)):
            lines.append(f"{name:<{width}}  {p:9.4f}  {r:6.4f}  {f:5.4f}  {s:7d}")
        lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
        cell = max(5, len(str(self.confusion.max())) + 1)
        lines.append(" " * width + "".join(f"{n[:cell - 1]:>{cell}}" for n in names))
        for name, row in zip(names, self.confusion):
            lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
        return "\n".join(lines)


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


def evaluate_run(run_or_checkpoint: str | Path, data_path: str = "", split: str = "test",
                 prefer_best: bool = True) -> Metrics:
    """Evaluate a run's checkpoint on its own data's ``split``, or on another dataset.

    With ``data_path`` (any source graphcnn reads) ``split`` may be ``all``; its class
    names must be among the model's classes.
    """
    with Predictor(run_or_checkpoint, prefer_best) as predictor:
        run_root = Path(run_or_checkpoint)
        if data_path:
            data_cfg = DataConfig(path=data_path, validation_fraction=0.0, test_fraction=0.0)
            if split == "test":
                split = "all"
        else:
            data_cfg = from_json_file(RunDir.open(run_root).config).data
        dataset = load_dataset(replace(data_cfg, strict=False), predictor.preprocessing.channels)
        parts = [dataset.train, dataset.validation, dataset.test] if split == "all" else [getattr(dataset, split)]
        model_index = {n: i for i, n in enumerate(predictor.class_names)}
        unknown = [n for n in dataset.class_names if n not in model_index]
        if unknown:
            raise ValueError(f"classes {unknown} of {data_path or 'the data'} are not classes of the model "
                             f"({', '.join(predictor.class_names)})")
        remap = np.array([model_index[n] for n in dataset.class_names], np.int64)
        labels, preds = [], []
        for part in parts:
            if len(part):
                labels.append(remap[part.labels])
                preds.append(predict_split(predictor, part))
        if not labels:
            raise ValueError(f"the {split} split of {data_path or 'the data'} is empty")
        return Metrics.from_predictions(np.concatenate(labels), np.concatenate(preds), predictor.class_names)
