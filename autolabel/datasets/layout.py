"""The on-disk layout of an autolabel dataset and its journal.

::

    <root>/
      images/<name>.jpg          the sampled frames
      labels/<name>.txt          YOLO labels (empty file: nothing found)
      annotations/<name>.xml     Pascal VOC (1-based pixel corners, as the VOC devkit)
      labelmap.txt               VOC class list, every class in id order (with VOC)
      detections.jsonl           one line per frame: source, index, size and every box
                                 with its class id and confidence (the confidence
                                 sidecar, and the resume journal)
      train.txt, val.txt         the split, as ./images/<name>.jpg lines
      data.yaml                  Ultralytics dataset file (no absolute paths)
      coco_train.json, coco_val.json   COCO (with --format coco)
      run.yaml                   resolved config and package versions
      .autolabel/state.json      kind, classes, settings fingerprint, completion

A frame counts as done only once its journal line is written, which happens after
its image and label files are in place.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.errors import InputError
from autolabel.fileio import atomic_write_text

IMAGES = "images"
LABELS = "labels"
ANNOTATIONS = "annotations"
JOURNAL = "detections.jsonl"
STATE_DIR = ".autolabel"
STATE = f"{STATE_DIR}/state.json"
DATA_YAML = "data.yaml"
LABELMAP = "labelmap.txt"
RUN_YAML = "run.yaml"
SPLITS = ("train", "val")
STATE_VERSION = 3
# Version 2 wrote YOLO with 5 decimals and VOC without <pose>/<truncated>/<difficult>; its
# datasets are read, and their derived files rewritten from the journal, by the next run or import.
OLDEST_STATE_VERSION = 2
IMAGE_SUFFIX = ".jpg"


@dataclass
class Box:
    """One labeled box in pixels."""

    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float | None = None


@dataclass
class FrameRecord:
    """One line of the journal: a frame and its boxes (plain data between stages)."""

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

    def to_json(self) -> str:
        """One compact JSON line (boxes as [class, x1, y1, x2, y2, confidence])."""
        data = {
            "name": self.name,
            "source": self.source,
            "index": self.index,
            "t": round(self.t, 4),
            "width": self.width,
            "height": self.height,
            "boxes": [[b.class_id, b.x1, b.y1, b.x2, b.y2, b.confidence] for b in self.boxes],
        }
        if self.split is not None:
            data["split"] = self.split
        if self.product is not None:
            data["product"] = self.product
        if self.dropped is not None:
            data["dropped"] = self.dropped
        if self.reviewed:
            data["reviewed"] = True
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> FrameRecord:
        """Parses one journal line."""
        d = json.loads(line)
        boxes = [Box(int(b[0]), *map(float, b[1:5]), None if b[5] is None else float(b[5])) for b in d["boxes"]]
        return cls(
            d["name"],
            d["source"],
            int(d["index"]),
            float(d["t"]),
            int(d["width"]),
            int(d["height"]),
            boxes,
            d.get("split"),
            d.get("product"),
            d.get("dropped"),
            bool(d.get("reviewed", False)),
        )

    @property
    def image(self) -> str:
        """Image path relative to the dataset root."""
        return f"{IMAGES}/{self.name}{IMAGE_SUFFIX}"


def _check_record(record: FrameRecord, n_classes: int | None) -> None:
    if record.width < 1 or record.height < 1:
        raise ValueError(f"image size {record.width}x{record.height}")
    for b in record.boxes:
        if n_classes is not None and not 0 <= b.class_id < n_classes:
            raise ValueError(f"class id {b.class_id} outside the dataset's {n_classes} classes")
        if not all(math.isfinite(v) for v in (b.x1, b.y1, b.x2, b.y2)) or not (b.x1 <= b.x2 and b.y1 <= b.y2):
            raise ValueError(f"bad box {[b.x1, b.y1, b.x2, b.y2]}")


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
                _check_record(record, n_classes)
                if record.name in seen:
                    raise ValueError(f"frame {record.name!r} listed twice")
                seen.add(record.name)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise InputError(f"{path}:{lineno}: corrupt journal line: {exc}") from exc
            yield record


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


def read_splits(root: Path) -> dict[str, str]:
    """Each listed image name's split, from ``train.txt`` and ``val.txt``."""
    return {name: split for split in SPLITS for name in read_split(root, split)}


def boxes_per_class(records: Iterable[FrameRecord], classes: list[str]) -> dict[str, int]:
    """Box counts by class name, every class listed (zero included), in class-id order."""
    counts = Counter(b.class_id for r in records for b in r.boxes)
    return {name: counts.get(i, 0) for i, name in enumerate(classes)}


def read_state(root: Path) -> dict | None:
    """The dataset's state file, or None when ``root`` is not an autolabel dataset."""
    path = root / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: unreadable dataset state ({exc}); restore it from a backup (the journal {JOURNAL} "
            "holds every box, reviews included), or label into a new --output"
        ) from exc
    if not isinstance(state, dict) or not isinstance(state.get("kind"), str):
        raise InputError(f"{path}: not an autolabel dataset state (expected a JSON object with 'kind')")
    version = state.get("version")
    if type(version) is not int or not OLDEST_STATE_VERSION <= version <= STATE_VERSION:
        raise InputError(
            f"{path}: dataset written by another autolabel version (state version {version!r}, "
            f"this one reads {OLDEST_STATE_VERSION} to {STATE_VERSION}); relabel into a new --output"
        )
    classes = state.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise InputError(f"{path}: 'classes' must be a list of names")
    return state


def require_state(root: Path) -> dict:
    """The state of the dataset at ``root``; InputError when it is not an autolabel dataset."""
    state = read_state(root) if root.is_dir() else None
    if state is None:
        raise InputError(f"{root}: not an autolabel dataset (no {STATE})")
    return state


def write_state(root: Path, state: dict) -> None:
    """Writes the state file atomically."""
    atomic_write_text(root / STATE, json.dumps(state, indent=2, sort_keys=True) + "\n")


def read_split(root: Path, split: str) -> list[str]:
    """Image names (without suffix) listed in ``<split>.txt``."""
    path = root / f"{split}.txt"
    if not path.exists():
        return []
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            names.append(Path(line).stem)
    return names
