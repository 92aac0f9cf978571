"""The one way edgedet writes files: atomically, readable per the umask, under plain names.

Every file edgedet writes (graphs, checkpoints, videos, JSON lines, reports, Triton repositories)
goes through :class:`PendingFile` (or its shorthands :func:`atomic_path` and
:func:`atomic_write_bytes`):

- it is written under a temporary name beside the target, ``.NAME.PID.RANDOM.SUFFIX``, and
  renamed onto the target only on success, so a failed, killed or disk-full run never replaces
  an existing file nor leaves a half-written one under the target's name;
- temporaries of the same target left by a killed run (their PID no longer alive on this host)
  are removed by the next write of that target;
- the finished file gets mode ``0o666 & ~umask``, like any file a program creates, so servers
  running as another user can read it;
- running out of space raises :class:`DiskFullError` ("no space left on device writing X");
- with ``lock=True`` a lock file beside the target (``.NAME.lock``) makes a second writer of the
  same target fail at once with :class:`OutputLockedError` instead of interleaving output.

Names given by users (``--name``, Triton model names) pass :func:`check_name` and
:func:`safe_child`, so they cannot leave the folder they are meant for; output folders and files
are probed up front with :func:`check_writable_dir` / :func:`check_writable_file`, before any work.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgedet.errors import EdgedetError

__all__ = ["OutputError", "DiskFullError", "OutputLockedError", "UnsafeNameError", "PendingFile", "OutputLock",
           "atomic_path", "atomic_write_bytes", "file_digest", "file_mode", "clean_stale_temps", "check_name",
           "safe_child", "check_writable_dir", "check_writable_file", "disk_is_full", "is_disk_full_error"]


class OutputError(EdgedetError):
    """An output that cannot be written (unsupported suffix, unwritable folder, codec missing)."""


class DiskFullError(OutputError):
    """The device ran out of space while writing an output."""


class OutputLockedError(OutputError):
    """Another edgedet process is writing the same output."""


class UnsafeNameError(OutputError):
    """A name that is not a plain file or folder name (a path, ``..``, empty, ...)."""


def _read_umask() -> int:
    """The process umask, without a window where another thread sees it changed (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


_UMASK_LOCK = threading.Lock()
_UMASK = _read_umask()


def file_mode() -> int:
    """The mode a new regular file gets from this process: ``0o666 & ~umask``."""
    return 0o666 & ~_UMASK


_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is an out-of-space ``OSError``."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def disk_is_full(path: str | os.PathLike) -> bool:
    """Whether the filesystem holding ``path`` has no block left for this process.

    Libraries that swallow ``ENOSPC`` (OpenCV's video writer) or reword it (torch's ``unexpected
    pos``) are checked this way. Root may use the blocks reserved for it; others may not.
    """
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return False
    free = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return free == 0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def _temp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[0-9a-f]{{8}}(?:\.[^/\\]*)?$")


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``path`` whose writing process no longer runs; returns what was removed.

    Only this module's temporaries (``.NAME.PID.RANDOM.SUFFIX``) are touched, and only when that PID
    is not alive on this host (a writer on another host sharing the folder is not detectable).
    """
    path = Path(path)
    pattern = _temp_pattern(path.name)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


class OutputLock:
    """An exclusive, non-blocking lock on writing ``path`` (``flock`` on ``.NAME.lock`` beside it).

    The lock is released when the process dies, however it dies. Where ``fcntl`` is missing
    (Windows) it does nothing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:
            return
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(f"cannot lock {self.path}: {e.strerror or e}") from None
                raise OutputLockedError(f"{self.path} is being written by another edgedet run"
                                        + (f" (pid {holder})" if holder.isdigit() else "")) from None
            try:  # the holder before us may have removed the file we opened: lock the current one
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_path)
        except OSError:
            pass
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None


class PendingFile:
    """A temporary file beside ``path`` that becomes ``path`` on :meth:`commit`.

    Args:
        path: the target; its folder is created if needed.
        suffix: the temporary's suffix (default ``path``'s), so writers that choose a format by
            extension (OpenCV, torch) still work.
        lock: hold an :class:`OutputLock` on ``path`` until commit or discard.
        clean: first remove stale temporaries of ``path`` (see :func:`clean_stale_temps`).
    """

    def __init__(self, path: str | os.PathLike, suffix: str | None = None, *, lock: bool = False,
                 clean: bool = True) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._lock = OutputLock(self.path) if lock else None
        if clean:
            clean_stale_temps(self.path)
        suffix = suffix or self.path.suffix or ".tmp"
        while True:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                break
            except FileExistsError:
                continue
            except OSError as e:
                self._release()
                if e.errno in _DISK_FULL_ERRNOS:
                    raise DiskFullError(f"no space left on device writing {self.path}") from None
                raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.tmp = tmp
        self.done = False

    def commit(self) -> Path:
        """Give the temporary the umask's mode and rename it onto the target; returns the target."""
        try:
            os.chmod(self.tmp, file_mode())
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            if e.errno in _DISK_FULL_ERRNOS:
                raise DiskFullError(f"no space left on device writing {self.path}") from None
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.done = True
        self._release()
        return self.path

    def discard(self) -> None:
        """Remove the temporary; the target stays as it was."""
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass
        self.done = True
        self._release()

    def failure(self, exc: BaseException) -> BaseException:
        """Discard, and turn an out-of-space failure (however a library words it) into :class:`DiskFullError`."""
        self.discard()
        if isinstance(exc, EdgedetError):
            return exc
        if is_disk_full_error(exc) or (isinstance(exc, Exception) and disk_is_full(self.path.parent)):
            return DiskFullError(f"no space left on device writing {self.path}")
        return exc

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, *, lock: bool = False,
                clean: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On an exception the temporary is removed, ``path`` is left untouched, and an out-of-space
    failure is raised as :class:`DiskFullError`.
    """
    pending = PendingFile(path, suffix, lock=lock, clean=clean)
    try:
        yield pending.tmp
    except BaseException as e:
        error = pending.failure(e)
        if error is e:
            raise
        raise error from e
    pending.commit()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, clean: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; returns ``path``.

    ``clean=False`` skips the search for stale temporaries (one folder listing), for callers
    writing many files into one folder.
    """
    with atomic_path(path, clean=clean) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is a plain file or folder name, else :class:`UnsafeNameError`.

    Refused: empty names, ``.`` and ``..``, anything with ``/`` or ``\\`` (so absolute paths too),
    NUL and other control characters, and a leading ``-`` or ``.`` (options, hidden files).
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafeNameError(f"{what} must not be empty")
    reason = None
    if "/" in name or "\\" in name:
        reason = "contains a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        reason = "contains a control character"
    elif name.startswith("."):
        reason = "starts with '.'"
    elif name.startswith("-"):
        reason = "starts with '-'"
    elif name != name.strip():
        reason = "starts or ends with a space"
    if reason:
        raise UnsafeNameError(f"{what} {name!r} {reason}; give a plain name, not a path")
    return name


def safe_child(folder: str | os.PathLike, name: str, what: str = "name") -> Path:
    """``folder / name`` for a plain ``name`` (see :func:`check_name`); never a path outside ``folder``."""
    return Path(folder) / check_name(name, what)


def _probe_dir(folder: Path) -> None:
    """Create ``folder`` if needed and write (then remove) an empty file in it; OSError if not possible."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".edgedet-write-test.{os.getpid()}.{secrets.token_hex(4)}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    probe.unlink()


def check_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it; else :class:`OutputError`.

    Called before any work, so a command fails in one line instead of after minutes of work.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot write to {folder}: it is a file, not a folder")
    _probe_or_raise(folder, f"cannot write to {folder}")
    return folder


def check_writable_file(path: str | os.PathLike) -> Path:
    """Prove ``path`` can be written: not a folder, its folder created and writable; else :class:`OutputError`."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is a file, not a folder")
    _probe_or_raise(parent, f"cannot write {path}")
    return path


def _probe_or_raise(folder: Path, what: str) -> None:
    try:
        _probe_dir(folder)
    except OSError as e:
        raise OutputError(f"{what}: {e.strerror or e}") from None


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks (checksums of downloads and checkpoints)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
