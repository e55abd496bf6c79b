"""The process-wide settings of graphcnn.runtime: when the command relaunches itself with huge pages,
and how it ends."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphcnn import runtime

ROOT = Path(__file__).resolve().parents[1]
GLIBC = ("glibc", "2.36")


def thp_mode(tmp_path: Path, text: str) -> str:
    path = tmp_path / "enabled"
    path.write_text(text)
    return str(path)


def test_huge_pages_where_the_kernel_gives_them_on_request(tmp_path):
    mode = thp_mode(tmp_path, "always [madvise] never\n")
    env = runtime.huge_pages_environ({"PATH": "/bin"}, mode, GLIBC)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # the user's other tunables kept, in front
    env = runtime.huge_pages_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, mode, GLIBC)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("environ, mode, libc", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "always [madvise] never", GLIBC),  # the user chose
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "always [madvise] never", GLIBC),  # relaunched already
    ({}, "[always] madvise never", GLIBC),  # every mapping gets them already
    ({}, "always madvise [never]", GLIBC),  # none ever
    ({}, "always [madvise] never", ("glibc", "2.34")),  # no such tunable before 2.35
    ({}, "always [madvise] never", ("", "")),  # musl, macOS, Windows
    ({}, None, GLIBC),  # no transparent huge pages in this kernel
])
def test_no_relaunch_where_it_changes_nothing(tmp_path, environ, mode, libc):
    path = thp_mode(tmp_path, mode) if mode is not None else str(tmp_path / "missing")
    assert runtime.huge_pages_environ(environ, path, libc) is None


@pytest.mark.skipif(runtime.huge_pages_environ() is None, reason="huge pages change nothing on this machine")
def test_the_command_relaunches_once_with_the_tunable_and_keeps_its_arguments(tmp_path):
    # `python -c CODE ARGS`: the relaunch runs CODE again with the same arguments; it prints what it saw
    code = ("import os, sys; from graphcnn import runtime; "
            "print(os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], flush=True); "
            "runtime.relaunch_with_huge_pages()")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", code, "train", "--name", "a b"], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, timeout=60, check=True).stdout
    first, second = out.splitlines()
    assert first.split(" ", 2)[1:] == ["None", "['train', '--name', 'a b']"]
    assert second.split(" ", 2)[1:] == ["glibc.malloc.hugetlb=1", "['train', '--name', 'a b']"]
    assert first.split()[0] == second.split()[0]  # the same process, replaced


def _exit_now(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    # buffered output and an atexit function that writes a file: both must happen before os._exit
    code = ("import atexit, pathlib, sys, threading, time; from graphcnn import runtime; "
            "atexit.register(lambda: pathlib.Path('atexit.txt').write_text('ran')); "
            "sys.stdout.write('unflushed'); " + body + "; runtime.exit_now(7); print(' and on', end='')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": ""})


def test_exit_now_flushes_runs_the_atexit_functions_and_ends_with_the_code(tmp_path):
    result = _exit_now(tmp_path, "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()")
    assert (result.returncode, result.stdout) == (7, "unflushed")  # a daemon thread does not hold it
    assert (tmp_path / "atexit.txt").read_text() == "ran"


def test_exit_now_leaves_the_normal_exit_to_a_process_with_a_thread_still_running(tmp_path):
    result = _exit_now(tmp_path, "threading.Thread(target=time.sleep, args=(0.5,)).start()")
    assert (result.returncode, result.stdout) == (0, "unflushed and on")  # returned, the script went on
    assert (tmp_path / "atexit.txt").read_text() == "ran"


def _python(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (nothing imported yet); its printed lines."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_tensorflow_is_imported_without_the_keras_it_loads_eagerly():
    """The command line's import of TensorFlow skips Keras 3 (and matplotlib's pyplot, which
    Keras imports), which graphcnn never calls; a later ``import keras`` still works."""
    check = "print(*(m in sys.modules for m in ('tensorflow', 'keras', 'matplotlib.pyplot')))"
    assert _python(f"import sys; import tensorflow; {check}") == ["True", "True", "True"]  # what it skips
    assert _python(f"import sys; from graphcnn import runtime; runtime.import_tensorflow(); {check}; "
                   "import keras; print(keras.optimizers.Adam.__name__)") == ["True", "False", "False", "Adam"]
    # Keras loaded first (a user's program): left as it is, and TensorFlow imported as usual
    assert _python(f"import sys, keras; from graphcnn import runtime; runtime.import_tensorflow(); {check}; "
                   "print(sys.modules['keras.src.optimizers'] is not None)") == ["True", "True", "True", "True"]


def test_the_stderr_filter_drops_the_dump_of_a_ctrl_c_tensorflow_caught():
    """pybind11's print of a KeyboardInterrupt that TensorFlow's native code caught (the command
    reports the interruption in its own line); what follows it passes, and --verbose keeps it."""
    dump = (b"KeyboardInterrupt: <EMPTY MESSAGE>\n\nAt:\n  /site-packages/numpy/lib/_version.py(53): __init__\n"
            b"  /graphcnn/data/arrays.py(75): _digits_arrays\n\nrun directory: logs/x\n  an indented line of it\n")
    code = ("import os, sys\nfrom graphcnn import runtime\n"
            "with runtime.native_stderr_filter(enabled=sys.argv[1] == 'quiet'):\n"
            f"    os.write(2, {dump!r})\n")
    for mode, expected in (("quiet", "run directory: logs/x\n  an indented line of it\n"), ("verbose", dump.decode())):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert (out.returncode, out.stderr) == (0, expected), mode
