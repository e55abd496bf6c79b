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
    raw = tf.io.decode_raw(tf.strings.substr(data, 0, SCAN_BYTES), tf.uint8)
    b = tf.pad(tf.cast(raw, tf.int32), [[0, SCAN_BYTES + _PAD - tf.size(raw)]])
    last = SCAN_BYTES + _PAD - 1

    def at(i):
        return tf.gather(b, tf.clip_by_value(i, 0, last))

    # walk the marker segments (lengths big-endian, as JPEG's are) for APP1 "Exif\0\0"
    exif_magic = tf.constant(list(b"Exif\0\0"), tf.int32)
    pos, found = tf.constant(2), tf.constant(-1)
    for _ in range(SEGMENTS):
        marker = at(pos + 1)
        is_segment = tf.logical_and(tf.equal(at(pos), 0xFF), tf.logical_and(marker >= 0xC0, marker != 0xDA))
        is_exif = tf.logical_and(tf.equal(marker, 0xE1),
                                 tf.reduce_all(tf.equal(at(pos + 4 + tf.range(6)), exif_magic)))
        found = tf.where(tf.logical_and(tf.less(found, 0), tf.logical_and(is_segment, is_exif)), pos, found)
        pos = tf.where(is_segment, pos + 2 + at(pos + 2) * 256 + at(pos + 3), pos)
    tiff = found + 10
    big_endian = tf.equal(at(tiff), ord("M"))

    def u16(i):
        return tf.where(big_endian, at(i) * 256 + at(i + 1), at(i + 1) * 256 + at(i))

    def u32(i):  # offsets within 64 KB: the high half is 0 in any file this reads
        return tf.where(big_endian, u16(i + 2) + u16(i) * 65536, u16(i) + u16(i + 2) * 65536)

    ifd = tiff + u32(tiff + 4)
    entries = ifd + 2 + 12 * tf.range(ENTRIES)
    wanted = (tf.range(ENTRIES) < u16(ifd)) & tf.equal(u16(entries), ORIENTATION_TAG) & tf.equal(u16(entries + 2), 3)
    values = tf.where(wanted, u16(entries + 8), 0)
    value = tf.reduce_max(values)  # the tag appears once
    readable = tf.io.is_jpeg(data) & (found >= 0) & tf.equal(at(tiff), at(tiff + 1)) & (value >= 1) & (value <= 8)
    return tf.where(readable, value, 1)


def transpose(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """uint8 [h, w, c] as stored -> as shown for EXIF ``orientation`` (int32 scalar 1-8): the
    flips and quarter turns of Pillow's ``ImageOps.exif_transpose`` ([w, h, c] for 5-8)."""
    def swapped(x):  # Pillow's TRANSPOSE: rows become columns
        return tf.transpose(x, [1, 0, 2])

    turns = [
        lambda: image,  # 1: upright
        lambda: tf.reverse(image, [1]),  # 2: mirrored
        lambda: tf.reverse(image, [0, 1]),  # 3: upside down
        lambda: tf.reverse(image, [0]),  # 4: mirrored upside down
        lambda: swapped(image),  # 5: transposed
        lambda: tf.reverse(swapped(image), [1]),  # 6: turned a quarter counter-clockwise: a quarter clockwise
        lambda: tf.reverse(swapped(image), [0, 1]),  # 7: transverse
        lambda: tf.reverse(swapped(image), [0]),  # 8: turned a quarter clockwise: a quarter counter-clockwise
    ]
    out = tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1, turns)
    return tf.ensure_shape(out, [None, None, image.shape[-1]])
