"""NMS, and the seed's box and frame filters, as functions on plain records.

Relative box size is the box area over the image area. The overlap filter removes,
of two boxes whose IoU exceeds the threshold (any classes), the less confident one.
Every removal is counted, so summaries can say what each filter took away.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from autolabel.config import FilterConfig
from autolabel.datasets.records import Box, FrameRecord


def nms(detections: sv.Detections, iou: float) -> sv.Detections:
    """Class-aware non-maximum suppression (supervision's)."""
    if len(detections) < 2:
        return detections
    return detections.with_nms(threshold=iou, class_agnostic=False)


def to_boxes(detections: sv.Detections) -> list[Box]:
    """Detections to plain boxes, rounded to 1/100 pixel and 1e-4 confidence."""
    boxes = []
    for i in range(len(detections)):
        x1, y1, x2, y2 = (round(float(v), 2) for v in detections.xyxy[i])
        conf = None if detections.confidence is None else round(float(detections.confidence[i]), 4)
        boxes.append(Box(int(detections.class_id[i]), x1, y1, x2, y2, conf))
    return boxes


def to_detections(boxes: list[Box]) -> sv.Detections:
    """Plain boxes to ``sv.Detections`` (confidence 1.0 where unknown)."""
    if not boxes:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float32),
        class_id=np.array([b.class_id for b in boxes], dtype=int),
        confidence=np.array([1.0 if b.confidence is None else b.confidence for b in boxes], dtype=np.float32),
    )


def relative_area(record: FrameRecord, box: Box) -> float:
    """A box's area as a fraction of its image's area."""
    return max(0.0, box.x2 - box.x1) * max(0.0, box.y2 - box.y1) / float(record.width * record.height or 1)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 for boxes without area)."""
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FilterStats:
    """What the filters removed."""

    removed: Counter = field(default_factory=Counter)

    def merge(self, other: FilterStats) -> None:
        """Adds another's counts."""
        self.removed.update(other.removed)

    def as_dict(self) -> dict[str, int]:
        """Non-zero counts, in a fixed order."""
        order = ["boxes_too_small", "boxes_too_large", "boxes_overlapping", "frames_empty", "frames_multi"]
        return {k: self.removed[k] for k in order if self.removed[k]}


def filters_active(f: FilterConfig) -> bool:
    """True when any filter would change anything."""
    return f.min_box_size > 0 or f.max_box_size < 1 or f.overlap_iou is not None or f.drop_empty or f.drop_multi


def apply_filters(record: FrameRecord, f: FilterConfig, stats: FilterStats) -> str | None:
    """Filters a record's boxes in place; returns why the frame is dropped, or None to keep it."""
    kept = []
    for box in record.boxes:
        rel = relative_area(record, box)
        if rel < f.min_box_size:
            stats.removed["boxes_too_small"] += 1
        elif rel > f.max_box_size:
            stats.removed["boxes_too_large"] += 1
        else:
            kept.append(box)
    if f.overlap_iou is not None and len(kept) > 1:
        order = sorted(kept, key=lambda b: -(b.confidence if b.confidence is not None else 1.0))
        survivors: list[Box] = []
        for box in order:
            if all(iou(box, s) <= f.overlap_iou for s in survivors):
                survivors.append(box)
            else:
                stats.removed["boxes_overlapping"] += 1
        kept = [b for b in kept if any(b is s for s in survivors)]
    record.boxes = kept
    if f.drop_empty and not kept:
        stats.removed["frames_empty"] += 1
        return "empty"
    if f.drop_multi and len(kept) > 1:
        stats.removed["frames_multi"] += 1
        return "multi"
    return None


@dataclass(frozen=True)
class Thresholds:
    """The box thresholds a dataset is written with: one for every class, or one of its own per class.

    The model's boxes at or above ``model.keep_threshold`` are journaled; the dataset's files
    hold those scoring above their class's threshold. A box without a score (a person's) is
    always kept; so is every box of a model that scores none by these (``applies`` False).
    """

    box: float
    classes: dict[int, float] = field(default_factory=dict)
    applies: bool = True

    def of(self, class_id: int) -> float:
        """The threshold of one class."""
        return self.classes.get(class_id, self.box)

    def passes(self, box: Box) -> bool:
        """Whether a journaled box of the model belongs in the dataset's files."""
        return not self.applies or box.confidence is None or box.confidence > self.of(box.class_id)

    def lowest(self) -> float:
        """The lowest threshold of any class (what the journal must hold for these to be served)."""
        return min([self.box, *self.classes.values()])

    @classmethod
    def from_model(cls, model: dict, classes: list[str]) -> Thresholds:
        """The thresholds of a ``model`` config or fingerprint section (``box_threshold``, ``class_thresholds``,
        ``base_model``), by class id; a class named in no threshold takes ``box_threshold``."""
        from autolabel.labelers import registry

        ids = {name: i for i, name in enumerate(classes)}
        per_class = {ids[n]: float(t) for n, t in (model.get("class_thresholds") or {}).items() if n in ids}
        spec = registry.registry().get(model.get("base_model"))
        applies = spec is None or "box_threshold" in spec.thresholds
        return cls(float(model.get("box_threshold", 0.0)), per_class, applies)

    @classmethod
    def of_run(cls, config, classes: list[str]) -> Thresholds:
        """A run's thresholds."""
        m = config.model
        section = {"box_threshold": m.box_threshold, "class_thresholds": m.class_thresholds}
        return cls.from_model(section | {"base_model": m.base_model}, classes)


def settle(record: FrameRecord, model: list[Box], thresholds: Thresholds, filters: FilterConfig | None,
           stats: FilterStats | None = None) -> None:  # fmt: skip
    """Sets a frame's dataset boxes from what the model said: its thresholds, then the filters.

    ``record.boxes`` becomes the boxes the dataset's files hold (with the masks ``model`` carries);
    ``record.model_boxes`` keeps the model's own when they differ, masks aside and without them
    (None when the same); ``record.dropped`` says why a filter left the frame out. A fresh run and
    a run that re-derives a dataset from its journal both settle frames here, so they write the
    same files.
    """
    record.boxes = [b for b in model if thresholds.passes(b)]
    record.dropped = None
    if filters is not None and filters_active(filters):
        record.dropped = apply_filters(record, filters, stats if stats is not None else FilterStats())
    # Masks belong to the dataset's boxes only: the model's boxes are compared and kept without them.
    bare = [b.bare() for b in model]
    record.model_boxes = None if [b.bare() for b in record.boxes] == bare else bare
