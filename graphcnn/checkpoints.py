"""Checkpoints: the latest K, and the best by a validation metric kept apart.

What counts as best is the trainer's call (the early-stopping rule: monitored metric,
min_delta), so the weights restored at the end are the ones early stopping refers to.

Both are ``tf.compat.v1.train.Saver`` checkpoints (``model.ckpt-<step>.index/.data-*/.meta``)
with their ``.meta`` graph, so ``import_meta_graph`` restores a model without graphcnn.

* ``checkpoints/`` holds every variable (weights, optimizer slots, global step, the
  learning-rate scale): what ``--resume`` continues from.
* ``best/`` holds the model alone (:func:`model_variables`: the variables
  ``inference.meta`` restores, plus the global step and the pixel mean, minus the optimizer
  slots and the ``train`` scope): with Adam a third of the size. ``inference.meta``,
  ``graphcnn predict``, ``evaluate``, ``--init-from`` and the trainer's final evaluation
  all need no more.

What a kill (or a full disk) at any moment leaves is usable:

* a checkpoint counts only when its index, every data shard and its ``.meta`` are on disk
  (the ``.meta`` is written first, atomically, so the ``checkpoint`` state file the Saver
  writes last never names a checkpoint without one); ``*.tempstate*`` leftovers of an
  interrupted save are removed;
* ``best/`` keeps the previous best until the new one is complete: save it, then replace
  ``best.json`` atomically, then delete the older ones. ``best.json`` always names a
  complete checkpoint, and readers prefer the one it names;
* a checkpoint that is complete but cannot be restored (a truncated ``.data-*``, a damaged
  index) is skipped with a warning naming it, for the one before it: when resuming
  (:meth:`CheckpointManager.restore_latest`) and when predicting or fine-tuning from a run
  (:func:`checkpoint_candidates`, :func:`resolve_checkpoint`).

Also handled: a Saver forgets older checkpoints after a restart (we call
``recover_last_checkpoints`` with what is on disk, so retention keeps working).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.python.training import saver as saver_lib

from graphcnn.atomic import write_bytes_atomic, write_text_atomic
from graphcnn.model.scopes import variable_name

v1 = tf.compat.v1
log = logging.getLogger("graphcnn.train")
PREFIX = "model.ckpt"
INFERENCE_META = "inference.meta"  # the forward pass alone (graph.inference_graph), beside the checkpoints
BEST_RECORD = "best.json"  # {"step", "monitor", "value"} of the checkpoint in best/
_STEP = re.compile(r"model\.ckpt-(\d+)\.index$")
_FILE_STEP = re.compile(r"model\.ckpt-(\d+)\.(index|meta|data-\d+-of-\d+)$")
_SHARD = re.compile(r"\.data-(\d+)-of-(\d+)")  # what follows a data shard's prefix, all of it
# restoring a checkpoint raises these when its files are damaged (OutOfRangeError for a
# truncated .data file, DataLossError for a bad index or checksum, ...) or do not match
RESTORE_ERRORS = (tf.errors.OpError, ValueError)


class CheckpointError(ValueError):
    """No checkpoint at a path can be restored. The message names each one tried, and why."""


# ------------------------------------------------------------------------------ on disk


def _data_shards(prefix: Path) -> list[Path]:
    """The ``.data-NNNNN-of-MMMMM`` files of ``prefix`` if all M are there, else []."""
    shards, total = [], None
    for f in prefix.parent.glob(prefix.name + ".data-*"):
        m = _SHARD.fullmatch(f.name.removeprefix(prefix.name))  # not "...data-00000-of-00001.tempstate123"
        if m:
            shards.append(f)
            total = int(m.group(2))
    return sorted(shards) if total is not None and len(shards) == total else []


def _complete(prefix: Path) -> bool:
    """A checkpoint is usable when its index, data shards and meta graph are all on disk."""
    return (prefix.with_name(prefix.name + ".index").exists()
            and prefix.with_name(prefix.name + ".meta").exists()
            and bool(_data_shards(prefix)))


def checkpoint_files(prefix: Path) -> list[Path]:
    """Every file of the checkpoint ``prefix`` that is on disk (index, data shards, meta)."""
    suffixes = {f: f.name.removeprefix(prefix.name) for f in prefix.parent.glob(prefix.name + ".*")}
    return sorted(f for f, suffix in suffixes.items() if suffix in (".index", ".meta") or _SHARD.fullmatch(suffix))


def checkpoint_bytes(prefix: Path) -> int:
    """Disk size of a checkpoint: index + data + meta."""
    return sum(f.stat().st_size for f in checkpoint_files(prefix))


def indexed_checkpoints(directory: Path) -> list[Path]:
    """Every checkpoint prefix in ``directory`` that has an index, complete or not, oldest first."""
    found = []
    for index in Path(directory).glob(f"{PREFIX}-*.index"):
        if m := _STEP.search(index.name):
            found.append((int(m.group(1)), index.with_name(index.name[: -len(".index")])))
    return [p for _, p in sorted(found)]


def checkpoints_on_disk(directory: Path) -> list[Path]:
    """Complete checkpoint prefixes in ``directory``, oldest step first."""
    return [p for p in indexed_checkpoints(directory) if _complete(p)]


def step_of(prefix: Path) -> int | None:
    m = re.search(r"-(\d+)$", Path(prefix).name)
    return int(m.group(1)) if m else None


def clean_leftovers(directory: Path) -> None:
    """Remove what an interrupted save left: TensorFlow's ``*.tempstate*`` files and the
    ``<prefix>_temp/`` folder of a sharded save, our own hidden temporary files
    (``.<name>.*.tmp``, see :mod:`graphcnn.atomic`) and a ``.meta`` without its index."""
    for folder in directory.glob(f"{PREFIX}-*_temp"):
        log.warning("removing incomplete checkpoint folder %s (left by an interrupted save)", folder)
        shutil.rmtree(folder, ignore_errors=True)
    leftovers = [*directory.glob("*.tempstate*"), *directory.glob(".*.tmp")]
    # a .meta whose save never got to write the index (the meta is written first)
    leftovers += [m for m in directory.glob(f"{PREFIX}-*.meta") if not m.with_suffix(".index").exists()]
    for leftover in leftovers:
        log.warning("removing incomplete checkpoint file %s (left by an interrupted save)", leftover)
        leftover.unlink()


def read_best_record(best_dir: Path) -> dict | None:
    """``best.json`` of ``best_dir``, or None (none, or unreadable: a warning says so)."""
    record = Path(best_dir) / BEST_RECORD
    if not record.exists():
        return None
    try:
        data = json.loads(record.read_text())
        int(data["step"])
        return data
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring %s: cannot read it (%s)", record, err)
        return None


def best_candidates(best_dir: Path) -> list[Path]:
    """The complete checkpoints of a ``best/`` folder, most trusted first: the one
    ``best.json`` names, then the others newest first (a kill between saving a new best and
    recording it leaves both; the record decides)."""
    found = checkpoints_on_disk(best_dir)
    record = read_best_record(best_dir)
    named = [p for p in found if record is not None and step_of(p) == int(record["step"])]
    return named + [p for p in reversed(found) if p not in named]


def _folder_candidates(directory: Path) -> list[Path]:
    if (directory / BEST_RECORD).exists():
        return best_candidates(directory)
    found = list(reversed(checkpoints_on_disk(directory)))
    if not found:
        latest = tf.train.latest_checkpoint(str(directory))  # a foreign checkpoint folder
        if latest:
            found = [Path(latest)]
    return found


def checkpoint_candidates(path: str | Path, prefer_best: bool = True) -> list[Path]:
    """The checkpoint prefixes ``path`` names, the one to use first, then its fallbacks.

    ``path`` may be a prefix (``.../model.ckpt-100``, or its ``.index``/``.data-*`` file:
    that checkpoint alone), a folder of checkpoints (graphcnn's, newest first; or any with a
    TensorFlow ``checkpoint`` state file), or a run directory: ``best/`` (the checkpoint
    ``best.json`` names first) before ``checkpoints/`` (newest first) when ``prefer_best``,
    the other way round otherwise.

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
        return [path]
    found: list[Path] = []
    if path.is_dir():
        runs = [path / "best", path / "checkpoints"] if prefer_best else [path / "checkpoints", path / "best"]
        for directory in [d for d in runs if d.is_dir()] + [path]:
            found += [p for p in _folder_candidates(directory) if p not in found]
    if not found:
        raise FileNotFoundError(f"no checkpoint found at {path} (looked for a checkpoint prefix, a folder of "
                                "checkpoints, or a run directory with best/ or checkpoints/)")
    return found


def check_checkpoint(prefix: Path) -> None:
    """Raise if ``prefix`` is visibly damaged: an index TensorFlow cannot read, or data
    shards shorter than the tensors its index lists (a save cut short, a full disk).

    Cheap (reads the index, not the data): a flipped bit inside the data passes, and is
    caught by the checksum when the checkpoint is restored.
    """
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except tf.errors.OpError as err:
        raise CheckpointError(f"{prefix}.index cannot be read ({one_line(err)})") from None
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    need = sum(int(np.prod(shapes[name], dtype=np.int64)) * dtypes[name].size for name in shapes)
    shards = _data_shards(Path(prefix)) or sorted(Path(prefix).parent.glob(Path(prefix).name + ".data-*"))
    have = sum(f.stat().st_size for f in shards)
    if have < need:  # numeric tensors take exactly their size; strings count 0 here, so this is a lower bound
        raise CheckpointError(f"{', '.join(str(f) for f in shards) or str(prefix) + '.data-*'}: {have} bytes, but "
                              f"its index lists {need} bytes of tensors (truncated)")


def resolve_checkpoint(path: str | Path, prefer_best: bool = True) -> Path:
    """The checkpoint prefix that ``path`` names (see :func:`checkpoint_candidates`).

    Of several candidates (a run directory, a folder) the first that passes
    :func:`check_checkpoint` is returned; each one skipped is named in a warning. A prefix
    named directly is returned as it is.

    Raises:
        FileNotFoundError: nothing there; the message names the path.
        CheckpointError: every candidate is damaged; the message names each.
    """
    candidates = checkpoint_candidates(path, prefer_best)
    if len(candidates) == 1:
        return candidates[0]
    return try_candidates(candidates, check_checkpoint, f"no usable checkpoint at {path}")


def lacks_variables(directory: str | Path, variables) -> bool:
    """Whether the newest checkpoint in ``directory`` lacks any of ``variables`` (by name): the
    first checkpoint of a new stage has not been written yet, and the last stage's one has no
    optimizer slots for what that stage froze. False when there is no checkpoint."""
    try:
        names = tf.train.load_checkpoint(str(resolve_checkpoint(directory))).get_variable_to_shape_map()
    except (FileNotFoundError, CheckpointError, tf.errors.OpError):
        return False
    return any(v.op.name not in names for v in variables)


def serving_meta_graph(prefix: Path) -> Path:
    """The meta graph a model is restored into to predict: ``inference.meta`` beside the
    checkpoint (the forward pass alone), else the checkpoint's own ``.meta``."""
    lean = Path(prefix).parent / INFERENCE_META
    return lean if lean.exists() else Path(f"{prefix}.meta")


def load_first(path: str | Path, load: Callable[[Path], object], prefer_best: bool = True) -> Path:
    """``load(prefix)`` on the checkpoint ``path`` names (see :func:`checkpoint_candidates`).

    Of several candidates (a run directory, a folder) the first that loads is used, each one
    that fails (damaged files, an unreadable meta graph) named in a warning; a prefix named
    directly (or a lone candidate) raises its own error. Returns the prefix loaded.
    """
    from google.protobuf.message import DecodeError

    candidates = checkpoint_candidates(path, prefer_best)
    run = Path(path).expanduser()
    if prefer_best and (run / "checkpoints").is_dir() and not any(c.parent == run / "best" for c in candidates):
        # a run stopped before its first validation: say so rather than pass the latest off as best
        log.warning("%s has no best checkpoint yet (no validation ran): using its latest, %s", run, candidates[0])
    if not prefer_best and (run / "best").is_dir() and not any(c.parent == run / "checkpoints" for c in candidates):
        # its checkpoints/ removed or emptied: the latest asked for is not there
        log.warning("%s has no latest checkpoint (checkpoints/ is missing or empty): using its best, %s", run,
                    candidates[0])
    errors = (*RESTORE_ERRORS, OSError, DecodeError)
    if len(candidates) == 1:  # its own error is the clearest, with the checkpoint named
        try:
            load(candidates[0])
        except CheckpointError:
            raise
        except errors as err:
            raise CheckpointError(f"checkpoint {candidates[0]} cannot be restored: {one_line(err)}") from None
        return candidates[0]
    return try_candidates(candidates, load, f"no checkpoint at {path} can be restored", errors)


def try_candidates(candidates: Sequence[Path], attempt: Callable[[Path], object], failure: str,
                   errors: tuple[type[BaseException], ...] = (*RESTORE_ERRORS, OSError)) -> Path:
    """The first of ``candidates`` for which ``attempt(prefix)`` does not raise ``errors``.

    Each failure is logged as a warning naming the checkpoint and what comes next; if all
    fail, CheckpointError(``failure``: each checkpoint and its error).
    """
    tried = []
    for i, prefix in enumerate(candidates):
        try:
            attempt(prefix)
            return prefix
        except errors as err:
            tried.append(f"{prefix} ({one_line(err)})")
            then = f"trying {candidates[i + 1]}" if i + 1 < len(candidates) else "no other checkpoint to try"
            log.warning("checkpoint %s cannot be restored (%s); %s", prefix, one_line(err), then)
    raise CheckpointError(f"{failure}: " + "; ".join(tried))


def one_line(err: BaseException) -> str:
    """``<ErrorType>: <first line>``: an error's own words on one line (a TensorFlow
    OpError's message without its graph-execution noise)."""
    text = err.message if isinstance(err, tf.errors.OpError) else str(err)
    noise = ("Graph execution error", "Detected at node", "File ", "Node:", "[[", "(most recent call",
             "Original stack trace", "Errors may have originated", "Restoring from checkpoint failed",
             "From /job:")  # a cluster task's error: its own words are on the next line
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(noise):
            return f"{type(err).__name__}: {line}"
    return type(err).__name__


# ----------------------------------------------------------------------- writing, graph


def _serialized_meta(saver: v1.train.Saver, graph: tf.Graph, **kwargs) -> bytes:
    """What ``saver.export_meta_graph(filename)`` would write, as bytes."""
    with graph.as_default():
        return saver.export_meta_graph(**kwargs).SerializeToString(deterministic=True)


def export_inference_graph(graph: tf.Graph, saver: v1.train.Saver, directories: list[Path]) -> None:
    """Write ``inference.meta`` (the serving graph and its saver) into each checkpoint folder.

    Every checkpoint of a run shares it; :class:`graphcnn.predict.Predictor` prefers it to a
    checkpoint's own ``.meta``, which holds the whole training graph. Its saver restores the
    model's variables by name, so it restores ``best/`` (the model alone) and
    ``checkpoints/`` (everything) alike. Written atomically: a kill leaves the old file.
    """
    data = _serialized_meta(saver, graph, clear_devices=True, strip_default_attrs=True)
    for directory in directories:
        write_bytes_atomic(Path(directory) / INFERENCE_META, data)


TRAINING_STATE_SCOPES = ("train",)  # graphcnn's scope for the learning-rate scale and optimizer accumulators
_OPTIMIZER_ACCUMULATORS = ("beta1_power", "beta2_power")  # Adam's non-slot variables


def training_state_names(variables: Iterable) -> set[str]:
    """Names among ``variables`` that are training state rather than model weights.

    That is: the global step (``global_step`` or the graph's registered global step),
    optimizer slots (a variable whose name extends another candidate's name, such as
    ``conv1/weights/Adam``), Adam's ``beta1_power``/``beta2_power``, and anything under
    :data:`TRAINING_STATE_SCOPES` or their uniquified name scopes (``train``, ``train_1``:
    the learning-rate scale). Fine-tuning starts these afresh, as tf-slim does, so that a
    new run begins at step 0 with a fresh optimizer.
    """
    names = [variable_name(v) for v in variables]
    name_set = set(names)
    global_step = v1.train.get_global_step()
    step_names = {"global_step"} | ({variable_name(global_step)} if global_step is not None else set())
    state = set()
    for name in names:
        parts = name.split("/")
        is_slot = any("/".join(parts[:i]) in name_set for i in range(1, len(parts)))
        top = re.sub(r"_\d+$", "", parts[0]) if len(parts) > 1 else ""
        if name in step_names or is_slot or parts[-1] in _OPTIMIZER_ACCUMULATORS or top in TRAINING_STATE_SCOPES:
            state.add(name)
    return state


def model_variables(variables: Iterable) -> list:
    """The variables a ``best/`` checkpoint keeps: all but the training state.

    Training state is what :func:`training_state_names` says
    (optimizer slots and accumulators, the ``train`` scope); the global step is kept (8
    bytes: the checkpoint says its step) and so is ``input/pixel_mean`` (the training
    graph's evaluation subtracts it). That is the inference graph's variables plus those two.
    """
    variables = list(variables)
    state = training_state_names(variables)
    global_step = v1.train.get_global_step()
    keep = {"global_step"} | ({global_step.op.name} if global_step is not None else set())
    return [v for v in variables if v.op.name not in state or v.op.name in keep]


def _nbytes(variables: Iterable) -> int:
    return sum(int(np.prod(v.shape.as_list(), dtype=np.int64)) * v.dtype.base_dtype.size for v in variables)


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


# A Saver of more than this many bytes of variables writes them as SAVE_SHARDS data files at
# once (one SaveV2 op each, run side by side on the session's inter-op threads, then merged
# under one index). On the 2-core VMs of BENCHMARKS.md a process takes in new memory, the page
# cache of a file it writes included, at about 0.45 GB/s on one thread and 0.75 GB/s on two:
# the 1.23 GB checkpoint of dog_breeds_vgg (103 M weights and their Adam slots) 3.1 -> 2.4 s.
# Smaller checkpoints (every net below the 224 px ones) stay one data file.
SHARD_BYTES = 256 << 20
SAVE_SHARDS = 2


class _SplitSaverBuilder(saver_lib.BulkSaverBuilder):
    """TensorFlow's saver builder, with each device's variables split further into
    ``SAVE_SHARDS`` groups of about equal bytes (largest first). TensorFlow's own groups by
    device only, so a sharded Saver on one CPU would still write one file."""

    def _GroupByDevices(self, saveables):  # noqa: N802 (TensorFlow's name)
        groups = []
        for device, group in super()._GroupByDevices(saveables):
            parts: list[list] = [[] for _ in range(SAVE_SHARDS)]
            sizes = [0] * SAVE_SHARDS
            for saveable in sorted(group, key=_saveable_bytes, reverse=True):
                i = sizes.index(min(sizes))
                parts[i].append(saveable)
                sizes[i] += _saveable_bytes(saveable)
            groups += [(device, part) for part in parts if part]
        return groups


def _saveable_bytes(saveable) -> int:
    return sum((spec.tensor.shape.num_elements() or 0) * spec.tensor.dtype.size for spec in saveable.specs)


def _saver(var_list: Sequence | None, name: str, max_to_keep: int) -> v1.train.Saver:
    """A Saver of ``var_list`` (None: everything saveable, as ``Saver()``), sharded
    (:class:`_SplitSaverBuilder`) above ``SHARD_BYTES`` of variables."""
    sharded = _nbytes(v1.global_variables() if var_list is None else var_list) > SHARD_BYTES
    return v1.train.Saver(var_list=None if var_list is None else list(var_list), max_to_keep=max_to_keep,
                          save_relative_paths=True, name=name, sharded=sharded,
                          builder=_SplitSaverBuilder() if sharded else None)


class CheckpointManager:
    """Owns the two Savers of a run. Create inside the graph, before it is finalized.

    ``best_var_list``: what ``best/`` saves; default :func:`model_variables` of the graph's
    global variables.
    """

    def __init__(self, checkpoint_dir: Path, best_dir: Path, keep: int, best_var_list: Sequence | None = None):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.best_dir = Path(best_dir)
        self.keep = keep
        all_variables = v1.global_variables()
        best_vars = list(best_var_list) if best_var_list is not None else model_variables(all_variables)
        self.saver = _saver(None, "saver", keep)
        # max_to_keep=0: this Saver deletes nothing; save_best removes the previous best only
        # once the new one is complete and recorded
        self.best_saver = _saver(best_vars, "best_saver", 0)
        self._data_bytes = _nbytes(all_variables)  # a .data file's size: tensors are stored unpadded
        self._best_data_bytes = _nbytes(best_vars)
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self._meta: dict[v1.train.Saver, bytes] = {}  # each saver's serialized meta graph
        self._stale: list[Path] = []  # checkpoints skipped on restore: removed once a newer one is saved
        record = read_best_record(self.best_dir)
        if record is not None:
            self.best_metric, self.best_step = record["value"], int(record["step"])
        elif found := checkpoints_on_disk(self.best_dir):  # best.json lost or damaged: the newest
            self.best_step = step_of(found[-1])  # (its value: the trainer's metrics log has it)

    # -- latest -------------------------------------------------------------------------
    def restore_latest(self, sess: v1.Session) -> Path | None:
        """Restore the newest checkpoint that restores; return its prefix (None if there is none).

        A checkpoint that fails to restore (damaged files) is skipped with a warning naming
        it, for the one before it; its files stay (a later save of the same step replaces
        them). Raises CheckpointError if none restores.
        """
        clean_leftovers(self.checkpoint_dir)
        found = checkpoints_on_disk(self.checkpoint_dir)
        if not found:
            return None
        restored = try_candidates(list(reversed(found)), lambda p: self.saver.restore(sess, str(p)),
                                  f"no checkpoint in {self.checkpoint_dir} can be restored", RESTORE_ERRORS)
        # tell the Saver what is on disk so max_to_keep deletes old ones after the restart;
        # not the damaged ones after the restored one, so retention never deletes a good
        # checkpoint to keep them: those, and the incomplete ones (a file lost), go once a
        # newer checkpoint is saved, instead of staying forever
        self.saver.recover_last_checkpoints([str(p) for p in found[: found.index(restored) + 1]])
        incomplete = [p for p in indexed_checkpoints(self.checkpoint_dir) if p not in found]
        for p in incomplete:
            log.warning("checkpoint %s is incomplete (%s): skipped", p, ", ".join(
                f"no {what}" for what, there in ((".meta", p.with_name(p.name + ".meta").exists()),
                                                 (".data", bool(_data_shards(p)))) if not there))
        self._stale = [*incomplete, *found[found.index(restored) + 1:]]
        return restored

    def adopt_on_disk(self) -> None:
        """Count the checkpoints already on disk (a new stage's: the last stage's) towards
        ``keep``, as :meth:`restore_latest` does for the one it restores: the Saver deletes the
        oldest of them as new ones come, instead of leaving them forever."""
        self.saver.recover_last_checkpoints([str(p) for p in checkpoints_on_disk(self.checkpoint_dir)])

    def save(self, sess: v1.Session, step: int) -> str:
        prefix = self._save(self.saver, sess, self.checkpoint_dir, step)
        for stale in [p for p in self._stale if step_of(p) <= step]:  # a newer checkpoint replaces them
            if step_of(stale) < step:  # (one of this step was just written over)
                for f in checkpoint_files(stale):
                    f.unlink(missing_ok=True)
            self._stale.remove(stale)
        return prefix

    def _save(self, saver: v1.train.Saver, sess: v1.Session, directory: Path, step: int) -> str:
        """``saver.save`` with its meta graph.

        The ``.meta`` is written first (atomically): the Saver writes the ``checkpoint`` state
        file last, so it never names a checkpoint without its meta graph. The graph is
        finalized, so that file is serialized once and its bytes written for every later
        checkpoint (exporting cost ~50 ms a save).
        """
        if saver not in self._meta:
            self._meta[saver] = _serialized_meta(saver, sess.graph)
        write_bytes_atomic(directory / f"{PREFIX}-{step}.meta", self._meta[saver])
        return saver.save(sess, str(directory / PREFIX), global_step=step, write_meta_graph=False)

    # -- best ---------------------------------------------------------------------------
    def save_best(self, sess: v1.Session, step: int, monitor: str, value: float) -> None:
        """Make the current weights ``best/`` (the caller decided they are the best).

        In an order a kill cannot break: the new checkpoint is saved complete, then
        ``best.json`` is replaced, then older best checkpoints are deleted. Until the record
        is replaced it names the previous best, still on disk.
        """
        clean_leftovers(self.best_dir)
        prefix = Path(self._save(self.best_saver, sess, self.best_dir, step))
        write_text_atomic(self.best_dir / BEST_RECORD,
                          json.dumps({"step": step, "monitor": monitor, "value": value}) + "\n")
        self.best_metric, self.best_step = value, step
        self._delete_older_best(prefix)

    def _delete_older_best(self, keep: Path) -> None:
        for f in self.best_dir.iterdir():
            m = _FILE_STEP.match(f.name)
            if m and int(m.group(1)) != step_of(keep):
                f.unlink()

    def restore_best(self, sess: v1.Session) -> Path | None:
        """Restore ``best/`` (the model's variables; the rest of the graph keeps its values).

        A best checkpoint that fails to restore is skipped with a warning; if none restores,
        the latest checkpoint is restored instead (warned about). Returns the prefix
        restored, None if there is no best checkpoint.
        """
        found = best_candidates(self.best_dir)
        if not found:
            return None
        try:
            return try_candidates(found, lambda p: self.best_saver.restore(sess, str(p)),
                                  f"no checkpoint in {self.best_dir} can be restored", RESTORE_ERRORS)
        except CheckpointError as err:
            log.warning("%s; using the latest checkpoint instead", err)
            return self.restore_latest(sess)

    # -- disk use -----------------------------------------------------------------------
    def describe_disk_use(self) -> str:
        """One line for the log: a checkpoint's size, a best checkpoint's, and what the kept
        ones will take, e.g. ``checkpoint 1.2 MB (best 0.4 MB); keeping 5 latest + best: ~6.4 MB``.

        Sizes are those on disk where a checkpoint has been written, else estimated from the
        variables (a ``.data`` file holds exactly their bytes) and the other's meta graph.
        """
        latest = checkpoints_on_disk(self.checkpoint_dir)
        best = best_candidates(self.best_dir)
        latest_size = checkpoint_bytes(latest[-1]) if latest else None
        best_size = checkpoint_bytes(best[0]) if best else None
        if latest_size is None and best_size is None:
            return (f"checkpoint ~{_megabytes(self._data_bytes)} of variables (best "
                    f"~{_megabytes(self._best_data_bytes)}), before any save")
        if latest_size is None:
            latest_size = best_size - self._best_data_bytes + self._data_bytes
        if best_size is None:
            best_size = latest_size - self._data_bytes + self._best_data_bytes
        if self.keep and self.keep > 0:
            total = self.keep * latest_size + best_size
            kept = f"keeping {self.keep} latest + best: ~{_megabytes(total)}"
        else:
            kept = f"keeping every checkpoint: {_megabytes(latest_size)} each"
        return f"checkpoint {_megabytes(latest_size)} (best {_megabytes(best_size)}); {kept}"
