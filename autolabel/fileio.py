"""Durable, atomic file writes and per-folder locks, as SQLite and git do them.

A file is written beside its target, flushed to disk (fsync), given the permissions the
umask allows (``mkstemp`` alone makes them 0600), renamed into place, and the folder
is flushed after the rename: a reader, a resumed run or a power cut never sees half a
file, nor a name that points at lost data. One exclusive OS lock per dataset keeps a
second process out; the OS releases it when its holder dies, so a killed run never
blocks the next one, and a command that ends removes its lock file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from autolabel.errors import OutputError

TMP_MARK = ".autolabel-tmp-"
LOCK_SUFFIX = ".autolabel-lock"


@functools.cache
def umask() -> int:
    """The process umask (read without changing it where the OS allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file under the umask (0644 under umask 022)."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Mode of a new folder under the umask (0755 under umask 022)."""
    return 0o777 & ~umask()


def sync_dir(path: Path) -> None:
    """Flushes a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # file systems without directory fsync
            raise
    finally:
        os.close(fd)


def stage_stream(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Runs ``write`` on a temporary file beside ``path``, then flushes it to disk; returns it (unpublished).

    The file gets the permissions the umask allows (``mkstemp`` alone makes it 0600) and
    is fsynced before this returns. Safe from any thread. :func:`publish` renames it into
    place; if ``write`` raises, the temporary file is removed, and a process killed before
    the rename leaves only a temporary file, which the next run removes.

    Args:
        path: The target the file is staged for.
        write: Writes the content to the open binary file it is given (streaming is fine);
            raising (a failed download, a wrong hash) leaves nothing behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), file_mode())
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def stage_bytes(path: Path, data: bytes) -> Path:
    """:func:`stage_stream` of ``data``: a temporary file beside ``path``, flushed to disk (unpublished)."""
    return stage_stream(path, lambda fh: fh.write(data))


def publish(staged: Path, path: Path) -> None:
    """Renames a staged file into place (atomic)."""
    try:
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def atomic_write_stream(path: Path, write: Callable[[BinaryIO], object], sync_parent: bool = True) -> None:
    """Writes ``path`` through ``write`` (given the open file) beside it, fsyncs it, renames it into place.

    Args:
        path: The target.
        write: Writes the content to the binary file it is given; if it raises, ``path`` is
            left as it was and no temporary file stays.
        sync_parent: Also flush the folder after the rename. Writers of many files pass
            False and call :func:`sync_dir` once for the lot, before journaling them.
    """
    publish(stage_stream(path, write), path)
    if sync_parent:
        sync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, sync_parent: bool = True) -> None:
    """Writes ``data`` beside ``path``, fsyncs it, renames it into place (:func:`atomic_write_stream`)."""
    atomic_write_stream(path, lambda fh: fh.write(data), sync_parent)


def atomic_write_text(path: Path, text: str, sync_parent: bool = True) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"), sync_parent)


def link_or_copy(src: Path, dst: Path, sync_parent: bool = True) -> bool:
    """Hard-links ``src`` to ``dst`` (a durable copy across file systems), atomically; True when linked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}{TMP_MARK}{os.getpid()}")
    tmp.unlink(missing_ok=True)
    linked = True
    try:
        os.link(src, tmp)
    except OSError:
        linked = False
        shutil.copyfile(src, tmp)
        os.chmod(tmp, file_mode())
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, dst)
    if sync_parent:
        sync_dir(dst.parent)
    return linked


def make_staging_dir(target: Path) -> Path:
    """An empty folder beside ``target`` to build it in (permissions as the umask allows)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_MARK}", dir=target.parent))
    os.chmod(staging, dir_mode())
    return staging


def remove_stale_temporaries(root: Path, prefix: str = "") -> int:
    """Deletes what killed runs left under ``root`` (temporary files, staging folders); returns how many.

    Args:
        root: The folder to clean (its whole tree).
        prefix: Only entries whose name starts with ``.<prefix>`` (the staging of one
            target, when other targets beside it may be in use by other processes).
    """
    count = 0
    if not root.is_dir():
        return 0
    pattern = f".{prefix}{TMP_MARK}*" if prefix else f"*{TMP_MARK}*"
    for tmp in sorted(root.rglob(pattern) if not prefix else root.glob(pattern), reverse=True):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
            count += 1
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            count += 1
    return count


def replace_dir(staging: Path, target: Path) -> None:
    """Moves a finished ``staging`` folder to ``target``, replacing an old one last."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}{TMP_MARK}old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(staging, target)
    sync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old)


def lock_path(folder: Path) -> Path:
    """The lock file of a dataset folder: beside it, so it survives the folder being swapped.

    The folder's path is resolved first: ``.``, a symlink or another spelling of the
    same folder take the same lock.
    """
    folder = folder.resolve()
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


class FolderLock:
    """An exclusive OS lock on a dataset folder (``flock``), with the holder's PID for messages.

    The OS releases it when the process dies, however it dies. A second process gets an
    :class:`OutputError` naming the holder at once.
    """

    def __init__(self, folder: Path, purpose: str) -> None:
        self.folder = folder
        self.purpose = purpose
        self.path = lock_path(folder)
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Takes the lock or raises OutputError naming who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = _locked_fd(self.path, wait=False)
        except _Held as held:
            raise OutputError(
                f"{self.folder}: in use by {held.holder}; wait for it to finish (or stop it), then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"autolabel {self.purpose} (PID {os.getpid()})\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Removes the lock file and releases the lock (closing the file releases it)."""
        if self._fd is not None:
            _unlock(self.path, self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(folder: Path) -> str | None:
    """Who holds a dataset folder's lock (what its lock file says), or None when no process does."""
    path = lock_path(folder)
    if not path.exists():
        return None
    try:
        fd = _locked_fd(path, wait=False)
    except _Held as held:
        return held.holder
    _unlock(path, fd)
    return None


@contextlib.contextmanager
def waiting_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Holds an exclusive OS lock (``flock``) on the lock file ``path``, waiting for it when another holds it.

    For work that a second process should wait for rather than repeat (a download into a
    shared cache). The OS releases the lock when its holder dies.

    Args:
        path: The lock file (created, and removed again when the lock is let go).
        on_wait: Called once when the lock is held elsewhere, before waiting (to say so).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = _locked_fd(path, wait=False)
    except _Held:
        if on_wait is not None:
            on_wait()
        fd = _locked_fd(path, wait=True)
    try:
        yield
    finally:
        _unlock(path, fd)


class _Held(Exception):
    """The lock is held by another process (``holder``: what its lock file says)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def _locked_fd(path: Path, wait: bool) -> int:
    """Opens (creating) lock file ``path`` and takes its ``flock``: the descriptor, or _Held.

    The holder removes the file before it lets go (:func:`_unlock`), so no lock file is left
    behind; a process that opened the file just before and got the lock just after finds the
    name gone or pointing at a new file, and opens it again, so two processes never hold
    locks on two different files of one name.
    """
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise _Held(holder) from None
        except OSError:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed it between our open and our lock: take the new one


def _unlock(path: Path, fd: int) -> None:
    """Removes lock file ``path`` while its lock is held, then releases the lock."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    os.close(fd)


@contextlib.contextmanager
def output_errors(where: Path) -> Iterator[None]:
    """Turns OS errors while writing under ``where`` (disk full, read-only, permission) into one clear line."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        what = exc.strerror or str(exc)
        name = exc.filename or where
        hint = {
            errno.ENOSPC: "; free some space and re-run the same command: finished frames are kept",
            errno.EDQUOT: "; free some space and re-run the same command: finished frames are kept",
            errno.EROFS: "; choose a writable --output",
            errno.EACCES: "; check the folder's permissions or choose another --output",
            errno.EPERM: "; check the folder's permissions or choose another --output",
        }.get(exc.errno, "")
        raise OutputError(f"{name}: cannot write: {what}{hint}") from exc
