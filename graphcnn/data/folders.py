"""The folder source: one subfolder per class, read as training reads it.

One tree split by fractions, a tree with ``training_set/`` and ``test_set/`` subtrees, or
``data.test_path`` for a test tree. The walk follows links, skips hidden and non-image entries
(each reported), and every image file is decoded once by :func:`graphcnn.data.scan.scan_images`;
given the model's input size and room in memory (``data.cache``), that decode is kept, at the
model's size, as the splits' images. Every problem of the tree is collected before one
:class:`~graphcnn.data.dataset.DataError` lists them all.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from graphcnn.config import DataConfig
from graphcnn.data import scan
from graphcnn.data.dataset import DataError, Dataset, Findings, Split, check_model_classes, collected, stratified_split
from graphcnn.terminal import printable

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# data.cache = auto keeps a folder's decoded images (uint8, the model's size, every split) when
# they take at most this much; training also copies the training split into the graph once
KEEP_DECODED_BYTES = 1 << 30


def load_folder(cfg: DataConfig, channels: int, warnings: Findings, size: tuple[int, int] | None = None
                 ) -> Dataset:
    """Walk the class folders and scan every file, collecting every problem before raising.

    ``size``: keep the scan's decode at that size as the splits' images when they fit
    (:func:`~graphcnn.data.sources.load_dataset`)."""
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder")
    train_root, test_root = _folder_roots(root, cfg.test_path, warnings)
    train_classes = _class_folders(train_root, warnings)
    class_names = tuple(sorted(train_classes))
    test_classes = _class_folders(test_root, warnings) if test_root else None
    check_model_classes(sorted({*train_classes, *(test_classes or {})}), warnings, str(root))  # before decoding
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
    report_bad_files(result.bad, cfg.strict, warnings, errors)
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
        raise collected(cfg.path, errors, list(warnings), warnings.purpose, scan=result, class_counts=counts)

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


def _folder_roots(root: Path, test_path: str, warnings: Findings) -> tuple[Path, Path | None]:
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


def _class_folders(tree: Path, warnings: Findings) -> dict[str, Path]:
    """Class name -> folder for the visible subfolders of ``tree``; stray files are reported,
    graphcnn's own output folders skipped, and a tree of split folders (train/, val/, test/)
    refused: its classes are one level down."""
    folders, skipped, hidden, ours = {}, [], [], []
    for child in sorted(tree.iterdir()):
        if _hidden(child.name):
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


def _hidden(name: str) -> bool:
    """A hidden entry, or the ``__MACOSX`` folder of metadata (``._x.jpg`` files) that unzipping a
    macOS archive leaves: skipped, not a class."""
    return name.startswith(".") or name == "__MACOSX"


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:  # a broken link: it is read, and named as a bad file
        return None


def _identity(path: Path, st: os.stat_result | None = None) -> tuple[int, int] | str:
    """What makes two names one file: its device and inode (symbolic and hard links alike), or,
    for a name that cannot be followed (a broken link), the path it resolves to."""
    st = st or _stat(path)
    return (st.st_dev, st.st_ino) if st is not None else os.path.realpath(path)


def walk_image_files(folder: Path, onerror: Callable[[OSError], None] | None = None
                     ) -> tuple[list[Path], list[Path], list[Path]]:
    """``(images, skipped, again)`` under ``folder``, recursively and sorted, as training reads
    a folder: symbolic links followed (each real folder once), hidden entries and files that
    are not images skipped, a file or folder reached a second time through a link (a link back
    to a folder above it, or a second hard link of a file) in ``again``; of a file's names, the
    one that is not a symbolic link is kept.
    ``onerror``: as ``os.walk``'s (a folder that cannot be listed)."""
    candidates, skipped, seen, again = [], [], {os.path.realpath(folder)}, []
    names: dict[tuple[int, int] | str, list[Path]] = {}
    for directory, subdirs, files in os.walk(folder, followlinks=True, onerror=onerror):
        hidden = sorted(d for d in subdirs if _hidden(d))
        skipped.extend(Path(directory, d) for d in hidden)
        visible = [d for d in sorted(subdirs) if not _hidden(d)]
        looped = [d for d in visible if os.path.realpath(os.path.join(directory, d)) in seen]  # symlink loops
        again.extend(Path(directory, d) for d in looped)
        subdirs[:] = [d for d in visible if d not in looped]
        seen.update(os.path.realpath(os.path.join(directory, d)) for d in subdirs)
        for name in sorted(files):  # hidden files too: macOS's ._x.jpg beside x.jpg is not an image
            path = Path(directory, name)
            if not name.lower().endswith(IMAGE_EXTENSIONS) or name.startswith("."):
                skipped.append(path)
                continue
            st = _stat(path)
            if st is not None and not stat.S_ISREG(st.st_mode):  # a FIFO, socket or device: a FIFO's read waits forever
                skipped.append(path)
            else:
                candidates.append(path)
                names.setdefault(_identity(path, st), []).append(path)
    # one file under two names: read once (or it could sit in two splits), by a name that is no link
    kept = {same[0] if len(same) == 1 else next((p for p in same if not p.is_symlink()), same[0])
            for same in names.values()}
    again.extend(p for p in candidates if p not in kept)
    return [p for p in candidates if p in kept], skipped, again


def _image_files(folder: Path, warnings: Findings, errors: list[str]) -> list[str]:
    """Image files under ``folder`` (recursively, sorted); others are reported as skipped, and
    a folder without any is an error added to ``errors``."""
    images, skipped, again = walk_image_files(folder)
    if skipped:
        warnings.warn(
            f"{folder}: {len(skipped)} non-image entr{'y' if len(skipped) == 1 else 'ies'} skipped "
            f"(not {'/'.join(IMAGE_EXTENSIONS)} files, or hidden):\n" + _listing(skipped)
        )
    if again:
        warnings.warn(f"{folder}: {len(again)} file(s) or folder(s) reached a second time through links, "
                      "read once:\n"
                      + _listing(again))
    if not images:
        errors.append(f"class folder {folder} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(os.path.abspath(p) for p in images)


def _check_disjoint(train: dict[str, list[str]], test: dict[str, list[str]], errors: list[str]) -> None:
    """Errors for a file (by its device and inode: symbolic and hard links) in both trees, or
    under two classes of one tree; the walk itself lists a file once per name it is reached by."""
    by_real: list[dict[tuple[int, int] | str, dict[str, str]]] = []  # per tree: file -> class -> first name
    for tree in (train, test):
        classes: dict[tuple[int, int] | str, dict[str, str]] = {}
        for name, files in tree.items():
            for p in files:
                classes.setdefault(_identity(Path(p)), {}).setdefault(name, p)
        by_real.append(classes)
        twice = sorted(" = ".join(sorted(by_class.values())) for by_class in classes.values() if len(by_class) > 1)
        if twice:
            errors.append(f"{len(twice)} file(s) are in two or more class folders (through links):\n"
                          + _listing(twice))
    shared = sorted(p for real, by_class in by_real[1].items() if real in by_real[0] for p in by_class.values())
    if shared:
        errors.append(f"{len(shared)} file(s) are in both the training and the test tree:\n" + _listing(shared))


def report_bad_files(bad: dict[str, str], strict: bool, warnings: Findings, errors: list[str]) -> None:
    """The files the scan could not use: a warning (they are left out), or with ``strict`` an error."""
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
    return "\n".join(f"  {printable(p)}" for p in paths)  # a newline in a name would read as two files
