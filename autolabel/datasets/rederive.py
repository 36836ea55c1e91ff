"""New box thresholds without labeling again: every frame settled anew from what its journal says the model said.

The journal keeps each frame's model boxes down to ``model.keep_threshold``, so a run whose
only change is its box thresholds (global or per class) derives the dataset again from it:
no ``--overwrite``, no model, no weights file. Reviewed frames keep their reviewer's boxes;
near-duplicates stay out. The result is the dataset a fresh run with those thresholds writes,
since both settle frames through :func:`autolabel.postprocess.settle`. A frame a filter had
left out (so without an image) and that the new thresholds let in is labeled again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from autolabel.config import FilterConfig
from autolabel.datasets import formats
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.derive import sync_frame_files, write_changes
from autolabel.datasets.records import FrameRecord, carry_masks
from autolabel.postprocess import Thresholds, settle
from autolabel.selection import DUPLICATE


@dataclass
class Rederived:
    """A dataset's journal settled at new thresholds (in memory, nothing written yet).

    Attributes:
        records: The new journal, in order (without ``unimaged`` frames).
        changed: Frames whose boxes or drop reason changed.
        unimaged: Frames let in again that have no image: unjournaled, so the run labels them.
    """

    records: list[FrameRecord]
    changed: set[str] = field(default_factory=set)
    unimaged: list[FrameRecord] = field(default_factory=list)


def rederive(ds: Dataset, records: list[FrameRecord], thresholds: Thresholds, filters: FilterConfig) -> Rederived:
    """Each unreviewed, not duplicate frame of ``records`` settled again at ``thresholds`` and ``filters``.

    ``records`` may be read without masks: :func:`apply` keeps the masks of boxes that stay in place.
    """
    out = Rederived([])
    for r in records:
        if r.reviewed or r.dropped == DUPLICATE:
            out.records.append(r)
            continue
        model = r.model_boxes if r.model_boxes is not None else r.boxes
        new = dataclasses.replace(r)
        settle(new, [dataclasses.replace(b) for b in model], thresholds, filters)
        carry_masks(r.boxes, new.boxes)
        if (new.boxes, new.dropped, new.model_boxes) == (r.boxes, r.dropped, r.model_boxes):
            out.records.append(r)
            continue
        out.changed.add(r.name)
        if r.dropped is not None and new.dropped is None and not (ds.root / r.image).is_file():
            out.unimaged.append(r)
            continue
        out.records.append(new)
    return out


def apply(ds: Dataset, done: Rederived) -> list[tuple[str, bool]]:
    """Writes a re-derivation: hand edits kept, then the journal in one rewrite and the changed frames' files.

    The frame files are first compared with the journal they were written from: a file edited by
    hand is kept under ``.autolabel/edited/`` (and named in the run summary) before the new
    thresholds write over it (:func:`autolabel.datasets.derive.write_changes` for the rest).
    Returns the files kept as hand edits or rewritten, as
    :func:`autolabel.datasets.derive.sync_frame_files` says.
    """
    state = ds.state
    ctx = ds.context()
    # Not a killed command's stale files, nor an older autolabel's, nor those a mask switch set aside
    # (``pending``): every file follows the journal at finalize, none is a hand edit.
    keep = not (state.pending or ds.outdated())
    edits = []
    if keep:
        kept = (r for r in ds.records() if r.dropped is None)
        edits = sync_frame_files(ds.root, kept, ctx, formats.written(state.formats), keep_edits=True)
    by_stem = {info.stem: name for name, info in state.sources.items()}
    for r in done.unimaged:
        state.sources[by_stem[r.source]].complete = False
    write_changes(ds, done.records, done.changed, ctx, files=keep)
    return edits
