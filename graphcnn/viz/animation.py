"""PNG, animated PNG and animated GIF writers in pure numpy + zlib/struct.

Used to turn a sequence of snapshots (e.g. filter grids over training) into a file
that any browser plays, without depending on an imaging library.

Frame arrays are ``uint8`` and shaped ``[H, W]`` or ``[H, W, 1]`` (grey) or
``[H, W, 3]`` (RGB); :func:`write_png` also accepts ``[H, W, 2]`` (grey + alpha) and
``[H, W, 4]`` (RGBA). Animated writers need frames of one shape; when shapes differ,
every frame is padded with zeros on the bottom/right to the largest height and width,
and if any frame is RGB the grey frames are promoted to RGB.
"""

from __future__ import annotations

import struct
import zlib
from os import PathLike
from typing import Sequence

import numpy as np

__all__ = ["write_png", "write_apng", "write_gif"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)
_PNG_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


# --------------------------------------------------------------------------- helpers


def _as_hwc(image: np.ndarray, allowed: Sequence[int] = (1, 2, 3, 4)) -> np.ndarray:
    """Validate a uint8 image and return it as contiguous [H, W, C]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in allowed:
        raise ValueError(f"image must be [H, W] or [H, W, C] with C in {tuple(allowed)}, "
                         f"got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _uniform_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """[H, W, C] frames of one shape: zero-pad to the max H/W, promote grey to RGB if mixed."""
    if len(frames) == 0:
        raise ValueError("need at least one frame")
    hwc = [_as_hwc(f, allowed=(1, 3)) for f in frames]
    height = max(f.shape[0] for f in hwc)
    width = max(f.shape[1] for f in hwc)
    channels = max(f.shape[2] for f in hwc)
    out = []
    for f in hwc:
        if f.shape[2] != channels:
            f = np.repeat(f, channels, axis=2)
        if f.shape[:2] != (height, width):
            f = np.pad(f, [(0, height - f.shape[0]), (0, width - f.shape[1]), (0, 0)])
        out.append(f)
    return out


# ------------------------------------------------------------------------------- PNG


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _ihdr(height: int, width: int, channels: int) -> bytes:
    # bit depth 8, compression 0, filter method 0, no interlace
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                       _PNG_COLOR_TYPE[channels], 0, 0, 0))


def _png_pixels(image: np.ndarray) -> bytes:
    """zlib stream of filter-type-0 scanlines for an [H, W, C] uint8 image."""
    h = image.shape[0]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, -1)], axis=1)
    return zlib.compress(rows.tobytes(), 6)


def write_png(path: str | PathLike, image: np.ndarray) -> None:
    """Write a ``uint8`` image ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` (or 2/4 channels,
    grey+alpha/RGBA) as an 8-bit non-interlaced PNG file."""
    image = _as_hwc(image)
    data = (_PNG_SIGNATURE + _ihdr(image.shape[0], image.shape[1], image.shape[2])
            + _chunk(b"IDAT", _png_pixels(image)) + _chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)


def write_apng(path: str | PathLike, frames: Sequence[np.ndarray], delay_ms: int = 200,
               loop: int = 0) -> None:
    """Write frames as an animated PNG (APNG).

    Args:
        path: output file.
        frames: non-empty list of ``uint8`` ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``
            arrays (mismatched shapes: see module docstring).
        delay_ms: display time of every frame in milliseconds (0..65535).
        loop: number of plays, 0 = forever.

    The first frame is stored in ``IDAT``, so viewers without APNG support show it as
    a still image. Every frame covers the full canvas (dispose none, blend source).
    """
    frames = _uniform_frames(frames)
    if not 0 <= delay_ms <= 0xFFFF:
        raise ValueError(f"delay_ms must be in [0, 65535], got {delay_ms}")
    if not 0 <= loop <= 0xFFFFFFFF:
        raise ValueError(f"loop must be >= 0, got {loop}")
    height, width, channels = frames[0].shape
    parts = [_PNG_SIGNATURE, _ihdr(height, width, channels),
             _chunk(b"acTL", struct.pack(">II", len(frames), loop))]
    seq = 0  # shared by fcTL and fdAT, starting at 0
    for index, frame in enumerate(frames):
        # fcTL: seq, width, height, x/y offset, delay num/den, dispose_op, blend_op
        parts.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, width, height, 0, 0,
                                                 delay_ms, 1000, 0, 0)))
        seq += 1
        pixels = _png_pixels(frame)
        if index == 0:
            parts.append(_chunk(b"IDAT", pixels))
        else:
            parts.append(_chunk(b"fdAT", struct.pack(">I", seq) + pixels))
            seq += 1
    parts.append(_chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(b"".join(parts))


# ------------------------------------------------------------------------------- GIF

# RGB frames are quantised to a fixed 6x7x6 colour cube (252 colours; green gets the
# extra level because the eye is most sensitive to it). Maximum per-channel error is
# 26 (red/blue) and 22 (green) -- better than 3-3-2 bits, whose blue has only 4 levels.
_R_LEVELS, _G_LEVELS, _B_LEVELS = 6, 7, 6


def _cube_palette() -> np.ndarray:
    r, g, b = np.meshgrid(np.arange(_R_LEVELS), np.arange(_G_LEVELS), np.arange(_B_LEVELS),
                          indexing="ij")
    cube = np.stack([r * 255 / (_R_LEVELS - 1), g * 255 / (_G_LEVELS - 1),
                     b * 255 / (_B_LEVELS - 1)], axis=-1).reshape(-1, 3)
    palette = np.zeros((256, 3), np.uint8)  # entries 252..255 unused (black)
    palette[: len(cube)] = np.round(cube).astype(np.uint8)
    return palette


def _quantize_rgb(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] palette indices into :func:`_cube_palette`."""
    f = frame.astype(np.uint16)
    # round(v * (levels - 1) / 255) in integer arithmetic
    r = (f[..., 0] * (_R_LEVELS - 1) + 127) // 255
    g = (f[..., 1] * (_G_LEVELS - 1) + 127) // 255
    b = (f[..., 2] * (_B_LEVELS - 1) + 127) // 255
    return ((r * _G_LEVELS + g) * _B_LEVELS + b).astype(np.uint8)


def _lzw_encode(indices: bytes, min_code_size: int = 8) -> bytes:
    """GIF-flavoured LZW: LSB-first variable-width codes, 12-bit cap, clear on full table.

    The code width grows right after the encoder assigns code ``2**width`` -- one entry
    ahead of the decoder, which adds each entry one code later than the encoder.
    """
    clear = 1 << min_code_size
    end = clear + 1
    out = bytearray()
    bit_buffer = 0
    bit_count = 0

    def emit(code: int, width: int) -> None:
        nonlocal bit_buffer, bit_count
        bit_buffer |= code << bit_count
        bit_count += width
        while bit_count >= 8:
            out.append(bit_buffer & 0xFF)
            bit_buffer >>= 8
            bit_count -= 8

    width = min_code_size + 1
    next_code = end + 1
    table: dict[int, int] = {}  # (prefix_code << 8 | byte) -> code
    emit(clear, width)
    prefix = indices[0]
    for byte in indices[1:]:
        key = (prefix << 8) | byte
        code = table.get(key)
        if code is not None:
            prefix = code
            continue
        emit(prefix, width)
        if next_code < 4096:
            table[key] = next_code
            next_code += 1
            if next_code > (1 << width) and width < 12:
                width += 1
        else:
            emit(clear, width)
            table.clear()
            width = min_code_size + 1
            next_code = end + 1
        prefix = byte
    emit(prefix, width)
    emit(end, width)
    if bit_count:
        out.append(bit_buffer & 0xFF)
    return bytes(out)


def _sub_blocks(data: bytes) -> bytes:
    """Split into length-prefixed blocks of <= 255 bytes plus the 0 terminator."""
    parts = []
    for start in range(0, len(data), 255):
        block = data[start: start + 255]
        parts.append(bytes([len(block)]) + block)
    parts.append(b"\x00")
    return b"".join(parts)


def write_gif(path: str | PathLike, frames: Sequence[np.ndarray], delay_ms: int = 200,
              loop: int = 0) -> None:
    """Write frames as an animated GIF89a.

    Args:
        path: output file.
        frames: non-empty list of ``uint8`` ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``
            arrays (mismatched shapes: see module docstring).
        delay_ms: display time of every frame; GIF stores centiseconds, so it is
            rounded to 10 ms (browsers commonly treat delays below 20 ms as 100 ms).
        loop: NETSCAPE2.0 loop count, 0 = forever.

    Grey frames use a 256-level grey palette and round-trip exactly. RGB frames are
    quantised without dithering to a fixed 6x7x6 colour cube (max error ~26 per
    channel). One global palette, full-canvas frames, no transparency.
    """
    frames = _uniform_frames(frames)
    if not 0 <= loop <= 0xFFFF:
        raise ValueError(f"loop must be in [0, 65535], got {loop}")
    delay_cs = int(round(delay_ms / 10))
    if not 0 <= delay_cs <= 0xFFFF:
        raise ValueError(f"delay_ms must be in [0, 655350], got {delay_ms}")
    height, width, channels = frames[0].shape
    if height > 0xFFFF or width > 0xFFFF:
        raise ValueError(f"GIF is limited to 65535 px per side, got {width}x{height}")
    if channels == 1:
        palette = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
        indexed = [f[:, :, 0] for f in frames]
    else:
        palette = _cube_palette()
        indexed = [_quantize_rgb(f) for f in frames]

    parts = [b"GIF89a",
             # logical screen: global colour table present, 8-bit colour resolution,
             # table size 2**(7+1) = 256; background index 0; no aspect ratio
             struct.pack("<HHBBB", width, height, 0xF7, 0, 0),
             palette.tobytes(),
             # NETSCAPE2.0 application extension: sub-block id 1 = loop count
             b"\x21\xFF\x0BNETSCAPE2.0" + struct.pack("<BBHB", 3, 1, loop, 0)]
    for frame in indexed:
        # graphic control extension: disposal 1 (leave in place), no transparency
        parts.append(b"\x21\xF9\x04" + struct.pack("<BHBB", 0x04, delay_cs, 0, 0))
        # image descriptor: full canvas, no local colour table, not interlaced
        parts.append(b"\x2C" + struct.pack("<HHHHB", 0, 0, width, height, 0))
        parts.append(b"\x08" + _sub_blocks(_lzw_encode(frame.tobytes(), 8)))
    parts.append(b"\x3B")
    with open(path, "wb") as f:
        f.write(b"".join(parts))
