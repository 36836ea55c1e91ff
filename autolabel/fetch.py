"""One way to get every model file: found on disk, else downloaded once, safely; offline decided once.

Every base model lists the files it needs as :class:`ModelFile` (a path the user gave, a
bundled file, a direct download, a Hugging Face hub file or snapshot). :func:`locate`
finds one on disk without any network: the path given, autolabel's cache, the Hugging Face
cache. :func:`fetch` locates them all and gets the missing ones:

- Offline is decided once per process (:func:`offline`): ``AUTOLABEL_OFFLINE=1`` or
  ``HF_HUB_OFFLINE=1``; otherwise, only when a file is missing, one quick probe (a few
  seconds) of the hosts it would come from. Offline, the run stops at once with ONE
  :class:`MissingWeightsError` line naming every missing file, where to get it and the
  flag that gives a local copy, instead of minutes of retries, one file per run.
- Our own downloads (a release URL) stream into a temporary file beside the target in our
  cache, with a progress bar, are fsynced, get the permissions the umask allows, are
  checked against their published hash and renamed into place, all under a lock file
  beside the target: a second process fetching the same file waits and then uses it,
  a killed download never leaves a file that looks complete.
- Hub files and snapshots go through ``huggingface_hub`` (its cache, locks, ``HF_ENDPOINT``
  mirrors, resumable downloads). A file with a known digest is checked wherever it comes from.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shlex
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from autolabel.errors import MissingWeightsError

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0  # seconds a host has to answer the reachability probe
DOWNLOAD_TIMEOUT = 30.0  # seconds without data before a download gives up
OFFLINE_VARS = ("AUTOLABEL_OFFLINE", "HF_HUB_OFFLINE")
GITHUB = "https://github.com"


@dataclass(frozen=True)
class Hub:
    """A file, or a snapshot of a whole repository, on the Hugging Face hub.

    Attributes:
        repo_id: ``ORG/NAME``.
        filename: The file; None for a snapshot (the files matching ``allow``).
        revision: A branch, tag or commit; None: the default branch.
        allow: For a snapshot: only the files matching these patterns.
        fallbacks: Other file names that serve as well (a ``.bin`` beside the ``.safetensors``):
            used from the cache, or downloaded when the repo has no ``filename``.
    """

    repo_id: str
    filename: str | None = None
    revision: str | None = None
    allow: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()

    def command(self) -> str:
        """The ``hf download`` command that puts this file (or these files) into the Hugging Face cache."""
        words = ["hf", "download", self.repo_id]
        if self.filename is not None:
            words.append(self.filename)
        if self.revision:
            words += ["--revision", self.revision]
        if self.filename is None and self.allow:
            words += ["--include", *self.allow]
        return " ".join(shlex.quote(w) for w in words)


def hf_where() -> str:
    """Where ``hf`` is when it is not on PATH (a virtual environment not activated), for the end of a message."""
    import shutil
    import sys

    if shutil.which("hf"):
        return ""
    beside = Path(sys.executable).parent / "hf"  # huggingface_hub's command, installed beside this Python
    return f" (`hf` is not on PATH: it is {beside})" if beside.is_file() else ""


@dataclass(frozen=True)
class ModelFile:
    """A file (or folder) a model needs, and every way to get it.

    Attributes:
        key: Its name in the dataset fingerprint's ``model.files`` ("weights", "hf_model", ...).
        what: Words for messages ("Grounding DINO weights").
        flag: The CLI flag that gives a local path instead, or None.
        path: A path the user gave (it must exist; never downloaded), or a bundled file or folder.
        given: ``path`` came from the user (messages name ``flag``); False: bundled with a package.
        url: A direct download address.
        cache_name: Its file name in autolabel's cache (:func:`autolabel.weights.cache_dir`).
        digest: sha256 (64 hex digits) or git blob sha1 (40), checked wherever the file comes
            from unless the user gave it.
        size: Its size in bytes, for the progress bar when the server does not say.
        hub: Where it is on the Hugging Face hub (a copy of ``url``, or the only source).
        folder: A folder (a hub snapshot, a ``save_pretrained`` folder), not a file.
        hint: One more way out, for messages ("start from an architecture yaml such as yolo11n.yaml").
    """

    key: str
    what: str
    flag: str | None = None
    path: Path | None = None
    given: bool = True
    url: str | None = None
    cache_name: str | None = None
    digest: str | None = None
    size: int | None = None
    hub: Hub | None = None
    folder: bool = False
    hint: str | None = None

    def describe(self) -> str:
        """``what`` and, for a file of ours, its name ("Grounding DINO weights groundingdino_swint_ogc.pth")."""
        name = self.cache_name
        return self.what if not name or name in self.what else f"{self.what} {name}"

    def how(self, cache: Path) -> str:
        """Every way to supply it, for messages: its addresses, where to put it, the flag."""
        ways = []
        if self.url and self.cache_name:
            ways.append(f"download {self.url} and put it at {cache / self.cache_name}")
        if self.hub is not None:
            ways.append(f"run `{self.hub.command()}`")
        if self.flag:
            ways.append(f"pass {self.flag} {'FOLDER' if self.folder else 'FILE'}")
        if self.hint:
            ways.append(self.hint)
        return ", or ".join(ways)


# Offline: decided once per process.
_decision: list[str | None] = []  # empty until probed; then [None] (reachable) or [why not]
_decision_lock = threading.Lock()


def offline_reason(hosts: Sequence[str] | None = None) -> str | None:
    """Why model files cannot be downloaded now (None: they can).

    ``AUTOLABEL_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` say so; otherwise the first call probes
    ``hosts`` once (:func:`probe`) and every later call in this process reuses the answer.

    Args:
        hosts: ``scheme://host`` addresses the missing files come from; None: the hub and GitHub.
    """
    for var in OFFLINE_VARS:
        value = os.environ.get(var, "").strip()
        if value.upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}={value}"
    with _decision_lock:
        if not _decision:
            _decision.append(probe(list(hosts) if hosts is not None else _default_hosts()))
        return _decision[0]


def offline(hosts: Sequence[str] | None = None) -> bool:
    """True when model files cannot be downloaded in this process (see :func:`offline_reason`)."""
    return offline_reason(hosts) is not None


def reset_offline() -> None:
    """Forgets the probe's answer (tests; a long-lived process whose network changed)."""
    with _decision_lock:
        _decision.clear()


def probe(hosts: Sequence[str], timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when any of ``hosts`` answers HTTP within ``timeout`` seconds (any status), else why none did.

    The hosts are asked at once, each in a daemon thread, so the probe takes at most about
    ``timeout`` seconds even where name resolution hangs.
    """
    if not hosts:
        return None
    answers: dict[str, str | None] = {}

    def ask(host: str) -> None:
        answers[host] = _ask(host, timeout)

    threads = [threading.Thread(target=ask, args=(h,), daemon=True, name="autolabel-probe") for h in hosts]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 0.5
    while time.monotonic() < deadline and any(t.is_alive() for t in threads):
        if any(h in answers and answers[h] is None for h in hosts):
            return None
        time.sleep(0.01)
    if any(h in answers and answers[h] is None for h in hosts):
        return None
    return "; ".join(f"{h} cannot be reached ({answers.get(h) or f'no answer in {timeout:g} s'})" for h in hosts)


def _ask(host: str, timeout: float) -> str | None:
    """None when ``host`` answers a HEAD request (any status), else why not."""
    request = urllib.request.Request(host.rstrip("/") + "/", method="HEAD", headers={"User-Agent": "autolabel"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except (OSError, http.client.HTTPException) as exc:  # a timeout or reset after connecting
        return str(exc) or type(exc).__name__


def _default_hosts() -> list[str]:
    from huggingface_hub import constants

    return [constants.ENDPOINT, GITHUB]


def _hosts(files: Sequence[ModelFile]) -> list[str]:
    """The ``scheme://host`` addresses ``files`` would be downloaded from."""
    hosts = []
    for f in files:
        if f.url:
            parts = urllib.parse.urlsplit(f.url)
            hosts.append(f"{parts.scheme}://{parts.netloc}")
        if f.hub is not None:
            from huggingface_hub import constants

            hosts.append(constants.ENDPOINT)
    return list(dict.fromkeys(hosts))


def is_local(spec: str) -> bool:
    """A model named by a local folder (it exists, or is spelled as a path) rather than a hub id."""
    return Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1


def check_hub_id(spec: str, flag: str) -> None:
    """A model named by ``flag`` (``--hf-model``, ``--mask-model``) that is no local folder must be a hub id."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from autolabel.errors import ConfigError

    try:
        validate_repo_id(spec)
    except HFValidationError as exc:
        raise ConfigError(
            f"{flag} {spec!r}: no such folder, and not a hub id (ORG/NAME): {str(exc).splitlines()[0]}"
        ) from exc


def locate(f: ModelFile, cache: Path) -> Path | None:
    """Where ``f`` is on disk now, with no network: the path given, our cache, the Hugging Face cache."""
    if f.path is not None:
        return f.path if f.path.exists() else None
    if f.cache_name:
        target = cache / f.cache_name
        if target.is_file():
            return target
    if f.hub is not None:
        return _hub_cached(f.hub)
    return None


def _hub_cached(hub: Hub) -> Path | None:
    """The hub file or snapshot in the Hugging Face cache (``HF_HOME``), if there."""
    if hub.filename is None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = snapshot_download(
                hub.repo_id, revision=hub.revision, allow_patterns=list(hub.allow) or None, local_files_only=True
            )
        except (LocalEntryNotFoundError, FileNotFoundError):
            return None
        return Path(folder)
    from huggingface_hub import try_to_load_from_cache

    for name in (hub.filename, *hub.fallbacks):
        found = try_to_load_from_cache(hub.repo_id, name, revision=hub.revision)
        if isinstance(found, str):
            return Path(found)
    return None


def identities(files: Sequence[ModelFile], root: Path) -> dict[str, str | None]:
    """Each file's content identity (:func:`identity`), None where it is not on disk yet; nothing downloads.

    ``root``: the cache folder (its ``digests.json`` keeps the hashes by path, size and mtime).
    """
    from autolabel.identity import DigestCache

    digests = DigestCache(root)
    try:
        found = [(f, locate(f, root)) for f in files]
        return {f.key: identity(f, path, digests) if path is not None else None for f, path in found}
    finally:
        digests.save()


def identity(f: ModelFile, path: Path, digests) -> str:
    """What ``path`` (where ``f`` is) is: sha256 of a file or a folder's files, ``ORG/NAME@<commit>`` for a snapshot.

    Args:
        f: The model file.
        path: Where :func:`locate` or :func:`fetch` found it.
        digests: An :class:`autolabel.identity.DigestCache` (a large file is hashed once).
    """
    if f.hub is not None and f.hub.filename is None and f.path is None:
        return f"{f.hub.repo_id}@{path.name}"  # a snapshot folder is named by its commit
    return digests.identity(path)


def file_digest(path: Path, like: str) -> str:
    """sha256 of a file, or its git blob sha1 when ``like`` is a 40-digit digest."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _fd_digest(fd, like)
    finally:
        os.close(fd)


def _fd_digest(fd: int, like: str) -> str:
    size = os.fstat(fd).st_size
    h = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False) if len(like) == 40 else hashlib.sha256()
    offset = 0
    while block := os.pread(fd, 1 << 20, offset):
        h.update(block)
        offset += len(block)
    return h.hexdigest()


def fetch(files: Sequence[ModelFile], cache: Path, progress: bool = True) -> dict[str, Path]:
    """Every file of ``files`` on disk, downloaded where missing; ``{key: path}``.

    Args:
        files: What a model needs (its module's ``model_files``).
        cache: autolabel's cache folder (:func:`autolabel.weights.cache_dir`): our downloads land
            there, and digests of large files are remembered there.
        progress: Show download progress bars.

    Raises:
        MissingWeightsError: One line for all that is wrong: given paths that do not exist,
            files on disk with the wrong hash, and (offline) every file that is missing, each
            with where to get it; online, every download that failed.
    """
    from autolabel.identity import DigestCache

    found: dict[str, Path] = {}
    problems: list[str] = []
    wanted: list[ModelFile] = []
    digests = DigestCache(cache)
    try:
        for f in files:
            path = locate(f, cache)
            if path is None and f.path is not None:
                problems.append(_not_there(f))
            elif path is None:
                wanted.append(f)
            else:
                try:
                    _check_digest(f, path, digests)
                    found[f.key] = path
                except MissingWeightsError as exc:
                    problems.append(str(exc))
        if wanted:
            why = offline_reason(_hosts(wanted))
            if why is not None:
                problems.append(_missing(wanted, cache, why))
        if problems:
            raise MissingWeightsError("; ".join(problems))
        failed = []
        for f in wanted:
            try:
                found[f.key] = _download(f, cache, progress, digests)
            except MissingWeightsError as exc:
                failed.append(str(exc))
        if failed:
            raise MissingWeightsError("; ".join(failed))
    finally:
        digests.save()
    return found


def _not_there(f: ModelFile) -> str:
    if f.given:
        return f"{f.what}: {f.path} does not exist (given by {f.flag})"
    return f"{f.what}: {f.path} does not exist (it ships with the installed packages: reinstall them)"


def _missing(files: Sequence[ModelFile], cache: Path, why: str) -> str:
    """One line naming every file in ``files`` and how to supply each."""
    where = hf_where() if any(f.hub is not None for f in files) else ""
    if len(files) == 1:
        return f"missing {files[0].describe()} ({why}): {files[0].how(cache)}{where}"
    each = "; ".join(f"{f.describe()}: {f.how(cache)}" for f in files)
    return f"missing {len(files)} model files ({why}): {each}{where}"


def _check_digest(f: ModelFile, path: Path, digests) -> None:
    """MissingWeightsError when ``path`` does not have ``f``'s published hash (a file the user gave is not checked)."""
    if f.digest is None or (f.path is not None and f.given) or path.is_dir():
        return
    got = digests.digest(path) if len(f.digest) == 64 else file_digest(path, f.digest)
    if got != f.digest:
        raise MissingWeightsError(
            f"{path} ({f.describe()}) has hash {got}, expected {f.digest}; not used: delete it to download it again"
            + (f", or pass {f.flag} FILE" if f.flag else "")
        )


class _Failed(Exception):
    """A download that did not work, and why (collected into one message)."""


def _download(f: ModelFile, cache: Path, progress: bool, digests) -> Path:
    """``f`` from its own address into our cache, else from the hub (its digest checked either way)."""
    reasons = []
    if f.url and f.cache_name:
        try:
            return _download_url(f, cache / f.cache_name, progress)
        except _Failed as exc:
            reasons.append(f"download failed: {exc}")
    if f.hub is not None:
        try:
            path = _hub_download(f.hub, progress)
        except _Failed as exc:
            reasons.append(f"hub: {exc}")
        else:
            _check_digest(f, path, digests)
            if f.url:
                log.info("using the hub copy %s", path)
            return path
    raise MissingWeightsError(f"missing {f.describe()} ({'; '.join(reasons)}): {f.how(cache)}")


def _download_url(f: ModelFile, target: Path, progress: bool) -> Path:
    """Downloads ``f.url`` to ``target`` under a lock file beside it; a second process waits and finds it."""
    from autolabel.fileio import atomic_write_stream, lock_path, remove_stale_temporaries, waiting_lock

    with waiting_lock(lock_path(target), lambda: log.info("waiting for another process downloading %s", target)):
        if target.is_file():  # the process we waited for got it
            return target
        remove_stale_temporaries(target.parent, prefix=target.name)  # what a killed download left
        try:
            atomic_write_stream(target, lambda fh: _stream(f, fh, progress))
        except urllib.error.HTTPError as exc:
            raise _Failed(f"{f.url}: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise _Failed(f"{f.url}: {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _Failed(f"{f.url}: {exc or type(exc).__name__}") from exc
    log.info("downloaded %s to %s", f.url, target)
    return target


def _stream(f: ModelFile, fh: BinaryIO, progress: bool) -> None:
    """Writes ``f.url``'s bytes to ``fh`` with a progress bar; checks length and hash before it is published."""
    from tqdm import tqdm

    request = urllib.request.Request(f.url, headers={"User-Agent": "autolabel"})
    sha256 = hashlib.sha256()
    written = 0
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
        length = int(response.headers.get("Content-Length") or 0) or None
        name = Path(f.cache_name or f.url).name
        with tqdm(total=length or f.size, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
            while block := response.read(1 << 20):
                fh.write(block)
                sha256.update(block)
                written += len(block)
                bar.update(len(block))
    if length is not None and written != length:
        raise _Failed(f"{f.url}: got {written} of {length} bytes")
    if f.digest is not None:
        fh.flush()
        got = sha256.hexdigest() if len(f.digest) == 64 else _fd_digest(fh.fileno(), f.digest)
        if got != f.digest:
            raise _Failed(f"{f.url} gave a file with hash {got}, expected {f.digest}; not used")


def _hub_download(hub: Hub, progress: bool) -> Path:
    """The hub file or snapshot, through ``huggingface_hub`` (into its cache); _Failed says why not."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if progress else disable_progress_bars)()
    repo = hub.repo_id
    try:
        if hub.filename is None:
            allow = list(hub.allow) or None
            return Path(snapshot_download(repo, revision=hub.revision, allow_patterns=allow))
        names = (hub.filename, *hub.fallbacks)
        for name in names[:-1]:
            try:
                return Path(hf_hub_download(repo, name, revision=hub.revision))
            except LocalEntryNotFoundError:
                raise
            except EntryNotFoundError:
                log.debug("%s has no %s; trying %s", repo, name, names[-1])
        return Path(hf_hub_download(repo, names[-1], revision=hub.revision))
    except LocalEntryNotFoundError as exc:  # connection lost, timeouts: not in the cache either
        raise _Failed(f"{repo} cannot be reached ({type(exc).__name__})") from exc
    except GatedRepoError as exc:
        raise _Failed(f"{repo} is gated: accept its terms on the hub, `hf auth login`, then retry") from exc
    except RepositoryNotFoundError as exc:
        raise _Failed(f"{repo} does not exist on the hub (or is private)") from exc
    except RevisionNotFoundError as exc:
        raise _Failed(f"{repo} has no revision {hub.revision!r}") from exc
    except EntryNotFoundError as exc:
        raise _Failed(f"{repo} has no file {' or '.join((hub.filename or '', *hub.fallbacks))}") from exc
    except HfHubHTTPError as exc:
        raise _Failed(f"{repo}: {str(exc).splitlines()[0]}") from exc
    except (OSError, ValueError) as exc:  # requests' connection errors are OSErrors
        raise _Failed(f"{repo}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}") from exc
