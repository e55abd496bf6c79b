"""``graphcnn tensorboard`` (a launcher with sensible sampling) and ``graphcnn filters``
(filter snapshots out of the event files as PNG frames, APNG and GIF), plus the event
reader both ``filters`` and ``report`` use.

TensorBoard keeps a reservoir sample of 10 images per tag by default; the launcher asks for
all of them (``images=100000``; in TensorBoard 2.21 ``images=0`` returns none), so every
filter/feature-map snapshot can be stepped through with the slider.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

SAMPLES_PER_PLUGIN = "scalars=100000,images=100000,histograms=1000,distributions=1000,text=1000,pr_curves=1000"


def tensorboard_command(logdir: str | Path, port: int = 6006, host: str = "127.0.0.1",
                        extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host, "--port", str(port),
            "--samples_per_plugin", SAMPLES_PER_PLUGIN, *(extra or [])]


def run_tensorboard(logdir: str | Path, port: int = 6006, host: str = "127.0.0.1", extra: list[str] | None = None) -> int:
    if not Path(logdir).exists():
        raise FileNotFoundError(f"{logdir} does not exist")
    print(f"TensorBoard on http://{host}:{port}/ for {logdir} (Ctrl-C to stop)", flush=True)
    try:
        return subprocess.call(tensorboard_command(logdir, port, host, extra))
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------------------- events


def iter_events(directory: str | Path) -> Iterator:
    """Events of every event file in ``directory``, in file order, with what a restart made
    stale dropped: after ``SessionLog.START`` at step s, earlier events with step > s are gone
    (as TensorBoard does)."""
    import tensorflow as tf

    events = []
    for f in sorted(Path(directory).glob("events.out.tfevents.*")):
        for e in tf.compat.v1.train.summary_iterator(str(f)):
            if e.HasField("session_log") and e.session_log.status == e.session_log.START:
                events = [x for x in events if x.step <= e.step]
            events.append(e)
    return iter(events)


def read_scalars(directory: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of simple-value scalars, one value per step (the last written)."""
    found: dict[str, dict[int, float]] = {}
    for e in iter_events(directory):
        for v in e.summary.value:
            if v.HasField("simple_value"):
                found.setdefault(v.tag, {})[e.step] = v.simple_value
    return {tag: sorted(values.items()) for tag, values in found.items()}


def read_images(directory: str | Path, prefix: str = "") -> dict[str, list[tuple[int, bytes]]]:
    """{tag: [(step, encoded PNG)]} of image summaries whose tag starts with ``prefix``."""
    found: dict[str, dict[int, bytes]] = {}
    for e in iter_events(directory):
        for v in e.summary.value:
            if v.HasField("image") and v.tag.startswith(prefix):
                found.setdefault(v.tag, {})[e.step] = v.image.encoded_image_string
    return {tag: sorted(values.items()) for tag, values in found.items()}


def export_filters(run: str | Path, layer: str = "", gif: bool = False, delay_ms: int = 200) -> list[Path]:
    """Write ``<run>/filters/<layer>/step-XXXXXX.png`` frames and ``<layer>.png`` (APNG),
    ``<layer>.gif`` with ``gif``; returns the animation files."""
    import numpy as np
    import tensorflow as tf

    from graphcnn.viz.animation import write_apng, write_gif, write_png

    run = Path(run)
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
            frame = tf.io.decode_png(png).numpy().astype(np.uint8)
            write_png(frames_dir / f"step-{step:07d}.png", frame)
            frames.append(frame)
        write_apng(out / f"{name}.png", frames, delay_ms=delay_ms)
        written.append(out / f"{name}.png")
        if gif:
            write_gif(out / f"{name}.gif", frames, delay_ms=delay_ms)
            written.append(out / f"{name}.gif")
        print(f"{tag}: {len(frames)} frames (steps {snapshots[0][0]}..{snapshots[-1][0]}) -> {out / name}.png"
              + (f", {name}.gif" if gif else ""))
    return written


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_tensorboard(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Poll ``url``/data/plugins_listing until TensorBoard answers (or fail after ``timeout``)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"tensorboard exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/data/plugins_listing", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"tensorboard at {url} not ready after {timeout:.0f} s")
        time.sleep(0.5)


def start_tensorboard(logdir: str | Path, port: int | None = None, samples: str = SAMPLES_PER_PLUGIN,
                      log_file=None) -> tuple[subprocess.Popen, str]:
    """Start TensorBoard in the background (tests, screenshots); the caller stops it."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
           "--port", str(port), "--samples_per_plugin", samples, "--load_fast=false", "--reload_interval", "1"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(cmd, stdout=log_file or subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
