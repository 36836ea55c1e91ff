"""The review queue: every unreviewed frame gets a priority from documented signals; the highest go first.

A frame's priority is the weighted sum of its signals (each ``SIGNALS`` entry: its weight
and what it counts). Frames already reviewed get none and stay out of the queue. Facts that
hold for good frames too (a box touching the image border, many boxes) are information in
the report, not reasons to review.

Neighbours are the kept frames of the same source just before and after a frame, at most
``gap`` seconds away (video frames; a still image has none).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from autolabel.datasets.records import Box, FrameRecord
from autolabel.postprocess import Thresholds, iou

# A box scoring within this of its class's threshold is a coin toss: kept or left out by a hair.
MARGIN = 0.15
# A class holding under this share of a product's boxes is rare: its boxes are worth a look.
RARE_SHARE = 0.05
# The frames holding the best candidates of a class that got no box at all.
MISSING_FRAMES = 3
SAME_PLACE_IOU = 0.5

SIGNALS: dict[str, tuple[float, str]] = {
    "near_threshold": (1.0, "boxes scoring near their class's threshold (kept or left out by a hair)"),
    "flicker": (1.0, "its classes differ from both neighbours', which agree"),
    "box_jump": (0.5, "its box count differs from both neighbours', which agree"),
    "jitter": (1.0, "a box far from where both neighbours (which agree) have its class"),
    "rare_class": (0.5, "boxes of a class with under 5% of the product's boxes"),
    "missing_class": (2.0, "among the best candidates of a class that has no box in the product"),
    "class_overlap": (1.0, "boxes of different classes in one place (IoU >= 0.5)"),
    "track_disagreement": (1.0, "--track changed what the model said here: a box filled in, dropped, or its class"),
}


@dataclass
class Entry:
    """One frame's place in the queue."""

    name: str
    priority: float
    signals: dict[str, float] = field(default_factory=dict)

    def reasons(self) -> str:
        """The signals that gave it priority, strongest first, in words."""
        ranked = sorted(self.signals.items(), key=lambda kv: -SIGNALS[kv[0]][0] * kv[1])
        return "; ".join(f"{k.replace('_', ' ')} {v:.2g}" for k, v in ranked)


def _closeness(model: list[Box], thresholds: Thresholds) -> float:
    if not thresholds.applies:
        return 0.0
    total = 0.0
    for b in model:
        if b.confidence is not None:
            total += max(0.0, 1.0 - abs(b.confidence - thresholds.of(b.class_id)) / MARGIN)
    return total


def neighbours(records: list[FrameRecord], gap: float) -> dict[str, tuple[FrameRecord, FrameRecord]]:
    """Each frame's previous and next kept frame of its source, when both are within ``gap`` seconds."""
    by_source: dict[str, list[FrameRecord]] = defaultdict(list)
    for r in records:
        by_source[r.source].append(r)
    out = {}
    for frames in by_source.values():
        frames.sort(key=lambda r: r.index)
        for i in range(1, len(frames) - 1):
            before, here, after = frames[i - 1], frames[i], frames[i + 1]
            if here.t - before.t <= gap and after.t - here.t <= gap:
                out[here.name] = (before, after)
    return out


def _best_iou(box: Box, others: list[Box]) -> float:
    return max((iou(box, o) for o in others if o.class_id == box.class_id), default=0.0)


def _disagreement(r: FrameRecord, model: list[Box], thresholds: Thresholds | None) -> float:
    """How many boxes tracking added, dropped or gave another class, against the model's boxes above threshold."""
    if not any(b.track_id is not None for b in r.boxes):
        return 0.0
    said = [b for b in model if thresholds is None or thresholds.passes(b)]
    kept = list(r.boxes)
    unmatched = 0
    for b in said:
        same = [k for k in kept if k.class_id == b.class_id and iou(k, b) >= SAME_PLACE_IOU]
        if same:
            kept.remove(same[0])
        else:
            unmatched += 1
    return float(unmatched + len(kept))


def _jitter(here: FrameRecord, before: FrameRecord, after: FrameRecord) -> float:
    """Boxes far from where both neighbours have their class, while the neighbours agree with each other."""
    count = 0.0
    for b in here.boxes:
        near_before, near_after = _best_iou(b, before.boxes), _best_iou(b, after.boxes)
        if near_before < SAME_PLACE_IOU and near_after < SAME_PLACE_IOU:
            anchors = [o for o in before.boxes if o.class_id == b.class_id]
            if any(_best_iou(o, after.boxes) >= SAME_PLACE_IOU for o in anchors):
                count += 1
    return count


def build(
    records: list[FrameRecord],
    classes: list[str],
    thresholds: dict[str | None, Thresholds],
    gap: float = 1.0,
) -> list[Entry]:
    """The queue over a dataset's kept frames: unreviewed ones, highest priority first (ties by name).

    Args:
        records: The kept frames (dropped ones left out).
        classes: The class names.
        thresholds: The box thresholds by product (None: a product dataset's own).
        gap: Seconds within which kept frames of one source are neighbours.
    """
    counts = Counter(b.class_id for r in records for b in r.boxes)
    total = sum(counts.values())
    rare = {c for c in range(len(classes)) if total and 0 < counts[c] < RARE_SHARE * total}
    absent = [c for c in range(len(classes)) if counts[c] == 0]
    missing: dict[str, float] = defaultdict(float)
    for c in absent:  # the frames where the model came closest to finding it
        best = []
        for r in records:
            model = r.model_boxes if r.model_boxes is not None else r.boxes
            score = max((b.confidence or 0.0 for b in model if b.class_id == c), default=0.0)
            if score > 0 and not r.reviewed:
                best.append((score, r.name))
        for _, name in sorted(best, reverse=True)[:MISSING_FRAMES]:
            missing[name] += 1.0
    near = neighbours(records, gap)
    queue = []
    for r in records:
        if r.reviewed:
            continue
        model = r.model_boxes if r.model_boxes is not None else r.boxes
        t = thresholds.get(r.product, thresholds.get(None))
        signals = {
            "near_threshold": _closeness(model, t) if t is not None else 0.0,
            "track_disagreement": _disagreement(r, model, t),
            "rare_class": float(sum(1 for b in r.boxes if b.class_id in rare)),
            "missing_class": missing.get(r.name, 0.0),
            "class_overlap": float(
                sum(
                    1
                    for i, a in enumerate(r.boxes)
                    for b in r.boxes[i + 1 :]
                    if a.class_id != b.class_id and iou(a, b) >= SAME_PLACE_IOU
                )
            ),
        }
        if r.name in near:
            before, after = near[r.name]
            classes_of = [frozenset(b.class_id for b in x.boxes) for x in (before, r, after)]
            signals["flicker"] = float(classes_of[0] == classes_of[2] != classes_of[1])
            counts3 = [len(x.boxes) for x in (before, r, after)]
            signals["box_jump"] = float(counts3[0] == counts3[2] != counts3[1])
            signals["jitter"] = _jitter(r, before, after)
        signals = {k: v for k, v in signals.items() if v > 0}
        priority = sum(SIGNALS[k][0] * v for k, v in signals.items())
        queue.append(Entry(r.name, round(priority, 6), signals))
    queue.sort(key=lambda e: (-e.priority, e.name))
    return queue


def for_dataset(ds, kept: list, gap: float = 1.0) -> list[Entry]:
    """An opened dataset's queue (``kept``: its kept frames, as the caller read them; its products' thresholds)."""
    thresholds = {product: t for product, (t, _) in ds.derivation().items()}
    return build(kept, ds.classes, thresholds, gap)
