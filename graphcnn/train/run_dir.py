"""The run directory: one object that knows where everything of a run lives.

A run directory is created once (an existing one is never silently reused or deleted) and
reopened by ``--resume``, ``predict`` and ``evaluate``::

    logs/<run>/
      config.json         the resolved config that trained this run
      train/              TensorBoard events of the training split (graph, scalars, histograms, images)
      validation/         TensorBoard events of the validation split (same scalar tags: curves overlay)
      checkpoints/        latest K checkpoints (model.ckpt-<step>.*), preprocessing.json
      best/               the best checkpoint by validation accuracy, best.json, preprocessing.json
      metrics.jsonl       one JSON object per evaluation (and the final test result)
      data_report.txt     every warning about the data (bad or converted files, by name)
      results.json        final test metrics
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class RunDirError(ValueError):
    """A run directory is missing, incomplete, or would be overwritten."""


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def train_logs(self) -> Path:
        return self.root / "train"

    @property
    def validation_logs(self) -> Path:
        return self.root / "validation"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def data_report(self) -> Path:
        return self.root / "data_report.txt"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @classmethod
    def create(cls, logs_root: str | Path, name: str = "", prefix: str = "run") -> "RunDir":
        """Make a new run directory ``logs_root/name`` (default ``<prefix>-<timestamp>``).

        Raises RunDirError if it exists: resume it with ``--resume`` or pick another name.
        """
        if not name:
            name = f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        root = Path(logs_root) / name
        if root.exists():
            raise RunDirError(f"run directory {root} already exists; use --resume {root} to continue it, "
                              "or choose another --name")
        root.mkdir(parents=True)
        run = cls(root)
        for d in (run.train_logs, run.validation_logs, run.checkpoints, run.best):
            d.mkdir()
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (one with a config.json)."""
        run = cls(Path(path))
        if not run.config.is_file():
            raise RunDirError(f"{run.root} is not a graphcnn run directory (no config.json)")
        return run

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]
