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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from autolabel.datasets.formats import Context, Format, written
from autolabel.datasets.layout import EDITED, STATE_DIR
from autolabel.datasets.records import FrameRecord
from autolabel.fileio import atomic_write_bytes, atomic_write_text, publish, stage_stream, sync_dir

if TYPE_CHECKING:
    from autolabel.datasets.dataset import Dataset

# A file's content, written to the binary file it is given (streaming).
Writer = Callable[[BinaryIO], object]

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
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
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


def record_written(root: Path, rels: Iterable[str], forget: bool = False, known: dict[str, str] | None = None) -> None:
    """Notes the digests of dataset-level files autolabel just wrote (see :func:`keep_hand_edits`).

    With ``forget``, drops theirs instead: called before writing them, so that a run killed
    between a write and its note leaves no digest to take the new file for a hand edit.
    ``known``: their digests, where the writer has them (else the files are read).
    """
    digests = _written_digests(root)
    before = dict(digests)
    for rel in rels:
        digest = None if forget else (known or {}).get(rel) or _digest(root / rel)
        if digest is None:
            digests.pop(rel, None)
        else:
            digests[rel] = digest
    if digests != before:
        (root / STATE_DIR).mkdir(exist_ok=True)
        atomic_write_text(root / DERIVED, json.dumps(digests, indent=1, sort_keys=True) + "\n", sync_parent=False)


def keep_hand_edits(root: Path, expected: dict[str, str]) -> list[str]:
    """Dataset-level files changed since a run wrote them: each moved under ``.autolabel/edited/``.

    A file that holds what is about to be written (``expected``: digests; an import wrote it from
    the same journal) is no edit. Returns their paths (relative to ``root``); they are written again next.
    """
    edited = []
    for rel, digest in sorted(_written_digests(root).items()):
        now = _digest(root / rel)
        if now is not None and now != digest and now != expected.get(rel):
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


class _Hashed:
    """A file's writer that hashes what it writes: called with the open file, it is the file its writer sees."""

    def __init__(self, write: Writer) -> None:
        self.content = write
        self.digest = hashlib.sha256()
        self.fh: BinaryIO | None = None

    def __call__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.content(self)

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.fh.write(data)


def _stage(root: Path, writers: dict[str, Writer]) -> dict[str, tuple[Path, str]]:
    """Each file written beside its place, unpublished: ``{rel: (temporary file, its sha256)}``."""
    staged: dict[str, tuple[Path, str]] = {}
    try:
        for rel, write in writers.items():
            hashed = _Hashed(write)
            staged[rel] = (stage_stream(root / rel, hashed), hashed.digest.hexdigest())
    except BaseException:
        for tmp, _ in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    return staged


def write_changes(ds: Dataset, records: list[FrameRecord], changed: set[str], ctx: Context, files: bool = True) -> None:
    """Boxes changed in memory into the journal, then the changed frames' files; ``pending`` meanwhile.

    ``records``: the journal's, read without masks, in order (those left out are unjournaled); the
    boxes of ``changed`` frames that stay in place keep their masks. A kill between the journal and
    the files leaves ``pending`` set: the next run finishes the files from the journal without taking
    them for hand edits. The mark is then left as it was found (a killed command's may still stand).
    ``files=False``: the files are left to the finalize that follows (where every file of a frame
    journaled before follows the journal: ``pending`` was set, or the dataset is an older version's).
    """
    state = ds.state
    was, state.pending = state.pending, True
    ds.save()
    ds.rewrite_journal(records, changed=changed)
    if files:
        kept = (r for r in ds.records() if r.dropped is None)
        sync_frame_files(ds.root, kept, ctx, written(state.formats), changed, keep_edits=False)
    state.pending = was
    ds.save()


def sync_dataset_files(root: Path, writers: dict[str, Writer], keep_edits: bool = False) -> tuple[list[str], list[str]]:
    """Writes the dataset-level files (``{rel: writer}``, streamed) where they differ; notes their digests.

    Each is written to a temporary file first and hashed on the way, so nothing is held whole or
    read back. With ``keep_edits``, a file changed since autolabel wrote it is moved under
    ``.autolabel/edited/`` first (:func:`keep_hand_edits`). Returns (the paths written, those kept as
    hand edits); the folders written in are flushed.
    """
    staged = _stage(root, writers)
    try:
        digests = {rel: digest for rel, (_, digest) in staged.items()}
        edited = keep_hand_edits(root, digests) if keep_edits else []
        record_written(root, digests, forget=True)  # a kill before the note below leaves none to mistake
        written = []
        for rel, (tmp, digest) in staged.items():
            if _digest(root / rel) == digest:
                tmp.unlink()
                continue
            publish(tmp, root / rel)
            written.append(rel)
        for folder in sorted({str(Path(rel).parent) for rel in written}):
            sync_dir(root / folder)
        record_written(root, digests, known=digests)
    finally:
        for tmp, _ in staged.values():
            tmp.unlink(missing_ok=True)
    return written, edited


def format_writers(records: Iterable[FrameRecord], ctx: Context, formats: list[Format]) -> dict[str, Writer]:
    """Every format's dataset files as writers (``records``: kept frames with splits, read once per pass)."""
    return {rel: write for fmt in formats for rel, write in fmt.dataset_writers(records, ctx).items()}
