"""Content identity of files: what a model or a source *is*, not what it is called.

- Model files (checkpoints, configs, text-encoder folders) are identified by sha256.
  The digest is cached by path, size and modification time in the autolabel cache, so
  a 700 MB checkpoint is hashed once, not on every run.
- Sources (videos, images) are identified by their size and a hash of their first and
  last MiB: cheap on hours of video, and a ``touch`` (same bytes, new time) changes
  nothing, while a replaced or re-encoded file does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from autolabel.fileio import atomic_write_text

log = logging.getLogger(__name__)

DIGEST_CACHE = "digests.json"
HEAD_TAIL = 1 << 20


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class DigestCache:
    """sha256 of files, cached by (absolute path, size, mtime) in ``<cache>/digests.json``."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.path = cache_dir / DIGEST_CACHE if cache_dir is not None else None
        self._entries: dict[str, list] | None = None
        self._dirty = False

    def _load(self) -> dict[str, list]:
        if self._entries is None:
            self._entries = {}
            if self.path is not None and self.path.is_file():
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    data = {}  # a damaged cache only costs a re-hash
                if isinstance(data, dict):
                    self._entries = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3}
        return self._entries

    def digest(self, path: Path) -> str:
        """sha256 of ``path`` (a file), from the cache when size and mtime match."""
        path = path.resolve()
        stat = path.stat()
        entries = self._load()
        key = str(path)
        cached = entries.get(key)
        if cached is not None and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return str(cached[2])
        if stat.st_size > 64 << 20:
            log.info("hashing %s (%.0f MB) once to identify it", path, stat.st_size / 1e6)
        value = sha256_file(path)
        entries[key] = [stat.st_size, stat.st_mtime_ns, value]
        self._dirty = True
        return value

    def identity(self, path: Path) -> str:
        """sha256 of a file, or of a folder's files (names and digests, sorted)."""
        if path.is_dir():
            lines = [
                f"{p.relative_to(path).as_posix()}:{self.digest(p)}\n"
                for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
        return self.digest(path)

    def save(self) -> None:
        """Writes the cache back when it learnt something (best effort: a read-only cache is fine)."""
        if not self._dirty or self.path is None:
            return
        try:
            atomic_write_text(self.path, json.dumps(self._entries, sort_keys=True))
            self._dirty = False
        except OSError as exc:
            log.debug("digest cache %s not written: %s", self.path, exc)


def source_identity(path: Path) -> str:
    """``<size>:<sha256 of the first and last MiB>``: equal for the same bytes, whatever the mtime."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as fh:
        h.update(fh.read(HEAD_TAIL))
        if size > HEAD_TAIL:
            fh.seek(max(HEAD_TAIL, size - HEAD_TAIL))
            h.update(fh.read(HEAD_TAIL))
    return f"{size}:{h.hexdigest()[:32]}"
