"""``graphcnn filters <run>``: the ``filters/<layer>`` snapshots of the event files as files.

For every layer: one PNG per snapshot (``<run>/filters/<layer>/step-XXXXXXX.png``) and the
sequence as an animated PNG (``<run>/filters/<layer>.png``), plus an animated GIF with
``gif=True``. Every frame is upscaled (nearest neighbour) to at least 256 px on its long side,
so each weight of a 3x3 kernel is a clearly visible square, and captioned with the layer and
the step, so a frame (or a paused animation) says what it shows.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from graphcnn.tensorboard.events import read_images
from graphcnn.viz.images import caption_image, write_animation, write_png

FRAME_MIN_SIDE = 256  # px, long side of every frame


def _decode(encoded: bytes) -> np.ndarray:
    """PNG bytes -> uint8 [H, W] (grey) or [H, W, 3]."""
    with Image.open(io.BytesIO(encoded)) as image:
        image = image.convert("L" if image.mode in ("1", "L", "LA") else "RGB")
        return np.asarray(image)


def export_filters(run: str | Path, layer: str = "", gif: bool = False, delay_ms: int = 200) -> list[Path]:
    """Write ``<run>/filters/<layer>/step-XXXXXXX.png`` frames and ``<run>/filters/<layer>.png``
    (APNG), ``<layer>.gif`` too with ``gif``, for every ``filters/<layer>`` tag of ``<run>/train``
    (or of ``run`` itself when it has no ``train/``), or only ``layer``; returns the animation files.

    Raises ValueError when there are no filter images (or none of ``layer``).
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(2, "No such folder (a run directory, or a folder of event files)", str(run))
    logs = run / "train" if (run / "train").is_dir() else run
    images = read_images(logs, "filters/")
    if layer:
        images = {t: v for t, v in images.items() if t == f"filters/{layer}"}
        if not images:
            raise ValueError(f"no filter images of layer '{layer}' in {logs}")
    if not images:
        raise ValueError(f"no filter images (tags filters/<layer>) in {logs}; is log.filters_every > 0?")
    out = run / "filters"
    written = []
    for tag, snapshots in images.items():
        name = tag.split("/", 1)[1].replace("/", "_")
        frames_dir = out / name
        frames_dir.mkdir(parents=True, exist_ok=True)
        frames = []
        for step, png in snapshots:
            frame = caption_image(_decode(png), f"{name}  step {step}", min_side=FRAME_MIN_SIDE)
            write_png(frames_dir / f"step-{step:07d}.png", frame)
            frames.append(frame)
        animations = [out / f"{name}.png"] + ([out / f"{name}.gif"] if gif else [])
        for path in animations:
            write_animation(path, frames, delay_ms=delay_ms)
        written.extend(animations)
        print(f"{tag}: {len(frames)} frames (steps {snapshots[0][0]}..{snapshots[-1][0]}) -> {out / name}.png"
              + (f", {name}.gif" if gif else ""))
    return written
