"""The journal (``detections.jsonl``): one line per frame, the dataset's source of truth.

A frame counts as done only once its line is written, which happens after its image
and label files are in place. Only the dataset core (:mod:`autolabel.datasets.dataset`,
the writer) reads and writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from autolabel.datasets.layout import JOURNAL
from autolabel.datasets.records import FrameRecord
from autolabel.errors import InputError
from autolabel.fileio import atomic_write_text


def read_journal(root: Path, n_classes: int | None = None) -> Iterator[FrameRecord]:
    """Streams the journal's records.

    A last line cut short by a crash is ignored (:func:`repair_journal` cuts it off the
    file); a bad line elsewhere (or a class id outside ``n_classes``, a non-finite or
    inverted box) is an error naming the line.
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
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise InputError(f"{path}:{lineno}: corrupt journal line: {exc}") from exc
            yield record


def write_journal(root: Path, records: Iterable[FrameRecord]) -> None:
    """Replaces the journal with ``records`` in one atomic write."""
    atomic_write_text(root / JOURNAL, "".join(r.to_json() + "\n" for r in records))


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
