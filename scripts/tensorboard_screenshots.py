#!/usr/bin/env python
"""Screenshots of TensorBoard dashboards for a graphcnn run, with headless Chromium.

    scripts/tensorboard_screenshots.py                    # trains two short digits runs first
    scripts/tensorboard_screenshots.py --run logs/X       # an existing run (HParams: its parent folder)
    scripts/tensorboard_screenshots.py --only hparams timeseries

Starts TensorBoard on a free local port as ``graphcnn tensorboard`` does (Rust data server,
warmed up: runs loaded, dashboards listed, projector active), drives ``chromium --headless``
through the DevTools protocol on a pipe (no network port), and writes
``docs/screenshots/<dashboard>.png``: 1280x800 pixels of a 1600x1000 page (every tab of the
tab bar fits), the HParams table wider (its five hyperparameter columns, then the metrics).
Each page is captured once the browser has had no request in flight for a while. The
per-run dashboards show ``logs/digits``, HParams ``logs/`` (two runs: two trials).

Needs Chromium (Debian: ``apt-get install -y chromium``; the script installs it with apt-get
when run as root and it is missing); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from graphcnn.tensorboard.launcher import start_tensorboard, stop, warm_tensorboard  # noqa: E402


class Shot:
    def __init__(self, fragment: str, page: tuple[int, int] = (1600, 1000), scale: float = 0.8, run: str = "run"):
        self.fragment, self.page, self.scale, self.run = fragment, page, scale, run


# name -> what to open (TensorBoard 2.21 routes; the legacy dashboards take a tagFilter); run: the
# run or the folder of runs ("folder")
DASHBOARDS = {
    # everything of a step on one page: scalars of both runs, then a filter grid, feature maps, a histogram
    "timeseries": Shot("?" + urllib.parse.urlencode({"tagFilter": "^(accuracy|loss|learning_rate|filters/conv1_1|"
                                                                  "feature_maps/conv1_1|gradients/conv1_1/weights)$"})
                       + "#timeseries"),
    "scalars": Shot("#scalars&_smoothingWeight=0"),
    "custom_scalars": Shot("#custom_scalars"),
    "images_filters": Shot("#images&tagFilter=filters"),
    "images_feature_maps": Shot("#images&tagFilter=feature_maps"),
    "images_evaluation": Shot("#images&tagFilter=confusion|misclassified"),
    "histograms": Shot("#histograms&tagFilter=gradients"),
    "graphs": Shot("#graphs&run=train"),
    "pr_curves": Shot("#pr_curves"),
    "projector": Shot("#projector"),
    # Trial ID, Show Metrics, five hyperparameters, three metrics: about 1950 px of table
    "hparams": Shot("#hparams", page=(2000, 1000), run="folder"),
}
STUCK_REQUEST_S = 15.0
# TensorBoard's settings in the browser: the Time Series settings pane closed (it covers a
# third of the charts), no "what's new" notification
LOCAL_STORAGE = {"_tb_global_settings": json.dumps({"timeSeriesSettingsPaneOpened": False,
                                                    "notificationLastReadTimeInMs": 4102444800000})}


# --------------------------------------------------------------------------- Chromium over a pipe


class Chromium:
    """Headless Chromium driven through the DevTools protocol on ``--remote-debugging-pipe``
    (messages are JSON, NUL-terminated; Chromium reads descriptor 3 and writes 4)."""

    def __init__(self, binary: str, profile: str):
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # out of the way of descriptors 3 and 4, which the child gets by dup2
        child_in = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        args = [binary, "--headless", "--no-sandbox", "--remote-debugging-pipe", "--no-first-run",
                "--disable-gpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",  # WebGL on the CPU
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}", "about:blank"]
        devnull = os.open(os.devnull, os.O_WRONLY)
        self.pid = os.posix_spawn(binary, args, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, child_in, 3), (os.POSIX_SPAWN_DUP2, child_out, 4),
            (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
        for fd in (child_in, child_out, devnull):
            os.close(fd)
        self._out = os.fdopen(to_chrome_w, "wb", buffering=0)
        self._in = os.fdopen(from_chrome_r, "rb", buffering=0)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := self._in.read(1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    self._replies.pop(message["id"]).put(message)
                else:
                    self.events.put(message)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params):
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            reply: queue.Queue = queue.Queue()
            self._replies[ident] = reply
            message = {"id": ident, "method": method, "params": params, **({"sessionId": session} if session else {})}
            self._out.write(json.dumps(message).encode() + b"\0")
        answer = reply.get(timeout=timeout)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def close(self) -> None:
        with contextlib.suppress(Exception):  # gone already
            self.call("Browser.close", timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return
            time.sleep(0.1)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)


class Page:
    """One tab: navigate, wait until no request has been in flight for ``quiet`` seconds, capture."""

    def __init__(self, browser: Chromium):
        self.browser = browser
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Network.enable", "Runtime.enable"):
            self.call(domain)

    def call(self, method: str, **params):
        return self.browser.call(method, session=self.session, **params)

    def open(self, url: str, quiet: float = 2.0, timeout: float = 60.0) -> None:
        """Load ``url`` (a full load, even when only the fragment differs) and wait until it settles."""
        self.call("Page.navigate", url="about:blank")
        self._drain(0.3)
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        in_flight: dict[str, float] = {}  # request -> when sent
        scripts: set[str] = set()
        loaded, last_activity = False, time.monotonic()
        while time.monotonic() < deadline:
            now = time.monotonic()
            # a request out for long (one whose end the page is never told) is not waited for
            pending = [r for r, sent in in_flight.items() if now - sent < STUCK_REQUEST_S]
            if loaded and not pending and now - last_activity >= quiet:
                return
            try:
                event = self.browser.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if event.get("sessionId") != self.session:
                continue
            method, params = event["method"], event.get("params", {})
            if method == "Page.loadEventFired":
                loaded, last_activity = True, time.monotonic()
            elif method == "Network.requestWillBeSent":
                in_flight[params["requestId"]] = last_activity = time.monotonic()
                if params.get("type") == "Script":
                    scripts.add(params["requestId"])
            elif method in ("Network.loadingFinished", "Network.loadingFailed") or (
                    method == "Network.responseReceivedExtraInfo" and params.get("requestId") in scripts):
                # a worker's script (chart_worker.js) reports no more than its response headers to the page
                in_flight.pop(params["requestId"], None)
                last_activity = time.monotonic()
        print(f"  (still loading after {timeout:.0f} s; captured anyway)")

    def _drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(queue.Empty):
                self.browser.events.get(timeout=0.05)

    def set_local_storage(self, items: dict[str, str]) -> None:
        for key, value in items.items():
            self.call("Runtime.evaluate", expression=f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)})")

    def screenshot(self, path: Path, page: tuple[int, int], scale: float) -> None:
        """``path``: a PNG of ``page`` CSS pixels (the layout's viewport) rendered at ``scale``."""
        width, height = page
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=scale,
                  mobile=False)
        self._drain(1.0)  # relayout at the new size
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


# --------------------------------------------------------------------------- the runs and the shots


def find_chromium(install: bool) -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if install and os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing chromium with apt-get ...", flush=True)
        if subprocess.run(["apt-get", "install", "-y", "chromium"], stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "chromium"], stdout=subprocess.DEVNULL)
        return shutil.which("chromium")
    return None


def train_short_runs(logs: Path, epochs: int) -> None:
    """``logs/digits`` (the preset's learning rate, 2e-3) and ``logs/digits-lr5e-4``: two short
    digits runs, their views every 20-100 steps instead of 100-500 so that a short run has
    several snapshots. (Two runs with short names rather than a ``--sweep``, whose run names,
    ``learning_rate=0.002``, are cut short in the HParams table's Trial ID column.)"""
    views = ["--set", "log.filters_every=20", "--set", "log.feature_maps_every=50", "--set", "log.histograms_every=50",
             "--set", "log.gradients_every=50", "--set", "log.activations_every=50", "--set", "log.trace_every=100"]
    for name, sets in (("digits", []), ("digits-lr5e-4", ["--set", "train.learning_rate=0.0005"])):
        cmd = [sys.executable, "-m", "graphcnn", "train", "--logdir", str(logs), "--name", name,
               "--set", f"train.epochs={epochs}", *sets, *views, "--no-progress"]
        subprocess.run(cmd, check=True, cwd=REPO)


def shoot(browser: Chromium, logdir: Path, shots: dict[str, Shot], out: Path) -> None:
    """Start TensorBoard on ``logdir`` (relative paths show as such in its run list), warm it,
    capture ``shots``, stop it."""
    process, url = start_tensorboard(logdir, load_fast="true")
    try:
        warm_tensorboard(url, logdir, process)
        page = Page(browser)
        page.open(f"{url}/")
        page.set_local_storage(LOCAL_STORAGE)
        for name, shot in shots.items():
            path = out / f"{name}.png"
            page.call("Emulation.setDeviceMetricsOverride", width=shot.page[0], height=shot.page[1],
                      deviceScaleFactor=shot.scale, mobile=False)
            page.open(f"{url}/{shot.fragment}")
            page.screenshot(path, shot.page, shot.scale)
            print(f"{path} ({path.stat().st_size // 1024} KiB)", flush=True)
    finally:
        stop(process)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="", help="run directory (default: train two short digits runs in a temp dir)")
    p.add_argument("--folder", default="", help="folder of runs for HParams (default: the run's parent folder)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of each short run")
    p.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    p.add_argument("--only", nargs="*", default=[], help=f"dashboards: {', '.join(DASHBOARDS)}")
    p.add_argument("--chromium", default="", help="the browser (default: chromium on PATH, installed if missing)")
    args = p.parse_args(argv)
    chromium = args.chromium or find_chromium(install=True)
    if not chromium or not Path(chromium).exists():
        print("chromium not found: apt-get install -y chromium, or pass --chromium", file=sys.stderr)
        return 2
    unknown = set(args.only) - set(DASHBOARDS)
    if unknown:
        print(f"unknown dashboards: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    wanted = {name: shot for name, shot in DASHBOARDS.items() if not args.only or name in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            run = Path(args.run)
        else:
            train_short_runs(Path(tmp) / "logs", args.epochs)
            os.chdir(tmp)  # TensorBoard shows its logdir as given: logs/digits
            run = Path("logs", "digits")
        folder = Path(args.folder) if args.folder else run.parent
        browser = Chromium(chromium, str(Path(tmp) / "chromium-profile"))
        try:
            for logdir, kind in ((run, "run"), (folder, "folder")):
                shots = {name: shot for name, shot in wanted.items() if shot.run == kind}
                if shots:
                    shoot(browser, logdir, shots, out)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
