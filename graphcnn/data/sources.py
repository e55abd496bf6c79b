"""Data sources: load a labelled image set and split it into train / validation / test.

Sources (``DataConfig.source``, the keys of :data:`SOURCES`; ``auto`` infers one from
``DataConfig.path``):

* ``digits``: the embedded ``digits.png`` (5,000 MNIST digits, 20x20, 500 per class).
* ``folder``: one subfolder per class; one tree split by fractions, a tree with
  ``training_set/`` and ``test_set/`` subtrees, or ``DataConfig.test_path`` for a test tree.
  Every image file is decoded once by :func:`graphcnn.data.scan.scan_images`; given the
  model's input size (``load_dataset(..., size=)``, as training does) and room in memory
  (``data.cache``), that decode is kept, at the model's size, for training and evaluation.
* ``idx``: MNIST-format IDX files (``train-*``, ``t10k-*``/``test-*``; raw or ``.gz``).
* ``npz``: ``x_train, y_train[, x_test, y_test]`` (Keras' mnist.npz) or ``images, labels`` /
  ``X, y``; optional ``class_names``.
* ``pickle``: the ``X.pickle`` / ``y.pickle`` pair. Unpickling runs code from the file, so
  it is opt-in: ``data.source = "pickle"`` *and* ``data.trust_pickle = true``; ``auto``
  never unpickles (a folder of pickles is an error that says so).

Nothing is dropped silently: bad input is a :class:`DataError`, or (bad image files without
``strict``) a warning that names every affected file. Every warning is logged on the
``graphcnn.data`` logger (once the load has finished) and kept in :attr:`Dataset.warnings`.
The folder source finds every problem in one pass: the folder walk and the scan of every
file run to the end, and one :class:`DataError` lists all the problems that stop training
together with the warnings (:attr:`DataError.errors`, :attr:`DataError.warnings`).

Validation and test splits too small to measure accuracy to within +-5 points are warned
about (:data:`MIN_EVALUATION_IMAGES`).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import logging
import math
import os
import pickle
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from graphcnn.config import DataConfig
from graphcnn.data import scan
from graphcnn.registry import UnknownChoiceError, lookup

log = logging.getLogger("graphcnn.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DIGITS_PNG = Path(__file__).with_name("digits.png")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
# A split of n images measures an accuracy p with a 95% interval of half-width 1.96*sqrt(p(1-p)/n),
# at most 1.96*sqrt(0.25/n) (p = 0.5): within 5 points from n >= 385. Smaller validation and
# test splits are warned about.
MIN_EVALUATION_IMAGES = 385
# data.cache = auto keeps a folder's decoded images (uint8, the model's size, every split) when
# they take at most this much; training also copies the training split into the graph once
KEEP_DECODED_BYTES = 1 << 30


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
    source: the source that read it (``folder``, ``npz``, ...), set by :func:`load_dataset`.
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


class _Warnings(list):
    """What a loader is told, and the warnings it collects (logged by :func:`load_dataset`
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


# ---------------------------------------------------------------------------
# entry point


def load_dataset(cfg: DataConfig, channels: int, *, model_classes: Sequence[str] | None = None,
                 log_warnings: bool = True, size: tuple[int, int] | None = None) -> Dataset:
    """Load and split the data described by ``cfg``.

    ``channels`` (1 or 3) is what the model wants; images are not converted here, but
    conversions the pipeline will make (RGB <-> grayscale, alpha dropped, ...) are reported.
    Raises :class:`DataError` for anything that makes the data unusable.

    ``model_classes`` (evaluating a trained model): its class names. Every class of the data
    must be one of them (checked before any image is decoded), a single class is fine, and
    small splits are not warned about (the evaluation states its own margin).
    ``log_warnings=False``: the warnings are only kept in :attr:`Dataset.warnings` (a
    report that prints them itself).
    ``size`` (the model's input height and width; training): image files that fit in memory
    (``data.cache``: ``memory``, or ``auto`` and at most :data:`KEEP_DECODED_BYTES`) come back
    as arrays decoded by the scan at that size, beside their paths, so that no file is decoded
    twice (the training pipeline then runs as for in-memory arrays).
    """
    source = cfg.source if cfg.source != "auto" else detect_source(cfg.path)
    try:
        load = lookup(SOURCES, source, "source", also=("auto",))
    except UnknownChoiceError as err:
        raise DataError(f"data.source: {err}") from None  # bad input here is always a DataError
    if cfg.test_path and source != "folder":
        raise DataError(f"data.test_path is only used by the folder source (data.source resolved to '{source}')")
    if source != "digits" and not cfg.path:
        raise DataError(f"data.path: the {source} source needs a path")
    warnings = _Warnings(model_classes)
    try:
        dataset = load(cfg, channels, warnings, **({"size": size} if source == "folder" and size else {}))
    except DataError as err:
        if warnings and not err.warnings:  # what was found before the error belongs to the report
            raise _collected(cfg.path, list(err.errors), list(warnings)) from None
        raise
    if model_classes is None:
        _warn_small_splits(dataset, cfg, warnings)
    if log_warnings:
        for message in warnings:
            log.warning(message)
    return dataclasses.replace(dataset, warnings=tuple(warnings), source=source, own_test_split=warnings.own_test_split)


def _collected(path: str, errors: list[str], warnings: list[str], **details) -> DataError:
    """One DataError for every problem found: ``errors`` stop training, ``warnings`` are the rest."""
    if len(errors) == 1 and not warnings:
        return DataError(errors[0], errors, warnings, **details)
    where = path or "the data"
    what = f"{len(errors)} problem{'s' if len(errors) > 1 else ''} stop{'' if len(errors) > 1 else 's'} training"
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


def _warn_small_splits(ds: Dataset, cfg: DataConfig, warnings: _Warnings) -> None:
    """One warning naming the validation / test splits under MIN_EVALUATION_IMAGES images."""
    small = [(name, len(split)) for name, split in (("validation", ds.validation), ("test", ds.test))
             if 0 < len(split) < MIN_EVALUATION_IMAGES]
    if not small:
        return
    sizes = ", ".join(f"{name} {n} image{'s' if n != 1 else ''}" for name, n in small)
    margins = list(dict.fromkeys(f"+/-{accuracy_margin(n):.0f}" for _, n in small))  # validation's, test's
    changes = [f"--set data.{name}_fraction=... (now {getattr(cfg, f'{name}_fraction'):g})"
               for name, _ in small if name == "validation" or not warnings.own_test_split]
    how = "more images" + (", or larger splits: " + ", ".join(changes) if changes else " in the test set")
    warnings.warn(
        f"small splits: {sizes}: an accuracy measured on so few images is uncertain by up to "
        f"{' / '.join(margins)} points (95% interval); within +/-5 points needs at least "
        f"{MIN_EVALUATION_IMAGES} images per split. For a sharper measure use {how}"
    )


# auto never unpickles: loading a pickle runs code from it, which must be asked for
_PICKLE_OPT_IN = (
    "data.path: {path} holds pickles (X.pickle / y.pickle); unpickling runs code from those files, so "
    'data.source = "auto" does not load them. If you trust them, set data.source = "pickle" and '
    "data.trust_pickle = true (--set data.source=pickle --set data.trust_pickle=true)"
)


def detect_source(path: str) -> str:
    """The source ``auto`` resolves to for ``path`` (see the module docstring).

    Never ``pickle``: pickles are an error here that says how to opt in.
    """
    if not path:
        return "digits"
    p = Path(path)
    if not p.exists():
        raise DataError(f"data.path: {path} does not exist")
    if p.is_file():
        if p.suffix.lower() == ".npz":
            return "npz"
        if p.name.lower() in ("x.pickle", "y.pickle"):
            raise DataError(_PICKLE_OPT_IN.format(path=path))
        if _idx_kind(p.name):
            return "idx"
        raise DataError(f"data.path: cannot tell the source of file {path}: expected a .npz file, an IDX file "
                        "or a folder")
    if not p.is_dir():  # /dev/null, a FIFO, a socket: no data source reads these
        raise DataError(f"data.path: {path} is neither a file nor a folder")
    try:
        names = {child.name.lower(): child for child in p.iterdir()}
    except OSError as err:
        raise DataError(f"data.path: cannot list folder {path} ({err.strerror})") from None
    if "x.pickle" in names and "y.pickle" in names:
        raise DataError(_PICKLE_OPT_IN.format(path=path))
    if any(_idx_kind(name) for name in names):
        return "idx"
    if any(child.is_dir() and not child.name.startswith(".") for child in names.values()):
        return "folder"
    raise DataError(
        f"data.path: cannot tell the source of folder {path}: looked for X.pickle + y.pickle, "
        "*-idx3-ubyte[.gz] IDX files and class subfolders, found none (a .npz file must be given as the path)"
    )


# ---------------------------------------------------------------------------
# splitting


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


def _check_model_classes(class_names: Sequence[str], warnings: _Warnings, where: str) -> None:
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


def _check_train_classes(labels: np.ndarray, class_names: Sequence[str], where: str) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    missing = [class_names[c] for c in range(len(class_names)) if counts[c] == 0]
    if missing:
        raise DataError(f"{where}: no training examples for class(es) {', '.join(missing)}")


def _array_dataset(
    name: str, class_names: Sequence[str], images: np.ndarray, labels: np.ndarray, cfg: DataConfig,
    warnings: _Warnings, test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Dataset:
    """Split an in-memory pool (validation, and test unless ``test`` is given)."""
    _check_model_classes(class_names, warnings, name)
    if len(class_names) < 2 and warnings.model_classes is None:
        raise DataError(f"{name}: only one class ({', '.join(class_names)}); a classifier needs at least two")
    warnings.own_test_split = test is not None
    _check_train_classes(labels, class_names, name)
    train_i, val_i, test_i = stratified_split(
        labels, len(class_names), cfg.validation_fraction, 0.0 if test is not None else cfg.test_fraction, cfg.seed
    )
    test_split = Split(test[1], images=test[0]) if test is not None else Split(labels[test_i], images=images[test_i])
    return Dataset(
        name=name, class_names=tuple(class_names), train=Split(labels[train_i], images=images[train_i]),
        validation=Split(labels[val_i], images=images[val_i]), test=test_split, warnings=tuple(warnings),
    )


# ---------------------------------------------------------------------------
# digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    try:
        data = DIGITS_PNG.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the embedded digits {DIGITS_PNG}: {err.strerror}") from None
    graph = tf.Graph()  # private graph: works with or without eager execution / a caller's graph
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        sheet = session.run(tf.io.decode_png(data, channels=1))
    if sheet.shape != (1000, 2000, 1):
        raise DataError(f"{DIGITS_PNG}: expected a 2000x1000 grayscale sheet, got shape {sheet.shape}")
    # 50 rows x 100 columns of 20x20 tiles, row-major; five rows per digit.
    images = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20, 1)
    labels = np.repeat(np.arange(10, dtype=np.int64), 500)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits: images uint8 ``[5000, 20, 20, 1]``, labels int64 ``[5000]`` (0-9).

    Tiles in row-major order (500 of each digit, in order 0..9); fresh writable copies.
    """
    images, labels = _digits_arrays()
    return images.copy(), labels.copy()


def _load_digits_source(cfg: DataConfig, channels: int, warnings: _Warnings) -> Dataset:
    images, labels = _digits_arrays()
    if channels == 3:
        warnings.warn(f"5000 grayscale images will be converted to RGB (model.channels=3): {DIGITS_PNG}")
    return _array_dataset("digits (embedded, 5000 images)", [str(d) for d in range(10)], images, labels, cfg, warnings)


# ---------------------------------------------------------------------------
# in-memory arrays (npz, pickle, idx): checks and conversions


def _to_uint8_images(array, where: str, warnings: _Warnings) -> np.ndarray:
    """Images as uint8 [N, H, W, 1|3]; float/16-bit/alpha conversions are warned about."""
    try:
        images = np.asarray(array)
    except ValueError as err:  # ragged lists of images
        raise DataError(f"{where}: images are not one array of equal-sized images ({err})") from None
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
        raise DataError(f"{where}: images have shape {images.shape}; expected (N, H, W) or (N, H, W, 1|3)")
    if len(images) == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(f"{where}: no images (shape {images.shape})")
    if images.shape[-1] in (2, 4):
        kept = 1 if images.shape[-1] == 2 else 3
        warnings.warn(f"{where}: images have {images.shape[-1]} channels; the alpha channel is dropped")
        images = images[..., :kept]
    return _to_uint8_values(images, where, warnings)


def _to_uint8_values(images: np.ndarray, where: str, warnings: _Warnings) -> np.ndarray:
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if images.dtype.kind == "f":
        if not np.all(np.isfinite(images)):
            raise DataError(f"{where}: images contain NaN or infinite values")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 255:
            raise DataError(f"{where}: float images range over [{low:g}, {high:g}]; expected [0, 1] or [0, 255]")
        scale = 255.0 if high <= 1.0 else 1.0
        warnings.warn(
            f"{where}: {images.dtype} images in [{low:g}, {high:g}] converted to uint8"
            + (" (multiplied by 255)" if scale == 255.0 else " (rounded)")
        )
        return np.round(images * scale).astype(np.uint8)
    if images.dtype == np.uint16:
        warnings.warn(f"{where}: 16-bit images converted to 8-bit (divided by 257)")
        return (images // 257).astype(np.uint8)
    if images.dtype.kind in "iu":
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise DataError(f"{where}: integer images range over [{low}, {high}]; expected [0, 255]")
        return images.astype(np.uint8)  # lossless
    raise DataError(f"{where}: images have unsupported dtype {images.dtype}")


def _to_labels(array, where: str) -> tuple[np.ndarray, int, tuple[str, ...] | None]:
    """Labels as int64 [N] -> (labels, width of a one-hot encoding or 0, names for string labels)."""
    labels = np.asarray(array)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 2:
        if (labels.dtype.kind not in "iufb" or not np.all((labels == 0) | (labels == 1))
                or not np.all(labels.sum(1) == 1)):
            raise DataError(f"{where}: labels have shape {labels.shape} but are not one-hot rows")
        return labels.argmax(axis=1).astype(np.int64), labels.shape[1], None
    if labels.ndim != 1:
        raise DataError(f"{where}: labels have shape {labels.shape}; expected (N,) or one-hot (N, K)")
    if labels.dtype.kind in "USO":
        try:
            names, index = np.unique(labels.astype(str), return_inverse=True)
        except (TypeError, ValueError) as err:
            raise DataError(f"{where}: labels are neither integers nor strings ({err})") from None
        return index.astype(np.int64), 0, tuple(names)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise DataError(f"{where}: labels are floats that are not whole numbers")
    elif labels.dtype.kind not in "iub":
        raise DataError(f"{where}: labels have unsupported dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where}: labels include negative values ({int(labels.min())})")
    return labels, 0, None


def _resolve_classes(
    label_sets: Sequence[tuple[np.ndarray, int, tuple[str, ...] | None, str]], class_names: Sequence[str] | None
) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Check label ranges against ``class_names`` (or infer "0".."K-1"); names the offending file."""
    string_names = [names for _, _, names, _ in label_sets if names is not None]
    if string_names:
        if len(string_names) != len(label_sets):
            raise DataError(f"{label_sets[0][3]}: some labels are strings and some are numbers")
        names = tuple(class_names) if class_names else tuple(sorted(set().union(*string_names)))
        position = {n: i for i, n in enumerate(names)}
        relabelled = []
        for lab, _, own_names, where in label_sets:
            unknown = sorted(set(own_names) - set(position))
            if unknown:
                raise DataError(f"{where}: labels {', '.join(unknown)} are not in class_names")
            relabelled.append(np.array([position[own_names[i]] for i in lab], np.int64))
        return relabelled, names
    k = max(max(width, int(lab.max()) + 1 if len(lab) else 0) for lab, width, _, _ in label_sets)
    if class_names is not None:
        for lab, _, _, where in label_sets:
            if len(lab) and lab.max() >= len(class_names):
                raise DataError(
                    f"{where}: label {int(lab.max())} is outside [0, {len(class_names)}) "
                    f"({len(class_names)} class_names given)"
                )
        return [lab for lab, *_ in label_sets], tuple(class_names)
    return [lab for lab, *_ in label_sets], tuple(str(i) for i in range(k))


def _check_counts(images: np.ndarray, labels: np.ndarray, images_where: str, labels_where: str) -> None:
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images in {images_where} but {len(labels)} labels in {labels_where}")


def _check_same_shape(train: np.ndarray, test: np.ndarray, train_where: str, test_where: str) -> None:
    """The input pipeline feeds every split through one placeholder shaped like the training images."""
    if train.shape[1:] != test.shape[1:]:
        raise DataError(
            f"test images in {test_where} are {'x'.join(map(str, test.shape[1:]))} (HxWxC) but training images "
            f"in {train_where} are {'x'.join(map(str, train.shape[1:]))}; they must have the same size"
        )


def _channel_summary(images: np.ndarray, channels: int, where: str, warnings: _Warnings) -> None:
    native = images.shape[-1]
    if native != channels:
        kinds = {1: "grayscale", 3: "RGB"}
        warnings.warn(
            f"{where}: {len(images)} {kinds[native]} images will be converted to {kinds[channels]} "
            f"(model.channels={channels})"
        )


# ---------------------------------------------------------------------------
# npz


_NPZ_LAYOUTS = (("x_train", "y_train"), ("images", "labels"), ("x", "y"))


def _load_npz(cfg: DataConfig, channels: int, warnings: _Warnings) -> Dataset:
    path = Path(cfg.path)
    arrays = _read_npz(path)
    keys = {k.lower(): k for k in arrays}
    layout = next((pair for pair in _NPZ_LAYOUTS if pair[0] in keys and pair[1] in keys), None)
    if layout is None:
        raise DataError(
            f"{path}: found keys {', '.join(sorted(arrays)) or '(none)'}; expected x_train, y_train "
            "[, x_test, y_test] or images, labels or X, y [, class_names]"
        )
    pools = [layout]
    if layout[0] == "x_train" and ("x_test" in keys or "y_test" in keys):
        if not ("x_test" in keys and "y_test" in keys):
            raise DataError(f"{path}: has only one of x_test / y_test")
        pools.append(("x_test", "y_test"))
    class_names = None
    if "class_names" in keys:
        class_names = tuple(str(n) for n in np.asarray(arrays[keys["class_names"]]).ravel())
    loaded = []
    for x_key, y_key in pools:
        images = _to_uint8_images(arrays[keys[x_key]], f"{path}[{keys[x_key]}]", warnings)
        labels = _to_labels(arrays[keys[y_key]], f"{path}[{keys[y_key]}]")
        _check_counts(images, labels[0], f"{path}[{keys[x_key]}]", f"{path}[{keys[y_key]}]")
        loaded.append((images, labels + (f"{path}[{keys[y_key]}]",)))
    label_arrays, names = _resolve_classes([lab for _, lab in loaded], class_names)
    for images, lab in loaded:
        _channel_summary(images, channels, lab[3], warnings)
    test = None
    if len(loaded) == 2:
        _check_same_shape(loaded[0][0], loaded[1][0], f"{path}[{keys['x_train']}]", f"{path}[{keys['x_test']}]")
        test = (loaded[1][0], label_arrays[1])
    return _array_dataset(f"npz {path}", names, loaded[0][0], label_arrays[0], cfg, warnings, test)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError) as err:
        if "allow_pickle" in str(err):  # numpy's ValueError for object arrays
            raise DataError(
                f"{path}: holds object arrays (pickled); save names as a string array, e.g. np.array(names, dtype=str)"
            ) from None
        raise DataError(f"{path}: not a readable .npz file ({err})") from None


# ---------------------------------------------------------------------------
# pickle


def _load_pickle(cfg: DataConfig, channels: int, warnings: _Warnings) -> Dataset:
    path = Path(cfg.path)
    if not cfg.trust_pickle:
        raise DataError(
            f"data.source = \"pickle\": unpickling {path} runs code from it; if you trust the files, also set "
            "data.trust_pickle = true (--set data.trust_pickle=true)"
        )
    folder = path.parent if path.is_file() else path
    names = {child.name.lower(): child for child in folder.iterdir()} if folder.is_dir() else {}
    x_path, y_path = names.get("x.pickle", folder / "X.pickle"), names.get("y.pickle", folder / "y.pickle")
    for needed in (x_path, y_path):
        if not needed.is_file():
            raise DataError(f"{needed}: file not found (the pickle source needs X.pickle and y.pickle)")
    log.warning("unpickling %s and %s (data.trust_pickle = true): this runs any code they contain", x_path, y_path)
    x = _read_pickle(x_path)
    y = _read_pickle(y_path)
    try:
        _check_counts(x, y, str(x_path), str(y_path))
    except TypeError:  # len() of something that is not a sequence
        raise DataError(f"{x_path} / {y_path}: expected sequences of images and labels") from None
    images = _to_uint8_images(x, str(x_path), warnings)
    label_arrays, class_names = _resolve_classes([_to_labels(y, str(y_path)) + (str(y_path),)], None)
    _channel_summary(images, channels, str(x_path), warnings)
    return _array_dataset(f"pickle {folder}", class_names, images, label_arrays[0], cfg, warnings)


def _read_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as err:
        raise DataError(f"{path}: cannot unpickle ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------------------
# idx


def _idx_kind(name: str) -> str:
    """'images' / 'labels' for IDX file names (``*idx3-ubyte[.gz]`` / ``*idx1-ubyte[.gz]``), else ''."""
    for kind, dims in (("images", 3), ("labels", 1)):
        if re.search(rf"idx{dims}[-_.]ubyte(\.gz)?$", name.lower()):
            return kind
    return ""


def _idx_role(name: str) -> str:
    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))
    if "train" in tokens:
        return "train"
    if tokens & {"t10k", "test"}:
        return "test"
    return ""


def _find_idx_files(folder: Path, warnings: _Warnings) -> dict[tuple[str, str], Path]:
    """(role, kind) -> file; a .gz and its extracted copy count as one (the raw one is used)."""
    candidates: dict[tuple[str, str], dict[str, Path]] = {}
    for child in sorted(folder.iterdir()):
        kind = _idx_kind(child.name)
        if not kind or not child.is_file():
            continue
        role = _idx_role(child.name)
        if not role:
            warnings.warn(f"IDX file ignored (name says neither train nor t10k/test): {child}")
            continue
        stem = child.name[:-3] if child.name.lower().endswith(".gz") else child.name
        candidates.setdefault((role, kind), {}).setdefault(stem, child)
        if not child.name.lower().endswith(".gz"):
            candidates[(role, kind)][stem] = child
    found = {}
    for key, by_stem in candidates.items():
        if len(by_stem) > 1:
            listing = ", ".join(str(p) for p in by_stem.values())
            raise DataError(f"{folder}: several {key[0]} {key[1]} IDX files ({listing}); keep one set per folder")
        found[key] = next(iter(by_stem.values()))
    for kind in ("images", "labels"):
        if ("train", kind) not in found:
            pattern = f"train-{kind}-idx{3 if kind == 'images' else 1}-ubyte[.gz]"
            raise DataError(f"{folder}: no training {kind} IDX file ({pattern})")
    if (("test", "images") in found) != (("test", "labels") in found):
        present = found.get(("test", "images")) or found.get(("test", "labels"))
        raise DataError(f"{folder}: test IDX file {present} has no matching images/labels file")
    return found


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip or raw) and check its magic, dims and size.

    ``expected_magic``: 0x00000803 for images ``[N, H, W]``, 0x00000801 for labels ``[N]``.
    Returns a uint8 array shaped by the header.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if len(data) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: IDX magic number is 0x{magic:08X}, expected 0x{expected_magic:08X}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(f"{path}: header dims {dims} need {expected} bytes of data, the file has {len(data) - header}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()  # writable, owns its memory


def _load_idx(cfg: DataConfig, channels: int, warnings: _Warnings) -> Dataset:
    folder = Path(cfg.path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"data.path: {cfg.path} is not an IDX file or a folder of them")
    files = _find_idx_files(folder, warnings)
    pools = []
    for role in ("train", "test"):
        if (role, "images") not in files:
            continue
        image_file, label_file = files[(role, "images")], files[(role, "labels")]
        images = read_idx(image_file, _IDX_IMAGES_MAGIC)[..., np.newaxis]
        labels = read_idx(label_file, _IDX_LABELS_MAGIC).astype(np.int64)
        _check_counts(images, labels, str(image_file), str(label_file))
        pools.append((images, (labels, 0, None, str(label_file))))
    label_arrays, class_names = _resolve_classes([lab for _, lab in pools], None)
    if len(class_names) == 10 and "fashion" in str(folder.resolve()).lower():
        class_names = FASHION_MNIST_CLASSES
    _channel_summary(pools[0][0], channels, str(files[("train", "images")]), warnings)
    test = None
    if len(pools) == 2:
        _check_same_shape(pools[0][0], pools[1][0], str(files[("train", "images")]), str(files[("test", "images")]))
        test = (pools[1][0], label_arrays[1])
    return _array_dataset(f"idx {folder}", class_names, pools[0][0], label_arrays[0], cfg, warnings, test)


# ---------------------------------------------------------------------------
# folder


def _load_folder(cfg: DataConfig, channels: int, warnings: _Warnings, size: tuple[int, int] | None = None
                 ) -> Dataset:
    """Walk the class folders and scan every file, collecting every problem before raising.

    ``size``: keep the scan's decode at that size as the splits' images when they fit
    (:func:`load_dataset`)."""
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder")
    train_root, test_root = _folder_roots(root, cfg.test_path, warnings)
    train_classes = _class_folders(train_root, warnings)
    class_names = tuple(sorted(train_classes))
    test_classes = _class_folders(test_root, warnings) if test_root else None
    _check_model_classes(sorted({*train_classes, *(test_classes or {})}), warnings, str(root))  # before decoding
    warnings.own_test_split = test_root is not None
    errors: list[str] = []
    if test_classes is not None and set(test_classes) != set(train_classes):
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        errors.append(
            f"class folders differ between {train_root} and {test_root}: only in the training tree: "
            f"{', '.join(only_train) or '-'}; only in the test tree: {', '.join(only_test) or '-'}"
        )
    if len(class_names) < 2 and warnings.model_classes is None:
        errors.append(
            f"{train_root}: only one class folder ({', '.join(class_names)}); a classifier needs at least two"
        )
    train_files = {c: _image_files(train_classes[c], warnings, errors) for c in class_names}
    test_files = {c: _image_files(folder, warnings, errors) for c, folder in (test_classes or {}).items()}
    _check_disjoint(train_files, test_files, errors)
    all_files = [p for files in (*train_files.values(), *test_files.values()) for p in files]
    fit = None
    if size is not None and (cfg.cache == "memory" or (
            cfg.cache == "auto" and len(all_files) * size[0] * size[1] * channels <= KEEP_DECODED_BYTES)):
        fit = (size[0], size[1], channels)
    result = scan.scan_images(all_files, cfg.num_parallel_calls, fit, cfg.exif_transpose)
    pixels, rows = result.pixels, result.rows
    result = dataclasses.replace(result, pixels=None, rows={})  # the Dataset keeps the splits' copies only
    _report_bad_files(result.bad, cfg.strict, warnings, errors)
    for message in scan.conversion_warnings(result.images, channels, exif_transpose=cfg.exif_transpose):
        warnings.warn(message)
    train_files = _drop_bad(train_files, train_classes, result.bad, errors)
    test_files = _drop_bad(test_files, test_classes or {}, result.bad, errors)
    counts = {c: len(train_files.get(c, ())) + len(test_files.get(c, ())) for c in sorted({*train_files, *test_files})}

    if not errors:
        paths, labels = _flatten(train_files, class_names)
        try:
            train_i, val_i, test_i = stratified_split(
                labels, len(class_names), cfg.validation_fraction, 0.0 if test_root else cfg.test_fraction, cfg.seed
            )
        except DataError as err:
            errors.append(str(err))
    if errors:
        raise _collected(cfg.path, errors, list(warnings), scan=result, class_counts=counts)

    def kept(files: Sequence[str], labels: np.ndarray) -> Split:
        images = None if pixels is None else pixels[np.array([rows[f] for f in files], np.int64)]
        return Split(labels, images=images, paths=tuple(files))

    def split(indices: np.ndarray) -> Split:
        return kept([paths[i] for i in indices], labels[indices])

    if test_root:
        test_paths, test_labels = _flatten(test_files, class_names)
        test_split = kept(test_paths, test_labels)
    else:
        test_split = split(test_i)
    return Dataset(name=f"folder {root}", class_names=class_names, train=split(train_i),
                   validation=split(val_i), test=test_split, warnings=tuple(warnings), scan=result)


def _folder_roots(root: Path, test_path: str, warnings: _Warnings) -> tuple[Path, Path | None]:
    """(training tree, test tree or None) for the three folder layouts."""
    if test_path:
        test_root = Path(test_path)
        if not test_root.is_dir():
            raise DataError(f"data.test_path: {test_root} is not a folder")
        if test_root.resolve() == root.resolve():
            raise DataError(f"data.test_path: {test_root} is the training folder itself")
        return root, test_root
    train_root, test_root = root / "training_set", root / "test_set"
    if not (train_root.is_dir() and test_root.is_dir()):
        return root, None
    others = sorted(c.name for c in root.iterdir() if c.name not in ("training_set", "test_set"))
    if others:
        ignored = ", ".join(str(root / o) for o in others)
        warnings.warn(f"{root}: using training_set/ and test_set/; ignored: {ignored}")
    return _unnest(train_root), _unnest(test_root)


def _unnest(tree: Path) -> Path:
    """Kaggle archives often unpack to training_set/training_set/<classes>: use the inner one."""
    children = [c for c in tree.iterdir() if not c.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir() and children[0].name == tree.name:
        return children[0]
    return tree


SPLIT_FOLDER_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing")


def _graphcnn_output(folder: Path) -> bool:
    """A folder graphcnn wrote, not a class: ``graphcnn data``'s report folder, or a logs folder
    of runs (a command run from inside the data folder writes them there)."""
    if (folder / "data_report.txt").is_file() and (folder / "samples.png").is_file():
        return True
    with os.scandir(folder) as entries:  # d_type: no stat for the files of a class folder
        return any(e.is_dir() and (os.path.isfile(os.path.join(e.path, ".lock"))  # a run starting now
                                   or os.path.isfile(os.path.join(e.path, "config.json"))
                                   and os.path.isdir(os.path.join(e.path, "checkpoints"))) for e in entries)


def _has_subfolders(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_dir() and not e.name.startswith(".") for e in entries)


def _class_folders(tree: Path, warnings: _Warnings) -> dict[str, Path]:
    """Class name -> folder for the visible subfolders of ``tree``; stray files are reported,
    graphcnn's own output folders skipped, and a tree of split folders (train/, val/, test/)
    refused: its classes are one level down."""
    folders, skipped, hidden, ours = {}, [], [], []
    for child in sorted(tree.iterdir()):
        if child.name.startswith("."):
            hidden.append(child)
        elif child.is_dir():
            if _graphcnn_output(child):
                ours.append(child)
            else:
                folders[child.name] = child
        else:
            skipped.append(child)
    if ours:
        warnings.warn(f"{tree}: graphcnn's own output skipped (not classes):\n" + _listing(ours))
    if len(folders) >= 2 and all(n.lower() in SPLIT_FOLDER_NAMES and _has_subfolders(f) for n, f in folders.items()):
        names = sorted(folders, key=lambda n: SPLIT_FOLDER_NAMES.index(n.lower()))
        train = next((n for n in names if n.lower() in ("train", "training")), names[0])
        test = next((n for n in names if n.lower() in ("test", "testing")), None)
        raise DataError(f"{tree}: holds the splits {', '.join(n + '/' for n in names)}, not classes: give --data "
                        f"{tree / train} (its class folders)"
                        + (f" and --set data.test_path={tree / test}" if test else "")
                        + "; the validation split comes from data.validation_fraction")
    if not folders:
        raise DataError(
            f"{tree}: no class subfolders (expected one subfolder per class"
            + (f"; found {len(skipped)} files directly in it)" if skipped else ")")
        )
    if skipped:
        warnings.warn(f"{tree}: {len(skipped)} file(s) outside the class folders skipped:\n" + _listing(skipped))
    if hidden:
        warnings.warn(f"{tree}: hidden entries skipped:\n" + _listing(hidden))
    return folders


def _special(path: Path) -> bool:
    """A FIFO, socket or device (reading a FIFO waits forever); a broken link is not special:
    it is read, and named as a bad file."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def walk_image_files(folder: Path, onerror: Callable[[OSError], None] | None = None
                     ) -> tuple[list[Path], list[Path], list[Path]]:
    """``(images, skipped, again)`` under ``folder``, recursively and sorted, as training reads
    a folder: symbolic links followed (each real folder once), hidden entries and files that
    are not images skipped, a file reached a second time through a link in ``again``.
    ``onerror``: as ``os.walk``'s (a folder that cannot be listed)."""
    images, skipped, seen, again = [], [], {os.path.realpath(folder)}, []
    real_files: set[str] = set()
    for directory, subdirs, files in os.walk(folder, followlinks=True, onerror=onerror):
        hidden = sorted(d for d in subdirs if d.startswith("."))
        skipped.extend(Path(directory, d) for d in hidden)
        visible = [d for d in sorted(subdirs) if not d.startswith(".")]
        subdirs[:] = [d for d in visible if os.path.realpath(os.path.join(directory, d)) not in seen]  # symlink loops
        seen.update(os.path.realpath(os.path.join(directory, d)) for d in subdirs)
        for name in sorted(files):  # hidden files too: macOS's ._x.jpg beside x.jpg is not an image
            path = Path(directory, name)
            if not name.lower().endswith(IMAGE_EXTENSIONS) or name.startswith(".") or _special(path):
                skipped.append(path)
            elif (real := os.path.realpath(path)) in real_files:  # one file under two names: once, or it
                again.append(path)                                  # could sit in two splits
            else:
                real_files.add(real)
                images.append(path)
    return images, skipped, again


def _image_files(folder: Path, warnings: _Warnings, errors: list[str]) -> list[str]:
    """Image files under ``folder`` (recursively, sorted); others are reported as skipped, and
    a folder without any is an error added to ``errors``."""
    images, skipped, again = walk_image_files(folder)
    if skipped:
        warnings.warn(
            f"{folder}: {len(skipped)} non-image entr{'y' if len(skipped) == 1 else 'ies'} skipped "
            f"(not {'/'.join(IMAGE_EXTENSIONS)} files, or hidden):\n" + _listing(skipped)
        )
    if again:
        warnings.warn(f"{folder}: {len(again)} file(s) reached a second time through symbolic links, used once:\n"
                      + _listing(again))
    if not images:
        errors.append(f"class folder {folder} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(os.path.abspath(p) for p in images)


def _check_disjoint(train: dict[str, list[str]], test: dict[str, list[str]], errors: list[str]) -> None:
    """Errors for a file (by its real path: symlinks are followed) in both trees, or under two
    classes of one tree; the walk itself lists a file once per name it is reached by."""
    by_real: list[dict[str, dict[str, str]]] = []  # per tree: real path -> class -> the first name seen
    for tree in (train, test):
        classes: dict[str, dict[str, str]] = {}
        for name, files in tree.items():
            for p in files:
                classes.setdefault(os.path.realpath(p), {}).setdefault(name, p)
        by_real.append(classes)
        twice = sorted(" = ".join(sorted(by_class.values())) for by_class in classes.values() if len(by_class) > 1)
        if twice:
            errors.append(f"{len(twice)} file(s) are in two or more class folders (through symbolic links):\n"
                          + _listing(twice))
    shared = sorted(p for real, by_class in by_real[1].items() if real in by_real[0] for p in by_class.values())
    if shared:
        errors.append(f"{len(shared)} file(s) are in both the training and the test tree:\n" + _listing(shared))


def _report_bad_files(bad: dict[str, str], strict: bool, warnings: _Warnings, errors: list[str]) -> None:
    if not bad:
        return
    report = scan.bad_files_report(bad)
    if strict:
        errors.append(f"{len(bad)} image file(s) cannot be decoded (data.strict=true):\n{report}")
    else:
        warnings.warn(f"{len(bad)} image file(s) cannot be decoded and are excluded:\n{report}")


def _drop_bad(files: dict[str, list[str]], folders: dict[str, Path], bad: dict[str, str],
              errors: list[str]) -> dict[str, list[str]]:
    """The readable files of each class; a class folder whose files all fail is an error
    (an empty one was reported already)."""
    kept = {}
    for name, paths in files.items():
        kept[name] = [p for p in paths if p not in bad]
        if paths and not kept[name]:
            errors.append(f"class folder {folders[name]}: none of its {len(paths)} image file(s) can be decoded")
    return kept


def _flatten(files: dict[str, list[str]], class_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    paths = [p for name in class_names for p in files[name]]
    labels = np.concatenate([np.full(len(files[name]), i, np.int64) for i, name in enumerate(class_names)])
    return paths, labels


def _listing(paths: Sequence) -> str:
    return "\n".join(f"  {p}" for p in paths)


# ---------------------------------------------------------------------------
# the registry (after the loaders it names)

# DataConfig.source -> (config, channels, warnings) -> Dataset; "auto" is not a key:
# load_dataset resolves it with detect_source
SOURCES: dict[str, Callable[[DataConfig, int, _Warnings], Dataset]] = {
    "digits": _load_digits_source,
    "folder": _load_folder,
    "idx": _load_idx,
    "npz": _load_npz,
    "pickle": _load_pickle,
}
