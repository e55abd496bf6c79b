"""``graphcnn tensorboard``: TensorBoard started with sampling that keeps every snapshot, warmed
up before its address is printed, and stopped with the launcher; the same kit for tests and
screenshots.

* Sampling: TensorBoard keeps a reservoir sample of 10 images per tag by default; the launcher
  asks for all of them (``images=100000``; in TensorBoard 2.21 ``images=0`` returns none), so
  every filter/feature-map snapshot can be stepped through with the slider.
* Start-up: where TensorBoard's Rust data server is installed (the ``tensorboard-data-server``
  wheel; it reads the event files), TensorBoard runs with ``--load_fast=true`` and without
  importing TensorFlow (the switch of TensorBoard's own TensorFlow-free build,
  ``tensorboard.compat.notf``): TensorFlow's import is most of a plain ``tensorboard``'s
  start-up, and nothing a graphcnn run writes needs it. A logdir with a projector that reads
  a checkpoint (runs written before the projector became a TSV tensor file) gets TensorFlow.
* Warm-up (:func:`warm_tensorboard`): the address is printed once the page a browser opens
  then is complete: runs loaded, the list of dashboards settled, the projector active
  (TensorBoard decides that in a background thread after the first request, so a page
  opened at once lacks the Projector tab until reloaded).
* Stop: TensorBoard is a child in its own process group (with Rust's data server, its own
  child); SIGTERM, SIGINT or SIGHUP to the launcher stop the group (SIGTERM, then SIGKILL
  after :data:`STOP_TIMEOUT_S`), and on Linux TensorBoard gets SIGTERM if the launcher dies
  any other way (its data server follows: it exits when TensorBoard does).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Iterable

SAMPLES_PER_PLUGIN = "scalars=100000,images=100000,histograms=1000,distributions=1000,text=1000,pr_curves=1000"
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
STOP_TIMEOUT_S = 10.0
WARM_TIMEOUT_S = 60.0

# How the child starts: on Linux it asks for SIGTERM when the launcher dies (PR_SET_PDEATHSIG,
# set after exec, so nothing runs between fork and exec), and quits if the launcher is gone
# already; then, without TensorFlow, what TensorBoard's no-TensorFlow build does (a module
# named tensorboard.compat.notf makes tensorboard.compat.tf its stub); then TensorBoard's main.
_BOOTSTRAP = """\
import os, sys
if sys.platform.startswith("linux") and os.environ.get("GRAPHCNN_LAUNCHER_PID"):
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, 15)
    except Exception:
        pass
    if os.getppid() != int(os.environ["GRAPHCNN_LAUNCHER_PID"]):
        sys.exit(0)
if {without_tensorflow}:
    import types
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
from tensorboard.main import run_main
run_main()
"""

# lines of TensorBoard's output the launcher does not pass on: its banner (the launcher prints
# the address once warm), the stub's notice, TensorFlow's import chatter (absl INFO lines)
_QUIET = re.compile(r"^(TensorBoard \S+ at https?://\S+ \(Press CTRL\+C to quit\)"
                    r"|TensorFlow installation not found - running with reduced feature set\."
                    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                    r"|I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./+-]+:\d+\] .*"
                    r"|To enable the following instructions: .*"
                    r"|TensorBoard caught SIG[A-Z]+; exiting\.\.\."  # the launcher's own stop
                    r"|NOTE: Using experimental fast data loading logic\..*)\s*$")


# --------------------------------------------------------------------------- the command


def data_server_available() -> bool:
    """Whether TensorBoard's Rust data server (``--load_fast=true``) is installed."""
    try:
        import tensorboard_data_server
    except ImportError:
        return False
    try:
        return bool(tensorboard_data_server.server_binary())
    except Exception:  # noqa: BLE001 (a broken install: TensorBoard will not use it either)
        return False


def projector_configs(logdir: str | Path, depth: int = 3) -> list[Path]:
    """The ``projector_config.pbtxt`` files in ``logdir`` and up to ``depth`` folders below it
    (a run's ``train/``; a run of a folder of runs; of a sweep in a folder)."""
    root = Path(logdir)
    found: list[Path] = []
    for level in range(depth + 1):
        found += root.glob("/".join(["*"] * level + ["projector_config.pbtxt"]))
        found += root.glob("/".join(["*"] * level + ["plugins", "org_tensorflow_tensorboard_projector",
                                                     "projector_config.pbtxt"]))
    return sorted(found)


def needs_tensorflow(logdir: str | Path) -> bool:
    """Whether TensorBoard needs TensorFlow for ``logdir``: a projector read from a checkpoint
    (a config without ``tensor_path``)."""
    for config in projector_configs(logdir):
        try:
            if "tensor_path" not in config.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


def _load_fast(args: list[str]) -> str | None:
    """The last ``--load_fast`` value in ``args`` (``--load_fast=X`` or ``--load_fast X``)."""
    value = None
    for i, arg in enumerate(args):
        name, _, given = arg.partition("=")
        if name.replace("_", "-") == "--load-fast":
            value = given if given else (args[i + 1] if i + 1 < len(args) else None)
    return value


def tensorboard_command(logdir: str | Path, port: int = 6006, host: str = "127.0.0.1",
                        extra: list[str] | None = None, without_tensorflow: bool | None = None) -> list[str]:
    """The TensorBoard command line; ``without_tensorflow`` None: where it can (see the module
    docstring), which also sets ``--load_fast=true`` (a later ``--load_fast`` in ``extra`` wins
    and, when it is ``false``, keeps TensorFlow: the Python loader needs it to read fast)."""
    extra = list(extra or [])
    if without_tensorflow is None:
        without_tensorflow = _load_fast(extra) != "false" and data_server_available() and not needs_tensorflow(logdir)
    head = [sys.executable, "-c", _BOOTSTRAP.format(without_tensorflow=bool(without_tensorflow))]
    return [*head, "--logdir", str(logdir), "--host", host, "--port", str(port),
            "--samples_per_plugin", SAMPLES_PER_PLUGIN, *(["--load_fast=true"] if without_tensorflow else []), *extra]


# --------------------------------------------------------------------------- the process


def spawn(cmd: list[str], stdout: int | IO | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new process group (its children join it), which
    :func:`stop` ends as a whole. A :func:`tensorboard_command` child also dies with this
    process on Linux (it reads ``GRAPHCNN_LAUNCHER_PID``)."""
    env = dict(os.environ if env is None else env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["GRAPHCNN_LAUNCHER_PID"] = str(os.getpid())
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the group of the child (start_new_session: its pid)
    except (ProcessLookupError, PermissionError):
        pass
    except OSError:
        with contextlib.suppress(OSError):
            process.send_signal(signum)


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """Stop a process :func:`spawn` started and its process group: SIGTERM, then SIGKILL if it
    is still there after ``timeout`` seconds. Returns its exit code."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    _signal_group(process, signal.SIGKILL)  # whatever is left of the group (the data server)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    return process.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (TensorBoard would fail to bind)."""
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host
    try:
        with socket.create_connection((probe_host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_tensorboard(logdir: str | Path, port: int | None = None, samples: str = SAMPLES_PER_PLUGIN,
                      log_file=None, load_fast: str = "false", without_tensorflow: bool | None = None,
                      extra: Iterable[str] = ()) -> tuple[subprocess.Popen, str]:
    """Start TensorBoard in the background (tests, screenshots); the caller stops it with
    :func:`stop`. ``load_fast``: ``true`` (Rust data server, as ``graphcnn tensorboard``),
    ``false`` (Python loader, TensorFlow imported), ``auto``."""
    port = port or free_port()
    args = ["--samples_per_plugin", samples, f"--load_fast={load_fast}", "--reload_interval", "1", *extra]
    if without_tensorflow is None:
        without_tensorflow = load_fast == "true" and not needs_tensorflow(logdir)
    cmd = tensorboard_command(logdir, port, "127.0.0.1", args, without_tensorflow=without_tensorflow)
    process = spawn(cmd, stdout=log_file or subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return process, f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- readiness


def _get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for_tensorboard(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Poll ``url``/data/plugins_listing until TensorBoard answers (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"tensorboard exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/data/plugins_listing", timeout=5) as r:
            if r.status == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"tensorboard at {url} not ready after {timeout:.0f} s")
        time.sleep(0.1)


def _has_event_files(logdir: Path, depth: int = 4) -> bool:
    return any(next(iter(logdir.glob("/".join(["*"] * level + ["*tfevents*"]))), None) is not None
               for level in range(depth + 1))


# routes a first page load asks for (the Time Series dashboard opens first), answered once here
# so that their first computation is not the browser's wait
_FIRST_PAGE_ROUTES = ("/data/environment", "/data/runs", "/data/plugin/timeseries/tags",
                      "/data/plugin/scalars/tags", "/data/plugin/images/tags", "/data/plugin/histograms/tags")


def warm_tensorboard(url: str, logdir: str | Path, process: subprocess.Popen | None = None,
                     timeout: float = WARM_TIMEOUT_S, settle: float = 1.0) -> dict:
    """Wait until the page a browser would open now is complete, and return the plugins
    listing then: TensorBoard answers; ``/data/runs`` lists the runs (when ``logdir`` has
    event files); the dashboards enabled in ``/data/plugins_listing`` have not changed for
    ``settle`` seconds; and, when ``logdir`` has a projector config, the projector answers
    ``/data/plugin/projector/runs`` with a run and is enabled in the listing. After
    ``timeout`` seconds it returns what it has (TensorBoard still serves; a tab may appear
    only on reload)."""
    deadline = time.monotonic() + timeout
    wait_for_tensorboard(url, process, timeout)
    logdir = Path(logdir)
    expect_runs = _has_event_files(logdir)
    expect_projector = bool(projector_configs(logdir))
    last, since, listing = None, time.monotonic(), {}
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"tensorboard exited with {process.returncode}")
        try:
            listing = _get_json(url + "/data/plugins_listing")
            runs = _get_json(url + "/data/runs")
            enabled = frozenset(name for name, p in listing.items() if p.get("enabled"))
            projector_runs = (_get_json(url + "/data/plugin/projector/runs", timeout=30)
                              if expect_projector and "projector" in listing else [])
        except (OSError, ValueError):
            runs, enabled, projector_runs = [], frozenset(), []
        now = time.monotonic()
        state = (tuple(runs), enabled)
        if state != last:
            last, since = state, now
        complete = ((runs or not expect_runs) and (not expect_projector or (projector_runs and "projector" in enabled))
                    and now - since >= settle)
        if complete or now > deadline:
            break
        time.sleep(0.1)
    for route in _FIRST_PAGE_ROUTES:
        with contextlib.suppress(OSError, ValueError):
            _get_json(url + route, timeout=30)
    return listing


# --------------------------------------------------------------------------- graphcnn tensorboard


class _Stop(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _relay(stream: IO[bytes], out: IO[str]) -> None:
    """Pass TensorBoard's output on, without the lines in :data:`_QUIET`."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        if not _QUIET.match(line):
            out.write(line)
            out.flush()


def run_tensorboard(logdir: str | Path, port: int = 6006, host: str = "127.0.0.1", extra: list[str] | None = None,
                    out: IO[str] | None = None) -> int:
    """``graphcnn tensorboard``: start TensorBoard on ``logdir``, print its address once it is
    warm, and run until it exits or a stop signal arrives (then stop it and its children).
    Returns TensorBoard's exit code, 0 after Ctrl-C, 128 + the signal after SIGTERM/SIGHUP, 2
    when ``port`` is in use. A folder without event files is warned about (TensorBoard still starts:
    a run may be about to write them)."""
    out = out or sys.stdout
    started = time.monotonic()
    logdir = Path(logdir)
    if not logdir.exists():
        raise FileNotFoundError(2, "No such file or directory", str(logdir))
    if logdir.is_file() or not any(logdir.rglob("events.out.tfevents.*")):
        print(f"graphcnn: no TensorBoard event files under {logdir} (a run folder, or a folder of runs, has them "
              "in train/ and validation/): TensorBoard shows nothing until a run writes some", file=sys.stderr)
    if port_in_use(host, port):  # bad input, as cluster-local's busy --port
        print(f"graphcnn: error: port {port} is in use (another TensorBoard?); choose one with --port", file=sys.stderr)
        return 2
    named = f"[{host}]" if ":" in host else host  # an IPv6 address goes in brackets in a URL
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else named}:{port}"
    process = spawn(tensorboard_command(logdir, port, host, extra), stdout=subprocess.PIPE)
    relay = threading.Thread(target=_relay, args=(process.stdout, sys.stderr), daemon=True)
    relay.start()

    def on_signal(signum, frame):
        raise _Stop(signum)

    previous = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, on_signal)
    except ValueError:  # not the main thread: no handlers (the caller stops the process)
        previous = {}
    try:
        try:
            warm_tensorboard(url, logdir, process)
        except (RuntimeError, TimeoutError):
            if process.poll() is None:
                raise
            relay.join(timeout=2)  # its own lines (above) say why
            print(f"graphcnn: error: TensorBoard exited with code {process.returncode} before serving on "
                  f"{host}:{port}", file=sys.stderr)
            return process.returncode or 1
        where = f"{url}/" if host not in ("0.0.0.0", "") else f"{url}/ (all interfaces)"
        print(f"TensorBoard at {where} for {logdir} (ready in {time.monotonic() - started:.1f} s; Ctrl-C to stop)",
              file=out, flush=True)
        # polled, not one blocking wait: a signal that arrives just before a blocking waitpid
        # (or that the kernel hands to the relay thread) does not interrupt it, and the handler
        # would wait for TensorBoard to exit on its own
        while process.poll() is None:
            time.sleep(0.2)
        relay.join(timeout=2)
        return process.returncode
    except _Stop as stop_signal:
        return 0 if stop_signal.signum == signal.SIGINT else 128 + stop_signal.signum
    finally:
        for signum in previous:  # stopping is bounded (SIGKILL after STOP_TIMEOUT_S): no second signal needed
            signal.signal(signum, signal.SIG_IGN)
        stop(process)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
