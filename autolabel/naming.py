"""Safe file names from data (product, class and source names are data, never paths)."""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def safe_name(name: str, max_len: int = 80) -> str:
    """A file-name-safe version of ``name``: ASCII letters, digits, ``._-`` only.

    Never empty, never ``.``/``..``, never a hidden name, no path separators.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE.sub("_", ascii_name).strip("._-")[:max_len].strip("._-")
    if not cleaned:
        cleaned = "unnamed"
    if cleaned.lower() in _RESERVED:
        cleaned = f"{cleaned}_"
    return cleaned
