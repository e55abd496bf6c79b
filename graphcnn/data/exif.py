"""A JPEG's EXIF orientation, read and applied with graph ops (``data.exif_transpose``).

A camera held sideways stores the picture as its sensor saw it and says in an EXIF tag
(0x0112, orientation 1-8) how a viewer should turn it. TensorFlow's decoder, like Keras's
``image_dataset_from_directory``, ignores the tag. With ``data.exif_transpose = true`` graphcnn
turns each JPEG upright as Pillow's ``ImageOps.exif_transpose`` does, in the graph, so that
training, ``predict`` and the exported SavedModel (which decodes image bytes itself) read the
same pixels from the same file.

The tag is read from the file's first :data:`SCAN_BYTES` bytes: the APP1 "Exif" segment among
the first :data:`SEGMENTS` marker segments, its TIFF header (either byte order) and the first
:data:`ENTRIES` entries of IFD0, where cameras write it. Anything else reads as 1 (as stored).
"""

from __future__ import annotations

import tensorflow as tf

SCAN_BYTES = 65536  # an APP1 segment is at most 64 KB, and IFD0 comes first in it
SEGMENTS = 8  # marker segments walked from the start of the file (JFIF, Exif, XMP, ICC, ...)
ENTRIES = 32  # IFD0 entries looked at for the orientation tag
ORIENTATION_TAG = 0x0112
_PAD = 64  # zero bytes after the scanned ones, so that every index read stays in range


def orientation(data: tf.Tensor) -> tf.Tensor:
    """int32 scalar: the EXIF orientation (1-8) of a JPEG file's bytes ``data`` (string
    scalar); 1 where there is none, or the bytes are not a JPEG or not readable as EXIF."""
    # the parse costs a tf.data map about 0.3 ms a file: only for JPEGs that may have the tag
    return tf.cond(has_exif(data), lambda: _read_orientation(tf.strings.substr(data, 0, SCAN_BYTES)),
                   lambda: tf.constant(1))


def has_exif(data: tf.Tensor) -> tf.Tensor:
    """bool scalar: whether file bytes ``data`` are a JPEG whose first :data:`SCAN_BYTES` bytes
    hold an EXIF segment's "Exif\0\0" (a byte search, which is what split does): the files
    whose orientation :func:`orientation` reads, and the scan reports (:attr:`ImageInfo.exif`)."""
    head = tf.strings.substr(data, 0, SCAN_BYTES)
    return tf.io.is_jpeg(data) & (tf.size(tf.strings.split(head, sep="Exif\0\0")) > 1)


def _read_orientation(head: tf.Tensor) -> tf.Tensor:
    """:func:`orientation` of a JPEG's first :data:`SCAN_BYTES` bytes ``head``."""
    raw = tf.io.decode_raw(head, tf.uint8)
    padded = tf.pad(raw, [[0, SCAN_BYTES + _PAD - tf.size(raw)]])

    def read(first, shape):  # int32 bytes at first + an index grid: few ops, as each op costs in a map
        offsets = tf.reshape(tf.range(tf.reduce_prod(shape)), shape)
        return tf.cast(tf.gather(padded, tf.clip_by_value(first + offsets, 0, SCAN_BYTES + _PAD - 1)), tf.int32)

    # walk the marker segments for APP1 "Exif\0\0": each is FF, marker, a big-endian length, its data
    magic = tf.constant(list(b"Exif\0\0"), tf.int32)

    def step(n, pos, found):  # a loop, not unrolled: a smaller map function is optimized faster
        v = read(pos, [10])
        is_segment = tf.equal(v[0], 0xFF) & (v[1] >= 0xC0) & tf.not_equal(v[1], 0xDA)  # before the scan data
        is_exif = is_segment & tf.equal(v[1], 0xE1) & tf.reduce_all(tf.equal(v[4:], magic))
        return n + 1, tf.where(is_segment, pos + 2 + v[2] * 256 + v[3], pos), tf.where(is_exif, pos, found)

    _, _, found = tf.while_loop(lambda n, pos, found: (n < SEGMENTS) & (found < 0), step,
                                (tf.constant(0), tf.constant(2), tf.constant(-1)))
    tiff = found + 10
    header = read(tiff, [8])  # byte order "II" or "MM", 42, the offset of IFD0 (under 64 KB: its high half 0)
    big_endian = tf.equal(header[0], ord("M"))

    def u16(pairs):  # [..., 2] bytes -> the 16-bit numbers in the file's byte order
        return tf.where(big_endian, pairs[..., 0] * 256 + pairs[..., 1], pairs[..., 1] * 256 + pairs[..., 0])

    first, second = u16(header[4:6]), u16(header[6:8])  # IFD0's offset, in 16-bit halves
    low, high = tf.where(big_endian, second, first), tf.where(big_endian, first, second)
    ifd = tiff + low
    count = u16(read(ifd, [2]))
    entries = read(ifd + 2, [ENTRIES, 12])  # tag (2), type (2), count (4), value (4)
    wanted = ((tf.range(ENTRIES) < count) & tf.equal(u16(entries[:, 0:2]), ORIENTATION_TAG)
              & tf.equal(u16(entries[:, 2:4]), 3))  # a SHORT, whose value is the field's first two bytes
    value = tf.reduce_max(tf.where(wanted, u16(entries[:, 8:10]), 0))  # the tag appears once
    readable = (found >= 0) & tf.equal(header[0], header[1]) & tf.equal(high, 0) & (value >= 1) & (value <= 8)
    return tf.where(readable, value, 1)


def transpose(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """uint8 [h, w, c] as stored -> as shown for EXIF ``orientation`` (int32 scalar 1-8): the
    flips and quarter turns of Pillow's ``ImageOps.exif_transpose`` ([w, h, c] for 5-8).

    One gather of the pixels in their new order: no branches (each branch of a tf.data map's
    control flow is a function to instantiate), and no ``tf.transpose``, which on integer types
    makes oneDNN print an error line on some AVX-512 CPUs before it falls back to Eigen."""
    o = tf.clip_by_value(orientation, 1, 8)
    h, w, channels = tf.shape(image)[0], tf.shape(image)[1], image.shape[-1]
    swap = o >= 5  # 5-8: rows become columns
    out_w = tf.where(swap, h, w)
    k = tf.range(h * w)  # the result's pixels, row by row
    i, j = k // out_w, k % out_w
    row, col = tf.where(swap, j, i), tf.where(swap, i, j)
    row = tf.where(tf.reduce_any(tf.equal(o, [3, 4, 6, 7])), h - 1 - row, row)  # upside down
    col = tf.where(tf.reduce_any(tf.equal(o, [2, 3, 7, 8])), w - 1 - col, col)  # mirrored
    turned = tf.gather(tf.reshape(image, [h * w, -1]), row * w + col)
    return tf.ensure_shape(tf.reshape(turned, [tf.where(swap, w, h), out_w, -1]), [None, None, channels])


def upright(image: tf.Tensor, data: tf.Tensor) -> tf.Tensor:
    """uint8 [h, w, c] decoded from the file bytes ``data`` -> turned as its EXIF orientation
    says (:func:`orientation`; any other file, or a JPEG without one, is returned as it is)."""
    o = orientation(data)
    return tf.cond(o > 1, lambda: transpose(image, o), lambda: image)
