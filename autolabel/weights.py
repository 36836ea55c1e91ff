"""Model files: local paths first, then the caches, then the official download, then the hub.

Files that live on the Hugging Face hub go through ``huggingface_hub`` (its cache,
``HF_ENDPOINT`` mirrors, ``HF_HUB_OFFLINE``, resumable downloads); see ``labelers/hf.py``.
This module keeps our own download only for files published elsewhere (the Grounding
DINO checkpoint's GitHub release); that checkpoint also has a hub copy, found in the
Hugging Face cache first and downloaded from the hub when GitHub cannot be reached, with
the same sha256 check either way. Our download shows a progress bar, checks the
published hash and lands by atomic rename, so a killed download never leaves a file
that looks complete. Without network and without the file: :class:`MissingWeightsError`
naming the file, its addresses and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from autolabel.errors import MissingWeightsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """A file with an official download address and its published hash.

    Attributes:
        name: File name in the cache (may contain one folder level).
        url: Official download address.
        digest: sha256 (64 hex digits) or git blob sha1 (40 hex digits, what the
            Hugging Face hub publishes for small files).
        size: Size in bytes.
        hub: (repo id, file name) of a copy on the Hugging Face hub, if there is one.
    """

    name: str
    url: str
    digest: str
    size: int
    hub: tuple[str, str] | None = None


GDINO_RELEASE = "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha"
GROUNDING_DINO_WEIGHTS = RemoteFile(
    "groundingdino_swint_ogc.pth",
    f"{GDINO_RELEASE}/groundingdino_swint_ogc.pth",
    "3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799",
    693_997_677,
    hub=("ShilongLiu/GroundingDINO", "groundingdino_swint_ogc.pth"),
)


def bundled_text_encoder() -> Path:
    """bert-base-uncased's config and tokenizer files, shipped in the package (no weights: see NOTICE there)."""
    import importlib.resources

    return Path(str(importlib.resources.files("autolabel") / "assets" / "bert-base-uncased"))


def cache_dir(configured: str | None = None) -> Path:
    """The weights cache: config value, else ``$AUTOLABEL_CACHE``, else ``~/.cache/autolabel``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("AUTOLABEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "autolabel"


def file_digest(path: Path, kind_of: str) -> str:
    """sha256, or git blob sha1 when ``kind_of`` is a 40-digit digest."""
    if len(kind_of) == 40:
        h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    else:
        h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def resolve(
    remote: RemoteFile,
    local: str | None,
    cache: Path,
    what: str,
    flag: str,
    progress: bool = True,
    hub_cache: Path | None = None,
) -> Path:
    """Finds a model file: the given path, our cache, the hub cache, our download, the hub's.

    Args:
        remote: The official file.
        local: A path the user gave (flag or config); must exist when given.
        cache: Our cache folder.
        what: Words for messages ("Grounding DINO weights").
        flag: The flag that points at a local file, for messages.
        progress: Show a download progress bar.
        hub_cache: The Hugging Face hub cache; None: its default (``HF_HOME``, ``HF_HUB_CACHE``).
    """
    if local:
        path = Path(local).expanduser()
        if not path.exists():
            raise MissingWeightsError(f"{what}: {path} does not exist (given by {flag})")
        return path
    target = cache / remote.name
    if target.is_file():
        return target
    if remote.hub is not None:
        found = _from_hub(remote, cache, hub_cache, progress, cached_only=True)
        if found is not None:
            return found
    if os.environ.get("AUTOLABEL_OFFLINE") == "1":
        why = "AUTOLABEL_OFFLINE=1"
    else:
        try:
            download(remote, target, progress=progress)
            return target
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            why = f"download failed: {getattr(exc, 'reason', None) or exc}"
    if remote.hub is not None:
        try:
            found = _from_hub(remote, cache, hub_cache, progress, cached_only=False)
        except (OSError, ValueError) as exc:  # offline, unreachable, not found: huggingface_hub's errors
            why += f"; hub: {type(exc).__name__}"
        else:
            if found is not None:
                return found
    raise _missing(remote, target, what, flag, why)


def cached_path(remote: RemoteFile, cache: Path, hub_cache: Path | None = None) -> Path:
    """Where ``remote`` is on disk without any download: our cache, else the hub cache, else our cache's path."""
    target = cache / remote.name
    if target.is_file() or remote.hub is None:
        return target
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(remote.hub[0], remote.hub[1], cache_dir=hub_cache)
    return Path(cached) if isinstance(cached, str) else target


def _from_hub(
    remote: RemoteFile, cache: Path, hub_cache: Path | None, progress: bool, cached_only: bool
) -> Path | None:
    """The hub copy of ``remote`` (from the hub cache, or downloaded into it), checked against our digest."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    from autolabel.identity import DigestCache

    repo_id, filename = remote.hub
    if cached_only:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache)
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        (enable_progress_bars if progress else disable_progress_bars)()
        path = Path(hf_hub_download(repo_id, filename, cache_dir=hub_cache, local_files_only=offline))
    digests = DigestCache(cache)  # a 700 MB file is hashed once, then known by path, size and mtime
    try:
        got = digests.digest(path) if len(remote.digest) == 64 else file_digest(path, remote.digest)
    finally:
        digests.save()
    if got != remote.digest:
        raise MissingWeightsError(
            f"{path} (hub {repo_id}, {filename}) has hash {got}, expected {remote.digest}; not used"
        )
    log.info("using the hub copy %s", path)
    return path


def _missing(remote: RemoteFile, target: Path, what: str, flag: str, why: str) -> MissingWeightsError:
    hub = f", or run `hf download {remote.hub[0]} {remote.hub[1]}`" if remote.hub else ""
    return MissingWeightsError(
        f"missing {what} {Path(remote.name).name} ({why}): download {remote.url} "
        f"and put it at {target}{hub}, or pass {flag} PATH"
    )


def download(remote: RemoteFile, target: Path, progress: bool = True, timeout: float = 30.0) -> None:
    """Downloads ``remote`` to ``target``: progress bar, hash check, atomic rename."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(remote.url, headers={"User-Agent": "autolabel"})
        with urllib.request.urlopen(request, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or remote.size)
            with tqdm(total=total, unit="B", unit_scale=True, desc=Path(remote.name).name, disable=not progress) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        got = file_digest(tmp, remote.digest)
        if got != remote.digest:
            raise MissingWeightsError(
                f"{remote.url}: downloaded file has hash {got}, expected {remote.digest}; not used"
            )
        os.replace(tmp, target)
        log.info("downloaded %s to %s", remote.url, target)
    finally:
        tmp.unlink(missing_ok=True)


def resolve_text_encoder(local: str | None) -> Path:
    """The text encoder's config and tokenizer folder: the one given, else bert-base-uncased's, bundled."""
    if not local:
        return bundled_text_encoder()
    path = Path(local).expanduser()
    if not (path / "config.json").is_file() or not any((path / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        raise MissingWeightsError(
            f"text encoder: {path} is not a BERT folder (expected config.json and vocab.txt or tokenizer.json, "
            "as written by save_pretrained; weights are not needed; given by --text-encoder)"
        )
    return path
