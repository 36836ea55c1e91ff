"""The per-frame, per-box record: plain data that every stage, format and engine shares.

One journal line is one :class:`FrameRecord`; its boxes are :class:`Box` es. A box is its
class, score and pixel corners, and optionally a mask, a track id and its origin; a reviewed
frame keeps the model's own boxes beside the reviewer's (``model_boxes``). A box is written as
``[class, x1, y1, x2, y2, score]`` with a seventh element, an object, only when it carries more
(``{"mask": ..., "track": ..., "origin": ...}``), so a journal without those fields reads as it
always did, byte for byte.

**The mask** (``autolabel run --masks``) belongs to its box: one record per box. It is a list of
rings, each a closed polygon ``[x0, y0, x1, y1, ...]`` in pixels (continuous coordinates, as the
box corners: pixel ``i`` spans ``[i, i + 1)``), the last point joining the first. A pixel is in the
mask when an odd number of rings enclose it, boundary included: parts are rings, each hole inside
a part is a ring, an island in a hole is a ring again (:mod:`autolabel.masks.geometry`). Rings are
simplified within the run's ``masks.tolerance`` at IoU >= 0.99 with the model's bitmap, and
rounded to 1/100 px. ``[]``: the mask model found nothing in the box (the box's own 4-point polygon
stands in the files, and summaries count it); absent (None): no mask made yet, for a box that a
reviewer drew or moved, or a dataset without masks. ``model_boxes`` never carry masks. A box whose
corners change loses its mask (settle, re-derivation, import), and the next run with the mask
model at hand makes a new one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from autolabel.datasets.layout import IMAGE_SUFFIX, IMAGES

# Where a box came from. A box without one takes its frame's: reviewed when the frame is, else the model's.
MODEL = "model"
REVIEWED = "reviewed"
INTERPOLATED = "interpolated"
ORIGINS = (MODEL, REVIEWED, INTERPOLATED)
# A frame labeled for tracking only (``--track``): journaled with the model's boxes, never in the dataset.
PROBE = "probe"


@dataclass
class Box:
    """One labeled box in pixels.

    Attributes:
        class_id: Index into the dataset's class list.
        x1, y1, x2, y2: Corners in pixels (``x1 <= x2``, ``y1 <= y2``).
        confidence: The model's score; None for a box a person drew or changed.
        mask: The object's outline as rings (see the module docs); ``[]``: the mask model found none;
            None: no mask made.
        track_id: The object's track, unique within a dataset; None: not tracked.
        origin: ``model``, ``reviewed`` or ``interpolated``; None: the frame's (see :meth:`FrameRecord.origin`).
    """

    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float | None = None
    mask: list[list[float]] | None = None
    track_id: int | None = None
    origin: str | None = None

    def extras(self) -> dict:
        """The optional fields that are set, as the journal writes them."""
        out: dict = {}
        if self.mask is not None:
            out["mask"] = self.mask
        if self.track_id is not None:
            out["track"] = self.track_id
        if self.origin is not None:
            out["origin"] = self.origin
        return out

    def bare(self) -> Box:
        """The same box without its mask."""
        return dataclasses.replace(self, mask=None) if self.mask is not None else self

    def same_place(self, other: Box) -> bool:
        """The same class, corners, score, track and origin (masks aside)."""
        return self.bare() == other.bare()

    def to_list(self) -> list:
        """``[class, x1, y1, x2, y2, score]``, plus the extras object when there are any."""
        row = [self.class_id, self.x1, self.y1, self.x2, self.y2, self.confidence]
        extras = self.extras()
        return row + [extras] if extras else row

    @classmethod
    def from_list(cls, row: list) -> Box:
        """Parses what :meth:`to_list` wrote (ValueError, TypeError, IndexError or KeyError when malformed)."""
        if not isinstance(row, list) or len(row) not in (6, 7):
            raise ValueError(f"a box must be [class, x1, y1, x2, y2, score] (+ extras), got {str(row)[:60]}")
        score = None if row[5] is None else float(row[5])
        box = cls(int(row[0]), *(float(v) for v in row[1:5]), score)
        if len(row) == 7:
            extras = row[6]
            if not isinstance(extras, dict) or set(extras) - {"mask", "track", "origin"}:
                raise ValueError(f"box extras must be an object with mask, track, origin; got {str(extras)[:60]}")
            if "mask" in extras:
                box.mask = [[float(v) for v in ring] for ring in extras["mask"]]
                if any(len(ring) < 2 or len(ring) % 2 or not all(map(math.isfinite, ring)) for ring in box.mask):
                    raise ValueError("a mask is a list of rings [x0, y0, x1, y1, ...] of finite numbers")
            if "track" in extras:
                box.track_id = int(extras["track"])
            if "origin" in extras:
                if extras["origin"] not in ORIGINS:
                    raise ValueError(f"box origin must be one of {', '.join(ORIGINS)}, got {extras['origin']!r}")
                box.origin = extras["origin"]
        return box


def carry_masks(old: list[Box], new: list[Box]) -> None:
    """A box that stays where it was keeps its mask (one whose box changed gets a new one: None until made)."""
    for box in new:
        if box.mask is None:
            same = next((b for b in old if b.mask is not None and b.same_place(box)), None)
            if same is not None:
                box.mask = same.mask


@dataclass
class FrameRecord:
    """One line of the journal: a frame and its boxes (plain data between stages).

    Attributes:
        boxes: The frame's boxes in the dataset (the reviewer's, on a reviewed frame).
        model_boxes: What the model said on a frame whose boxes differ from it (a reviewed
            frame); None: ``boxes`` are the model's.
        dropped: Why the frame is not in the dataset (a filter, ``duplicate``), or None.
    """

    name: str
    source: str
    index: int
    t: float
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    split: str | None = None
    product: str | None = None
    dropped: str | None = None
    reviewed: bool = False
    model_boxes: list[Box] | None = None

    def to_json(self) -> str:
        """One compact JSON line (boxes as [class, x1, y1, x2, y2, confidence])."""
        data = {
            "name": self.name,
            "source": self.source,
            "index": self.index,
            "t": round(self.t, 4),
            "width": self.width,
            "height": self.height,
            "boxes": [b.to_list() for b in self.boxes],
        }
        if self.split is not None:
            data["split"] = self.split
        if self.product is not None:
            data["product"] = self.product
        if self.dropped is not None:
            data["dropped"] = self.dropped
        if self.reviewed:
            data["reviewed"] = True
        if self.model_boxes is not None:
            data["model"] = [b.to_list() for b in self.model_boxes]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> FrameRecord:
        """Parses one journal line."""
        d = json.loads(line)
        model = d.get("model")
        return cls(
            d["name"],
            d["source"],
            int(d["index"]),
            float(d["t"]),
            int(d["width"]),
            int(d["height"]),
            [Box.from_list(b) for b in d["boxes"]],
            d.get("split"),
            d.get("product"),
            d.get("dropped"),
            bool(d.get("reviewed", False)),
            None if model is None else [Box.from_list(b) for b in model],
        )

    @property
    def image(self) -> str:
        """Image path relative to the dataset root."""
        return f"{IMAGES}/{self.name}{IMAGE_SUFFIX}"

    def origin(self, box: Box) -> str:
        """Where ``box`` came from: its own origin, else the frame's."""
        return box.origin or (REVIEWED if self.reviewed else MODEL)

    def check(self, n_classes: int | None) -> None:
        """ValueError when the record cannot be a frame of a dataset with ``n_classes`` classes."""
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size {self.width}x{self.height}")
        for b in [*self.boxes, *(self.model_boxes or ())]:
            if n_classes is not None and not 0 <= b.class_id < n_classes:
                raise ValueError(f"class id {b.class_id} outside the dataset's {n_classes} classes")
            if not all(math.isfinite(v) for v in (b.x1, b.y1, b.x2, b.y2)) or not (b.x1 <= b.x2 and b.y1 <= b.y2):
                raise ValueError(f"bad box {[b.x1, b.y1, b.x2, b.y2]}")


def frames_per_second(frames: list[FrameRecord]) -> float:
    """A video's frame rate as its frames' indices and times say (frames of one video, in index order; 30 when
    they span no time)."""
    span = frames[-1].t - frames[0].t
    return (frames[-1].index - frames[0].index) / span if span > 0 else 30.0


def boxes_per_class(records: Iterable[FrameRecord], classes: list[str]) -> dict[str, int]:
    """Box counts by class name, every class listed (zero included), in class-id order."""
    counts = Counter(b.class_id for r in records for b in r.boxes)
    return {name: counts.get(i, 0) for i, name in enumerate(classes)}


def dataset_warnings(boxes_per_class: dict[str, int], split: dict[str, int]) -> list[str]:
    """What a user needs to know about a dataset's counts: a class with no box, no validation frames."""
    out = [
        f"class {name!r} got no box: check its caption, or review frames where it shows (autolabel eval)"
        for name, n in boxes_per_class.items()
        if n == 0
    ]
    if sum(split.values()) and not split.get("val"):
        out.append(
            "no validation frames (val_fraction 0, or too few frames): a trained model's validation score would be "
            "measured on its training frames; raise --val-fraction or keep more frames"
        )
    return out
