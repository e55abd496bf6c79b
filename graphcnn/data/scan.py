"""Image-file validation: decode every file once, in parallel, and report what is wrong.

:func:`scan_images` runs a private ``tf.data`` pipeline (its own Graph and Session, so it
works whether or not the caller is inside ``tf.Graph().as_default()`` or has eager execution
disabled). Each file is read and decoded with ``tf.io.decode_image(channels=0,
expand_animations=True)`` so that the native channel count and the GIF frame count are
visible; ``ignore_errors`` drops the files that fail, and the set difference between the
input paths and the surviving paths gives the bad files. Only those are decoded again, one
at a time, to get each file's error text.

Given the model's input size (``fit``), the scan also keeps every readable file as the training
pipeline would decode it (:func:`graphcnn.data.pipeline.decode_file`: first frame, the model's
channels, resized), so that a folder which fits in memory is decoded once, here, and never again
by the training pipeline (:func:`decode_with_info`, which ``graphcnn predict`` uses too: a file
is decoded a second time only when its channels must be converted).

In TF 2.21 every truncation point of a PNG (8- and 16-bit) or JPEG (baseline, progressive,
grayscale) makes the decode fail, so truncated PNG/JPEG files come out as bad files. A GIF
cut off after its first complete frame still decodes, so GIFs without the trailer byte are
reported separately (:attr:`ImageInfo.gif_truncated`).

Files the decoder would read as other pixels than they hold (a BMP with a colour table), or
crash on (an animated WebP), are never given to it: :mod:`graphcnn.data.formats` reads their
first bytes, and they come out as bad files saying what to do. A CMYK JPEG is converted to RGB
by the decoder (a warning, :attr:`ImageInfo.cmyk`). Another kind is
read as stored rather than as it is shown: a JPEG whose EXIF orientation says it is rotated or
mirrored (a photo taken with the camera turned), which TensorFlow's decoder ignores as Keras's
``image_dataset_from_directory`` does (a warning naming it, :func:`conversion_warnings`). And a
JPEG cut short and then given an end marker (some downloaders and copy tools write one) decodes
without an error, its missing lower part filled with mid-grey: the scan names JPEGs that end in
full rows of that grey (:func:`grey_end`; a warning, since a picture may end in such rows).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence

import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADER_BYTES = 32  # enough for the PNG signature and the IHDR chunk
GREY_ROWS = 8  # a JPEG block's height: grey_end looks at this many last rows
_BATCH = 256


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What the decoder saw in one readable image file (native, before any conversion)."""

    height: int
    width: int
    channels: int  # 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA or CMYK (GIFs always decode to 3)
    frames: int  # > 1: animated GIF
    bit_depth: int  # 16 for 16-bit PNGs (read from IHDR), else 8
    gif_truncated: bool = False  # a GIF that does not end with the trailer byte 0x3B
    cmyk: bool = False  # a CMYK JPEG (4 channels in its header), which the decoder converts to RGB
    exif: bool = False  # a JPEG with an EXIF segment in its first 64 KB (exif.has_exif): it may say a rotation
    grey_end: bool = False  # a JPEG whose last rows are the decoder's grey fill (grey_end): probably cut short


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """``images``: path -> info for every file that decodes; ``bad``: path -> error text."""

    images: dict[str, ImageInfo]
    bad: dict[str, str]
    # with ``fit``: uint8 [files, height, width, channels], each readable file as decode_file
    # makes it, and the row of each path in it
    pixels: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    rows: dict[str, int] = dataclasses.field(default_factory=dict, compare=False, repr=False)


def scan_images(paths: Sequence[str], num_parallel_calls: int = 0,
                fit: tuple[int, int, int] | None = None, exif_transpose: bool = False) -> ScanResult:
    """Decode every file in ``paths`` and sort them into readable and bad files.

    ``num_parallel_calls`` 0 means ``tf.data.AUTOTUNE``. Every input path ends up in
    exactly one of ``ScanResult.images`` and ``ScanResult.bad``. ``fit`` (height, width,
    channels): also keep each readable file decoded as the pipeline decodes it for a model of
    that input (:attr:`ScanResult.pixels`, :attr:`ScanResult.rows`), JPEGs turned upright first
    with ``exif_transpose``.
    """
    paths = list(dict.fromkeys(os.fspath(p) for p in paths))
    if not paths:
        return ScanResult({}, {})
    from graphcnn.data import formats

    refused = formats.refused_files(paths)  # never decoded: the decoder crashes on, or misreads, them
    kept = [p for p in paths if p not in refused]
    decoded, pixels = (_decode_all(kept, num_parallel_calls, fit, exif_transpose) if kept
                       else ({}, None if fit is None else np.zeros((0, *fit), np.uint8)))
    images = {p: decoded[p] for p in kept if p in decoded}
    failed = [p for p in kept if p not in decoded]
    rows = {p: i for i, p in enumerate(kept) if p in images} if pixels is not None else {}
    bad = {**_error_texts(failed), **refused}
    return ScanResult(images, {p: bad[p] for p in paths if p in bad}, pixels, rows)


def probe(data):
    """Graph ops for one file's bytes ``data``: (the native image uint8 [frames, h, w, c],
    [frames, height, width, channels], header bytes, last byte, grey end, EXIF segment);
    :func:`image_info` makes an :class:`ImageInfo` of the last five. Fails as the decoder fails."""
    import tensorflow as tf

    from graphcnn.data import exif

    image = tf.io.decode_image(data, channels=0, expand_animations=True)
    shape = tf.shape(image)
    shape4 = tf.concat([tf.ones([4 - tf.size(shape)], tf.int32), shape], axis=0)
    image = tf.reshape(image, shape4)
    head = tf.strings.substr(data, 0, HEADER_BYTES)
    tail = tf.strings.substr(data, tf.strings.length(data) - 1, 1)
    return image, shape4, head, tail, tf.logical_and(tf.io.is_jpeg(data), grey_end(image[0])), exif.has_exif(data)


def grey_end(image):
    """Graph op: whether a decoded JPEG, uint8 [h, w, c], ends in :data:`GREY_ROWS` full rows of
    exactly 128 in every channel. libjpeg fills the blocks that a file's data stops before with
    that mid-grey, and a JPEG cut short and then given an end marker decodes without an error
    (only a "premature end of data segment" on stderr): its lower part is that grey."""
    import tensorflow as tf

    return tf.logical_and(tf.shape(image)[0] >= GREY_ROWS, tf.reduce_all(tf.equal(image[-GREY_ROWS:], 128)))


def decode_with_info(data, height: int, width: int, channels: int, exif_transpose: bool = False) -> tuple:
    """One file's bytes -> (uint8 [height, width, channels] exactly as
    :func:`~graphcnn.data.pipeline.decode_file` makes it, and :func:`probe`'s native [frames,
    h, w, c], header bytes, last byte, grey end and EXIF segment); graph ops, which fail as the
    decoder fails.

    Each file is decoded once: a JPEG straight to the model's channels (its native size and
    channels come from its header); another format at its native channels, and a second time
    by the decoder's own conversion only when those differ from the model's, as training
    converts them. ``exif_transpose``: a JPEG is turned upright by its EXIF orientation before
    it is resized (the info stays the file's own: its size as stored).
    """
    import tensorflow as tf

    from graphcnn.data import exif
    from graphcnn.data.pipeline import decode_image_bytes, fit_images

    def jpeg():
        head = tf.strings.substr(data, 0, HEADER_BYTES)
        shape4 = tf.concat([[1], tf.io.extract_jpeg_shape(data)], axis=0)
        image = decode_image_bytes(data, channels, jpeg=True)  # a JPEG's gray is its luma: 128 where the fill is
        tail = tf.strings.substr(data, tf.strings.length(data) - 1, 1)
        return image, shape4, head, tail, grey_end(image), exif.has_exif(data)

    def other():
        native, *info = probe(data)
        image = tf.cond(tf.equal(info[0][3], channels), lambda: native[0], lambda: decode_image_bytes(data, channels))
        return image, *info

    image, *info = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    image.set_shape([None, None, channels])
    if exif_transpose:  # here, not in the branch: control flow nested in a tf.data map's branch costs more
        image = exif.upright(image, data)
    return fit_images(image, height, width, channels), *info


def _probe(fit: tuple[int, int, int] | None, exif_transpose: bool = False):
    """tf.data map function: (row, path) -> (row, path, [frames, height, width, channels], head,
    tail, grey end, EXIF segment), and with ``fit`` last the image as
    :func:`graphcnn.data.pipeline.decode_file` makes it."""
    import tensorflow as tf

    def fn(row, path):
        data = tf.io.read_file(path)
        if fit is None:  # a JPEG's channels as its header has them (CMYK: 4), as decode_with_info reports them
            _, shape4, *info = probe(data)

            def header():
                return tf.concat([shape4[:3], tf.io.extract_jpeg_shape(data)[2:]], 0)

            return row, path, tf.cond(tf.io.is_jpeg(data), header, lambda: shape4), *info
        image, *info = decode_with_info(data, *fit, exif_transpose)
        return row, path, *info, image

    return fn


def _decode_all(paths: list[str], num_parallel_calls: int, fit: tuple[int, int, int] | None,
                exif_transpose: bool = False) -> tuple[dict[str, ImageInfo], np.ndarray | None]:
    import tensorflow as tf

    parallel = num_parallel_calls if num_parallel_calls > 0 else tf.data.AUTOTUNE
    pixels = np.zeros((len(paths), *fit), np.uint8) if fit is not None else None
    graph = tf.Graph()
    with graph.as_default():
        dataset = (
            tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), [os.fsencode(p) for p in paths]))
            .map(_probe(fit, exif_transpose), num_parallel_calls=parallel)
            .ignore_errors()  # drops failing files silently: the caller diffs the path sets
            .batch(_BATCH)
            .prefetch(2)
        )
        next_batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        found: dict[str, ImageInfo] = {}
        with tf.compat.v1.Session(graph=graph) as session:
            while True:
                try:
                    batch = session.run(next_batch)
                except tf.errors.OutOfRangeError:
                    break
                rows, batch_paths, *info = batch
                if pixels is not None:
                    pixels[rows] = info.pop()
                for path, *one in zip(batch_paths, *info):
                    found[os.fsdecode(path)] = image_info(*one)
    return found, pixels


def image_info(shape, head: bytes, tail: bytes, grey: bool = False, exif: bool = False) -> ImageInfo:
    """An :class:`ImageInfo` from what :func:`probe` returns for one file (numpy values)."""
    frames, height, width, channels = (int(v) for v in shape)
    bit_depth = png_bit_depth(head) or 8
    gif_truncated = head.startswith(b"GIF8") and tail != b"\x3b"
    cmyk = head.startswith(b"\xff\xd8") and channels == 4
    return ImageInfo(height, width, channels, frames, bit_depth, gif_truncated, cmyk, bool(exif), bool(grey))


def exif_orientation(path: str) -> int:
    """The EXIF orientation of a JPEG (1 upright, 2-8 mirrored and/or rotated), read by Pillow
    from its header; 1 when it has none or it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            value = image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _error_texts(paths: list[str]) -> dict[str, str]:
    """Decode each failed file again, alone, to get the decoder's own message."""
    if not paths:
        return {}
    import tensorflow as tf

    errors = {}
    graph = tf.Graph()
    with graph.as_default():
        path_in = tf.compat.v1.placeholder(tf.string, [])
        decode = tf.io.decode_image(tf.io.read_file(path_in), channels=0, expand_animations=True)
        with tf.compat.v1.Session(graph=graph) as session:
            for path in paths:
                errors[path] = _describe_failure(session, decode, path_in, path)
    return errors


def describe_failure(path: str, decoder_message: str) -> str:
    """Why ``path`` cannot be decoded, from the decoder's error text: an empty file and a
    PNG/JPEG without its end marker are named as such; otherwise the decoder's words."""
    if not os.path.exists(path):
        if os.path.islink(path):
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
        return "no such file or folder"
    with contextlib.suppress(OSError):  # the decoder's message says it (e.g. "Permission denied")
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    return _truncation_hint(path) + clean_message(decoder_message)


def _describe_failure(session, decode, path_in, path: str) -> str:
    import tensorflow as tf

    try:
        os.stat(path)
    except OSError as err:
        return f"cannot read: {err.strerror}"
    try:
        session.run(decode, {path_in: os.fsencode(path)})
    except tf.errors.OpError as err:
        return describe_failure(path, err.message)
    # Decoded fine alone (e.g. a transient read error during the scan): still reported.
    return "failed to decode during the scan"


def _truncation_hint(path: str) -> str:
    """'truncated ...: ' when a PNG/JPEG lacks its end marker (TF's own message does not say so)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, os.path.getsize(path) - 12))
            tail = f.read()
    except OSError:
        return ""
    if head.startswith(_PNG_SIGNATURE) and tail[4:8] != b"IEND":
        return "truncated PNG (no IEND chunk): "
    if head.startswith(b"\xff\xd8") and not tail.endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker): "
    return ""


def clean_message(message: str) -> str:
    """The decoder's own words from a TF error, without graph-execution and node noise."""
    noise = ("Graph execution error", "Detected at node", "File ", "Node:", "[[", "(most recent call")
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("{{"):  # eager form: '{{function_node ...}} text [Op:DecodeImage]'
            line = line.split("}}", 1)[-1].split(" [Op:", 1)[0].strip()
        if line and not line.startswith(noise):
            return line
    return "decode failed"


# ---------------------------------------------------------------------------
# reports


def bad_files_report(bad: dict[str, str]) -> str:
    """One line per bad file: ``path: why`` (control characters in a name escaped)."""
    from graphcnn.terminal import printable

    return "\n".join(f"  {printable(path)}: {why}" for path, why in sorted(bad.items()))


def conversion_warnings(images: dict[str, ImageInfo], channels: int, examples: int = 5,
                        exif_transpose: bool = False) -> list[str]:
    """Warnings for conversions the input pipeline will make silently.

    Alpha dropped, 16-bit PNG reduced to 8 bits, animated GIF reduced to its first frame,
    truncated GIFs, JPEGs whose EXIF orientation is ignored and JPEGs that end in the decoder's
    grey fill name every affected file (the orientation read by Pillow: the JPEGs with an EXIF
    segment, a header read each); the expected
    RGB <-> grayscale conversion for ``channels`` (1 or 3) is one summary line with a count and
    ``examples`` file names. With ``exif_transpose`` (``data.exif_transpose``), JPEGs are turned
    upright as a viewer shows them: no warning, a summary line as for the channels.
    """
    warnings = []
    turned = sorted(p for p, i in images.items() if i.exif and exif_orientation(p) != 1)
    groups = [
        ("have an alpha channel (gray+alpha or RGBA); the alpha channel will be dropped",
         [p for p, i in images.items() if i.channels in (2, 4) and not i.cmyk]),
        ("are 16-bit PNGs; they will be converted to 8 bits per channel",
         [p for p, i in images.items() if i.bit_depth == 16]),
        ("are CMYK JPEGs; the decoder converts them to RGB",
         [p for p, i in images.items() if i.cmyk]),
        ("are animated GIFs; only the first frame will be used",
         [p for p, i in images.items() if i.frames > 1]),
        ("are GIFs without the end-of-file trailer (probably truncated); the frames that decode will be used",
         [p for p, i in images.items() if i.gif_truncated]),
        ("are JPEGs whose EXIF orientation says they are rotated or mirrored (a photo taken with the camera "
         "turned); TensorFlow's decoder ignores it, as Keras's image_dataset_from_directory does, so they are "
         "used as stored, not as a photo viewer shows them. To use them upright, train with --set "
         "data.exif_transpose=true (a run's predict and export then turn them too), or rotate their pixels once "
         "(Pillow: ImageOps.exif_transpose, then save)",
         [] if exif_transpose else turned),
        (f"are JPEGs whose last {GREY_ROWS} rows are all exactly mid-grey (128), the decoder's fill where a "
         "file's data stops early: probably cut short (an interrupted download or copy) and decoded with "
         "their lower part grey. Look at them; replace or delete the damaged ones",
         [p for p, i in images.items() if i.grey_end]),
    ]
    for what, paths in groups:
        if paths:
            listing = "\n".join(f"  {p}" for p in sorted(paths))
            warnings.append(f"{len(paths)} image file(s) {what}:\n{listing}")
    if exif_transpose and turned:  # expected, as a conversion to the model's channels: one line
        shown = ", ".join(turned[:examples]) + (", ..." if len(turned) > examples else "")
        warnings.append(f"{len(turned)} JPEG(s) will be turned upright by their EXIF orientation "
                        f"(data.exif_transpose): {shown}")
    color = sorted(p for p, i in images.items() if (i.channels >= 3) != (channels >= 3))
    if color:
        native, target = ("RGB", "grayscale") if channels == 1 else ("grayscale", "RGB")
        shown = ", ".join(color[:examples]) + (", ..." if len(color) > examples else "")
        warnings.append(
            f"{len(color)} {native} image(s) will be converted to {target} (model.channels={channels}): {shown}"
        )
    return warnings


MODE_NAMES = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}


def mode_name(info: ImageInfo) -> str:
    """``gray``, ``RGBA 16-bit``, ``RGB animated (12 frames)``, ...: what a file holds."""
    name = "CMYK" if info.cmyk else MODE_NAMES.get(info.channels, f"{info.channels} channels")
    if info.bit_depth == 16:
        name += " 16-bit"
    if info.frames > 1:
        name += f" animated ({info.frames} frames)"
    return name


def resize_summary(images: dict[str, ImageInfo], height: int, width: int, examples: int = 5) -> str:
    """One line on the images whose size is not ``height`` x ``width``: they are resized to it
    (empty when none). Sizes are width x height, the most common first; a file is named for
    each size shown, the largest downscaling factor is given."""
    other = [(p, i) for p, i in images.items() if (i.height, i.width) != (height, width)]
    if not other:
        return ""
    by_size: dict[tuple[int, int], list[str]] = {}
    for p, i in sorted(other):
        by_size.setdefault((i.width, i.height), []).append(p)
    common = sorted(by_size.items(), key=lambda kv: -len(kv[1]))
    shown = ", ".join(f"{w}x{h} ({len(ps)}, e.g. {ps[0]})" for (w, h), ps in common[:examples])
    more = f", {len(common) - examples} more sizes" if len(common) > examples else ""
    factor = max(max(i.height / height, i.width / width) for _, i in other)
    scale = f"; downscaled up to {factor:.0f}x" if factor >= 2 else ""
    return (f"{len(other)} image(s) resized to the model's {width}x{height} input: {shown}{more}{scale}")


def png_bit_depth(header: bytes) -> int:
    """Bit depth from the first 25+ bytes of a PNG file, or 0 when it is not a PNG."""
    if not header.startswith(_PNG_SIGNATURE) or len(header) < 25 or header[12:16] != b"IHDR":
        return 0
    return header[24]
