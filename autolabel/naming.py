"""Safe, readable, collision-free file names from data (product, class and source names are data, never paths).

A name keeps its letters and digits in any script (``正面`` stays ``正面``); anything else
becomes ``_``. A name that had to change (a space, a symbol, a cut to length, a
decomposed accent) gets a short stable suffix from a hash of the original, so two
names that clean to the same text never share a file name: ``a b`` -> ``a_b-1f3a9c``,
``a_b`` -> ``a_b``. Cleaned names never contain ``__``, so ``<product>__<frame>`` (the
merged name) splits back into its parts and cannot collide either.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
# Longest cleaned name in UTF-8 bytes: "<product>__<stem>_<index>.jpg" (two of these, hash suffixes, a
# frame index) plus a temporary file's prefix and mark stays under the usual 255-byte limit.
MAX_BYTES = 80
SUFFIX_LEN = 6
SEPARATOR = "__"


def _keep(ch: str) -> bool:
    return ch.isalnum() or ch in "-."


def _clean(name: str, max_bytes: int) -> str:
    text = unicodedata.normalize("NFC", name)
    text = "".join(ch if _keep(ch) else "_" for ch in text)
    text = re.sub(r"_+", "_", text).strip("._-")
    text = text.replace("autolabel-tmp", "autolabel_tmp").replace("autolabel-lock", "autolabel_lock")  # our marks
    while len(text.encode("utf-8")) > max_bytes:
        text = text[:-1]
    text = text.rstrip("._-")
    return text or "unnamed"


def _reserved(text: str) -> bool:
    return text.split(".")[0].lower() in _RESERVED


def short_hash(text: str, length: int = SUFFIX_LEN) -> str:
    """A short, stable hex digest of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def safe_name(name: str, max_bytes: int = MAX_BYTES) -> str:
    """A file-name-safe, readable version of ``name``, distinct from every other name's.

    Letters and digits of any script, ``.`` and ``-`` are kept; other characters become
    ``_``. When that changed the name, a hash of the original is appended. Never empty,
    never hidden, no path separators, no ``__``.
    """
    cleaned = _clean(name, max_bytes)
    if _reserved(cleaned):  # Windows device names, also with an extension: CON, con.txt
        cleaned = cleaned.replace(".", "_")
    elif cleaned == name:
        return cleaned
    return f"{cleaned}-{short_hash(name)}"


def unique_name(name: str, taken: Iterable[str], salt: str = "") -> str:
    """``safe_name(name)``, with a longer hash suffix while it (case-insensitively) clashes with ``taken``.

    Args:
        name: The original name.
        taken: Names already allocated (compared case-insensitively: macOS and Windows
            file systems are case-insensitive).
        salt: Distinguishes names that are equal as text (``box`` of ``box.mp4`` and of
            ``box.mov``): the full file name, say.
    """
    used = {t.lower() for t in taken}
    candidate = safe_name(name)
    length = SUFFIX_LEN
    base = _clean(name, MAX_BYTES)
    while candidate.lower() in used:
        if length > 64:
            raise ValueError(f"no unique file name for {name!r}")
        candidate = f"{base}-{short_hash(name + salt, length)}"
        length += 2
    return candidate
