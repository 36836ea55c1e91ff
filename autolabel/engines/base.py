"""The engine interface, and the label step every engine runs: batches of frames in, labeled frames out.

An engine decides where labeling runs (this process, a Ray cluster); it never changes
the output. Each batch holds frames of one size only, at most the labeler's batch size,
so a frame's labels never depend on its batch-mates, and the labeled frame's boxes go
through the one class-aware NMS (:func:`autolabel.postprocess.nms`) before they are
journaled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from autolabel.datasets.records import PROBE, FrameRecord
from autolabel.datasets.state import State
from autolabel.events import Duplicate, Event, Labeled, SourceEnd, SourceFailed
from autolabel.jobs import Job
from autolabel.labelers.base import CLASS_NAME, Labeler
from autolabel.ontology import Ontology
from autolabel.postprocess import nms, to_boxes
from autolabel.sampling import Frame


class Engine(AbstractContextManager, Protocol):
    """Where labeling runs. Used as ``with engine: model = engine.load(...); engine.start(...); engine.events(...)``."""

    def load(self, ontologies: list[Ontology]) -> Labeler:
        """Loads the model and checks each ontology against it; returns the model (or the driver's view of it)."""
        ...

    def start(self, jobs: list[tuple[Job, State]]) -> None:
        """Begins labeling the pending frames of every job (each job's folder is ready)."""
        ...

    def events(self, job: Job, state: State) -> Iterator[Event]:
        """One started job's events, in frame order."""
        ...

    def status(self) -> dict | None:
        """The progress bar's postfix (None: nothing to add)."""
        ...


def batches(items: Iterator, size: int) -> Iterator[list[Frame | Duplicate] | SourceEnd | SourceFailed]:
    """Batches of at most ``size`` frames of one size (a frame's labels never depend on its batch-mates).

    Duplicates ride along in their place (they are journaled in frame order, never labeled);
    markers pass through in order, closing the batch before them.
    """
    batch: list[Frame | Duplicate] = []
    frames, shape = 0, None  # the batch's frame count and their image shape
    for item in items:
        if isinstance(item, Duplicate):
            batch.append(item)
            continue
        if not isinstance(item, Frame):
            if batch:
                yield batch
                batch, frames, shape = [], 0, None
            yield item
            continue
        if shape is not None and shape != item.image.shape:
            yield batch
            batch, frames = [], 0
        batch.append(item)
        frames, shape = frames + 1, item.image.shape
        if frames >= size:
            yield batch
            batch, frames, shape = [], 0, None
    if batch:
        yield batch


def labeled_frame(frame: Frame, detections, nms_iou: float) -> Labeled:
    """A labeled frame with its journal record: the model's boxes after class-aware NMS (filters come later).

    A labeler with open-ended classes names each box's class (``data[CLASS_NAME]``): NMS then
    goes by name, and the record's class ids are provisional until the writer numbers the
    names in the dataset's class list.
    """
    named = CLASS_NAME in detections.data
    if named:
        local: dict[str, int] = {}
        names = [str(n) for n in detections.data[CLASS_NAME]]
        detections.class_id = np.array([local.setdefault(n, len(local)) for n in names], dtype=int)
    det = nms(detections, nms_iou)
    h, w = frame.image.shape[:2]
    record = FrameRecord(frame.name, frame.source.stem, frame.index, frame.t, w, h, to_boxes(det))
    if not frame.kept:  # labeled for tracking only: journaled with the model's boxes, never written
        record.dropped = PROBE
    if not named:
        return Labeled(record, frame.image)
    return Labeled(record, frame.image, tuple(str(n) for n in det.data[CLASS_NAME]) if len(det) else ())


def label_batch(labeler: Labeler, batch: list, ontology: Ontology, nms_iou: float) -> list[Labeled | Duplicate]:
    """Labels one batch's frames in one call; its duplicates stay in their place, unlabeled."""
    frames = [f for f in batch if isinstance(f, Frame)]
    detections = labeler.label([f.image for f in frames], ontology) if frames else []
    labeled = iter(list(zip(frames, detections, strict=True)))
    out: list[Labeled | Duplicate] = []
    for item in batch:
        if isinstance(item, Duplicate):
            out.append(item)
        else:
            frame, det = next(labeled)
            out.append(labeled_frame(frame, det, nms_iou))
    return out
