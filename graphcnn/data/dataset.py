"""What a data load returns, and the rules every source shares.

:class:`Split` and :class:`Dataset` are what :func:`graphcnn.data.sources.load_dataset`
returns; :class:`DataError` is how any source refuses its input (one error listing every
problem found); :class:`Findings` is what a source is told and the warnings it collects;
:func:`stratified_split` splits a labelled pool the same way for every source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from graphcnn.data import scan

# A split of n images measures an accuracy p with a 95% interval of half-width 1.96*sqrt(p(1-p)/n),
# at most 1.96*sqrt(0.25/n) (p = 0.5): within 5 points from n >= 385. Smaller validation and
# test splits are warned about.
MIN_EVALUATION_IMAGES = 385


def accuracy_margin(n: int) -> float:
    """The largest 95% interval half-width, in accuracy points, of an accuracy measured on ``n`` images."""
    return 100 * 1.96 * math.sqrt(0.25 / n) if n > 0 else 100.0


class DataError(ValueError):
    """The data cannot be used as configured. The message names the file, folder or key.

    A folder with several problems raises one DataError for all of them: ``errors`` (each
    would stop training on its own) and ``warnings`` (what else the load found) are then
    also kept as lists, ``summary`` is the message's first line, and ``scan`` (a
    :class:`~graphcnn.data.scan.ScanResult`, when the scan ran) and ``class_counts``
    (class folder -> readable image files) describe what was found.
    """

    def __init__(self, message: str, errors: Sequence[str] = (), warnings: Sequence[str] = (),
                 summary: str = "", scan: "scan.ScanResult | None" = None,
                 class_counts: Mapping[str, int] | None = None):
        super().__init__(message)
        self.errors = tuple(errors) or (message,)
        self.warnings = tuple(warnings)
        self.summary = summary or (message.splitlines() or [""])[0]
        self.scan = scan
        self.class_counts = dict(class_counts or {})


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split: labels plus decoded images, image files, or both.

    labels: int64 ``[N]``, values in ``[0, num_classes)``.
    images: uint8 ``[N, H, W, C]``, C = 1 or 3: arrays at their native size, or image files
    decoded by the scan at the model's size; or None.
    paths: N image file paths; or None. Without ``images`` they are decoded later by the
    tf.data pipeline; with them they name the files the images were decoded from.
    At least one of ``images`` / ``paths`` is set; wherever both are, ``images`` is what is read.
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels, dtype=np.int64)
        object.__setattr__(self, "labels", labels)
        if self.images is None and self.paths is None:
            raise ValueError("Split: images or paths must be set")
        if self.paths is not None:
            object.__setattr__(self, "paths", tuple(self.paths))
        if self.images is not None:
            if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
                raise ValueError(
                    f"Split.images must be uint8 [N, H, W, 1|3], got {self.images.dtype} {self.images.shape}"
                )
        counts = {len(x) for x in (self.images, self.paths) if x is not None}
        if labels.ndim != 1 or counts != {len(labels)}:
            raise ValueError(f"Split: {len(labels)} labels for {max(counts)} images")

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A loaded, split dataset.

    name: human description, e.g. ``"digits (embedded, 5000 images)"`` or ``"folder /data/ct"``.
    class_names: one name per class; labels index into it.
    warnings: every warning emitted while loading; each names the affected files.
    source: the source that read it (``folder``, ``npz``, ...), set by :func:`~graphcnn.data.sources.load_dataset`.
    own_test_split: the test split is the source's own test set (``test_set/``, ``t10k-*``,
    ``x_test``), not split off by ``data.test_fraction``.
    scan: file sources: what the scan found (every file's native size and mode, the bad files).
    """

    name: str
    class_names: tuple[str, ...]
    train: Split
    validation: Split
    test: Split
    warnings: tuple[str, ...] = ()
    source: str = ""
    scan: scan.ScanResult | None = dataclasses.field(default=None, compare=False, repr=False)
    own_test_split: bool = False  # the test split is the source's own test set, not data.test_fraction's

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_record(self) -> dict:
        """What identifies the splits, as JSON: per split its size and a digest of its labels
        and files (an array split's: of its images), and a file split's paths. A resumed run
        compares its data's with its first start's (:func:`split_changes`)."""
        record = {}
        for name in SPLITS:
            split = getattr(self, name)
            digest = hashlib.blake2b(split.labels.tobytes(), digest_size=16)
            if split.paths is not None:
                digest.update("\0".join(split.paths).encode("utf-8", "surrogateescape"))
            else:
                digest.update(np.ascontiguousarray(split.images).data)
            record[name] = {"count": len(split), "digest": digest.hexdigest(),
                            **({"paths": list(split.paths)} if split.paths is not None else {})}
        return record


SPLITS = ("train", "validation", "test")


def split_changes(recorded: Mapping, current: Mapping) -> str | None:
    """How ``current``'s splits differ from ``recorded``'s (both :meth:`Dataset.split_record`),
    in a few words naming files; None if they are the same."""
    if all(recorded.get(n, {}).get("digest") == current[n]["digest"] for n in SPLITS):
        return None
    if all("paths" in r for r in (*(recorded.get(n, {}) for n in SPLITS), *current.values())):
        where = {p: n for n in SPLITS for p in recorded[n]["paths"]}
        now = {p: n for n in SPLITS for p in current[n]["paths"]}
        parts = []
        for what, files in (("added", [p for p in now if p not in where]),
                            ("removed or unreadable", [p for p in where if p not in now]),
                            ("moved to another split", [p for p in now if p in where and now[p] != where[p]])):
            if files:
                shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
                parts.append(f"{len(files)} file{'s' if len(files) != 1 else ''} {what} ({shown})")
        if parts:
            return "; ".join(parts)
    sizes = ", ".join(f"{n} {recorded.get(n, {}).get('count', '?')} -> {current[n]['count']}" for n in SPLITS)
    return f"its images or labels differ (images per split: {sizes})"


class Findings(list):
    """What a loader is told, and the warnings it collects (logged by :func:`~graphcnn.data.sources.load_dataset`
    once the load is over: a failed load reports them in its DataError instead).

    ``model_classes``: when a trained model's data is loaded (``graphcnn evaluate``), its
    class names; a source checks its own class names against them before decoding anything,
    and a single class is allowed. ``None`` for training.
    """

    def __init__(self, model_classes: Sequence[str] | None = None):
        super().__init__()
        self.model_classes = tuple(model_classes) if model_classes is not None else None
        self.own_test_split = False  # set by a loader whose source has its own test set (not data.test_fraction)

    warn = list.append

    @property
    def purpose(self) -> str:
        """What the data is loaded for, as an error says what it stops."""
        return "training" if self.model_classes is None else "the evaluation"


def collected(path: str, errors: list[str], warnings: list[str], purpose: str = "training",
              **details) -> DataError:
    """One DataError for every problem found: ``errors`` stop ``purpose`` (training, or the
    evaluation of a trained model), ``warnings`` are the rest."""
    if len(errors) == 1 and not warnings:
        return DataError(errors[0], errors, warnings, **details)
    where = path or "the data"
    what = f"{len(errors)} problem{'s' if len(errors) > 1 else ''} stop{'' if len(errors) > 1 else 's'} {purpose}"
    summary = f"{where}: {what}" + (f", {len(warnings)} warning{'s' if len(warnings) > 1 else ''}" if warnings else "")
    hint = f" (`graphcnn data {path}` writes this report to a file)" if path else ""
    lines = [summary + hint + ":"]
    for prefix, items in (("  ", errors), ("  warning: ", warnings)):
        for item in items:
            lines += message_lines(item, prefix)
    return DataError("\n".join(lines), errors, warnings, summary=summary, **details)


def message_lines(message: str, prefix: str) -> list[str]:
    """A multi-line error or warning as lines of a report: the first after ``prefix``, the
    others indented under it (a listing's own two-space indent kept)."""
    first, *rest = message.splitlines()
    return [prefix + first] + [f"  {line}" if line.startswith("  ") else f"    {line}" for line in rest]


def stratified_split(
    labels: np.ndarray, num_classes: int, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split indices of ``labels`` into (train, validation, test), each sorted, int64.

    Per class, a seeded shuffle; the split sizes are ``round(N * fraction)`` overall, spread
    over the classes in proportion (largest remainder). Every class keeps at least one
    training example; a non-zero fraction gives a non-empty split. Same inputs, same result.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must be in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    if validation_fraction + test_fraction >= 1:
        raise DataError(
            f"data.validation_fraction + data.test_fraction = {validation_fraction + test_fraction:g} "
            "leaves nothing to train on; it must be < 1"
        )
    counts = np.bincount(labels, minlength=num_classes)
    missing = [c for c in range(num_classes) if counts[c] == 0]
    if missing:
        raise DataError(f"classes {missing} have no training examples")
    n_test = _allocate(counts, test_fraction, counts - 1)
    n_val = _allocate(counts, validation_fraction, counts - 1 - n_test)
    for name, fraction, taken in (("validation", validation_fraction, n_val), ("test", test_fraction, n_test)):
        if fraction > 0 and taken.sum() == 0:
            raise DataError(
                f"data.{name}_fraction={fraction}: {len(labels)} examples are too few to split off a "
                f"{name} set and keep one training example per class"
            )
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        parts[2].append(members[: n_test[c]])
        parts[1].append(members[n_test[c]: n_test[c] + n_val[c]])
        parts[0].append(members[n_test[c] + n_val[c]:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)  # type: ignore[return-value]


def _allocate(counts: np.ndarray, fraction: float, capacity: np.ndarray) -> np.ndarray:
    """How many examples of each class go to a split of ``fraction``, at most ``capacity``."""
    if fraction <= 0:
        return np.zeros_like(counts)
    exact = counts * fraction
    take = np.minimum(np.floor(exact).astype(counts.dtype), capacity)
    target = min(max(1, int(round(counts.sum() * fraction))), int(capacity.sum()))
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    while take.sum() < target:
        progressed = False
        for c in order:
            if take.sum() < target and take[c] < capacity[c]:
                take[c] += 1
                progressed = True
        if not progressed:
            break
    return take


def check_model_classes(class_names: Sequence[str], warnings: Findings, where: str) -> None:
    """When loading for a trained model: every class of the data must be one of its classes."""
    known = warnings.model_classes
    if known is None:
        return
    unknown = [n for n in class_names if n not in known]
    if unknown:
        missing = [n for n in known if n not in class_names]
        raise DataError(
            f"{where}: class{'es' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"{'are' if len(unknown) > 1 else 'is'} not among the model's classes ({', '.join(known)})"
            + (f"; the model's classes not in this data: {', '.join(missing)}" if missing else "")
        )

