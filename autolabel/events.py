"""What flows from the frame readers and engines to the dataset writer, per product, in frame order.

Plain data: an engine (local or Ray) turns a product's sources into these events, and
:mod:`autolabel.datasets.ingest` writes them, the same way whichever engine made them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autolabel.datasets.records import FrameRecord
from autolabel.sampling import frame_name
from autolabel.selection import DUPLICATE
from autolabel.sources import Source


@dataclass(frozen=True)
class SourceEnd:
    """Every kept frame of ``source`` was read: it is complete once the frames before this are journaled."""

    source: Source


@dataclass(frozen=True)
class SourceFailed:
    """Reading ``source`` stopped with ``message``: frames before it are kept, it stays incomplete."""

    source: Source
    message: str


@dataclass(frozen=True)
class Duplicate:
    """A sampled frame left out as a near-duplicate of the last kept one: journaled, never labeled."""

    source: Source
    index: int
    t: float
    width: int
    height: int

    def record(self) -> FrameRecord:
        name = frame_name(self.source.stem, self.index)
        return FrameRecord(name, self.source.stem, self.index, self.t, self.width, self.height, dropped=DUPLICATE)


@dataclass
class Labeled:
    """A labeled frame on its way to the writer.

    Attributes:
        record: Its journal record, boxes after NMS (filters are the writer's).
        image: Its pixels (BGR), or its JPEG bytes when encoded already (by a Ray actor).
        names: Each box's class name, for a labeler with open-ended classes (the record's
            class ids are then provisional); None otherwise.
    """

    record: FrameRecord
    image: np.ndarray | bytes
    names: tuple[str, ...] | None = None


# What an engine hands the writer, per product, in frame order.
Event = Labeled | Duplicate | SourceEnd | SourceFailed
