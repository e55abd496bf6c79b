"""Crash-safe writes of a run's state files.

A training run is killed at arbitrary moments (Ctrl-C twice, SIGKILL, the OOM killer, a
power cut), and ``--resume``, ``predict`` and ``report`` read what it left. Two patterns
keep those files whole:

* **replace** (:func:`write_text_atomic`, :func:`write_bytes_atomic`): write a temporary
  file in the same folder, flush and fsync it, ``os.replace`` it over the target (atomic
  on POSIX and Windows within one filesystem), then fsync the folder so the rename itself
  survives a power cut. A reader sees the old file or the new one, never a mix.
* **append** (:func:`append_line`): one ``write`` of a whole line, then fsync. A kill can
  only tear the last line; readers skip such a line (``RunDir.read_metrics``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

__all__ = ["append_line", "fsync_directory", "naming", "write_bytes_atomic", "write_text_atomic"]


def fsync_directory(directory: str | Path) -> None:
    """Make a rename or a file creation in ``directory`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are durable enough
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems (and platforms) refuse fsync on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old content or the new, never a part.

    The temporary file (``.<name>.<random>.tmp``, same folder) is removed if the write fails,
    so a full disk leaves the old file and no leftover; a kill may leave the temporary file
    (hidden, and never read as state).
    """
    path = Path(path)
    try:
        fd, tmp = _create_temporary(path)
    except OSError as err:  # name the file being written, not the temporary one
        raise naming(err, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise naming(err, path) from None
        raise
    fsync_directory(path.parent)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new hidden file beside ``path``, opened for writing, with the usual permissions
    (0o666 less the umask, as ``open`` gives; ``tempfile.mkstemp`` would give 0o600, and a
    run's files would become unreadable to the other users of a shared machine)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


def naming(err: OSError, path: str | Path) -> OSError:
    """``err`` with ``path`` as its file name (same type, errno and strerror): an error about a
    temporary file or folder, told as one about the file the user asked for."""
    if err.errno is None:
        return err
    return type(err)(err.errno, err.strerror, str(path))


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """:func:`write_bytes_atomic` for text. A file name that is not UTF-8 (os.fsdecode's lone
    surrogates, as in a data report) is written as its own bytes."""
    write_bytes_atomic(path, text.encode(encoding, errors="surrogateescape"))


def append_line(path: str | Path, line: str, encoding: str = "utf-8") -> None:
    """Append ``line`` (a newline is added) to ``path`` with a single ``write``, then fsync.

    If the file does not end with a newline (a previous append was torn by a kill), one is
    written first, so the torn fragment stays on a line of its own and this line is whole.
    """
    data = line.rstrip("\n").encode(encoding) + b"\n"
    fd = os.open(str(path), os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    try:
        size = os.fstat(fd).st_size
        created = size == 0
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)  # O_APPEND: the write still goes to the end
            if os.read(fd, 1) != b"\n":
                data = b"\n" + data
        view = memoryview(data)
        while view:  # one write() for a line of any usual size; loop only on a short write
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_directory(Path(path).parent)
