"""Data sources: load a labelled image set and split it into train / validation / test.

This module is the entry point (:func:`load_dataset`, :func:`detect_source`, :data:`SOURCES`);
the loaders live in :mod:`graphcnn.data.arrays` (digits, idx, npz, pickle) and
:mod:`graphcnn.data.folders`, what they return in :mod:`graphcnn.data.dataset`.

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
together with the warnings (:attr:`DataError.errors`, :attr:`DataError.warnings`). The
image files of any other source's splits (one added to :data:`SOURCES` that returns paths) are
scanned the same way after it returns (:func:`_scanned`).

Validation and test splits too small to measure accuracy to within +-5 points are warned
about (:data:`MIN_EVALUATION_IMAGES`), and so is a validation or test split without any image
of some class.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from graphcnn.config import DataConfig
from graphcnn.data import arrays, folders
from graphcnn.data.dataset import (MIN_EVALUATION_IMAGES, DataError, Dataset, Findings, Split, accuracy_margin,
                                   collected)
from graphcnn.registry import UnknownChoiceError, lookup

log = logging.getLogger("graphcnn.data")


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
    (``data.cache``: ``memory``, or ``auto`` and at most :data:`graphcnn.data.folders.KEEP_DECODED_BYTES`) come back
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
    warnings = Findings(model_classes)
    try:
        dataset = load(cfg, channels, warnings, **({"size": size} if source == "folder" and size else {}))
    except DataError as err:
        if warnings and not err.warnings:  # what was found before the error belongs to the report
            raise collected(cfg.path, list(err.errors), list(warnings), warnings.purpose) from None
        raise
    if source != "folder":  # the folder source scans its files itself (and keeps them decoded)
        dataset = _scanned(dataset, cfg, channels, warnings)
    if model_classes is None:
        _warn_small_splits(dataset, cfg, warnings)
        _warn_unevaluated_classes(dataset, warnings)
    if log_warnings:
        for message in warnings:
            log.warning(message)
    return dataclasses.replace(dataset, warnings=tuple(warnings), source=source, own_test_split=warnings.own_test_split)


def _scanned(ds: Dataset, cfg: DataConfig, channels: int, warnings: Findings) -> Dataset:
    """A source's splits of image files (a source added to :data:`SOURCES` may return paths)
    checked as the folder source checks its files: each decoded once by the scan, the bad ones
    named and left out (an error with ``data.strict``), the conversions reported."""
    from graphcnn.data import scan

    splits = {name: getattr(ds, name) for name in ("train", "validation", "test")}
    paths = [p for split in splits.values() if split.images is None and split.paths for p in split.paths]
    if not paths:
        return ds
    result = scan.scan_images(paths)
    errors: list[str] = []
    folders.report_bad_files(result.bad, cfg.strict, warnings, errors)
    for message in scan.conversion_warnings(result.images, channels, exif_transpose=cfg.exif_transpose):
        warnings.warn(message)
    if errors:
        raise collected(cfg.path, errors, list(warnings), warnings.purpose)
    for name, split in splits.items():
        if result.bad and split.images is None and split.paths:
            keep = [i for i, p in enumerate(split.paths) if p not in result.bad]
            splits[name] = Split(split.labels[keep], paths=[split.paths[i] for i in keep])
    return dataclasses.replace(ds, scan=ds.scan or result, **splits)  # the data report's sizes and modes


def _warn_small_splits(ds: Dataset, cfg: DataConfig, warnings: Findings) -> None:
    """One warning naming the validation / test splits under MIN_EVALUATION_IMAGES images."""
    small = [(name, len(split)) for name, split in (("validation", ds.validation), ("test", ds.test))
             if 0 < len(split) < MIN_EVALUATION_IMAGES]
    if not small:
        return
    sizes = ", ".join(f"{name} {n} image{'s' if n != 1 else ''}" for name, n in small)
    margins = list(dict.fromkeys(f"+/-{accuracy_margin(n):.1f}" for _, n in small))  # as the data report rounds them
    changes = [f"--set data.{name}_fraction=... (now {getattr(cfg, f'{name}_fraction'):g})"
               for name, _ in small if name == "validation" or not warnings.own_test_split]
    how = "more images" + (", or larger splits: " + ", ".join(changes) if changes else " in the test set")
    warnings.warn(
        f"small splits: {sizes}: an accuracy measured on so few images is uncertain by up to "
        f"{' / '.join(margins)} points (95% interval); within +/-5 points needs at least "
        f"{MIN_EVALUATION_IMAGES} images per split. For a sharper measure use {how}"
    )


def _warn_unevaluated_classes(ds: Dataset, warnings: Findings) -> None:
    """One warning per validation / test split that has no image of some class: a class too
    small for the split's fraction is never measured there (its mistakes go unseen)."""
    for name in ("validation", "test"):
        split = getattr(ds, name)
        if not len(split):
            continue
        missing = np.flatnonzero(np.bincount(split.labels, minlength=ds.num_classes) == 0)
        if len(missing):
            totals = np.bincount(np.concatenate([s.labels for s in (ds.train, ds.validation, ds.test)]),
                                 minlength=ds.num_classes)
            shown = ", ".join(f"{ds.class_names[c]} ({totals[c]} images)" for c in missing[:5])
            many = len(missing) > 1
            warnings.warn(f"the {name} split has no image of {len(missing)} class{'es' if many else ''}: "
                          f"{shown}{', ...' if len(missing) > 5 else ''}; {name} accuracy never measures "
                          f"{'them' if many else 'it'}. Add images of {'these classes' if many else 'this class'}")


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
        if arrays.idx_kind(p.name):
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
    if any(arrays.idx_kind(name) for name in names):
        return "idx"
    if any(child.is_dir() and not child.name.startswith(".") for child in names.values()):
        return "folder"
    raise DataError(
        f"data.path: cannot tell the source of folder {path}: looked for X.pickle + y.pickle, "
        "*-idx3-ubyte[.gz] IDX files and class subfolders, found none (a .npz file must be given as the path)"
    )


# ---------------------------------------------------------------------------
# the registry

# DataConfig.source -> (config, channels, warnings) -> Dataset; "auto" is not a key:
# load_dataset resolves it with detect_source
SOURCES: dict[str, Callable[[DataConfig, int, Findings], Dataset]] = {
    "digits": arrays.load_digits_source,
    "folder": folders.load_folder,
    "idx": arrays.load_idx,
    "npz": arrays.load_npz,
    "pickle": arrays.load_pickle,
}
