"""graphcnn.data: every source (sources, arrays, folders, dataset), the scan, splitting, and bad input by name."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import logging  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from graphcnn.config import DataConfig  # noqa: E402
from graphcnn.data import folders, scan  # noqa: E402
from graphcnn.data.arrays import DIGITS_PNG, load_digits, read_idx  # noqa: E402
from graphcnn.data.dataset import DataError, Dataset, Split, stratified_split  # noqa: E402
from graphcnn.data.sources import SOURCES, detect_source, load_dataset  # noqa: E402

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------
# tiny file writers


def _encode(fn, array: np.ndarray) -> bytes:
    """Run a TF encoder in a private graph, whatever the caller's eager/graph mode."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        return session.run(fn(tf.constant(array)))


def image(h: int = 8, w: int = 8, c: int = 1, dtype=np.uint8) -> np.ndarray:
    high = 65535 if dtype == np.uint16 else 255
    return RNG.integers(0, high, (h, w, c), endpoint=True).astype(dtype)


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encode(tf.io.encode_png, array))
    return path


def write_jpeg(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encode(tf.io.encode_jpeg, array))
    return path


def gif_bytes(frames: list[np.ndarray]) -> bytes:
    """A GIF89a with a 2-colour palette; each frame a 2-D array of 0/1 pixels.

    LZW with a clear code before every pixel keeps the code width at 3 bits.
    """
    h, w = frames[0].shape
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255]))
    for frame in frames:
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control extension: 0.1 s delay
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02"
        codes = [code for p in frame.ravel() for code in (4, int(p))] + [5]
        bits = nbits = 0
        data = bytearray()
        for code in codes:
            bits |= code << nbits
            nbits += 3
            while nbits >= 8:
                data.append(bits & 0xFF)
                bits >>= 8
                nbits -= 8
        if nbits:
            data.append(bits)
        for i in range(0, len(data), 255):
            out += bytes([len(data[i:i + 255])]) + data[i:i + 255]
        out += b"\x00"
    return bytes(out + b"\x3b")


def make_tree(root: Path, counts: dict[str, int], c: int = 1, fmt: str = "png") -> dict[str, list[Path]]:
    writer = write_png if fmt == "png" else write_jpeg
    return {
        name: [writer(root / name / f"{name}_{i:02d}.{fmt}", image(c=c)) for i in range(n)]
        for name, n in counts.items()
    }


def cfg(path="", **kw) -> DataConfig:
    return DataConfig(path=str(path), **kw)


def all_paths(ds: Dataset) -> list[str]:
    return [*ds.train.paths, *ds.validation.paths, *ds.test.paths]


# ---------------------------------------------------------------------------
# splitting


def test_stratified_split_sizes_stratification_and_determinism():
    labels = np.repeat(np.arange(4), [50, 30, 12, 8])
    tr, va, te = stratified_split(labels, 4, 0.1, 0.2, seed=3)
    assert (len(tr), len(va), len(te)) == (70, 10, 20)
    assert sorted(np.concatenate([tr, va, te])) == list(range(100))
    assert all(s.dtype == np.int64 for s in (tr, va, te))
    # proportional per class: 20% of 50/30/12/8 for test
    assert np.bincount(labels[te], minlength=4).tolist() == [10, 6, 2, 2]
    assert set(labels[tr]) == {0, 1, 2, 3}
    again = stratified_split(labels, 4, 0.1, 0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    other = stratified_split(labels, 4, 0.1, 0.2, seed=4)
    assert not np.array_equal(te, other[2])


def test_split_keeps_every_class_in_train_and_nonempty_validation():
    labels = np.array([0, 0, 1, 1, 1])
    tr, va, te = stratified_split(labels, 2, 0.05, 0.0, seed=0)
    assert len(va) == 1 and len(te) == 0 and set(labels[tr]) == {0, 1}
    assert stratified_split(labels, 2, 0.0, 0.0, seed=0)[1].size == 0
    with pytest.raises(DataError, match="validation_fraction"):
        stratified_split(np.array([0, 1]), 2, 0.5, 0.0, seed=0)


# ---------------------------------------------------------------------------
# digits


def test_embedded_digits():
    assert hashlib.sha256(DIGITS_PNG.read_bytes()).hexdigest() == (
        "60c917758ef97cc090f35cd8e293e4de691ef942847da0ff80dedab33d57c662"
    )
    images, labels = load_digits()
    assert images.shape == (5000, 20, 20, 1) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    assert labels[0] == 0 and labels[-1] == 9
    assert images[0].max() > 200 and images[0, 0, 0, 0] == 0  # a white digit on black

    ds = load_dataset(cfg(validation_fraction=0.1, test_fraction=0.1), channels=1)
    assert ds.name == "digits (embedded, 5000 images)"
    assert ds.class_names == tuple("0123456789")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (4000, 500, 500)
    assert np.bincount(ds.test.labels).tolist() == [50] * 10
    assert ds.train.paths is None and ds.train.images.shape == (4000, 20, 20, 1)
    assert ds.warnings == ()


def test_digits_inside_a_graph_context_and_rgb_warning(caplog):
    with tf.Graph().as_default(), caplog.at_level(logging.WARNING, "graphcnn.data"):
        ds = load_dataset(cfg(seed=1), channels=3)
    assert any("converted to RGB" in w for w in ds.warnings)
    assert any("converted to RGB" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------
# folder


def test_folder_single_tree_split_by_fractions(tmp_path):
    make_tree(tmp_path, {"covid_positive": 10, "covid_negative": 10})
    config = cfg(tmp_path, validation_fraction=0.2, test_fraction=0.2, seed=7)
    ds = load_dataset(config, channels=1)
    assert ds.class_names == ("covid_negative", "covid_positive")
    assert ds.name == f"folder {tmp_path}"
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (12, 4, 4)
    assert np.bincount(ds.validation.labels).tolist() == [2, 2]
    assert ds.train.images is None and ds.train.labels.dtype == np.int64
    assert len(set(all_paths(ds))) == 20 and all(os.path.isfile(p) for p in all_paths(ds))
    for split in (ds.train, ds.validation, ds.test):  # label matches the class folder
        assert all(Path(p).parent.name == ds.class_names[y] for p, y in zip(split.paths, split.labels))
    assert ds.source == "folder" and ds.scan is not None and len(ds.scan.images) == 20
    assert len(ds.warnings) == 1 and ds.warnings[0].startswith("small splits: validation 4 images, test 4 images")
    assert load_dataset(config, channels=1).test.paths == ds.test.paths


def test_folder_training_set_test_set_layout(tmp_path, caplog):
    make_tree(tmp_path / "training_set", {"cats": 6, "dogs": 6}, c=3, fmt="jpg")
    test_files = make_tree(tmp_path / "test_set", {"cats": 2, "dogs": 3}, c=3, fmt="jpg")
    write_jpeg(tmp_path / "single_prediction" / "cat_or_dog_1.jpg", image(c=3))
    with caplog.at_level(logging.WARNING, "graphcnn.data"):
        ds = load_dataset(cfg(tmp_path, validation_fraction=0.25, test_fraction=0.5), channels=1)
    assert ds.class_names == ("cats", "dogs")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (9, 3, 5)  # test_fraction unused
    assert set(ds.test.paths) == {str(p) for files in test_files.values() for p in files}
    assert ds.test.labels.tolist() == [0, 0, 1, 1, 1]
    assert any("single_prediction" in w for w in ds.warnings)
    gray = [w for w in ds.warnings if "converted to grayscale" in w]
    assert len(gray) == 1 and gray[0].startswith("17 RGB image(s)") and "model.channels=1" in gray[0]
    assert {r.getMessage() for r in caplog.records} == set(ds.warnings)


def test_a_file_in_both_the_training_and_the_test_tree_is_an_error(tmp_path):
    """The guard against a test accuracy measured on training images: a file reached from both
    trees (here a symbolic link) is named, with the tree it was found in."""
    make_tree(tmp_path / "training_set", {"cats": 4, "dogs": 4})
    make_tree(tmp_path / "test_set", {"cats": 2, "dogs": 2})
    leak = tmp_path / "test_set" / "cats" / "leaked.png"
    os.symlink(tmp_path / "training_set" / "cats" / "cats_00.png", leak)
    with pytest.raises(DataError, match=rf"1 file\(s\) are in both the training and the test tree:\n.*{leak}"):
        load_dataset(cfg(tmp_path, validation_fraction=0.25), channels=1)


def test_folder_separate_test_path_and_class_mismatch(tmp_path):
    make_tree(tmp_path / "train", {"a": 4, "b": 4})
    make_tree(tmp_path / "test", {"a": 2, "b": 2})
    ds = load_dataset(cfg(tmp_path / "train", test_path=str(tmp_path / "test"), validation_fraction=0.25), 1)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (6, 2, 4)
    make_tree(tmp_path / "test", {"c": 1})
    with pytest.raises(DataError, match=r"only in the test tree: c"):
        load_dataset(cfg(tmp_path / "train", test_path=str(tmp_path / "test")), 1)


def test_bad_and_converted_files_are_reported_by_name(tmp_path, caplog):
    make_tree(tmp_path, {"a": 4, "b": 4})
    empty = tmp_path / "a" / "empty.png"
    empty.write_bytes(b"")
    truncated_jpg = tmp_path / "a" / "truncated.jpg"
    truncated_jpg.write_bytes(_encode(tf.io.encode_jpeg, image(16, 16, 3))[:300])
    truncated_png = tmp_path / "b" / "truncated.png"
    truncated_png.write_bytes(_encode(tf.io.encode_png, image(16, 16, 3))[:-20])
    text = tmp_path / "b" / "notes_really.jpg"
    text.write_text("this is not a JPEG\n")
    skipped = tmp_path / "b" / "labels.csv"
    skipped.write_text("x,y\n")
    deep = write_png(tmp_path / "a" / "deep16.png", image(c=1, dtype=np.uint16))
    rgba = write_png(tmp_path / "b" / "alpha.png", image(c=4))
    gray_alpha = write_png(tmp_path / "a" / "gray_alpha.png", image(c=2))
    anim = tmp_path / "b" / "anim.gif"
    anim.write_bytes(gif_bytes([np.eye(4, dtype=int), 1 - np.eye(4, dtype=int)]))

    with caplog.at_level(logging.WARNING, "graphcnn.data"):
        ds = load_dataset(cfg(tmp_path, validation_fraction=0.2, test_fraction=0.2), channels=1)
    text_of = "\n".join(ds.warnings)
    bad_warning = next(w for w in ds.warnings if "cannot be decoded" in w)
    assert bad_warning.startswith("4 image file(s)")
    for bad in (empty, truncated_jpg, truncated_png, text):
        assert str(bad) in bad_warning
        assert str(bad) not in all_paths(ds)
    assert f"{empty}: empty file (0 bytes)" in bad_warning
    assert str(skipped) in text_of
    assert any(str(deep) in w and "16-bit" in w for w in ds.warnings)
    alpha_warning = next(w for w in ds.warnings if "alpha channel will be dropped" in w)
    assert str(rgba) in alpha_warning and str(gray_alpha) in alpha_warning
    assert any(str(anim) in w and "first frame" in w for w in ds.warnings)
    for kept in (deep, rgba, gray_alpha, anim):
        assert str(kept) in all_paths(ds)
    assert len(all_paths(ds)) == 8 + 4
    assert f"{truncated_jpg}: truncated JPEG" in bad_warning and f"{truncated_png}: truncated PNG" in bad_warning
    assert {r.getMessage() for r in caplog.records} == set(ds.warnings)


def test_strict_mode_raises_with_every_bad_name(tmp_path):
    make_tree(tmp_path, {"a": 3, "b": 3})
    bad = [tmp_path / "a" / "zero.png", tmp_path / "b" / "text.jpg", tmp_path / "b" / "cut.jpg"]
    bad[0].write_bytes(b"")
    bad[1].write_text("hello")
    bad[2].write_bytes(_encode(tf.io.encode_jpeg, image(16, 16, 1))[:-50])
    with pytest.raises(DataError) as info:
        load_dataset(cfg(tmp_path, strict=True), channels=1)
    assert "3 image file(s)" in str(info.value)
    assert all(str(p) in str(info.value) for p in bad)


def test_empty_and_all_bad_class_folders(tmp_path):
    make_tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class"):
        load_dataset(cfg(tmp_path), channels=1)
    (tmp_path / "empty_class" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"class folder .*empty_class: none of its 1 image file\(s\)"):
        load_dataset(cfg(tmp_path), channels=1)


def test_single_class_is_an_error(tmp_path):
    make_tree(tmp_path, {"only": 3})
    with pytest.raises(DataError, match="only one class"):
        load_dataset(cfg(tmp_path), channels=1)
    with pytest.raises(DataError, match="only one class"):
        _write_npz(tmp_path / "one.npz", images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, int))
        load_dataset(cfg(tmp_path / "one.npz"), channels=1)


def test_model_classes_allow_one_class_and_check_names_before_decoding(tmp_path, monkeypatch):
    make_tree(tmp_path / "one", {"b": 3})
    ds = load_dataset(cfg(tmp_path / "one", validation_fraction=0.0, test_fraction=0.0), 1, model_classes=("a", "b"))
    assert ds.class_names == ("b",) and len(ds.train) == 3
    assert not any("small splits" in w for w in ds.warnings)  # an evaluation states its own margin
    make_tree(tmp_path / "zoo", {"a": 2, "gnu": 2})
    monkeypatch.setattr(scan, "scan_images", lambda *a, **k: pytest.fail("decoded before the names were checked"))
    with pytest.raises(DataError, match=r"class gnu is not among the model's classes \(a, b\); the model's classes "
                                        r"not in this data: b"):
        load_dataset(cfg(tmp_path / "zoo"), 1, model_classes=("a", "b"))
    path = _write_npz(tmp_path / "x.npz", images=np.zeros((4, 5, 5), np.uint8), labels=np.array(["a", "c"] * 2))
    with pytest.raises(DataError, match="class c is not among the model's classes"):
        load_dataset(cfg(path), 1, model_classes=("a", "b"))


def test_folder_problems_are_collected_into_one_error(tmp_path, caplog):
    make_tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(b"")
    (tmp_path / "b" / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING, "graphcnn.data"), pytest.raises(DataError) as info:
        load_dataset(cfg(tmp_path, strict=True), channels=1)
    err = info.value
    assert len(err.errors) == 3  # the empty folder, the strict bad file, the folder with no readable file
    assert "class folder" in err.errors[0] and "c has no image files" in err.errors[0]
    assert "1 image file(s) cannot be decoded (data.strict=true)" in err.errors[1]
    assert "none of its 1 image file(s) can be decoded" in err.errors[2]
    assert len(err.warnings) == 1 and "notes.txt" in err.warnings[0]
    assert err.summary == f"{tmp_path}: 3 problems stop training, 1 warning"
    assert str(err).splitlines()[0] == f"{err.summary} (`graphcnn data {tmp_path}` writes this report to a file):"
    assert err.class_counts == {"a": 3, "b": 3, "c": 0, "d": 0} and set(err.scan.bad) == {str(tmp_path / "d" / "x.png")}
    assert not caplog.records  # a failed load reports its warnings in the error, not twice
    with pytest.raises(DataError) as info:  # evaluating a trained model: it is not training that stops
        load_dataset(cfg(tmp_path, strict=True), channels=1, model_classes=("a", "b", "c", "d"))
    assert info.value.summary == f"{tmp_path}: 3 problems stop the evaluation, 1 warning"


def test_scan_in_graph_mode_and_truncation_fails_decode(tmp_path):
    good = write_png(tmp_path / "good.png", image(c=3))
    png = _encode(tf.io.encode_png, image(16, 16, 3))
    jpg = _encode(tf.io.encode_jpeg, image(16, 16, 3))
    cut_png, cut_jpg = tmp_path / "cut.png", tmp_path / "cut.jpg"
    cut_png.write_bytes(png[:-12])  # just the IEND chunk missing
    cut_jpg.write_bytes(jpg[:-2])  # just the EOI marker missing
    missing = str(tmp_path / "missing.png")
    with tf.Graph().as_default():
        result = scan.scan_images([str(good), str(cut_png), str(cut_jpg), missing])
    assert set(result.images) == {str(good)}
    assert result.images[str(good)].channels == 3 and result.images[str(good)].frames == 1
    assert set(result.bad) == {str(cut_png), str(cut_jpg), missing}
    assert "Invalid PNG data" in result.bad[str(cut_png)]
    assert "JPEG" in result.bad[str(cut_jpg)]


def test_scan_reports_truncated_gif(tmp_path):
    frames = [np.eye(4, dtype=int), 1 - np.eye(4, dtype=int)]
    cut = tmp_path / "cut.gif"
    cut.write_bytes(gif_bytes(frames)[:-10])  # second frame cut short: TF still decodes frame 1
    result = scan.scan_images([str(cut)])
    assert result.images[str(cut)].gif_truncated
    assert any(str(cut) in w and "truncated" in w for w in scan.conversion_warnings(result.images, 3))


def test_scan_keeps_each_file_as_the_training_pipeline_decodes_it(tmp_path):
    from graphcnn.data.pipeline import decode_file

    files = [write_jpeg(tmp_path / "rgb.jpg", image(20, 14, 3)), write_jpeg(tmp_path / "gray.jpg", image(9, 9, 1)),
             write_png(tmp_path / "gray.png", image(7, 11, 1)), write_png(tmp_path / "rgba.png", image(8, 8, 4)),
             write_png(tmp_path / "gray_alpha.png", image(5, 6, 2)),
             write_png(tmp_path / "deep.png", image(6, 6, 3, dtype=np.uint16))]
    (tmp_path / "anim.gif").write_bytes(gif_bytes([np.eye(4, dtype=int), 1 - np.eye(4, dtype=int)]))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    paths = [str(f) for f in files] + [str(tmp_path / "anim.gif"), str(tmp_path / "bad.png")]
    for channels in (1, 3):
        result = scan.scan_images(paths, fit=(6, 5, channels))
        assert result.pixels.shape == (len(paths), 6, 5, channels) and result.pixels.dtype == np.uint8
        assert set(result.rows) == set(paths[:-1]) and set(result.bad) == {paths[-1]}
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
            path = tf.compat.v1.placeholder(tf.string, [])
            decoded = decode_file(path, 6, 5, channels)
            for p in paths[:-1]:  # bit for bit what training would have decoded from the file
                np.testing.assert_array_equal(result.pixels[result.rows[p]], session.run(decoded, {path: p}),
                                              err_msg=f"{p}, {channels} channels")
    assert scan.scan_images(paths).pixels is None


def _pillow(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(array)
    (picture.convert(mode) if mode else picture).save(path)
    return path


def test_bmps_and_cmyk_jpegs_decode_for_a_grayscale_model(tmp_path):
    """The decoder refuses one channel for every BMP and for CMYK JPEGs: they are decoded at
    their own channels and made gray, as Pillow's "L" makes them (within rounding)."""
    from PIL import Image

    from graphcnn.data.pipeline import decode_file

    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    files = [_pillow(tmp_path / "rgb.bmp", rgb), _pillow(tmp_path / "rgba.bmp", rgb, "RGBA"),
             _pillow(tmp_path / "gray.bmp", rgb[..., 0]), _pillow(tmp_path / "cmyk.jpg", rgb, "CMYK")]
    paths = [str(f) for f in files]
    result = scan.scan_images(paths, fit=(6, 7, 1))
    assert not result.bad and set(result.rows) == set(paths)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        path = tf.compat.v1.placeholder(tf.string, [])
        decoded = decode_file(path, 6, 7, 1)
        for p in paths:
            gray = session.run(decoded, {path: p})
            np.testing.assert_array_equal(result.pixels[result.rows[p]], gray)
            expected = np.asarray(Image.open(p).convert("L"), np.int64)
            assert np.abs(gray[..., 0].astype(np.int64) - expected).max() <= 2, p
    np.testing.assert_array_equal(result.pixels[result.rows[paths[2]]][..., 0], rgb[..., 0])  # gray kept exactly
    info = scan.scan_images([paths[3]]).images[paths[3]]
    assert info.cmyk and scan.mode_name(info) == "CMYK"
    (warning,) = [w for w in scan.conversion_warnings(result.images, 1) if "CMYK" in w]
    assert paths[3] in warning and "alpha" not in warning
    alpha = next(w for w in scan.conversion_warnings(result.images, 1) if "alpha" in w)
    assert paths[1] in alpha and paths[3] not in alpha


def test_jpegs_with_an_exif_rotation_are_named(tmp_path):
    """TensorFlow's decoder ignores EXIF orientation (as Keras's loader does): a phone photo
    taken sideways trains as stored. Named with what to do, wherever the EXIF segment is (first,
    after JFIF's, after a comment); orientation 1, a JPEG without EXIF and a PNG are not."""
    import io

    from PIL import Image

    from conftest import jpeg_segments

    make_tree(tmp_path / "data", {"a": 3, "b": 3}, c=3)
    rgb = np.random.default_rng(2).integers(0, 256, (6, 9, 3), dtype=np.uint8)

    def jpeg(name, orientation=None, jfif=True, comment=b""):
        exif = Image.Exif()
        if orientation is not None:
            exif[0x0112] = orientation
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", exif=exif if orientation is not None else b"")
        path = tmp_path / "data" / "a" / name
        path.write_bytes(jpeg_segments(buf.getvalue(), jfif, comment))
        return str(path)

    turned, mirrored = jpeg("turned.jpg", 6), jpeg("mirrored.jpg", 2, jfif=False)
    commented = jpeg("commented.jpg", 8, comment=b"scanned")
    upright, plain = jpeg("upright.jpg", 1), jpeg("plain.jpg")
    files = (turned, mirrored, commented, upright, plain)
    infos = scan.scan_images(files).images
    assert [infos[p].exif for p in files] == [True, True, True, True, False]
    assert [scan.exif_orientation(p) for p in files] == [6, 2, 8, 1, 1]
    ds = load_dataset(cfg(tmp_path / "data", validation_fraction=0.2, test_fraction=0.2), channels=3)
    (warning,) = [w for w in ds.warnings if "EXIF" in w]
    assert warning.startswith("3 image file(s) are JPEGs whose EXIF orientation says they are rotated or mirrored")
    assert "ImageOps.exif_transpose" in warning
    assert sorted(line.strip() for line in warning.splitlines()[1:]) == sorted([commented, mirrored, turned])


def test_jpegs_cut_short_with_an_end_marker_are_named(tmp_path):
    """libjpeg decodes a baseline JPEG cut short and given an end marker without an error, its
    missing lower part mid-grey (128): the scan names it (RGB and grayscale models, header-only
    and decoding scans), an intact JPEG is not named, and a PNG ending in that grey is not a JPEG."""
    from PIL import Image

    from conftest import cut_jpeg

    make_tree(tmp_path / "data", {"a": 3, "b": 3}, c=3)
    rng = np.random.default_rng(3)
    picture = np.clip(rng.normal(60, 30, (48, 64, 3)), 0, 255).astype(np.uint8)  # no row of it is 128
    cut = cut_jpeg(tmp_path / "data" / "a" / "cut.jpg", picture)
    intact = cut_jpeg(tmp_path / "data" / "a" / "intact.jpg", picture, keep=1.0)
    grey_png = tmp_path / "data" / "b" / "grey_bottom.png"
    Image.fromarray(np.concatenate([picture[:40], np.full((8, 64, 3), 128, np.uint8)])).save(grey_png)
    files = [cut, intact, str(grey_png)]
    for fit in (None, (16, 16, 3), (16, 16, 1)):
        infos = scan.scan_images(files, fit=fit).images
        assert [infos[p].grey_end for p in files] == [True, False, False], fit
    for channels in (3, 1):
        ds = load_dataset(cfg(tmp_path / "data", validation_fraction=0.2, test_fraction=0.2), channels=channels)
        (warning,) = [w for w in ds.warnings if "mid-grey" in w]
        assert warning.startswith("1 image file(s) are JPEGs whose last 8 rows are all exactly mid-grey (128)")
        assert [line.strip() for line in warning.splitlines()[1:]] == [cut]


def test_a_bmp_with_a_colour_table_is_a_bad_file(tmp_path):
    """TensorFlow decodes an 8-bit BMP's palette indices as gray levels: a colour one is named
    as a bad file (training) and an unreadable one (predict), a gray ramp one is fine."""
    rgb = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    make_tree(tmp_path / "data", {"a": 3, "b": 3}, c=3)
    colour = _pillow(tmp_path / "data" / "a" / "palette.bmp", rgb, "P")
    gray = _pillow(tmp_path / "data" / "b" / "gray8.bmp", rgb[..., 1])
    ds = load_dataset(cfg(tmp_path / "data", validation_fraction=0.2, test_fraction=0.2), channels=3)
    bad = next(w for w in ds.warnings if "cannot be decoded" in w)
    assert f"{colour}: BMP with a colour table" in bad and str(gray) not in bad
    assert str(colour) not in all_paths(ds) and str(gray) in all_paths(ds)


def test_webps_animated_ones_and_one_bit_bmps(tmp_path):
    """An animated WebP made TensorFlow's decoder corrupt the heap (the process aborted, no file
    named); a WebP with alpha was refused three channels ("Number of channels requested does not
    match input") everywhere but the scan; a 1-bit BMP failed with "... must be 1, 3 or 4, was 0".
    Now: the first and last are bad files that say what to do, the others read as Pillow reads them."""
    from PIL import Image

    from graphcnn.data import formats

    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    alpha = np.dstack([rgb, np.full((8, 9, 1), 77, np.uint8)])
    make_tree(tmp_path / "data", {"a": 3, "b": 3}, c=3)
    still = tmp_path / "data" / "a" / "rgba.webp"
    Image.fromarray(alpha).save(still, lossless=True)
    plain = tmp_path / "data" / "b" / "rgb.webp"
    Image.fromarray(rgb).save(plain, lossless=True)
    animated = tmp_path / "data" / "a" / "animated.webp"
    Image.fromarray(rgb).save(animated, save_all=True, append_images=[Image.fromarray(255 - rgb)], lossless=True)
    one_bit = _pillow(tmp_path / "data" / "b" / "mono.bmp", rgb[..., 0] > 128)
    for channels in (3, 1):
        ds = load_dataset(cfg(tmp_path / "data", validation_fraction=0.2, test_fraction=0.2),
                          channels=channels, size=(8, 9))
        bad = next(w for w in ds.warnings if "cannot be decoded" in w)
        assert f"{animated}: {formats.ANIMATED_WEBP}" in bad and f"{one_bit}: {formats.COLOUR_TABLE_BMP}" in bad
        kept = {**dict(zip(ds.train.paths, ds.train.images)), **dict(zip(ds.validation.paths, ds.validation.images)),
                **dict(zip(ds.test.paths, ds.test.images))}
        for f, array in ((still, rgb), (plain, rgb)):
            want = np.asarray(Image.fromarray(array).convert("RGB" if channels == 3 else "L"), np.int16)
            assert np.abs(kept[str(f)].astype(np.int16).reshape(want.shape) - want).max() <= 1, (f, channels)


def test_hidden_files_and_symlinked_duplicates(tmp_path):
    """Hidden files (macOS's ._x.png) are skipped; a file reached twice in one class is used
    once (it could land in two splits); a file in two classes is an error naming both."""
    make_tree(tmp_path, {"a": 4, "b": 4})
    apple = tmp_path / "a" / "._a_00.png"
    apple.write_bytes(b"\x00\x05\x16\x07 resource fork")
    (tmp_path / "a" / "more").mkdir()
    os.symlink(tmp_path / "a" / "a_00.png", tmp_path / "a" / "more" / "same.png")
    ds = load_dataset(cfg(tmp_path, validation_fraction=0.25, test_fraction=0.25), channels=1)
    assert str(apple) not in all_paths(ds) and len(all_paths(ds)) == 8
    assert any(str(apple) in w and "skipped" in w for w in ds.warnings)
    again = next(w for w in ds.warnings if "second time" in w)
    assert str(tmp_path / "a" / "more" / "same.png") in again
    os.symlink(tmp_path / "a", tmp_path / "a" / "more" / "loop")  # a link back up: read once, and said (was silent)
    ds = load_dataset(cfg(tmp_path, validation_fraction=0.25, test_fraction=0.25), channels=1)
    assert len(all_paths(ds)) == 8
    again = next(w for w in ds.warnings if "second time" in w)
    assert "2 file(s) or folder(s) reached a second time" in again and str(tmp_path / "a" / "more" / "loop") in again
    (tmp_path / "a" / "more" / "loop").unlink()
    os.symlink(tmp_path / "a" / "a_01.png", tmp_path / "b" / "stolen.png")
    with pytest.raises(DataError) as info:
        load_dataset(cfg(tmp_path), channels=1)
    assert f"{tmp_path / 'a' / 'a_01.png'} = {tmp_path / 'b' / 'stolen.png'}" in str(info.value)


def test_hard_links_a_links_name_and_a_macos_archive_folder(tmp_path):
    """A hard link was a second file: counted twice in one class (possibly in two splits) and in
    two classes without a word. A link sorting before its target was the name kept (the target
    was listed as read a second time). ``__MACOSX/`` (macOS zip metadata) was a class."""
    make_tree(tmp_path, {"a": 4, "b": 4})
    os.link(tmp_path / "a" / "a_00.png", tmp_path / "a" / "a_09.png")
    os.symlink(tmp_path / "a" / "a_03.png", tmp_path / "a" / "a_02_link.png")  # sorts before a_03.png
    (tmp_path / "__MACOSX" / "a").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "a" / "._a_00.png").write_bytes(b"\x00\x05\x16\x07")
    ds = load_dataset(cfg(tmp_path, validation_fraction=0.25, test_fraction=0.25), channels=1)
    assert ds.class_names == ("a", "b") and len(all_paths(ds)) == 8
    assert str(tmp_path / "a" / "a_03.png") in all_paths(ds)
    again = next(w for w in ds.warnings if "second time" in w)
    assert str(tmp_path / "a" / "a_09.png") in again and str(tmp_path / "a" / "a_02_link.png") in again
    assert any(str(tmp_path / "__MACOSX") in w and "hidden" in w for w in ds.warnings)
    os.link(tmp_path / "a" / "a_01.png", tmp_path / "b" / "hard.png")
    with pytest.raises(DataError) as info:
        load_dataset(cfg(tmp_path), channels=1)
    assert f"{tmp_path / 'a' / 'a_01.png'} = {tmp_path / 'b' / 'hard.png'}" in str(info.value)


def test_fifos_are_skipped_broken_links_named_and_webp_read(tmp_path):
    """A FIFO named x.jpg would block the scan forever: skipped and listed. A broken link is a
    bad file by name. WebP, which TensorFlow decodes, is an image extension."""
    from PIL import Image

    make_tree(tmp_path, {"a": 4, "b": 4})
    os.mkfifo(tmp_path / "a" / "pipe.jpg")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "b" / "broken.png")
    Image.fromarray(image(c=3)).save(tmp_path / "b" / "web.webp")
    ds = load_dataset(cfg(tmp_path, validation_fraction=0.25, test_fraction=0.25), channels=1)
    assert str(tmp_path / "b" / "web.webp") in all_paths(ds) and len(all_paths(ds)) == 9
    assert any(str(tmp_path / "a" / "pipe.jpg") in w and "skipped" in w for w in ds.warnings)
    assert any(str(tmp_path / "b" / "broken.png") in w for w in ds.warnings)


def test_split_folders_are_refused_with_the_folders_to_give(tmp_path):
    for split in ("train", "val", "test"):
        make_tree(tmp_path / split, {"cats": 2, "dogs": 2})
    with pytest.raises(DataError, match=rf"^{tmp_path}: holds the splits train/, val/, test/, not classes: give "
                                        rf"--data {tmp_path / 'train'} \(its class folders\) and --set "
                                        rf"data.test_path={tmp_path / 'test'};"):
        load_dataset(cfg(tmp_path), channels=1)
    ds = load_dataset(cfg(tmp_path / "train", test_path=str(tmp_path / "test")), channels=1)
    assert ds.class_names == ("cats", "dogs") and len(ds.test) == 4


def test_graphcnn_output_inside_the_data_folder_is_no_class(tmp_path):
    """`graphcnn data .` and `graphcnn train --data .` run from inside the data folder write
    data_check/ and logs/ there: the next read skips them (named) instead of training on them."""
    make_tree(tmp_path, {"a": 4, "b": 4})
    write_png(tmp_path / "data_check" / "samples.png", image(c=3))
    (tmp_path / "data_check" / "data_report.txt").write_text("report")
    (tmp_path / "logs" / "run1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "logs" / "run1" / "config.json").write_text("{}")
    write_png(tmp_path / "logs" / "run1" / "examples" / "x.png", image())
    (tmp_path / "logs" / "run2").mkdir()
    (tmp_path / "logs" / "run2" / ".lock").write_text("1 host")
    ds = load_dataset(cfg(tmp_path, validation_fraction=0.25, test_fraction=0.25), channels=1)
    assert ds.class_names == ("a", "b")
    skipped = next(w for w in ds.warnings if "graphcnn's own output" in w)
    assert str(tmp_path / "data_check") in skipped and str(tmp_path / "logs") in skipped


def test_folder_images_that_fit_in_memory_are_kept_from_the_scan(tmp_path, monkeypatch):
    make_tree(tmp_path, {"a": 6, "b": 6}, c=3, fmt="jpg")
    config = cfg(tmp_path, validation_fraction=0.25, test_fraction=0.25)
    on_disk = load_dataset(config, channels=3)
    kept = load_dataset(config, channels=3, size=(4, 5))
    for files, arrays in zip((on_disk.train, on_disk.validation, on_disk.test),
                             (kept.train, kept.validation, kept.test)):
        assert files.images is None and arrays.paths == files.paths  # the same split, files named
        assert arrays.images.shape == (len(files), 4, 5, 3) and arrays.labels.tolist() == files.labels.tolist()
    assert kept.scan.pixels is None  # the splits hold the only copy
    assert load_dataset(dataclasses.replace(config, cache="none"), channels=3, size=(4, 5)).train.images is None
    monkeypatch.setattr(folders, "KEEP_DECODED_BYTES", 12 * 4 * 5 * 3 - 1)  # auto: just too big
    assert load_dataset(config, channels=3, size=(4, 5)).train.images is None
    assert load_dataset(dataclasses.replace(config, cache="memory"), channels=3, size=(4, 5)).train.images is not None


# ---------------------------------------------------------------------------
# idx


def _idx(path: Path, array: np.ndarray, magic: int, compress: bool) -> Path:
    data = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _idx_set(folder: Path, prefix: str, n: int, k: int = 3, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    images = RNG.integers(0, 256, (n, 6, 5), dtype=np.uint8)
    _idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x803, compress)
    _idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % k).astype(np.uint8), 0x801, compress)


def test_idx_train_and_t10k(tmp_path):
    _idx_set(tmp_path, "train", 30, compress=True)
    _idx_set(tmp_path, "t10k", 9, compress=False)
    assert detect_source(str(tmp_path)) == "idx"
    ds = load_dataset(cfg(tmp_path, validation_fraction=0.2), channels=1)
    assert ds.class_names == ("0", "1", "2")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (24, 6, 9)
    assert ds.train.images.shape == (24, 6, 5, 1) and ds.train.images.dtype == np.uint8
    assert np.bincount(ds.validation.labels).tolist() == [2, 2, 2]
    assert ds.test.labels.tolist() == [0, 1, 2] * 3


def test_idx_fashion_names_and_split_without_test(tmp_path):
    _idx_set(tmp_path / "fashion-mnist", "train", 40, k=10)
    ds = load_dataset(cfg(tmp_path / "fashion-mnist", validation_fraction=0.25, test_fraction=0.25), 1)
    assert ds.class_names[0] == "T-shirt/top" and len(ds.class_names) == 10
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (20, 10, 10)


def test_idx_wrong_magic_and_count_mismatch(tmp_path):
    _idx_set(tmp_path, "train", 10)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    _idx(images, np.zeros((10, 4, 4), np.uint8), 0x801, True)
    expected = r"train-images-idx3-ubyte\.gz: IDX magic number is 0x00000801, expected 0x00000803"
    with pytest.raises(DataError, match=expected):
        load_dataset(cfg(tmp_path, source="idx"), 1)
    _idx(images, np.zeros((12, 4, 4), np.uint8), 0x803, True)
    with pytest.raises(DataError, match=r"12 images in .*train-images.* but 10 labels in .*train-labels"):
        load_dataset(cfg(tmp_path), 1)
    raw = tmp_path / "bad-size"
    raw.write_bytes(struct.pack(">IIII", 0x803, 2, 3, 3) + bytes(10))
    with pytest.raises(DataError, match="bad-size: header dims"):
        read_idx(raw, 0x803)


# ---------------------------------------------------------------------------
# npz


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_keras_layout(tmp_path):
    path = _write_npz(
        tmp_path / "mnist.npz",
        x_train=RNG.integers(0, 256, (20, 7, 7), dtype=np.uint8), y_train=np.arange(20) % 2,
        x_test=RNG.integers(0, 256, (6, 7, 7), dtype=np.uint8), y_test=np.arange(6) % 2,
    )
    ds = load_dataset(cfg(path, validation_fraction=0.1), channels=1)
    assert ds.name == f"npz {path}" and ds.class_names == ("0", "1")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (18, 2, 6)
    assert ds.test.images.shape == (6, 7, 7, 1)
    # the test set is the file's own: only the validation fraction can be changed
    assert ds.warnings == ("small splits: validation 2 images, test 6 images: an accuracy measured on so few images "
                           "is uncertain by up to +/-69.3 / +/-40.0 points (95% interval); within +/-5 points needs at "
                           "least 385 images per split. For a sharper measure use more images, or larger splits: "
                           "--set data.validation_fraction=... (now 0.1)",)


def test_npz_float_one_hot_and_class_names(tmp_path, caplog):
    images = RNG.random((12, 5, 5, 3)).astype(np.float32)  # in [0, 1]
    labels = np.eye(3)[np.arange(12) % 3]
    path = _write_npz(tmp_path / "pool.npz", images=images, labels=labels, class_names=np.array(["x", "y", "z"]))
    with caplog.at_level(logging.WARNING, "graphcnn.data"):
        ds = load_dataset(cfg(path, validation_fraction=0.25, test_fraction=0.25), channels=3)
    assert ds.class_names == ("x", "y", "z")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (6, 3, 3)
    assert ds.train.images.dtype == np.uint8 and ds.train.images.shape[1:] == (5, 5, 3)
    assert any("[images]" in w and "float32" in w and "multiplied by 255" in w for w in ds.warnings)
    assert caplog.records


def test_npz_bad_labels_and_keys(tmp_path):
    x = np.zeros((6, 4, 4), np.uint8)
    path = _write_npz(tmp_path / "d.npz", X=x, y=np.array([0, 1, 2, 0, 1, 5]), class_names=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match=r"d\.npz\[y\]: label 5 is outside \[0, 3\)"):
        load_dataset(cfg(path), 1)
    path = _write_npz(tmp_path / "e.npz", X=x, y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match=r"6 images in .*e\.npz\[X\] but 3 labels in .*e\.npz\[y\]"):
        load_dataset(cfg(path), 1)
    path = _write_npz(tmp_path / "g.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x[:2, :3], y_test=[0, 1])
    with pytest.raises(DataError, match=r"test images in .*g\.npz\[x_test\] are 3x4x1 .*g\.npz\[x_train\] are 4x4x1"):
        load_dataset(cfg(path), 1)
    path = _write_npz(tmp_path / "f.npz", data=x)
    with pytest.raises(DataError, match=r"f\.npz: found keys data; expected x_train"):
        load_dataset(cfg(path), 1)


def test_a_class_missing_from_the_validation_or_test_split_is_warned_about(tmp_path):
    """2 images of one class among 33: the split gives it none to validate or test on; the
    imbalance was flagged, not that the class is never measured."""
    labels = np.array([0] * 31 + [1] * 2)
    path = _write_npz(tmp_path / "d.npz", images=np.zeros((33, 4, 4), np.uint8), labels=labels,
                      class_names=np.array(["common", "rare"]))
    ds = load_dataset(cfg(path, validation_fraction=0.1, test_fraction=0.1), 1)
    assert 1 not in ds.validation.labels and 1 not in ds.test.labels
    for split in ("validation", "test"):
        assert sum(w.startswith(f"the {split} split has no image of 1 class: rare (2 images); {split} accuracy never "
                                "measures it") for w in ds.warnings) == 1, ds.warnings
    balanced = _write_npz(tmp_path / "b.npz", images=np.zeros((40, 4, 4), np.uint8), labels=np.arange(40) % 2)
    assert not [w for w in load_dataset(cfg(balanced, validation_fraction=0.1, test_fraction=0.1), 1).warnings
                if "has no image of" in w]


def test_npz_files_that_are_not_whole_npz_archives_are_named(tmp_path):
    """A .npz cut short was `BadZipFile: File is not a zip file` (exit 1, no file named), and any
    other file numpy took for a pickle ("holds object arrays")."""
    whole = _write_npz(tmp_path / "whole.npz", X=np.zeros((40, 28, 28), np.uint8), y=np.arange(40) % 2)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"cut\.npz: not a readable \.npz file .*is it complete"):
        load_dataset(cfg(cut), 1)
    text = tmp_path / "text.npz"
    text.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"text\.npz: not a \.npz file \(a \.npz is a zip archive"):
        load_dataset(cfg(text), 1)
    array = tmp_path / "array.npz"
    with open(array, "wb") as f:
        np.save(f, np.zeros((2, 3), np.uint8))
    with pytest.raises(DataError, match=r"array\.npz: is one \.npy array, not a \.npz archive"):
        load_dataset(cfg(array), 1)


# ---------------------------------------------------------------------------
# pickle


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def test_pickle_pair(tmp_path, caplog):
    _pickle(tmp_path / "X.pickle", RNG.integers(0, 256, (10, 6, 6, 1), dtype=np.uint8))
    _pickle(tmp_path / "y.pickle", [0, 1] * 5)
    trusted = dict(source="pickle", trust_pickle=True, validation_fraction=0.2, test_fraction=0.2)
    with caplog.at_level(logging.WARNING, logger="graphcnn.data"):
        ds = load_dataset(cfg(tmp_path / "X.pickle", **trusted), 1)
    assert ds.class_names == ("0", "1") and ds.train.images.shape == (6, 6, 6, 1)
    assert (len(ds.validation), len(ds.test)) == (2, 2)
    assert "unpickling" in caplog.text and "X.pickle" in caplog.text  # loading pickles is always logged


class _Boom:
    """Unpickling this runs code: what auto-detection must never do."""

    def __reduce__(self):
        return (os.system, ("touch unpickled-by-auto",))


@pytest.mark.parametrize("path", ["folder", "X.pickle"])
def test_auto_never_unpickles_and_says_how_to_opt_in(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    _pickle(tmp_path / "X.pickle", _Boom())
    _pickle(tmp_path / "y.pickle", [0, 1])
    target = tmp_path if path == "folder" else tmp_path / path
    for check in (lambda: detect_source(str(target)), lambda: load_dataset(cfg(target), 1)):
        with pytest.raises(DataError) as info:
            check()
        message = str(info.value)
        assert str(target) in message and 'data.source = "pickle"' in message and "data.trust_pickle = true" in message
    assert not (tmp_path / "unpickled-by-auto").exists()


def test_pickle_source_needs_trust_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _pickle(tmp_path / "X.pickle", _Boom())
    _pickle(tmp_path / "y.pickle", [0, 1])
    with pytest.raises(DataError, match=r"data\.trust_pickle = true"):
        load_dataset(cfg(tmp_path, source="pickle"), 1)
    assert not (tmp_path / "unpickled-by-auto").exists()
    assert DataConfig().trust_pickle is False


def test_pickle_count_mismatch_names_both_files(tmp_path):
    _pickle(tmp_path / "X.pickle", np.zeros((5, 4, 4), np.uint8))
    _pickle(tmp_path / "y.pickle", [0, 1, 0])
    with pytest.raises(DataError) as info:
        load_dataset(cfg(tmp_path, source="pickle", trust_pickle=True), 1)
    message = str(info.value)
    assert f"5 images in {tmp_path / 'X.pickle'}" in message and f"3 labels in {tmp_path / 'y.pickle'}" in message


# ---------------------------------------------------------------------------
# auto-detection


def test_auto_detection(tmp_path):
    assert detect_source("") == "digits"
    make_tree(tmp_path / "tree", {"a": 1, "b": 1})
    assert detect_source(str(tmp_path / "tree")) == "folder"
    assert detect_source(str(_write_npz(tmp_path / "a.npz", X=np.zeros(1)))) == "npz"
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=r"nothing: looked for X\.pickle \+ y\.pickle, \*-idx3-ubyte"):
        detect_source(str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(cfg(tmp_path / "absent"), 1)


def test_split_requires_exactly_one_of_images_paths():
    with pytest.raises(ValueError):
        Split(np.zeros(2, np.int64))
    assert len(Split(np.array([0, 1]), paths=("a", "b"))) == 2


def test_unknown_source_is_a_data_error_listing_the_registered_ones():
    assert tuple(SOURCES) == ("digits", "folder", "idx", "npz", "pickle")
    with pytest.raises(DataError, match=r"^data.source: unknown source 'hdf5'; choices: auto, digits, folder, idx, "
                                        r"npz, pickle$"):
        load_dataset(DataConfig(source="hdf5", path="/nowhere"), channels=1)


def test_a_new_source_of_file_paths_gets_the_scan(tmp_path, monkeypatch):
    """A source added to SOURCES that returned paths skipped the scan: a bad file passed `graphcnn
    data` and failed training mid-run in the input pipeline (exit 1, no file named)."""
    from graphcnn.data import sources

    files = make_tree(tmp_path, {"a": 4, "b": 4})
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(b"not a png")
    listed = [*files["a"], bad, *files["b"]]

    def listing(config, channels, warnings):  # a source that lists files (a CSV, say): every 3rd is validation
        labels = np.array([0] * 5 + [1] * 4, np.int64)
        train, validation = ([i for i in range(9) if (i % 3 == 1) == want] for want in (False, True))
        return Dataset("listing", ("a", "b"), *(Split(labels[ix], paths=[str(listed[i]) for i in ix])
                                                for ix in (train, validation)), Split(np.zeros(0, np.int64), paths=()))

    monkeypatch.setitem(sources.SOURCES, "listing", listing)
    ds = load_dataset(cfg(tmp_path, source="listing"), channels=1)
    assert str(bad) not in all_paths(ds) and len(all_paths(ds)) == 8
    assert any(str(bad) in w and "cannot be decoded" in w for w in ds.warnings)
    assert list(ds.train.labels) == [0 if "/a/" in p else 1 for p in ds.train.paths]
    with pytest.raises(DataError, match="cannot be decoded"):
        load_dataset(cfg(tmp_path, source="listing", strict=True), channels=1)


@pytest.mark.parametrize("slow", [False, True], ids=["serial", "threads"])
def test_refused_files_read_one_by_one_or_by_threads_find_the_same(tmp_path, monkeypatch, slow):
    """On slow storage (each open over SLOW_OPEN_SECONDS) the headers are read by threads; the
    files refused are the same either way, in a listing longer than the serial probe."""
    from PIL import Image

    from graphcnn.data import formats

    rgb = np.random.default_rng(4).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    files = [str(write_png(tmp_path / f"ok{i:03d}.png", rgb)) for i in range(formats.SERIAL_PROBE + 10)]
    palette, animated = tmp_path / "palette.bmp", tmp_path / "animated.webp"
    Image.fromarray(rgb).convert("P").save(palette)
    Image.fromarray(rgb).save(animated, save_all=True, append_images=[Image.fromarray(255 - rgb)], lossless=True)
    files[formats.SERIAL_PROBE + 3:formats.SERIAL_PROBE + 3] = [str(palette), str(animated)]
    if slow:
        monkeypatch.setattr(formats, "SLOW_OPEN_SECONDS", 0.0)
    assert formats.refused_files(files) == {str(palette): formats.COLOUR_TABLE_BMP,
                                            str(animated): formats.ANIMATED_WEBP}
