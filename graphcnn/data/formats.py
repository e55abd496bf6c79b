"""Image files that TensorFlow's decoder crashes on or reads as other pixels than they hold.

* An animated WebP: TensorFlow 2.21's decoder corrupts the heap on one (``free(): corrupted
  unsorted chunks``; the process aborts) when asked for its native channels, as the scan asks.
* A BMP of 8 bits or fewer per pixel whose colour table is not the grays 0, 1, 2, ...: the
  decoder returns the palette indices as gray levels, not the colours (and refuses 1- and
  4-bit BMPs with "Number of channels inherent in the image must be 1, 3 or 4, was 0").

Where files are read by name (the data scan, ``graphcnn predict`` and ``explain``),
:func:`refused_files` reads their first bytes in Python and such a file is never decoded: it
is a bad file with :data:`ANIMATED_WEBP` or :data:`COLOUR_TABLE_BMP` as its reason (a check in
the graph cost 0.5 ms a file, half the scan of a small JPEG). An exported SavedModel, which
gets bytes, checks them in its graph (:func:`check_bytes`).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence

import numpy as np

# no quote marks: in the graph, Assert's error shows the text escaped
ANIMATED_WEBP = ("animated WebP: the TensorFlow decoder cannot read it (it corrupts memory); "
                 "save its first frame as PNG or a still WebP")
COLOUR_TABLE_BMP = ("BMP with a colour table: the TensorFlow decoder reads its palette indices as gray "
                    "levels, not its colours; save it as PNG (or 24-bit BMP)")
_HEAD = 54  # a BMP's file and info headers; a WebP's extended header ends at byte 21
_TABLE = 1024  # 256 entries of 4 bytes
SERIAL_PROBE = 64  # files refused_files reads one by one before it decides on threads
SLOW_OPEN_SECONDS = 2e-4  # a file's read slower than this: storage where threads pay off


def _animated_webp(head: bytes) -> bool:
    """A WebP whose extended header (``VP8X``) has the animation flag (bit 1 of byte 20)."""
    return head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and len(head) > 20 and bool(head[20] & 2)


def _indexed_bmp(head: bytes) -> bool:
    return head[:2] == b"BM" and len(head) >= 30 and int.from_bytes(head[28:30], "little") <= 8


def _gray_table(head: bytes, table: bytes) -> bool:
    """Whether a BMP's colour table (BITMAPINFOHEADER or later) holds gray i at each entry i it uses."""
    header_size = int.from_bytes(head[14:18], "little")
    bits = int.from_bytes(head[28:30], "little")
    used = int.from_bytes(head[46:50], "little") if len(head) >= 50 else 0
    entries = min(used or 1 << bits, 256)
    if header_size < 40 or len(table) < 4 * entries:
        return False
    colours = np.frombuffer(table[:4 * entries], np.uint8).reshape(-1, 4)[:, :3]  # B, G, R (and a reserved byte)
    return bool(np.all(colours == np.arange(entries, dtype=np.uint8)[:, None]))


def file_problem(path: str) -> str | None:
    """Why the decoder must not be given the file at ``path`` (:data:`ANIMATED_WEBP`,
    :data:`COLOUR_TABLE_BMP`), or None (also when it cannot be read: the decoder says why)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
            if _animated_webp(head):
                return ANIMATED_WEBP
            if not _indexed_bmp(head):
                return None
            f.seek(14 + int.from_bytes(head[14:18], "little"))
            table = f.read(_TABLE)
    except OSError:
        return None
    return None if _gray_table(head, table) else COLOUR_TABLE_BMP


def refused_files(paths: Sequence[str]) -> dict[str, str]:
    """path -> :func:`file_problem` for each of ``paths`` that has one (a read of 54 bytes a file,
    and of a BMP's colour table). One after another where the first files read fast (a local
    disk: 5 us a file, where a pool of threads costs 30); by a pool of threads where they do not
    (network storage: an open waits milliseconds, minutes over a large folder)."""
    first = list(paths[:SERIAL_PROBE])
    start = time.perf_counter()
    found = {p: why for p in first if (why := file_problem(p))}
    rest = paths[SERIAL_PROBE:]
    if (time.perf_counter() - start) / max(len(first), 1) < SLOW_OPEN_SECONDS:
        found.update((p, why) for p in rest if (why := file_problem(p)))
        return found
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        found.update((p, why) for p, why in zip(rest, pool.map(file_problem, rest, chunksize=16)) if why)
    return found


def is_webp(data):
    """Graph op, bool scalar: ``data`` (string scalar) is a RIFF WebP file."""
    import tensorflow as tf

    # its first 16 bytes, padded (not the whole file: a copy of it for every image decoded)
    head = tf.strings.join([tf.strings.substr(data, 0, 16), b"\0" * 16])
    return tf.logical_and(tf.equal(tf.strings.substr(head, 0, 4), b"RIFF"),
                          tf.equal(tf.strings.substr(head, 8, 4), b"WEBP"))


def check_bytes(data):
    """Graph op: ``data`` (a file's bytes, string scalar) once it is known not to be a file
    :func:`file_problem` refuses; otherwise an ``InvalidArgumentError`` with that reason."""
    import tensorflow as tf

    def head_bytes(start, length: int):  # uint8 [length]: data's bytes from start (<= its length), zeros past its end
        window = tf.strings.substr(data, tf.cast(start, tf.int64), length)
        return tf.io.decode_raw(tf.strings.substr(tf.strings.join([window, b"\0" * length]), 0, length), tf.uint8)

    def little_endian(offset: int, size: int):
        return tf.reduce_sum(tf.cast(head[offset:offset + size], tf.int64) * [256 ** i for i in range(size)])

    head = head_bytes(0, _HEAD)
    extended = tf.equal(tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 16), b"\0" * 16]), 12, 4),
                        b"VP8X")
    animated = tf.logical_and(tf.logical_and(is_webp(data), extended), tf.not_equal(head[20] & 2, 0))
    length = tf.cast(tf.strings.length(data), tf.int64)
    bits, header_size, used = little_endian(28, 2), little_endian(14, 4), little_endian(46, 4)
    indexed = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 2), b"BM"), bits <= 8)
    entries = tf.where(used > 0, tf.minimum(used, 256),
                       tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.clip_by_value(bits, 0, 8)))
    start = tf.minimum(14 + header_size, length)
    table = tf.reshape(head_bytes(start, _TABLE), [256, 4])[:, :3]
    index = tf.range(256, dtype=tf.int64)
    gray = tf.reduce_all(tf.logical_or(tf.reduce_all(tf.equal(table, tf.cast(index, tf.uint8)[:, None]), axis=1),
                                       index >= entries))
    whole = tf.logical_and(header_size >= 40, length - start >= 4 * entries)
    colours_ok = tf.logical_or(tf.logical_not(indexed), tf.logical_and(gray, whole))
    checks = [tf.debugging.Assert(tf.logical_not(animated), [ANIMATED_WEBP]),
              tf.debugging.Assert(colours_ok, [COLOUR_TABLE_BMP])]
    with tf.control_dependencies(checks):
        return tf.identity(data)
