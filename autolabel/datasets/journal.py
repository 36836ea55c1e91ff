"""The journal (``detections.jsonl``): one line per frame, the dataset's source of truth.

A frame counts as done only once its line is written, which happens after its image
and label files are in place. Only the dataset core (:mod:`autolabel.datasets.dataset`,
the writer) reads and writes it.

It is read and rewritten as a stream: a long video's masks are never all in memory. Work
on the boxes alone reads it without masks (``masks=False``) and rewrites it with
:func:`write_changed`, which takes every unchanged frame's line from the old journal and
gives a changed frame's boxes that stayed in place their old masks. The mask step appends
the masks it makes, a window of frames per line, to :data:`MASKS_MADE` (flushed to disk)
and folds them into the journal in one rewrite at its end (:func:`fold_masks`); a command
killed before that leaves them there, and the next one to open the dataset folds them in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from autolabel.datasets.layout import JOURNAL, MASKS_MADE
from autolabel.datasets.records import Box, FrameRecord, carry_masks
from autolabel.errors import InputError
from autolabel.fileio import atomic_write_stream, sync_dir

log = logging.getLogger(__name__)


def read_journal(root: Path, n_classes: int | None = None, masks: bool = True) -> Iterator[FrameRecord]:
    """Streams the journal's records.

    A last line cut short by a crash is ignored (:func:`repair_journal` cuts it off the
    file); a bad line elsewhere (or a class id outside ``n_classes``, a non-finite or
    inverted box) is an error naming the line. ``masks=False``: every box's mask is left
    out (None), for work on the boxes alone that must not hold every outline at once.
    """
    path = root / JOURNAL
    if not path.exists():
        return
    seen: set[str] = set()
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                return
            try:
                record = FrameRecord.from_json(raw.decode("utf-8"))
                record.check(n_classes)
                if record.name in seen:
                    raise ValueError(f"frame {record.name!r} listed twice")
                seen.add(record.name)
                if not masks:
                    for b in record.boxes:
                        b.mask = None
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise InputError(f"{path}:{lineno}: corrupt journal line: {exc}") from exc
            yield record


def write_journal(root: Path, records: Iterable[FrameRecord]) -> None:
    """Replaces the journal with ``records`` in one atomic write, streamed (``records`` may read the old one)."""

    def write(fh) -> None:
        for r in records:
            fh.write(r.to_json().encode("utf-8") + b"\n")

    atomic_write_stream(root / JOURNAL, write)


def write_changed(root: Path, records: list[FrameRecord], changed: set[str], n_classes: int | None = None) -> None:
    """Rewrites the journal from ``records`` (read without masks, some changed in memory), masks kept.

    ``records`` are the journal's, in its order, less any left out (those are dropped). A frame
    not in ``changed`` keeps its old line; a changed one is written from ``records``, each box
    that stayed where it was with its old mask (:func:`autolabel.datasets.records.carry_masks`).
    """
    new = iter(records)

    def merged() -> Iterator[FrameRecord]:
        ahead = next(new, None)
        for old in read_journal(root, n_classes):
            if ahead is None or old.name != ahead.name:
                continue  # left out
            if ahead.name in changed:
                out = dataclasses.replace(ahead, boxes=[dataclasses.replace(b) for b in ahead.boxes], split=None)
                carry_masks(old.boxes, out.boxes)
                yield out
            else:
                yield old
            ahead = next(new, None)
        if ahead is not None:
            raise RuntimeError(f"frame {ahead.name!r} is not in the journal, or not in its order")

    write_journal(root, merged())


def append_masks(root: Path, records: Iterable[FrameRecord]) -> None:
    """Appends ``records``' boxes (masks made, not journaled yet) to :data:`MASKS_MADE` as one line, on disk."""
    line = json.dumps([[r.name, [b.to_list() for b in r.boxes]] for r in records], separators=(",", ":"))
    path = root / MASKS_MADE
    new = not path.exists()
    with path.open("ab") as fh:
        fh.write(line.encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    if new:
        sync_dir(path.parent)


def _masks_made(path: Path) -> Iterator[tuple[str, list[Box]]]:
    """The frames of :data:`MASKS_MADE`, in order, up to a line a crash cut short (or spoiled)."""
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                return
            try:
                frames = [(str(name), [Box.from_list(b) for b in boxes]) for name, boxes in json.loads(raw)]
            except (ValueError, TypeError, KeyError, IndexError):
                log.warning("%s: a spoiled line; the masks from it on are made again", path)
                return
            yield from frames


def fold_masks(root: Path, n_classes: int | None = None) -> int:
    """Moves the masks in :data:`MASKS_MADE` into the journal (one streamed rewrite); returns the frames amended.

    Both list frames in journal order. A mask goes to the box at the same place in its frame
    (no other: the file is only trusted where it agrees with the journal).
    """
    path = root / MASKS_MADE
    if not path.exists():
        return 0
    made = _masks_made(path)
    ahead = next(made, None)
    amended = 0

    def merged() -> Iterator[FrameRecord]:
        nonlocal ahead, amended
        for r in read_journal(root, n_classes):
            if ahead is not None and ahead[0] == r.name:
                carry_masks(ahead[1], r.boxes)
                amended += 1
                ahead = next(made, None)
            yield r

    if ahead is not None:
        write_journal(root, merged())
    path.unlink()
    sync_dir(path.parent)
    return amended


def repair_journal(root: Path) -> None:
    """Cuts off the bytes after the journal's last newline: a line a crash left half-written."""
    path = root / JOURNAL
    if not path.exists():
        return
    size = path.stat().st_size
    with path.open("r+b") as fh:
        pos, end = size, 0
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            newline = fh.read(step).rfind(b"\n")
            if newline >= 0:
                end = pos + newline + 1
                break
        if end != size:
            fh.truncate(end)
