#!/usr/bin/env python
"""Screenshots of TensorBoard dashboards for a graphcnn run, with headless Chromium.

    scripts/tensorboard_screenshots.py                 # trains a short digits run first
    scripts/tensorboard_screenshots.py --run logs/X    # an existing run (or a sweep folder)

Starts TensorBoard on a free local port, opens each dashboard in ``chromium --headless``
and writes ``docs/screenshots/<dashboard>.png``. Needs ``/usr/bin/chromium`` (Debian:
``apt-get install -y chromium``); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from graphcnn.tensorboard_cli import start_tensorboard, stop, wait_for_tensorboard  # noqa: E402

# name -> URL fragment (TensorBoard 2.21 routes; the legacy dashboards take a tagFilter)
DASHBOARDS = {
    "custom_scalars": "#custom_scalars",
    "scalars": "#scalars&_smoothingWeight=0",
    "images_filters": "#images&tagFilter=filters",
    "images_feature_maps": "#images&tagFilter=feature_maps",
    "images_evaluation": "#images&tagFilter=confusion|misclassified",
    "histograms": "#histograms&tagFilter=gradients",
    "graphs": "#graphs&run=train",
    "pr_curves": "#pr_curves",
    "hparams": "#hparams",
}


def train_short_run(logdir: Path, epochs: int) -> Path:
    cmd = [sys.executable, "-m", "graphcnn", "train", "--logdir", str(logdir), "--name", "digits",
           "--set", f"train.epochs={epochs}", "--set", "log.filters_every=20", "--set", "log.feature_maps_every=50",
           "--set", "log.histograms_every=50", "--set", "log.gradients_every=50", "--set", "log.activations_every=50",
           "--set", "log.trace_every=100", "--no-progress"]
    subprocess.run(cmd, check=True, cwd=REPO)
    return logdir / "digits"


def screenshot(chromium: str, url: str, out: Path, size: str, budget_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size}",
               f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="", help="run directory (default: train a short digits run in a temp dir)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the short run")
    p.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    p.add_argument("--only", nargs="*", default=[], help=f"dashboards: {', '.join(DASHBOARDS)}")
    p.add_argument("--window-size", default="1400,1000")
    p.add_argument("--budget-ms", type=int, default=15000, help="Chromium virtual time budget per page")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args(argv)
    if not Path(args.chromium).exists():
        print("chromium not found: apt-get install -y chromium, or pass --chromium", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else train_short_run(Path(tmp), args.epochs)
        process, url = start_tensorboard(run)
        try:
            wait_for_tensorboard(url, process, timeout=60)
            subprocess.run([sys.executable, "-c", "import time; time.sleep(3)"])  # first load of the event files
            for name, fragment in DASHBOARDS.items():
                if args.only and name not in args.only:
                    continue
                path = out / f"{name}.png"
                screenshot(args.chromium, f"{url}/{fragment}", path, args.window_size, args.budget_ms)
                print(f"{path} ({path.stat().st_size // 1024} KiB)")
        finally:
            stop(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
