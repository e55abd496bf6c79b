"""Checkpoints: the latest K, and the best by a validation metric kept apart.

What counts as best is the trainer's call (the early-stopping rule: monitored metric,
min_delta), so the weights restored at the end are the ones early stopping refers to.

Both are ``tf.compat.v1.train.Saver`` checkpoints with their ``.meta`` graph, so
``import_meta_graph`` restores a model without graphcnn. Two TF1 pitfalls are handled:
a Saver forgets older checkpoints after a restart (we call ``recover_last_checkpoints``
with what is on disk, so retention keeps working), and a kill during a save can leave the
newest checkpoint without its ``.meta`` or with ``*.tempstate*`` files (such checkpoints are
skipped and the leftovers removed).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import tensorflow as tf

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.train")
PREFIX = "model.ckpt"
INFERENCE_META = "inference.meta"  # the forward pass alone (graph.inference_graph), beside the checkpoints
_STEP = re.compile(r"model\.ckpt-(\d+)\.index$")


def _complete(prefix: Path) -> bool:
    """A checkpoint is usable when its index, data shards and meta graph are all on disk."""
    return (prefix.with_name(prefix.name + ".index").exists()
            and prefix.with_name(prefix.name + ".meta").exists()
            and any(prefix.parent.glob(prefix.name + ".data-*")))


def checkpoints_on_disk(directory: Path) -> list[Path]:
    """Complete checkpoint prefixes in ``directory``, oldest step first."""
    found = []
    for index in directory.glob(f"{PREFIX}-*.index"):
        m = _STEP.search(index.name)
        prefix = index.with_name(index.name[: -len(".index")])
        if m and _complete(prefix):
            found.append((int(m.group(1)), prefix))
    return [p for _, p in sorted(found)]


def clean_leftovers(directory: Path) -> None:
    for leftover in directory.glob("*.tempstate*"):
        log.warning("removing incomplete checkpoint file %s (left by an interrupted save)", leftover)
        leftover.unlink()


def resolve_checkpoint(path: str | Path, prefer_best: bool = True) -> Path:
    """The checkpoint prefix that ``path`` names.

    ``path`` may be a prefix (``.../model.ckpt-100``, or its ``.index``/``.data-*`` file), a
    folder of checkpoints (graphcnn's, or any with a TensorFlow ``checkpoint`` state file),
    or a run directory, where ``best/`` comes before ``checkpoints/`` when ``prefer_best``.

    Raises:
        FileNotFoundError: nothing usable there; the message names the path.
    """
    path = Path(path).expanduser()
    name = path.name
    if name.endswith(".index"):
        path = path.with_name(name[: -len(".index")])
    elif ".data-" in name:
        path = path.with_name(name[: name.rindex(".data-")])
    if path.with_name(path.name + ".index").exists():
        return path
    if path.is_dir():
        runs = [path / "best", path / "checkpoints"] if prefer_best else [path / "checkpoints", path / "best"]
        for directory in [d for d in runs if d.is_dir()] + [path]:
            found = checkpoints_on_disk(directory)
            if found:
                return found[-1]
            latest = tf.train.latest_checkpoint(str(directory))  # a foreign checkpoint folder
            if latest:
                return Path(latest)
    raise FileNotFoundError(f"no checkpoint found at {path} (looked for a checkpoint prefix, a folder of "
                            "checkpoints, or a run directory with best/ or checkpoints/)")


def export_inference_graph(graph: tf.Graph, saver: v1.train.Saver, directories: list[Path]) -> None:
    """Write ``inference.meta`` (the serving graph and its saver) into each checkpoint folder.

    Every checkpoint of a run shares it; :class:`graphcnn.predict.Predictor` prefers it to a
    checkpoint's own ``.meta``, which holds the whole training graph.
    """
    with graph.as_default():
        for directory in directories:
            tmp = Path(directory) / (INFERENCE_META + ".tempstate")
            saver.export_meta_graph(str(tmp), clear_devices=True, strip_default_attrs=True)
            tmp.replace(Path(directory) / INFERENCE_META)  # atomic: a kill leaves the old file or a leftover


class CheckpointManager:
    """Owns the two Savers of a run. Create inside the graph, before it is finalized."""

    def __init__(self, checkpoint_dir: Path, best_dir: Path, keep: int):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.best_dir = Path(best_dir)
        self.saver = v1.train.Saver(max_to_keep=keep, save_relative_paths=True, name="saver")
        self.best_saver = v1.train.Saver(max_to_keep=1, save_relative_paths=True, name="best_saver")
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self._meta: dict[v1.train.Saver, bytes] = {}  # each saver's serialized meta graph
        self._load_best_record()

    # -- latest -------------------------------------------------------------------------
    def restore_latest(self, sess: v1.Session) -> Path | None:
        """Restore the newest complete checkpoint; return its prefix (None if there is none)."""
        clean_leftovers(self.checkpoint_dir)
        found = checkpoints_on_disk(self.checkpoint_dir)
        if not found:
            return None
        # tell the Saver what is on disk so max_to_keep deletes old ones after the restart
        self.saver.recover_last_checkpoints([str(p) for p in found])
        self.saver.restore(sess, str(found[-1]))
        return found[-1]

    def save(self, sess: v1.Session, step: int) -> str:
        return self._save(self.saver, sess, self.checkpoint_dir, step)

    def _save(self, saver: v1.train.Saver, sess: v1.Session, directory: Path, step: int) -> str:
        """``saver.save`` with its meta graph; the graph is finalized, so that file is serialized
        once and its bytes written for every later checkpoint (exporting cost ~50 ms a save)."""
        prefix = saver.save(sess, str(directory / PREFIX), global_step=step, write_meta_graph=False)
        meta = Path(prefix + ".meta")
        if saver not in self._meta:
            with sess.graph.as_default():
                saver.export_meta_graph(str(meta))
            self._meta[saver] = meta.read_bytes()
        else:
            meta.write_bytes(self._meta[saver])
        return prefix

    # -- best ---------------------------------------------------------------------------
    def save_best(self, sess: v1.Session, step: int, monitor: str, value: float) -> None:
        """Replace ``best/`` with the current weights (the caller decided they are the best)."""
        clean_leftovers(self.best_dir)
        self._save(self.best_saver, sess, self.best_dir, step)
        self.best_metric, self.best_step = value, step
        (self.best_dir / "best.json").write_text(json.dumps({"step": step, "monitor": monitor, "value": value}) + "\n")

    def _load_best_record(self) -> None:
        record = self.best_dir / "best.json"
        if record.exists():
            data = json.loads(record.read_text())
            self.best_metric, self.best_step = data["value"], data["step"]
            found = checkpoints_on_disk(self.best_dir)
            if found:
                self.best_saver.recover_last_checkpoints([str(p) for p in found])

    def restore_best(self, sess: v1.Session) -> Path | None:
        found = checkpoints_on_disk(self.best_dir)
        if not found:
            return None
        self.best_saver.restore(sess, str(found[-1]))
        return found[-1]
