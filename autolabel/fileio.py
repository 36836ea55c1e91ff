"""Atomic file writes: a reader (or a resumed run) never sees half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TMP_MARK = ".autolabel-tmp-"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-links ``src`` to ``dst`` (a copy across file systems), atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}{TMP_MARK}{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def remove_stale_temporaries(root: Path) -> int:
    """Deletes temporary files a killed run left under ``root``; returns how many."""
    count = 0
    for tmp in root.rglob(f"*{TMP_MARK}*"):
        if tmp.is_file():
            tmp.unlink()
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
    if old is not None:
        shutil.rmtree(old)
