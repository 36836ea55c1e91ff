"""Files derived from the journal, made to agree with it: each format's frame files and dataset files.

The journal is a dataset's source of truth. Every run (and import) compares each kept
frame's files in every format the dataset has with what its journal record says, and
writes again, atomically, those that are missing or differ; a hand-edited file is kept
under ``.autolabel/edited/`` first. This also finishes an import killed between its
journal rewrite and its derived files.

The dataset-level files (``train.txt``, ``val.txt``, ``data.yaml``, COCO's files, VOC's
labelmap) change with every new frame, so a difference from today's journal says nothing;
their digests as autolabel last wrote them are kept in ``.autolabel/derived.json``, and a
file whose content no longer has its digest was edited by hand: it is kept under
``.autolabel/edited/`` too before it is written again, and the run names it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from autolabel.datasets.formats import Context, Format
from autolabel.datasets.layout import EDITED, STATE_DIR
from autolabel.datasets.records import FrameRecord
from autolabel.fileio import atomic_write_bytes, atomic_write_text, sync_dir

DERIVED = f"{STATE_DIR}/derived.json"


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
        _keep_edit(root, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, sync_parent=False)
    return rel, bool(differs)


def _keep_edit(root: Path, rel: str) -> None:
    """Moves ``rel`` to ``.autolabel/edited/rel``; a copy kept there before moves to ``earlier/<n>/`` first."""
    edited = root / EDITED / rel
    if edited.exists():
        k = 1
        while (root / EDITED / "earlier" / str(k) / rel).exists():
            k += 1
        earlier = root / EDITED / "earlier" / str(k) / rel
        earlier.parent.mkdir(parents=True, exist_ok=True)
        os.replace(edited, earlier)
    edited.parent.mkdir(parents=True, exist_ok=True)
    os.replace(root / rel, edited)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _written_digests(root: Path) -> dict[str, str]:
    try:
        data = json.loads((root / DERIVED).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return (
        {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}
    )


def record_written(root: Path, rels: Iterable[str], forget: bool = False) -> None:
    """Notes the digests of dataset-level files autolabel just wrote (see :func:`keep_hand_edits`).

    With ``forget``, drops theirs instead: called before writing them, so that a run killed
    between a write and its note leaves no digest to take the new file for a hand edit.
    """
    digests = _written_digests(root)
    before = dict(digests)
    for rel in rels:
        digest = None if forget else _digest(root / rel)
        if digest is None:
            digests.pop(rel, None)
        else:
            digests[rel] = digest
    if digests != before:
        (root / STATE_DIR).mkdir(exist_ok=True)
        atomic_write_text(root / DERIVED, json.dumps(digests, indent=1, sort_keys=True) + "\n", sync_parent=False)


def keep_hand_edits(root: Path, expected: dict[str, bytes]) -> list[str]:
    """Dataset-level files changed since a run wrote them: each moved under ``.autolabel/edited/``.

    A file that holds what is about to be written (``expected``: an import wrote it from the
    same journal) is no edit. Returns their paths (relative to ``root``); they are written again next.
    """
    edited = []
    for rel, digest in sorted(_written_digests(root).items()):
        now = _digest(root / rel)
        same = rel in expected and now == hashlib.sha256(expected[rel]).hexdigest()
        if now is not None and now != digest and not same:
            _keep_edit(root, rel)
            edited.append(rel)
    return edited


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
