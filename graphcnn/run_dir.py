"""The run directory: the one place that knows where everything of a run lives.

A run directory is created once (an existing one is never silently reused or deleted) and
reopened by ``--resume``, ``predict``, ``evaluate``, ``report`` and ``filters``. Its layout,
documented here and nowhere else in the code::

    logs/<run>/
      config.json         the resolved config that trained this run (what --resume reads); in a
                          run of several stages (--next-stage), the current stage's
      config.stage<k>.json  the config of each earlier stage k (1, 2, ...), kept when the next began
      stages.json         the step each later stage began from ({"2": 250}): its learning-rate
                          schedule counts from there
      train/              TensorBoard run of training: events (graph, scalars, histograms, images,
                          traces; the custom-scalars layout in a first *.graphcnn-setup file) and
                          the projector (projector_config.pbtxt, projector_features.tsv,
                          projector_metadata.tsv, projector_sprite.png)
      validation/         TensorBoard run of validation (same scalar tags: the curves overlay; the
                          HParams record in a first *.graphcnn-setup file)
      checkpoints/        latest K checkpoints (model.ckpt-<step>.*), preprocessing.json,
                          pixel_mean.npy, inference.meta (see graphcnn.checkpoints)
      best/               the best checkpoint by the validation metric (the model's variables
                          only), best.json, and the same preprocessing.json and inference.meta
      metrics.jsonl       one JSON object per evaluation (and the final test result)
      train_state.json    early-stopping and plateau state after each recent validation, by step
      results.json        final test metrics
      data_report.txt     the data as training read it (what `graphcnn data` writes): classes,
                          sizes, every bad or converted file by name
      data_split.json     the splits the run started with (each split's size, a digest, its
                          files): a resume refuses data that would split otherwise
      examples/           a few test images to try `graphcnn predict` on
      probe.npz           the fixed probe batch of the feature-map view
      filters/            written by `graphcnn filters`: frames, APNG, GIF per conv layer
      report/             written by `graphcnn report`: PNG figures
      .lock               while a trainer runs: its pid and host (see RunDir.lock)

State files are written so that a kill at any moment leaves them whole (graphcnn.atomic):
config.json, train_state.json and results.json are replaced atomically (write_config,
write_state, write_results); metrics.jsonl gets one fsynced write per line, and
read_metrics skips a line torn by a kill.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from graphcnn.atomic import append_line, write_text_atomic

log = logging.getLogger("graphcnn.run")
LOCK_FILE = ".lock"
_LOCK_WRITE_GRACE_S = 10.0  # a lock file younger than this with no content is being written, not stale
# the lock files this process holds: a lock naming this process's pid but not among them was
# left by an earlier process that had the same pid (a container restarted: pids start again)
_HELD: set[str] = set()


class RunDirError(ValueError):
    """A run directory is missing, incomplete, in use, or would be overwritten."""


def check_run_name(name: str) -> str:
    """``name`` stripped, if it is one plain path component; else RunDirError naming it.

    A run name becomes a folder under the logs root: ``..``, a path separator or an
    absolute path would put the run (and what a failed start removes) somewhere else.
    """
    stripped = name.strip()
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if (not stripped or stripped in (".", "..") or any(s in stripped for s in separators) or "\0" in stripped
            or Path(stripped).is_absolute()):
        raise RunDirError(f"--name {name!r}: a run name must be one folder name (no '/', '\\', '..' "
                          "or absolute path, not empty)")
    return stripped


def check_new_run(logs_root: str | Path, name: str) -> None:
    """RunDirError if ``name`` is not a plain folder name (:func:`check_run_name`) or a run (or
    anything) already has that name under ``logs_root``: checked before the data is loaded, so
    that a taken name fails at once rather than after a scan of the whole folder (:meth:`RunDir.create`
    checks again when it makes the folder)."""
    root = Path(logs_root) / check_run_name(name)
    if root.exists() or root.is_symlink():
        raise RunDirError(_taken(root))


def _taken(root: Path) -> str:
    return f"run directory {root} already exists; use --resume {root} to continue it, or choose another --name"


def _entry(name: str) -> property:
    """A read-only property: ``root / name``."""
    return property(lambda self: self.root / name)


@dataclass(frozen=True)
class RunDir:
    root: Path
    # what this process did with the run so far (mark_trained): not part of its identity
    _state: dict = field(default_factory=dict, compare=False, repr=False)

    config = _entry("config.json")
    train_logs = _entry("train")
    validation_logs = _entry("validation")
    checkpoints = _entry("checkpoints")
    best = _entry("best")
    metrics = _entry("metrics.jsonl")
    data_report = _entry("data_report.txt")
    data_split = _entry("data_split.json")
    results = _entry("results.json")
    train_state = _entry("train_state.json")
    stages = _entry("stages.json")
    examples = _entry("examples")
    probe = _entry("probe.npz")
    # the projector's files: in the train/ run's own folder, where TensorBoard reads a run's
    # projector_config.pbtxt (a folder of their own would be a run of its own)
    projector = train_logs
    filters = _entry("filters")
    report = _entry("report")
    lock_file = _entry(LOCK_FILE)

    # -- create, open ---------------------------------------------------------------------
    @classmethod
    def create(cls, logs_root: str | Path, name: str = "", prefix: str = "run") -> "RunDir":
        """Make a new run directory ``logs_root/name`` (default ``<prefix>-<timestamp>``).

        Raises RunDirError if it exists (resume it with ``--resume`` or pick another name),
        or if ``name`` is not one plain folder name (see :func:`check_run_name`).
        """
        chosen = bool(name)
        if chosen:
            names = [check_run_name(name)]
        else:  # two runs started in the same second (a sweep, a script) each get their own
            stamp = f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
            names = [stamp] + [f"{stamp}-{i}" for i in range(2, 100)]
        Path(logs_root).mkdir(parents=True, exist_ok=True)
        for name in names:
            root = Path(logs_root) / name
            try:
                if root.is_symlink():
                    raise FileExistsError(root)
                root.mkdir()  # not exist_ok: of two trainers racing for one name, one gets the error
                break
            except FileExistsError:
                if chosen or name == names[-1]:
                    raise RunDirError(_taken(root)) from None
        run = cls(root)
        for d in (run.train_logs, run.validation_logs, run.checkpoints, run.best):
            d.mkdir()
        return run

    @classmethod
    @contextmanager
    def starting(cls, logs_root: str | Path, name: str = "", prefix: str = "run") -> Iterator["RunDir"]:
        """:meth:`create`, and remove that directory again if the block raises before the run
        has a checkpoint: a failed start (a bad config value found while building the graph, an
        interrupt during startup) leaves nothing behind to clutter ``logs/`` or block the name.

        Only the directory this call created is removed (with the folders above it that it
        created for ``logs_root``, while they are empty), never one that existed before (create
        refuses those), never a run with a checkpoint in ``checkpoints/`` or ``best/`` (a run
        stopped by NaN keeps its last good checkpoint, and can be resumed), and never one that
        has trained a step (:meth:`mark_trained`: its logs show what happened).
        """
        made = [p for p in (Path(logs_root), *Path(logs_root).parents) if not p.exists()]  # --logdir new/deep
        run = cls.create(logs_root, name, prefix)
        try:
            yield run
        except BaseException:
            if not run.has_checkpoint() and not run.trained:
                log.debug("removing %s: the run failed before it trained a step", run.root)
                shutil.rmtree(run.root, ignore_errors=True)
                for folder in made:  # deepest first; one that something else wrote into meanwhile stays
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            raise

    def mark_trained(self) -> None:
        """Training has taken a step in this run: the start succeeded, so a later failure (a NaN
        loss before the first checkpoint, say) keeps the run and its TensorBoard logs."""
        self._state["trained"] = True

    @property
    def trained(self) -> bool:
        return bool(self._state.get("trained"))

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (one with a config.json)."""
        run = cls(Path(path))
        if not run.config.is_file():
            raise RunDirError(f"{run.root} is not a graphcnn run directory (no config.json)")
        return run

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint (even an incomplete one) was ever written in this run."""
        return any(any(d.glob("model.ckpt-*.index")) for d in (self.checkpoints, self.best) if d.is_dir())

    # -- the lock -------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``<run>/.lock`` (pid, host, start time) while the block runs: two trainers
        writing one run would interleave checkpoints, metrics and events.

        The file is created with ``O_CREAT | O_EXCL`` (atomic: of two racing trainers one
        wins). If it exists, its holder is checked: a live process on this host, or any
        process on another host (whose liveness cannot be checked from here), makes this a
        RunDirError naming the holder; a lock left by a process that is gone (pid not running
        on this host) is taken over with a warning. The lock is removed when the block ends,
        if it is still this process's.
        """
        path = self.lock_file
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        for _attempt in range(3):
            try:
                fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_stale_lock(path)
                continue
            try:
                os.write(fd, (json.dumps(me) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            break
        else:
            raise RunDirError(f"{self.root} is being locked by another process at the same moment; try again")
        _HELD.add(os.path.realpath(path))
        try:
            yield
        finally:
            _HELD.discard(os.path.realpath(path))
            holder = _read_lock(path)
            if holder is not None and holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                path.unlink(missing_ok=True)  # missing: a failed start removed the whole run meanwhile

    def _take_over_stale_lock(self, path: Path) -> None:
        """Remove ``path`` if its holder is gone; otherwise raise RunDirError naming the holder."""
        holder = _read_lock(path)
        if holder is None:
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                return  # released meanwhile: try again
            if age < _LOCK_WRITE_GRACE_S:  # just created; its holder is writing its pid
                raise RunDirError(f"{self.root} is in use: another trainer is starting on it ({path})")
            log.warning("taking over %s: it names no process (unreadable lock file left by a crash)", path)
        else:
            pid, host, since = holder.get("pid"), holder.get("host"), holder.get("started", "?")
            if host != socket.gethostname():
                raise RunDirError(f"{self.root} is in use by pid {pid} on host {host} (since {since}); if that "
                                  f"training has ended, delete {path}")
            if (pid != os.getpid() or os.path.realpath(path) in _HELD) and _pid_alive(pid):
                raise RunDirError(f"{self.root} is in use by pid {pid} on this host ({host}, since {since}); "
                                  f"stop that training first, or if pid {pid} is not graphcnn, delete {path}")
            gone = ("was an earlier process's (this process has its pid)" if pid == os.getpid()
                    else "is not running any more")
            log.warning("taking over %s: pid %s on %s (since %s) %s", path, pid, host, since, gone)
        # Remove only the lock just inspected: if another process replaced it meanwhile, the
        # next O_EXCL attempt sees the new one (this narrows, not closes, the window of a race
        # between two processes taking over the same stale lock).
        if _read_lock(path) == holder:
            path.unlink(missing_ok=True)

    # -- state files ----------------------------------------------------------------------
    def write_config(self, config: Any) -> None:
        """``config.json`` (atomically): the resolved config, as ``Config.save`` writes it."""
        write_text_atomic(self.config, json.dumps(config.to_dict(), indent=2) + "\n")

    def stage_config(self, stage: int) -> Path:
        """``config.stage<k>.json``: the config of earlier stage ``k``."""
        return self.root / f"config.stage{stage}.json"

    @property
    def stage(self) -> int:
        """The current stage: 1 + the number of earlier stages kept."""
        stage = 1
        while self.stage_config(stage).exists():
            stage += 1
        return stage

    def stage_trainable_scopes(self) -> list[tuple[str, ...]]:
        """``train.trainable_scopes`` of each stage on disk: the earlier stages' and config.json's
        (() for all variables); a config that cannot be read counts as all."""
        scopes = []
        for path in [*(self.stage_config(k) for k in range(1, self.stage)), self.config]:
            try:
                scopes.append(tuple(json.loads(path.read_text())["train"].get("trainable_scopes", ())))
            except (OSError, ValueError, KeyError, TypeError):
                scopes.append(())
        return scopes

    def start_stage(self, config: Any, from_step: int = 0) -> int:
        """Begin the next stage with ``config`` at global step ``from_step``: record the step in
        ``stages.json``, keep ``config.json`` as ``config.stage<k>.json``, then write the new one
        (each step atomic: a kill leaves either stage's config in force). Returns the new
        stage's number."""
        stage = self.stage
        if stage > 1 and self.stage_config(stage - 1).read_text() == self.config.read_text():
            stage -= 1  # a kill came between the two writes last time: that stage is kept already
        write_text_atomic(self.stages, _json({**self._stage_starts(), str(stage + 1): int(from_step)}) + "\n")
        write_text_atomic(self.stage_config(stage), self.config.read_text())
        self.write_config(config)
        return stage + 1

    def stage_start(self) -> int:
        """The global step the current stage began from (``stages.json``); 0 for the first
        stage, and for a stage begun before graphcnn recorded it (its schedule counted from 0)."""
        return int(self._stage_starts().get(str(self.stage), 0))

    def _stage_starts(self) -> dict[str, int]:
        try:
            starts = json.loads(self.stages.read_text())
        except (OSError, ValueError):
            return {}
        return starts if isinstance(starts, dict) else {}

    def write_state(self, state: dict[str, Any]) -> None:
        """``train_state.json`` (atomically): what ``--resume`` needs beyond the checkpoint."""
        write_text_atomic(self.train_state, _json(state) + "\n")

    def read_state(self) -> dict[str, Any] | None:
        """``train_state.json``, or None if there is none or it cannot be read (with a warning)."""
        if not self.train_state.exists():
            return None
        try:
            return json.loads(self.train_state.read_text())
        except (OSError, ValueError) as err:
            log.warning("ignoring %s: cannot read it (%s)", self.train_state, err)
            return None

    def write_results(self, results: dict[str, Any]) -> None:
        """``results.json`` (atomically): the final metrics."""
        write_text_atomic(self.results, _json(results, indent=2) + "\n")

    def read_results(self) -> dict[str, Any] | None:
        """``results.json``, or None if there is none or it is not a JSON object."""
        try:
            results = json.loads(self.results.read_text())
        except (OSError, ValueError):
            return None
        return results if isinstance(results, dict) else None

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One line of ``metrics.jsonl``: a single write, fsynced."""
        append_line(self.metrics, _json(record))

    def drop_metrics_after(self, step: int) -> int:
        """Rewrite ``metrics.jsonl`` (atomically) without the records past ``step`` and without
        final test records: a run resumed at ``step`` writes them again. Returns how many went."""
        records = self.read_metrics()
        kept = [r for r in records if r.get("split") != "test" and r.get("step", 0) <= step]
        if len(kept) != len(records):
            write_text_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))
        return len(records) - len(kept)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl``, in order.

        A line torn by a kill is skipped with a warning. When a (split, step) appears twice
        (a run resumed from a checkpoint older than its last evaluations repeats them), the
        later record wins, at the later position.
        """
        if not self.metrics.exists():
            return []
        records: dict[Any, dict[str, Any]] = {}
        for number, raw in enumerate(self.metrics.read_bytes().split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8", errors="replace"))
            except ValueError:
                log.warning("%s line %d is incomplete (written when the run was killed): skipped", self.metrics, number)
                continue
            if isinstance(record, dict) and "step" in record:
                key: Any = (record.get("split"), record["step"])
                records.pop(key, None)
            else:
                key = ("line", number)
            records[key] = record
        return list(records.values())


def _json(value: Any, indent: int | None = None) -> str:
    """Strict JSON: a float that is not finite (a NaN loss, the throughput of a run too short to
    measure) is written as null, not as Python's ``NaN``, which JSON parsers refuse."""
    def finite(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(value), indent=indent, allow_nan=False)


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` exists on this host (True when that cannot be told)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True  # the caller tells this process's own lock from a dead namesake's
    if os.name == "nt":  # os.kill would terminate it; assume alive, the message says how to clear it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by another user
        pass
    return True
