"""Process-wide TensorFlow settings that must be made before TensorFlow is imported (and the
one made before the process starts: huge pages for malloc, :func:`relaunch_with_huge_pages`),
what keeps TensorFlow's own output off a user's screen, and the process's peak memory.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, at import. On CPUs without AVX-512 VNNI /
AMX it leaves the oneDNN kernels off, which halves conv-net training speed on such machines
(see BENCHMARKS.md). graphcnn turns them on unless the user has set the variable.

What TensorFlow 2.21 prints, and what hides it (measured on this version):

* ``TF_CPP_MIN_LOG_LEVEL`` filters TensorFlow's C++ log: 1 hides INFO lines (``I0000 ...
  cpu_feature_guard.cc ...``), 2 also WARNING lines (``W0000 ... local_rendezvous.cc``),
  3 also ERROR lines (``E0000 ... jpeg_mem.cc:331] Premature end of JPEG data``, written
  when a truncated JPEG fails to decode). graphcnn sets 2 unless the user set it: errors
  still show.
* No level hides the oneDNN banner (``WARNING: All log messages before
  absl::InitializeLog() ...`` then ``I0000 ... port.cc:153] oneDNN custom operations are
  on ...``, printed twice during ``import tensorflow`` through absl, which ignores
  ``TF_CPP_MIN_LOG_LEVEL``), nor libjpeg's own messages (``Corrupt JPEG data: premature end
  of data segment`` for a damaged JPEG that still decodes, ``Unsupported JPEG process: ...``
  before a failed decode, ``Improper call to JPEG library in state 201`` ...): libjpeg
  writes them to file descriptor 2 itself. :func:`native_stderr_filter` drops those lines
  (the command line counts them in one last line); graphcnn names unreadable files itself.
* TensorFlow's Python logger (deprecation notices such as ``remove_checkpoint is
  deprecated``) and absl's Python logger: set to ERROR by :func:`configure`.

``graphcnn --verbose`` keeps all of it (and sets ``TF_CPP_MIN_LOG_LEVEL=0`` unless the user
set it).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

DEFAULTS = {
    "TF_ENABLE_ONEDNN_OPTS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
VERBOSE_DEFAULTS = {**DEFAULTS, "TF_CPP_MIN_LOG_LEVEL": "0"}


def configure(environ: dict[str, str] | None = None, verbose: bool = False) -> dict[str, str]:
    """Apply graphcnn's defaults to ``environ`` (``os.environ``) where the user set nothing,
    and quiet TensorFlow's and absl's Python loggers (ERROR) unless ``verbose``.

    Returns the variables it set. Has no effect on a TensorFlow already imported (a
    warning says so when a setting would have changed).
    """
    environ = os.environ if environ is None else environ
    defaults = VERBOSE_DEFAULTS if verbose else DEFAULTS
    applied = {k: v for k, v in defaults.items() if k not in environ}
    if applied and "tensorflow" in sys.modules and environ is os.environ and "TF_ENABLE_ONEDNN_OPTS" in applied:
        print("graphcnn: TensorFlow was imported before graphcnn.runtime.configure(); "
              "oneDNN stays as TensorFlow chose", file=sys.stderr)
    environ.update(applied)
    # the level of the logger tf.get_logger() returns; TensorFlow adds a handler, never a level
    logging.getLogger("tensorflow").setLevel(logging.WARNING if verbose else logging.ERROR)
    with contextlib.suppress(ImportError):  # absl comes with TensorFlow; without it there is nothing to quiet
        from absl import logging as absl_logging  # light: no TensorFlow import

        absl_logging.set_verbosity(absl_logging.WARNING if verbose else absl_logging.ERROR)
    return applied


# --------------------------------------------------------------------------- huge pages

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_environ(environ: Mapping[str, str] | None = None, thp_mode_file: str = THP_MODE_FILE,
                       libc: tuple[str, str] | None = None) -> dict[str, str] | None:
    """The environment to relaunch this process with so that glibc's malloc asks the kernel for
    transparent huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``), or None where that
    changes nothing: not glibc 2.35 or later, the kernel's mode not ``madvise`` (``always``
    gives them already, ``never`` never), or the user's ``GLIBC_TUNABLES`` already choosing.

    Why: TensorFlow's CPU allocator takes every tensor from malloc, and glibc maps each
    block over 32 MB afresh and unmaps it when freed, so each training step faults in its
    large activations and gradients 4 KB at a time. On ``dog_breeds_vgg`` at 224 px that was
    1.6 M page faults a run; with 2 MB pages 0.13 M, and the run 1.07x faster (BENCHMARKS.md,
    "Why it is fast"). glibc reads its tunables once, at start, hence a relaunch.
    """
    environ = os.environ if environ is None else environ
    name, version = platform.libc_ver() if libc is None else libc
    if name != "glibc" or tuple(int(p) for p in re.findall(r"\d+", version)[:2]) < (2, 35):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" in tunables:
        return None
    try:
        mode = Path(thp_mode_file).read_text()
    except OSError:
        return None
    if "[madvise]" not in mode:
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE}


def relaunch_with_huge_pages() -> None:
    """Replace this process with the same command under :func:`huge_pages_environ`'s
    environment, where it has one (the ``graphcnn`` command does this first; a program that
    imports graphcnn is left as it is). Returns only when there is nothing to do or the
    relaunch failed; the relaunched process finds the tunable set and goes on."""
    environ = huge_pages_environ()
    if environ is None or not sys.executable or len(sys.orig_argv) < 2:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError):
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)


def exit_now(code: int) -> None:
    """End the process with ``code`` at once, once everything it wrote is out: flush
    stdout and stderr, run the ``atexit`` functions (logging's shutdown, TensorFlow's
    removal of its autograph temp files), then ``os._exit``.

    This skips the interpreter's teardown, which frees TensorFlow's graphs, sessions and
    modules object by object (about 0.8 s after a 224 px run, 1 s of a one-image ``graphcnn
    predict``; BENCHMARKS.md), for nothing a user keeps. For the ``graphcnn`` command only,
    after its work is done and every file it writes is closed. Returns (and the normal exit
    follows) while a non-daemon thread other than the main one still runs: the normal exit
    waits for it (daemon threads, such as tqdm's monitor, it abandons as ``os._exit`` does).
    """
    main = threading.main_thread()
    if any(t is not main and not t.daemon for t in threading.enumerate()):
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a closed pipe: nothing more to say
            stream.flush()
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)  # CPython's; elsewhere the normal exit
    if run_exit_functions is None:
        return
    run_exit_functions()
    os._exit(code)


# --------------------------------------------------------------------------- the stderr filter

# Lines of file descriptor 2 that native code writes and a user has no use for; everything
# else passes. Run in a child process (below), so it is source text.
_FILTER_SOURCE = r'''
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C stops graphcnn, which then closes the pipe
signal.signal(signal.SIGTERM, signal.SIG_IGN)
LOG = re.compile(rb"^(?:([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./+-]+:\d+\] "  # absl's format
                 rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) )")  # TensorFlow's own (tsl)
ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
DECODERS = re.compile(rb"[\s/](jpeg_mem|jpeg_handle|png_io|gif_io|decode_image_op)\.cc:\d+\] ")
# libjpeg-turbo's error and warning texts (jerror.h), up to their first printf field
LIBJPEG = re.compile(
    rb"^(ALIGN_TYPE is wrong|Application transferred too|Arithmetic table 0x|Backing store not supported|Bogus "
    rb"|Buffer passed to JPEG library|CCIR601 sampling|Cannot quantize|Cannot transcode|Component index"
    rb"|Corrupt JPEG data|DCT coefficient out of range|Didn't expect more than one scan|Empty JPEG image"
    rb"|Empty input file|Failed to create temporary file|Fractional sampling|Huffman code size table|Huffman table 0x"
    rb"|IDCT output block size|Image too wide for this implementation|Improper call to JPEG library"
    rb"|Inconsistent progression sequence|Input file read error|Insufficient memory \(case|Invalid JPEG file structure"
    rb"|Invalid SOS parameters|Invalid color quantization|Invalid component ID|Invalid crop request"
    rb"|Invalid memory pool code|Invalid progressive parameters|Invalid scan script|JPEG datastream contains no image"
    rb"|JPEG parameter struct mismatch|MAX_ALLOC_CHUNK is wrong|Maximum supported image dimension"
    rb"|Missing Huffman code table entry|Not a JPEG file|Premature end of (JPEG|input) file|Quantization table 0x"
    rb"|(Read|Write) (from|to) [EX]MS failed|(Read|Seek|Write) failed on temporary file|Requested feature"
    rb"|Sampling factors too large|Scan script does not transmit|Sorry, arithmetic coding|Suspension not allowed here"
    rb"|Too many color components|Unknown Adobe color transform|Unsupported (JPEG|color conversion|marker type)"
    rb"|Virtual array controller|Warning: unknown JFIF|Wrong JPEG library version)")
# a Ctrl-C that TensorFlow's native code caught while it ran Python (pybind11 prints it: the
# exception, a blank line, "At:", the Python frames): graphcnn reports the interruption itself
INTERRUPT_DUMP = re.compile(rb"^KeyboardInterrupt(: .*)?\r?\n$")
SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
level = int(sys.argv[1])  # TF_CPP_MIN_LOG_LEVEL, applied to absl's lines too (TensorFlow does not)
hidden = 0
dropped = False  # the last line was dropped: an indented line after it continues its message
out = sys.stdout.buffer
dump = False  # inside an INTERRUPT_DUMP
for line in sys.stdin.buffer:
    if dropped and line[:1] in (b" ", b"\t"):
        continue
    if dump and line.strip() in (b"", b"At:"):
        continue
    dump = level >= 1 and bool(INTERRUPT_DUMP.match(line))
    dropped = True
    if dump:
        continue
    if level >= 1 and line.rstrip(b"\r\n") == ABSL_PREAMBLE:
        continue
    log = LOG.match(line)
    severity = SEVERITY[log.group(1) or log.group(2)] if log else None
    if severity is not None and severity < level:
        continue
    if level >= 2 and ((severity == 2 and DECODERS.search(line)) or (log is None and LIBJPEG.match(line))):
        hidden += 1
        continue
    dropped = False
    out.write(line)
    out.flush()
if hidden:
    out.write(b"graphcnn: %d image decoder message(s) hidden (about damaged JPEG data; --verbose shows them)\n"
              % hidden)
    out.flush()
'''


_interrupted = False  # a Ctrl-C / SIGTERM arrived inside interrupts(): see interrupted()


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """Inside the block Ctrl-C and SIGTERM raise ``KeyboardInterrupt`` and are remembered
    (:func:`interrupted`), so that a command stopped by Ctrl-C, ``kill`` or a scheduler cleans
    up (a start that fails removes its run folder and lock; exit 130 with one error line)
    instead of dying at once. Remembered because TensorFlow's native code, when the signal
    comes while it is calling back into Python (an import, a session being made), can swallow
    the ``KeyboardInterrupt`` or re-raise it as another error (an ``ImportError``, a pybind11
    ``RuntimeError``): the command line then still reports an interruption, and training checks
    :func:`raise_if_interrupted` before it starts its loop. Training installs its own handler
    for the loop (:class:`graphcnn.train.hooks.StopSignals`: finish the step, save) and puts
    this one back. Outside the main thread it does nothing."""
    global _interrupted

    def interrupt(signum, frame):
        global _interrupted
        _interrupted = True
        raise KeyboardInterrupt

    _interrupted = False
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _interrupted = False  # the command is over: a library call after it (a test, a script) starts clean


def interrupted() -> bool:
    """Whether a Ctrl-C or SIGTERM came in since the command's :func:`interrupts` block began."""
    return _interrupted


def raise_if_interrupted() -> None:
    """``KeyboardInterrupt`` if a signal came in that native code swallowed (:func:`interrupts`)."""
    if _interrupted:
        raise KeyboardInterrupt


@contextlib.contextmanager
def native_stderr_filter(enabled: bool = True) -> Iterator[None]:
    """While active, what native code (TensorFlow's C++ log, absl, libjpeg) writes to file
    descriptor 2 goes through a filter that applies ``TF_CPP_MIN_LOG_LEVEL`` (default 2)
    to absl's lines too (the oneDNN banner is an absl INFO line) and, at level 2 or more,
    drops image-decoder messages (libjpeg's, and the decoders' ERROR lines about files that
    graphcnn names itself); everything else passes, and a last line counts the decoder
    messages hidden.

    The filter is a small child process reading a pipe that replaces descriptor 2, so a line
    written just before a crash still arrives. ``sys.stderr``, when it is descriptor 2, is
    switched to a copy of the original descriptor: Python output (graphcnn's own lines, the
    progress bar, tracebacks) does not go through the filter and keeps its order. Does
    nothing when ``enabled`` is false, or where descriptor 2 cannot be redirected.
    """
    if not enabled or os.name != "posix":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    old_stderr = sys.stderr
    child = None
    try:
        try:
            level = _log_level()
            child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER_SOURCE, str(level)],
                                     stdin=subprocess.PIPE,
                                     stdout=saved, stderr=subprocess.DEVNULL, close_fds=True)
        except OSError:
            yield
            return
        try:
            if _is_fd2(old_stderr):
                sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=old_stderr.encoding,
                                       errors=old_stderr.errors)
            os.dup2(child.stdin.fileno(), 2)
        finally:
            child.stdin.close()  # descriptor 2 is now the pipe's only writer here
        yield
    finally:
        if child is not None:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)  # closes the pipe: the filter reads to its end, then exits
            if sys.stderr is not old_stderr:
                sys.stderr = old_stderr  # the copy stays open: handlers made meanwhile may hold it
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)  # a child process of graphcnn may still hold the pipe
        os.close(saved)


def _log_level() -> int:
    try:
        return min(3, max(0, int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", DEFAULTS["TF_CPP_MIN_LOG_LEVEL"]))))
    except ValueError:
        return int(DEFAULTS["TF_CPP_MIN_LOG_LEVEL"])


def _is_fd2(stream) -> bool:
    try:
        return stream is not None and stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's captured streams have no descriptor
        return False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (not the one at setup:
    a redirected or captured stderr still gets the log)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


# TensorFlow's __init__ imports this module eagerly, inside a try/except ImportError
_TF_EAGER_KERAS = "keras.src.optimizers"


def import_tensorflow() -> None:
    """Import TensorFlow without the Keras 3 it loads eagerly (the command line's one import).

    TensorFlow 2.21's ``__init__`` imports ``keras.src.optimizers`` so that Keras's optimizers
    register with SavedModel loading; that loads all of Keras and matplotlib's pyplot, about
    0.4-0.8 s of every command's start on 2 cores, for a Keras graphcnn never calls (its
    graphs are ``tf.nn`` ops; its SavedModels hold no Keras objects). Marking that module as
    absent while TensorFlow loads makes its import fail quietly, as it does where Keras is
    not installed; the mark is removed at once, so a later ``import keras`` (or
    ``tf.keras``) loads it as usual. Nothing is skipped when TensorFlow or that module is
    already loaded.
    """
    if "tensorflow" in sys.modules or _TF_EAGER_KERAS in sys.modules:
        return
    sys.modules[_TF_EAGER_KERAS] = None  # type: ignore[assignment]  # import machinery: "not found"
    try:
        import tensorflow  # noqa: F401
    finally:
        if _TF_EAGER_KERAS in sys.modules and sys.modules[_TF_EAGER_KERAS] is None:
            del sys.modules[_TF_EAGER_KERAS]


def configure_logging() -> None:
    """``graphcnn: <message>`` on stderr for the library's INFO and above, set up once (by the
    command line from the start: data warnings are logged before training begins, and
    predict's checkpoint fallbacks are warnings too; or by a ``train()`` called alone)."""
    root = logging.getLogger("graphcnn")
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("graphcnn: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MiB (``getrusage``'s ``ru_maxrss``: KiB on
    Linux, bytes on macOS); 0.0 where the platform has no ``resource`` module (Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
