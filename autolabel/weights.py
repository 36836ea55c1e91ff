"""Model files: local paths first, then the cache, then the official download.

A download shows a progress bar, checks the file's published hash and lands by
atomic rename, so a killed download never leaves a file that looks complete.
Without network and without the file: :class:`MissingWeightsError` naming the file,
its address and where to put it.
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
    """

    name: str
    url: str
    digest: str
    size: int


GDINO_RELEASE = "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha"
GROUNDING_DINO_WEIGHTS = RemoteFile(
    "groundingdino_swint_ogc.pth",
    f"{GDINO_RELEASE}/groundingdino_swint_ogc.pth",
    "3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799",
    693_997_677,
)
_HF = "https://huggingface.co/google-bert/bert-base-uncased/resolve/main"
BERT_FILES = (
    RemoteFile("bert-base-uncased/config.json", f"{_HF}/config.json", "45a2321a7ecfdaaf60a6c1fd7f5463994cc8907d", 570),
    RemoteFile(
        "bert-base-uncased/tokenizer_config.json",
        f"{_HF}/tokenizer_config.json",
        "e5c73d8a50df1f56fb5b0b8002d7cf4010afdccb",
        48,
    ),
    RemoteFile(
        "bert-base-uncased/vocab.txt",
        f"{_HF}/vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        231_508,
    ),
    RemoteFile(
        "bert-base-uncased/model.safetensors",
        f"{_HF}/model.safetensors",
        "68d45e234eb4a928074dfd868cead0219ab85354cc53d20e772753c6bb9169d3",
        440_449_768,
    ),
)


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


def resolve(remote: RemoteFile, local: str | None, cache: Path, what: str, flag: str, progress: bool = True) -> Path:
    """Finds a model file: the given path, the cache, or a verified download.

    Args:
        remote: The official file.
        local: A path the user gave (flag or config); must exist when given.
        cache: The cache folder.
        what: Words for messages ("Grounding DINO weights").
        flag: The flag that points at a local file, for messages.
        progress: Show a download progress bar.
    """
    if local:
        path = Path(local).expanduser()
        if not path.exists():
            raise MissingWeightsError(f"{what}: {path} does not exist (given by {flag})")
        return path
    target = cache / remote.name
    if target.is_file():
        return target
    if os.environ.get("AUTOLABEL_OFFLINE") == "1":
        raise _missing(remote, target, what, flag, "AUTOLABEL_OFFLINE=1")
    try:
        download(remote, target, progress=progress)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _missing(remote, target, what, flag, f"download failed: {reason}") from exc
    return target


def _missing(remote: RemoteFile, target: Path, what: str, flag: str, why: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"missing {what} {Path(remote.name).name} ({why}): download {remote.url} "
        f"and put it at {target}, or pass {flag} PATH"
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


def resolve_text_encoder(local: str | None, cache: Path, progress: bool = True) -> Path:
    """The ``bert-base-uncased`` folder: given, cached, or downloaded file by file."""
    if local:
        path = Path(local).expanduser()
        if not (path / "config.json").is_file() or not (path / "vocab.txt").is_file():
            raise MissingWeightsError(
                f"text encoder: {path} is not a BERT folder (expected config.json, vocab.txt and "
                "model weights, as written by save_pretrained; given by --text-encoder)"
            )
        return path
    for remote in BERT_FILES:
        resolve(remote, None, cache, "text encoder (bert-base-uncased)", "--text-encoder", progress)
    return cache / "bert-base-uncased"
