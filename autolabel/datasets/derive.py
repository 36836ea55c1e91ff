"""Files derived from the journal, made to agree with it: each format's frame files and dataset files.

The journal is a dataset's source of truth. Every run (and import) compares each kept
frame's files in every format the dataset has with what its journal record says, and
writes again, atomically, those that are missing or differ; a hand-edited file is kept
under ``.autolabel/edited/`` first. This also finishes an import killed between its
journal rewrite and its derived files.
"""

from __future__ import annotations

import os
from pathlib import Path

from autolabel.datasets.formats import Context, Format
from autolabel.datasets.layout import EDITED
from autolabel.datasets.records import FrameRecord
from autolabel.fileio import atomic_write_bytes, sync_dir


def _differs(path: Path, data: bytes) -> bool | None:
    """True when ``path`` holds other bytes, False when the same, None when it is missing."""
    try:
        return path.read_bytes() != data
    except FileNotFoundError:
        return None


def sync_file(root: Path, rel: str, data: bytes, keep_edits: bool) -> tuple[str, bool] | None:
    """Writes ``rel`` where it is missing or differs; returns (rel, it existed) when written, else None.

    With ``keep_edits``, a differing file (a hand edit) is moved to ``.autolabel/edited/`` first,
    where ``autolabel import`` reads it back; an earlier kept copy of the same file is never
    overwritten: it moves to ``.autolabel/edited/earlier/<n>/`` first.
    """
    path = root / rel
    differs = _differs(path, data)
    if differs is False:
        return None
    if differs and keep_edits:
        edited = root / EDITED / rel
        if edited.exists():
            k = 1
            while (root / EDITED / "earlier" / str(k) / rel).exists():
                k += 1
            earlier = root / EDITED / "earlier" / str(k) / rel
            earlier.parent.mkdir(parents=True, exist_ok=True)
            os.replace(edited, earlier)
        edited.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, edited)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, sync_parent=False)
    return rel, bool(differs)


def sync_frame_files(
    root: Path,
    records: list[FrameRecord],
    ctx: Context,
    formats: list[Format],
    names: set[str] | None = None,
    keep_edits: bool = False,
) -> list[tuple[str, bool]]:
    """Makes the frame files of ``records`` (only those in ``names``, when given) agree with them.

    Returns the paths written, relative to ``root``, each with whether a differing file was
    there (False: it was missing). The folders written in are flushed once, at the end.
    """
    written = []
    dirs: set[str] = set()
    for r in records:
        if names is not None and r.name not in names:
            continue
        for fmt in formats:
            for rel, data in fmt.frame_files(r, ctx).items():
                done = sync_file(root, rel, data, keep_edits)
                if done is not None:
                    written.append(done)
                    dirs.add(str(Path(rel).parent))
    for folder in sorted(dirs):
        sync_dir(root / folder)
    return written


def sync_dataset_files(root: Path, records: list[FrameRecord], ctx: Context, formats: list[Format]) -> list[str]:
    """Writes each format's dataset files where they differ from what ``records`` (with splits) say.

    Returns the paths written; the dataset folder is flushed when any was.
    """
    written = []
    for fmt in formats:
        for rel, data in fmt.dataset_files(records, ctx).items():
            if sync_file(root, rel, data, keep_edits=False) is not None:
                written.append(rel)
    if written:
        for folder in sorted({str(Path(rel).parent) for rel in written}):
            sync_dir(root / folder)
    return written
