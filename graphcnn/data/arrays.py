"""In-memory sources: the embedded digits, ``.npz`` files, ``X.pickle`` / ``y.pickle`` and
MNIST-format IDX files. Each loads arrays, checks and converts them to uint8 ``[N, H, W, 1|3]``
images and int64 labels (every conversion warned about), and splits them by
:func:`~graphcnn.data.dataset.stratified_split` (a source's own test set kept as its test split).
"""

from __future__ import annotations

import functools
import gzip
import logging
import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from graphcnn.config import DataConfig
from graphcnn.data.dataset import DataError, Dataset, Findings, Split, check_model_classes, stratified_split

log = logging.getLogger("graphcnn.data")

DIGITS_PNG = Path(__file__).with_name("digits.png")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


def _check_train_classes(labels: np.ndarray, class_names: Sequence[str], where: str) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    missing = [class_names[c] for c in range(len(class_names)) if counts[c] == 0]
    if missing:
        raise DataError(f"{where}: no training examples for class(es) {', '.join(missing)}")


def _array_dataset(
    name: str, class_names: Sequence[str], images: np.ndarray, labels: np.ndarray, cfg: DataConfig,
    warnings: Findings, test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Dataset:
    """Split an in-memory pool (validation, and test unless ``test`` is given)."""
    check_model_classes(class_names, warnings, name)
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


def load_digits_source(cfg: DataConfig, channels: int, warnings: Findings) -> Dataset:
    images, labels = _digits_arrays()
    if channels == 3:
        warnings.warn(f"5000 grayscale images will be converted to RGB (model.channels=3): {DIGITS_PNG}")
    return _array_dataset("digits (embedded, 5000 images)", [str(d) for d in range(10)], images, labels, cfg, warnings)


# ---------------------------------------------------------------------------
# in-memory arrays (npz, pickle, idx): checks and conversions


def _to_uint8_images(array, where: str, warnings: Findings) -> np.ndarray:
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


def _to_uint8_values(images: np.ndarray, where: str, warnings: Findings) -> np.ndarray:
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


def _channel_summary(images: np.ndarray, channels: int, where: str, warnings: Findings) -> None:
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


def load_npz(cfg: DataConfig, channels: int, warnings: Findings) -> Dataset:
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
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"{path}: is one .npy array, not a .npz archive of images and labels (np.savez writes one)")
    if not head.startswith(b"PK"):  # numpy would take any other file for a pickle
        raise DataError(f"{path}: not a .npz file (a .npz is a zip archive, as np.savez writes it)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if "allow_pickle" in str(err):  # numpy's ValueError for object arrays
            raise DataError(
                f"{path}: holds object arrays (pickled); save names as a string array, e.g. np.array(names, dtype=str)"
            ) from None
        raise DataError(f"{path}: not a readable .npz file ({err}); is it complete?") from None


# ---------------------------------------------------------------------------
# pickle


def load_pickle(cfg: DataConfig, channels: int, warnings: Findings) -> Dataset:
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


def idx_kind(name: str) -> str:
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


def _find_idx_files(folder: Path, warnings: Findings) -> dict[tuple[str, str], Path]:
    """(role, kind) -> file; a .gz and its extracted copy count as one (the raw one is used)."""
    candidates: dict[tuple[str, str], dict[str, Path]] = {}
    for child in sorted(folder.iterdir()):
        kind = idx_kind(child.name)
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


def load_idx(cfg: DataConfig, channels: int, warnings: Findings) -> Dataset:
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
