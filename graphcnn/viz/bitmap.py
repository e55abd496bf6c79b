"""Numpy-only drawing: a 5x7 bitmap font, PNG bytes, labelled grids, a confusion matrix
and simple line plots. No imaging library: arrays in, ``uint8`` arrays (or PNG bytes) out.

Used for what TensorBoard shows as images but Python computes (confusion matrix,
misclassified examples) and for ``graphcnn report``.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from typing import Sequence

import numpy as np

__all__ = ["png_bytes", "text_width", "draw_text", "to_rgb", "upscale", "labelled_grid",
           "confusion_image", "line_plot", "GLYPH_W", "GLYPH_H"]

GLYPH_W, GLYPH_H = 5, 7
_GLYPHS = {
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
    "A": ["01110", "10001", "10001", "11111", "10001", "10001", "10001"],
    "B": ["11110", "10001", "10001", "11110", "10001", "10001", "11110"],
    "C": ["01110", "10001", "10000", "10000", "10000", "10001", "01110"],
    "D": ["11110", "10001", "10001", "10001", "10001", "10001", "11110"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "F": ["11111", "10000", "10000", "11110", "10000", "10000", "10000"],
    "G": ["01110", "10001", "10000", "10111", "10001", "10001", "01111"],
    "H": ["10001", "10001", "10001", "11111", "10001", "10001", "10001"],
    "I": ["01110", "00100", "00100", "00100", "00100", "00100", "01110"],
    "J": ["00111", "00010", "00010", "00010", "00010", "10010", "01100"],
    "K": ["10001", "10010", "10100", "11000", "10100", "10010", "10001"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "M": ["10001", "11011", "10101", "10101", "10001", "10001", "10001"],
    "N": ["10001", "10001", "11001", "10101", "10011", "10001", "10001"],
    "O": ["01110", "10001", "10001", "10001", "10001", "10001", "01110"],
    "P": ["11110", "10001", "10001", "11110", "10000", "10000", "10000"],
    "Q": ["01110", "10001", "10001", "10001", "10101", "10010", "01101"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "S": ["01111", "10000", "10000", "01110", "00001", "00001", "11110"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
    "U": ["10001", "10001", "10001", "10001", "10001", "10001", "01110"],
    "V": ["10001", "10001", "10001", "10001", "10001", "01010", "00100"],
    "W": ["10001", "10001", "10001", "10101", "10101", "10101", "01010"],
    "X": ["10001", "10001", "01010", "00100", "01010", "10001", "10001"],
    "Y": ["10001", "10001", "01010", "00100", "00100", "00100", "00100"],
    "Z": ["11111", "00001", "00010", "00100", "01000", "10000", "11111"],
    " ": ["00000"] * 7,
    ".": ["00000", "00000", "00000", "00000", "00000", "01100", "01100"],
    ",": ["00000", "00000", "00000", "00000", "01100", "00100", "01000"],
    "-": ["00000", "00000", "00000", "11111", "00000", "00000", "00000"],
    "+": ["00000", "00100", "00100", "11111", "00100", "00100", "00000"],
    "=": ["00000", "00000", "11111", "00000", "11111", "00000", "00000"],
    ">": ["01000", "00100", "00010", "00001", "00010", "00100", "01000"],
    "<": ["00010", "00100", "01000", "10000", "01000", "00100", "00010"],
    ":": ["00000", "01100", "01100", "00000", "01100", "01100", "00000"],
    "/": ["00001", "00010", "00010", "00100", "01000", "01000", "10000"],
    "_": ["00000", "00000", "00000", "00000", "00000", "00000", "11111"],
    "%": ["11001", "11010", "00010", "00100", "01000", "01011", "10011"],
    "(": ["00010", "00100", "01000", "01000", "01000", "00100", "00010"],
    ")": ["01000", "00100", "00010", "00010", "00010", "00100", "01000"],
    "?": ["01110", "10001", "00001", "00010", "00100", "00000", "00100"],
}
_MASKS = {ch: np.array([[c == "1" for c in row] for row in rows], bool) for ch, rows in _GLYPHS.items()}


def png_bytes(image: np.ndarray, level: int = 6) -> bytes:
    """Encode a ``uint8`` [H, W], [H, W, 1] or [H, W, 3] array as PNG bytes (zlib ``level`` 0-9)."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    h, w, c = image.shape
    color = {1: 0, 3: 2, 4: 6}[c]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, -1)], axis=1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + chunk(b"IEND", b""))


def text_width(text: str, scale: int = 1) -> int:
    return max(0, len(text) * (GLYPH_W + 1) - 1) * scale


@functools.lru_cache(maxsize=4096)
def _text_mask(text: str, scale: int) -> np.ndarray:
    """bool [GLYPH_H * scale, text_width(text, scale)]: the glyphs of ``text``, one blank column apart.

    Cached: the views draw the same counts and class names at every validation, and one
    boolean assignment per string is a fraction of the cost of one per glyph.
    """
    gap = np.zeros((GLYPH_H, 1), bool)
    parts = []
    for i, ch in enumerate(text.upper()):
        if i:
            parts.append(gap)
        parts.append(_MASKS.get(ch, _MASKS["?"]))
    mask = np.concatenate(parts, axis=1) if parts else np.zeros((GLYPH_H, 0), bool)
    if scale > 1:
        mask = mask.repeat(scale, axis=0).repeat(scale, axis=1)
    mask.flags.writeable = False
    return mask


def draw_text(canvas: np.ndarray, text: str, x: int, y: int, color=(0, 0, 0), scale: int = 1) -> None:
    """Draw ``text`` (upper-cased; unknown characters as '?') with its top-left at (x, y), clipped."""
    color = np.asarray(color, np.uint8)[: canvas.shape[2]] if canvas.ndim == 3 else color
    mask = _text_mask(text, scale)
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + mask.shape[0], canvas.shape[0]), min(x + mask.shape[1], canvas.shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    canvas[y0:y1, x0:x1][mask[y0 - y:y1 - y, x0 - x:x1 - x]] = color


def to_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return image if factor <= 1 else image.repeat(factor, axis=0).repeat(factor, axis=1)


def normalize_images(images: np.ndarray) -> np.ndarray:
    """float [N, H, W, C] (any range, e.g. preprocessed) -> uint8, each image min-max stretched."""
    x = np.asarray(images, np.float32)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    return np.round((x - lo) / np.maximum(hi - lo, 1e-12) * 255).astype(np.uint8)


def labelled_grid(images: np.ndarray, captions: Sequence[str], cols: int = 0, min_side: int = 56,
                  pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, C] -> one RGB grid, each image upscaled to >= ``min_side`` with a caption below."""
    n = len(images)
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    h, w = images.shape[1:3] if n else (min_side, min_side)
    factor = max(1, math.ceil(min_side / max(h, w)))
    tile_w = max(w * factor, max((text_width(c) for c in captions), default=0) + 2)
    cell_h, cell_w = h * factor + GLYPH_H + 4, tile_w
    canvas = np.full((rows * (cell_h + pad) + pad, cols * (cell_w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
        tile = to_rgb(upscale(images[i], factor))
        canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
        draw_text(canvas, captions[i], x + 1, y + h * factor + 2, (200, 0, 0))
    return canvas


def _blues(t: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB from white to dark blue."""
    lo, hi = np.array([247, 251, 255], np.float32), np.array([8, 48, 107], np.float32)
    return np.round(lo + (hi - lo) * t[..., None]).astype(np.uint8)


def confusion_image(matrix: np.ndarray, class_names: Sequence[str] = (), max_side: int = 480) -> np.ndarray:
    """RGB image of a confusion matrix (rows true, columns predicted), row-normalised colours,
    counts written in the cells when they fit, class labels on the left and top."""
    k = matrix.shape[0]
    names = [str(n)[:6] for n in class_names] if class_names else [str(i) for i in range(k)]
    counts = [str(int(v)) for v in matrix.ravel()]
    need = max(text_width(c) for c in counts) + 4 if counts else 8
    cell = int(max(6, min(48, max(need, 24), max_side // max(k, 1))))
    label_w = max(text_width(n) for n in names) + 6
    label_h = GLYPH_H + 6
    fits = cell >= need and cell >= GLYPH_H + 4
    height, width = label_h + k * cell + 1, label_w + k * cell + 1
    canvas = np.full((height, width, 3), 255, np.uint8)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    cells = _blues(norm.astype(np.float32))
    block = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)
    canvas[label_h:label_h + k * cell, label_w:label_w + k * cell] = block
    canvas[label_h::cell, label_w:] = 200  # grid lines
    canvas[label_h:, label_w::cell] = 200
    for i in range(k):
        if cell >= GLYPH_H + 2:
            draw_text(canvas, names[i], 2, label_h + i * cell + (cell - GLYPH_H) // 2)
            if text_width(names[i]) <= cell:
                draw_text(canvas, names[i], label_w + i * cell + (cell - text_width(names[i])) // 2, 2)
        if fits:
            for j in range(k):
                s = str(int(matrix[i, j]))
                color = (255, 255, 255) if norm[i, j] > 0.5 else (0, 0, 0)
                draw_text(canvas, s, label_w + j * cell + (cell - text_width(s)) // 2,
                          label_h + i * cell + (cell - GLYPH_H) // 2, color)
    return canvas


def _nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return np.array([0.0])
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    return np.arange(math.ceil(lo / step) * step, hi + step * 1e-9, step)


def _fmt(v: float, step: float) -> str:
    if abs(v) >= 10000:
        return f"{v / 1000:.0f}K"
    decimals = max(0, -int(math.floor(math.log10(step)))) if step > 0 and step < 1 else 0
    return f"{v:.{decimals}f}"


def _line(canvas: np.ndarray, x0: float, y0: float, x1: float, y1: float, color, thick: int = 2) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 2
    xs = np.round(np.linspace(x0, x1, n)).astype(int)
    ys = np.round(np.linspace(y0, y1, n)).astype(int)
    for dx in range(thick):
        for dy in range(thick):
            xx, yy = xs + dx - thick // 2, ys + dy - thick // 2
            keep = (xx >= 0) & (xx < canvas.shape[1]) & (yy >= 0) & (yy < canvas.shape[0])
            canvas[yy[keep], xx[keep]] = color


SERIES_COLORS = ((255, 127, 14), (31, 119, 180), (44, 160, 44), (214, 39, 40))


def line_plot(series: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str = "", x_label: str = "step",
              size: tuple[int, int] = (400, 640)) -> np.ndarray:
    """RGB plot of ``(name, x, y)`` series: axes, ticks with labels, a legend and a title."""
    height, width = size
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 56, 16, 34, 30
    xs = np.concatenate([np.asarray(s[1], float) for s in series if len(s[1])] or [np.zeros(1)])
    ys = np.concatenate([np.asarray(s[2], float) for s in series if len(s[2])] or [np.zeros(1)])
    ys = ys[np.isfinite(ys)] if np.isfinite(ys).any() else np.zeros(1)
    x_lo, x_hi = float(xs.min()), float(xs.max())
    y_lo, y_hi = float(ys.min()), float(ys.max())
    if x_hi <= x_lo:
        x_hi = x_lo + 1
    pad = (y_hi - y_lo) * 0.05 or 0.5
    y_lo, y_hi = y_lo - pad, y_hi + pad
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + (np.asarray(x, float) - x_lo) / (x_hi - x_lo) * (pw - 1)

    def py(y):
        return top + (1 - (np.asarray(y, float) - y_lo) / (y_hi - y_lo)) * (ph - 1)

    y_ticks = _nice_ticks(y_lo, y_hi)
    for t in y_ticks:
        yy = int(round(float(py(t))))
        if top <= yy < top + ph:
            canvas[yy, left:left + pw] = 232
            s = _fmt(t, float(y_ticks[1] - y_ticks[0]) if len(y_ticks) > 1 else 1.0)
            draw_text(canvas, s, left - 5 - text_width(s), yy - GLYPH_H // 2)
    x_ticks = _nice_ticks(x_lo, x_hi, 6)
    for t in x_ticks:
        xx = int(round(float(px(t))))
        if left <= xx < left + pw:
            canvas[top:top + ph, xx] = 232
            canvas[top + ph:top + ph + 4, xx] = 0
            s = _fmt(t, float(x_ticks[1] - x_ticks[0]) if len(x_ticks) > 1 else 1.0)
            draw_text(canvas, s, xx - text_width(s) // 2, top + ph + 6)
    canvas[top:top + ph, left] = 0
    canvas[top + ph, left:left + pw] = 0
    draw_text(canvas, x_label, left + pw - text_width(x_label), height - GLYPH_H - 3)
    draw_text(canvas, title, left, 6, scale=2)
    lx = left + pw
    for i, (name, x, y) in reversed(list(enumerate(series))):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        lx -= text_width(name) + 26
        canvas[13:20, lx:lx + 14] = color
        draw_text(canvas, name, lx + 18, 13)
        x, y = np.asarray(x, float), np.asarray(y, float)
        ok = np.isfinite(y)
        x, y = px(x[ok]), py(y[ok])
        if len(x) == 1:
            _line(canvas, x[0], y[0], x[0], y[0], color, thick=5)
        for j in range(len(x) - 1):
            _line(canvas, x[j], y[j], x[j + 1], y[j + 1], color)
        if len(x) <= 40:  # mark sparse series' points (validation)
            for a, b in zip(x, y):
                _line(canvas, a, b, a, b, color, thick=5)
    return canvas
