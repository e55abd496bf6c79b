"""data.exif_transpose: a JPEG's EXIF orientation read in the graph as Pillow reads it, and applied
as Pillow's ImageOps.exif_transpose applies it, in training's decode (scan and streaming)."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from conftest import jpeg_segments
from graphcnn.config import DataConfig
from graphcnn.data import exif, scan
from graphcnn.data.pipeline import decode_file, fit_images
from graphcnn.data.sources import load_dataset

PICTURE = np.random.default_rng(5).integers(0, 256, (6, 10, 3), dtype=np.uint8)  # not square: turns show


def jpeg(orientation: int | None, big_endian: bool = False, jfif: bool = True, comment: bytes = b"",
         image=PICTURE) -> bytes:
    """JPEG bytes with an EXIF orientation (Pillow writes little-endian TIFF; big-endian is made
    here), with or without the JFIF segment before it, and a comment segment first if given."""
    kw = {}
    if orientation is not None and big_endian:  # IFD0 of two entries, the orientation second
        entries = struct.pack(">HHIHH", 0x010F, 2, 4, 0x4142, 0) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
        kw["exif"] = b"Exif\0\0MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 2) + entries + b"\0" * 4
    elif orientation is not None:
        tags = Image.Exif()
        tags[0x0112] = orientation
        kw["exif"] = tags
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95, **kw)
    return jpeg_segments(buf.getvalue(), jfif, comment)


@pytest.mark.parametrize("big_endian, jfif, comment", [(False, True, b""), (False, False, b""), (True, True, b""),
                                                      (False, False, b"made by a scanner")])
def test_orientation_is_read_as_pillow_reads_it(big_endian, jfif, comment):
    for orientation in (None, *range(1, 9)):
        data = jpeg(orientation, big_endian, jfif, comment)
        assert (data[2:4] == b"\xff\xe0") == (jfif and not comment)  # the segments asked for
        expected = Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)
        assert expected == (orientation or 1)
        assert int(exif.orientation(tf.constant(data))) == expected, (orientation, big_endian, jfif)


def test_anything_else_reads_as_upright():
    png = io.BytesIO()
    Image.fromarray(PICTURE).save(png, "PNG", exif=Image.Exif())
    out_of_range = jpeg(9)
    for data in (png.getvalue(), out_of_range, b"\xff\xd8\xff\xe1\x00", b"", jpeg(6)[:40]):
        assert int(exif.orientation(tf.constant(data))) == 1


def test_transpose_turns_as_pillows_exif_transpose():
    for orientation in range(1, 9):  # a PNG carries the tag losslessly: Pillow's turn of the same pixels
        tags = Image.Exif()
        tags[0x0112] = orientation
        png = io.BytesIO()
        Image.fromarray(PICTURE).save(png, "PNG", exif=tags)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(png)))
        np.testing.assert_array_equal(exif.transpose(tf.constant(PICTURE), tf.constant(orientation)).numpy(), expected,
                                      err_msg=str(orientation))


def _upright(data: bytes, orientation: int, size: tuple[int, int, int]) -> np.ndarray:
    """TensorFlow's decode of ``data`` turned by numpy as orientation 6 or 8 asks, then fitted."""
    decoded = tf.io.decode_jpeg(data, channels=size[2]).numpy()
    turned = np.rot90(decoded, -1 if orientation == 6 else 1)
    return fit_images(tf.constant(np.ascontiguousarray(turned)), *size).numpy()


def test_training_reads_jpegs_upright_only_when_asked(tmp_path):
    """With data.exif_transpose the scan's pixels (in memory) and the streaming decode are the
    turned picture and one line says so; without, they are as stored and a warning names the files."""
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    turned = tmp_path / "data" / "a" / "turned.jpg"
    turned.write_bytes(jpeg(6, image=np.repeat(np.repeat(PICTURE, 4, 0), 4, 1)))
    size = (16, 16, 3)
    stored = fit_images(tf.io.decode_jpeg(turned.read_bytes()), *size).numpy()
    upright = _upright(turned.read_bytes(), 6, size)
    assert not np.array_equal(stored, upright)
    for apply, expected in ((False, stored), (True, upright)):
        result = scan.scan_images([str(turned)], fit=size, exif_transpose=apply)
        np.testing.assert_array_equal(result.pixels[0], expected)
        np.testing.assert_array_equal(decode_file(tf.constant(str(turned)), *size, exif_transpose=apply).numpy(),
                                      expected)
        cfg = DataConfig(path=str(tmp_path / "data"), validation_fraction=0.2, test_fraction=0.2, exif_transpose=apply)
        ds = load_dataset(cfg, channels=3, size=size[:2])
        (warning,) = [w for w in ds.warnings if "EXIF" in w]
        if apply:  # a summary line, as for a conversion to the model's channels
            assert warning == ("1 JPEG(s) will be turned upright by their EXIF orientation "
                               f"(data.exif_transpose): {turned}")
        else:
            assert "--set data.exif_transpose=true" in warning and str(turned) in warning
        split = next(s for s in (ds.train, ds.validation, ds.test) if str(turned) in s.paths)
        np.testing.assert_array_equal(split.images[split.paths.index(str(turned))], expected)
    assert DataConfig().exif_transpose is False  # as TensorFlow and Keras read them, unless asked
