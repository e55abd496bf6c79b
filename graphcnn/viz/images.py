"""Numpy images in, numpy images or files out, drawn and encoded with Pillow.

What TensorBoard shows as images but Python computes (the confusion matrix, the grid of
misclassified examples), the PNG bytes of image summaries, and the files of ``graphcnn
filters`` (PNG frames, animated PNG, GIF) all go through this module.

Text uses DejaVu Sans, the TrueType font matplotlib ships (``ImageFont.load_default`` if it
cannot be found). Fonts, the font path and the colour map are loaded once and cached: the
confusion matrix and the mistakes grid are drawn at every validation.

Arrays are ``uint8``; ``[H, W]`` and ``[H, W, 1]`` are grey, ``[H, W, 3]`` RGB, ``[H, W, 4]``
RGBA (``[H, W, 2]`` grey + alpha).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Sequence
from os import PathLike

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["caption_image", "colormap_lut", "confusion_image", "labelled_grid", "normalize_images", "png_bytes",
           "to_rgb", "write_animation", "write_png"]

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
TEXT = (34, 34, 34)  # matplotlib's text is black; a hair lighter reads better on screens
FRAME = (110, 110, 110)
CAPTION = (200, 0, 0)  # mistakes grid: captions in red, like the old bitmap grid
RIGHT = (0, 120, 0)  # a right prediction's caption (the Grad-CAM grid), green
# the smallest font size any label is shrunk to before the layout grows instead
MIN_FONT = 9


# --------------------------------------------------------------------------- arrays


def _check_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype} (scale and cast it first, e.g. "
                         "with normalize_images)")
    return image


def _as_hwc(image: np.ndarray, channels: Sequence[int] = (1, 2, 3, 4)) -> np.ndarray:
    """A uint8 image as [H, W, C], C in ``channels``; ValueError otherwise."""
    image = _check_uint8(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in channels:
        raise ValueError(f"image must be [H, W] or [H, W, C] with C in {tuple(channels)}, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    return image


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W], [H, W, 1], [H, W, 2] (grey + alpha), [H, W, 3] or [H, W, 4] -> uint8 [H, W, 3].

    Grey is repeated into the three channels; an alpha channel is dropped (not blended).
    """
    image = _as_hwc(image)
    if image.shape[2] in (1, 2):
        return np.repeat(image[:, :, :1], 3, axis=2)
    return image[:, :, :3]


def _pil(image: np.ndarray) -> Image.Image:
    """[H, W, C] uint8 -> a Pillow image of mode L, LA, RGB or RGBA."""
    image = _as_hwc(image)
    if image.shape[2] == 1:
        image = image[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(image))


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of [H, W(, C)] by an integer ``factor`` (every pixel a block)."""
    return image if factor <= 1 else image.repeat(factor, axis=0).repeat(factor, axis=1)


def normalize_images(images: np.ndarray, step: int = 1) -> np.ndarray:
    """Any real [N, H, W, C] (e.g. preprocessed, mean-subtracted) -> uint8 [N, ceil(H/step),
    ceil(W/step), C], each image min-max stretched to 0..255 on its own (a constant image
    becomes 0). ``step`` keeps every step-th row and column (thumbnails), stretched by the
    whole image's range; only those are converted (the projector's 120 images at 224 px
    took 0.4 s whole)."""
    x = np.asarray(images)
    lo = x.min(axis=(1, 2, 3), keepdims=True).astype(np.float32)
    hi = x.max(axis=(1, 2, 3), keepdims=True).astype(np.float32)
    x = np.asarray(x[:, ::step, ::step], np.float32)
    return np.round((x - lo) / np.maximum(hi - lo, 1e-12) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------- files


def png_bytes(image: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG file bytes of a uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] image (also [H, W, 2]).

    ``compress_level`` is zlib's 0-9: 1 is ~3x faster than 6 for a few percent more bytes.
    Raises ValueError for any other dtype or shape.
    """
    buffer = io.BytesIO()
    _pil(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def write_png(path: str | PathLike, image: np.ndarray) -> None:
    """Write a uint8 image (shapes as :func:`png_bytes`) as a PNG file."""
    _pil(image).save(path, format="PNG")


def _uniform_frames(frames: Sequence[np.ndarray]) -> list[Image.Image]:
    """Frames of one size and mode: zero-padded bottom/right to the largest, grey promoted to
    RGB when any frame is RGB (GIF and APNG frames share the first frame's size and mode)."""
    if len(frames) == 0:
        raise ValueError("need at least one frame")
    arrays = [_as_hwc(f, channels=(1, 3)) for f in frames]
    height, width, channels = (max(a.shape[axis] for a in arrays) for axis in range(3))
    out = []
    for a in arrays:
        if a.shape[2] != channels:
            a = np.repeat(a, channels, axis=2)
        if a.shape[:2] != (height, width):
            a = np.pad(a, [(0, height - a.shape[0]), (0, width - a.shape[1]), (0, 0)])
        out.append(_pil(a))
    return out


def write_animation(path: str | PathLike, frames: Sequence[np.ndarray], delay_ms: int = 200, loop: int = 0) -> None:
    """Write uint8 frames ([H, W], [H, W, 1] or [H, W, 3]) as an animation any browser plays.

    An animated PNG when ``path`` ends with ``.png`` (viewers without APNG support show the first
    frame), an animated GIF when it ends with ``.gif`` (RGB frames get an adaptive 256-colour
    palette each). Frames of different sizes are padded with black on the bottom/right to the
    largest. ``delay_ms`` is every frame's display time (GIF stores 10 ms units), ``loop`` the
    number of plays, 0 = forever. Pillow merges consecutive identical frames into one longer one.
    """
    suffix = str(path).lower().rsplit(".", 1)[-1]
    if suffix not in ("png", "gif"):
        raise ValueError(f"animation path must end with .png or .gif, got {path}")
    images = _uniform_frames(frames)
    images[0].save(path, format="PNG" if suffix == "png" else "GIF", save_all=True, append_images=images[1:],
                   duration=delay_ms, loop=loop)


# ----------------------------------------------------------------------------- fonts


@functools.lru_cache(maxsize=1)
def _font_path() -> str | None:
    """DejaVu Sans from matplotlib's bundled fonts, or None if matplotlib or the font is missing."""
    try:
        from matplotlib import font_manager

        return font_manager.findfont("DejaVu Sans", fallback_to_default=True)
    except (ImportError, ValueError, RuntimeError):  # no matplotlib or no font: Pillow's own font
        return None


@functools.lru_cache(maxsize=64)
def font(size: int) -> _Font:
    """The label font at ``size`` px (cached: loading a TrueType font costs ~1 ms)."""
    path = _font_path()
    if path:
        with contextlib.suppress(OSError):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def text_width(text: str, f: _Font) -> int:
    """Advance width of one line of ``text`` in px."""
    return math.ceil(f.getlength(text))


def line_height(f: _Font) -> int:
    """Height of one line of text in px (ascent + descent, so every glyph fits)."""
    if isinstance(f, ImageFont.FreeTypeFont):
        ascent, descent = f.getmetrics()
        return ascent + descent
    box = f.getbbox("Ag")
    return box[3] - min(box[1], 0)


def fitting_font(texts: Sequence[str], max_width: int, size: int, min_size: int = MIN_FONT) -> _Font:
    """The largest font <= ``size`` (>= ``min_size``) in which every text is at most ``max_width`` px wide;
    the ``min_size`` font when none is (the caller then makes room)."""
    for s in range(size, min_size - 1, -1):
        f = font(s)
        if all(text_width(t, f) <= max_width for t in texts):
            return f
    return font(min_size)


@functools.lru_cache(maxsize=512)
def _vertical_label(text: str, size: int, color: tuple[int, int, int]) -> tuple[Image.Image, Image.Image]:
    """``text`` rotated 90 degrees counter-clockwise (reading bottom to top, like matplotlib's
    rotation=90): (solid colour image, alpha mask) to paste. Cached: class names repeat every validation."""
    f = font(size)
    w, h = text_width(text, f) + 1, line_height(f)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((0, 0), text, font=f, fill=255)
    mask = mask.transpose(Image.Transpose.ROTATE_90)
    return Image.new("RGB", mask.size, color), mask


def _paste_vertical(canvas: Image.Image, text: str, size: int, x: int, y: int,
                    color: tuple[int, int, int] = TEXT) -> None:
    solid, mask = _vertical_label(text, size, color)
    canvas.paste(solid, (x, y), mask)


# ------------------------------------------------------------------------- confusion


@functools.lru_cache(maxsize=8)
def colormap_lut(name: str) -> np.ndarray:
    """uint8 [256, 3]: matplotlib's colour map ``name`` (``Blues``: white to dark blue; ``jet``)."""
    from matplotlib import colormaps

    return np.round(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


LABEL_SIZE = 13  # px: class names and axis titles
COUNT_SIZE = 13
MATRIX_SIDE = 560  # px the cells aim to fill together (each between 16 and 120 px)


def confusion_image(matrix: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """A confusion matrix drawn like a matplotlib ``imshow``: uint8 [H, W, 3].

    ``matrix`` int [K, K], rows the true class, columns the predicted one. Cells are coloured
    with the Blues map by the row-normalised count (the fraction of the true class, so rare
    classes show as clearly as common ones) and carry the count (white on dark cells). The full
    class names label the rows (left) and columns (below; rotated to read upwards when one is
    wider than a cell); axis titles "true" and "predicted". Empty ``class_names``: 0..K-1.
    Counts are left out only when K > 40 and they do not fit a cell.
    """
    matrix = np.asarray(matrix)
    k = int(matrix.shape[0])
    names = [str(n) for n in class_names] if len(class_names) else [str(i) for i in range(k)]
    if matrix.ndim != 2 or matrix.shape[1] != k or len(names) != k:
        raise ValueError(f"need a [K, K] matrix and K class names, got {matrix.shape} and {len(names)} names")
    counts = [[str(int(v)) for v in row] for row in matrix]

    cell = min(120, max(16, MATRIX_SIDE // max(k, 1)))
    count_font = font(COUNT_SIZE if cell >= 28 else 10)
    count_w = max((text_width(c, count_font) for row in counts for c in row), default=0) + 8
    if count_w > cell and k <= 40:
        cell = count_w  # wide counts (10000+) widen the cells rather than disappear
    show_counts = count_w <= cell and line_height(count_font) <= cell
    label_size = max(7, min(LABEL_SIZE, cell - 3))  # row labels must fit a row
    label_font = font(label_size)
    lh = line_height(label_font)
    widths = [text_width(n, label_font) for n in names]
    vertical = max(widths) > cell - 4  # column labels read upwards when one is wider than its column

    gap, margin = 6, 8
    title_font = font(LABEL_SIZE + 1)
    title_h = line_height(title_font)
    left = margin + title_h + gap + max(widths) + gap  # "true", row labels, then the matrix
    top = margin
    col_labels_h = max(widths) if vertical else lh
    side = k * cell
    bottom = gap + col_labels_h + gap + title_h + margin  # column labels, then "predicted"
    width = left + max(side, text_width("predicted", title_font)) + margin
    height = top + max(side, text_width("true", title_font)) + bottom

    canvas = np.full((height, width, 3), 255, np.uint8)
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fraction = matrix / totals
    colours = colormap_lut("Blues")[np.clip(np.round(fraction * 255), 0, 255).astype(np.int64)]  # [K, K, 3]
    canvas[top:top + side, left:left + side] = upscale(colours, cell)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    draw.rectangle([left - 1, top - 1, left + side, top + side], outline=FRAME)

    for i, name in enumerate(names):
        y = top + i * cell + cell // 2
        draw.text((left - gap, y), name, font=label_font, fill=TEXT, anchor="rm")
        x = left + i * cell + cell // 2
        if vertical:
            # matplotlib's rotation=90: the name ends at the matrix, so names of any length line up there
            _paste_vertical(image, name, label_size, x - lh // 2, top + side + gap)
        else:
            draw.text((x, top + side + gap), name, font=label_font, fill=TEXT, anchor="mt")
    if show_counts:
        for i in range(k):
            for j in range(k):
                colour = WHITE if fraction[i, j] > 0.5 else TEXT
                draw.text((left + j * cell + cell // 2, top + i * cell + cell // 2), counts[i][j],
                          font=count_font, fill=colour, anchor="mm")
    draw.text((left + side // 2, top + side + gap + col_labels_h + gap), "predicted", font=title_font,
              fill=TEXT, anchor="mt")
    true_w = text_width("true", title_font)
    _paste_vertical(image, "true", LABEL_SIZE + 1, margin, top + max(0, side - true_w) // 2)
    return np.asarray(image)


# ----------------------------------------------------------------------- captioned


def _caption_lines(caption: str, wrap: bool) -> list[str]:
    """One line, or two split after '>' (``true>`` / ``predicted``), when ``wrap``."""
    if wrap and ">" in caption:
        head, tail = caption.split(">", 1)
        return [head + " >", tail]
    return [caption]


def labelled_grid(images: np.ndarray, captions: Sequence[str], cols: int = 0, min_side: int = 64,
                  colours: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """The ``images`` in a grid, each with its caption under it: uint8 [H, W, 3] on white.

    ``images`` uint8 [N, h, w, C] (C 1 or 3), each upscaled by one integer factor (nearest
    neighbour) so its long side is at least ``min_side``; ``captions`` N strings such as
    ``true>predicted``. ``cols`` 0: a square-ish grid. Captions are never cut: when the longest
    does not fit under a tile, the captions wrap after '>' onto two lines, then the font shrinks
    (to 10 px), and only then do the cells grow wider than the tiles. ``colours``: each
    caption's RGB (default :data:`CAPTION`, the mistakes grid's red).
    """
    images = _check_uint8(images)
    n = len(images)
    if len(captions) != n:
        raise ValueError(f"need one caption per image, got {len(captions)} for {n}")
    if n == 0:
        return np.full((min_side, min_side, 3), 255, np.uint8)
    h, w = images.shape[1:3]
    factor = max(1, math.ceil(min_side / max(h, w)))
    tile_h, tile_w = h * factor, w * factor
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)

    size = 12
    lines = [_caption_lines(c, wrap=False) for c in captions]
    if max(text_width(c, font(size)) for c in captions) > tile_w - 4:
        lines = [_caption_lines(c, wrap=True) for c in captions]
    flat = [line for ls in lines for line in ls]
    f = fitting_font(flat, tile_w - 4, size, min_size=10)  # 9 px is hard to read on a busy grid
    lh = line_height(f)
    n_lines = max(len(ls) for ls in lines)
    cell_w = max(tile_w, max(text_width(t, f) for t in flat) + 4)  # grow only past the smallest font
    cell_h = tile_h + 2 + n_lines * lh + 2
    pad = 4
    canvas = np.full((pad + rows * (cell_h + pad), pad + cols * (cell_w + pad), 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad) + (cell_w - tile_w) // 2
        canvas[y:y + tile_h, x:x + tile_w] = to_rgb(upscale(images[i], factor))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for i, caption_lines in enumerate(lines):
        r, c = divmod(i, cols)
        x = pad + c * (cell_w + pad) + cell_w // 2
        y = pad + r * (cell_h + pad) + tile_h + 2
        for line in caption_lines:
            draw.text((x, y), line, font=f, fill=CAPTION if colours is None else tuple(colours[i]), anchor="ma")
            y += lh
    return np.asarray(image)


def caption_image(image: np.ndarray, text: str, min_side: int = 256, size: int = 16) -> np.ndarray:
    """``image`` (uint8 [h, w] or [h, w, C], C 1, 3 or 4) under a one-line caption: uint8 [H, W, 3].

    The image is upscaled by an integer factor (nearest neighbour, so a 3x3 kernel stays nine
    sharp squares) until its long side is at least ``min_side``; above it, a white strip with
    ``text`` (e.g. ``conv1_1  step 1200``) at ``size`` px, shrunk to fit, and the canvas
    widened (the image centred) only if it still does not.
    """
    rgb = to_rgb(image)
    rgb = upscale(rgb, max(1, math.ceil(min_side / max(rgb.shape[:2]))))
    h, w = rgb.shape[:2]
    f = fitting_font([text], w - 8, size)
    lh = line_height(f)
    strip = lh + 8
    width = max(w, text_width(text, f) + 8)
    canvas = np.full((strip + h, width, 3), 255, np.uint8)
    x = (width - w) // 2
    canvas[strip:, x:x + w] = rgb
    out = Image.fromarray(canvas)
    ImageDraw.Draw(out).text((width // 2, strip // 2), text, font=f, fill=BLACK, anchor="mm")
    return np.asarray(out)
