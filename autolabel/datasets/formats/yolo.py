"""YOLO labels: ``labels/<name>.txt``, one ``class cx cy w h`` line per box, normalized to the image.

Coordinates are integers on a grid of 1e-6 of the image side (6 decimals), rounded so
that no box reaches past the image (``cx + w/2 <= 1`` and ``cx - w/2 >= 0``, also in
float32, as Ultralytics reads them): a box the model returns past the edge is shrunk
to the image. Every dataset has them (``data.yaml`` and the split lists point at them).

In a segmentation dataset (``run --masks``) each box is one YOLO-seg line instead,
``class x0 y0 x1 y1 ...`` (normalized, 6 decimals): its mask's rings joined into one polygon
as Ultralytics joins segments (``merge_multi_segment``: every part kept, a hole kept as a
hole), or its box's 4 corners where it has no mask. Ultralytics derives the box from the
polygon.

Reading takes a labels folder (labelImg's, a run's ``.autolabel/edited/labels``, or a
folder holding ``labels/``); ``classes.txt`` (labelImg) or ``data.yaml`` beside it, when
present, name the ids, which then map to the dataset's classes by name. A YOLO-seg line is
read as its polygon's box with the polygon as its mask.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from autolabel.datasets.formats.base import (
    Annotations,
    Context,
    ExportFolder,
    Format,
    ReadContext,
    image_name,
    marker_id,
    outline,
    read_text,
)
from autolabel.datasets.layout import IMAGES, LABELS
from autolabel.datasets.records import Box, FrameRecord
from autolabel.errors import InputError

# YOLO coordinates are integers on this grid (1e-6 of the image side: 0.002 px at 1920 px).
YOLO_GRID = 1_000_000
# A box may reach this far past the image edge (rounding in other tools); it is cut at the edge.
EDGE_PX = 0.5
# A class id (ASCII digits; six at most) and a coordinate (a plain decimal number: no NaN, no infinity).
CLASS_ID = re.compile(r"[0-9]{1,6}")
NUMBER = re.compile(r"[+-]?([0-9]{1,20}(\.[0-9]{0,20})?|\.[0-9]{1,20})([eE][+-]?[0-9]{1,3})?")
# Text files beside YOLO labels that are not labels: labelImg's class list, a VOC folder's.
NOT_LABELS = frozenset({"classes.txt", "labelmap.txt"})
# A label file longer than this is not one frame's labels.
MAX_LABEL_BYTES = 16 << 20


def _fits(center: int, size: int) -> bool:
    for dtype in (np.float64, np.float32):
        c, s = dtype(center / YOLO_GRID), dtype(size / YOLO_GRID)
        if c - s / dtype(2) < 0 or c + s / dtype(2) > 1:
            return False
    return True


def _yolo_span(lo: float, hi: float, side: int) -> tuple[int, int]:
    """Center and size of ``[lo, hi]`` on the YOLO grid, inside ``[0, 1]``."""
    a = min(max(round(min(lo, hi) / side * YOLO_GRID), 0), YOLO_GRID)
    b = min(max(round(max(lo, hi) / side * YOLO_GRID), 0), YOLO_GRID)
    if (a + b) % 2:  # an even size puts both edges exactly on the grid
        if b - a > 1:
            b -= 1
        elif b < YOLO_GRID:
            b += 1
        else:
            a -= 1
    center, size = (a + b) // 2, b - a
    while size > 0 and not _fits(center, size):  # decimal-to-binary rounding at the very edge
        size -= 2
    return center, size


def yolo_tolerance(width: int, height: int) -> float:
    """How far (pixels) a corner read back from YOLO lies from the one written: 1.5 grid steps of the longer side.

    Each edge rounds to the grid (half a step) and may move one more step so that the size
    is even (both edges then lie exactly on the grid).
    """
    return 1.5 * max(width, height) / YOLO_GRID


def _grid(value: int) -> str:
    return f"{value // YOLO_GRID}.{value % YOLO_GRID:06d}"


def yolo_line(box: Box, width: int, height: int) -> str:
    """One YOLO label line (no newline)."""
    cx, w = _yolo_span(box.x1, box.x2, width)
    cy, h = _yolo_span(box.y1, box.y2, height)
    return f"{box.class_id} {_grid(cx)} {_grid(cy)} {_grid(w)} {_grid(h)}"


def seg_polygon(box: Box, width: int, height: int) -> list[float]:
    """The one polygon a YOLO-seg line holds for ``box``: its outline's rings joined as Ultralytics joins them.

    Holes are traced along the object's pixels around them (:func:`autolabel.masks.geometry.inner_holes`),
    so that the polygon drawn as Ultralytics draws it (``cv2.fillPoly``) leaves the hole's pixels empty.
    """
    from autolabel.masks.geometry import inner_holes, merge_multi_segment, solid_ring

    return merge_multi_segment([solid_ring(r) for r in inner_holes(outline(box), width, height)])


def seg_line(box: Box, width: int, height: int) -> str:
    """One YOLO-seg label line (no newline): the class, then the polygon's points normalized to the image.

    Each coordinate divided by the side, clamped to [0, 1] as ``min(max(v, 0.0), 1.0)`` (a -0.0 stays),
    with six decimals; all at once.
    """
    import numpy as np

    units = np.asarray(seg_polygon(box, width, height), float).reshape(-1, 2) / (width, height)
    units = np.where(units < 0.0, 0.0, units)  # max(v, 0.0) and min(v, 1.0) as Python takes them
    units = np.where(units > 1.0, 1.0, units)
    return f"{box.class_id} " + " ".join(map("{:.6f}".format, units.ravel().tolist()))


def yolo_lines(record: FrameRecord, masks: bool = False) -> str:
    """A frame's YOLO label file (YOLO-seg lines with ``masks``); empty when it has no boxes."""
    line = seg_line if masks else yolo_line
    return "".join(f"{line(b, record.width, record.height)}\n" for b in record.boxes)


def label_path(name: str) -> str:
    """A frame's label file, relative to the dataset."""
    return f"{LABELS}/{name}.txt"


def parse_label_file(path: Path, size: tuple[int, int], ids: dict[int, int | str], n_classes: int) -> list[Box]:
    """The boxes of one YOLO label file in pixels; InputError naming the file and line when malformed.

    Args:
        path: The ``.txt`` file.
        size: The frame's (width, height).
        ids: The file's class ids to the dataset's, or to the name that is none of its classes
            (empty: the same ids).
        n_classes: How many classes the dataset has.
    """
    text = read_text(path, "a label file", MAX_LABEL_BYTES)
    width, height = size
    boxes = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise InputError(
                f"{where}: expected 'class cx cy w h' or a polygon 'class x0 y0 x1 y1 x2 y2 ...', "
                f"got {len(fields)} fields"
            )
        if not CLASS_ID.fullmatch(fields[0]):
            raise InputError(f"{where}: class {fields[0][:20]!r} is not a class id")
        cls = ids.get(int(fields[0]), -1) if ids else int(fields[0])
        if isinstance(cls, str):
            raise InputError(f"{where}: class id {fields[0]} is {cls!r}, which is not one of the dataset's classes")
        if not 0 <= cls < n_classes:
            raise InputError(f"{where}: class id {fields[0]} is not one of the dataset's {n_classes} classes")
        bad = next((v for v in fields[1:] if not NUMBER.fullmatch(v)), None)
        if bad is not None:
            raise InputError(f"{where}: coordinates must be numbers, got {bad[:20]!r}")
        if len(fields) > 5:
            boxes.append(_polygon_box(cls, [float(v) for v in fields[1:]], width, height, where))
            continue
        cx, cy, w, h = (float(v) for v in fields[1:])
        if w <= 0 or h <= 0:
            raise InputError(f"{where}: box of width {w:g} and height {h:g}: both must be above 0")
        x1, y1, x2, y2 = (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
        if x1 < -EDGE_PX or y1 < -EDGE_PX or x2 > width + EDGE_PX or y2 > height + EDGE_PX:
            raise InputError(f"{where}: box [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}] px lies outside the image")
        boxes.append(Box(cls, max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2), None))
    return boxes


def _polygon_box(cls: int, coords: list[float], width: int, height: int, where: str) -> Box:
    """A YOLO-seg polygon (normalized) as its box in pixels, the polygon as its mask."""
    xs = [x * width for x in coords[0::2]]
    ys = [y * height for y in coords[1::2]]
    x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    if x1 < -EDGE_PX or y1 < -EDGE_PX or x2 > width + EDGE_PX or y2 > height + EDGE_PX:
        raise InputError(f"{where}: polygon [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}] px lies outside the image")
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"{where}: polygon of width {x2 - x1:g} and height {y2 - y1:g} px: both must be above 0")
    ring = [v for x, y in zip(xs, ys, strict=True) for v in (x, y)]
    clip = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
    return Box(cls, *clip, None, mask=[ring])


def class_names_beside(folder: Path) -> list[str] | None:
    """The class names a labels folder comes with (labelImg's ``classes.txt``, or a ``data.yaml``), if any."""
    for candidate in (folder / "classes.txt", folder.parent / "classes.txt"):
        if candidate.is_file():
            text = read_text(candidate, "a list of classes", MAX_LABEL_BYTES)
            return [line.strip() for line in text.splitlines() if line.strip()]
    for candidate in (folder / "data.yaml", folder.parent / "data.yaml"):
        if candidate.is_file():
            return _yaml_names(candidate)
    return None


def _yaml_names(path: Path) -> list[str] | None:
    """The class names of an Ultralytics ``data.yaml``: a list, or a mapping from ids 0, 1, 2, ..."""
    from autolabel.config import read_yaml
    from autolabel.errors import ConfigError

    try:
        body = read_yaml(path)
    except ConfigError as exc:  # the source's file, not a config of ours
        raise InputError(str(exc)) from exc
    names = body.get("names") if isinstance(body, dict) else None
    if isinstance(names, dict) and all(type(k) is int for k in names) and set(names) == set(range(len(names))):
        names = [names[k] for k in range(len(names))]
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str | int) for n in names)):
        raise InputError(
            f"{path}: names: expected a list of class names, or a mapping from the ids 0, 1, 2, ... to them"
        )
    return None if names is None else [str(n) for n in names]


def id_map(names: list[str] | None, classes: list[str]) -> dict[int, int | str]:
    """A source's class ids to the dataset's, by name, or to the name when it is none of the dataset's classes.

    Empty when the source names none. A name the dataset lacks is an error only where a box
    uses it (labelImg's ``classes.txt`` lists its predefined classes too).
    """
    if names is None:
        return {}
    return {i: classes.index(n) if n in classes else n for i, n in enumerate(names)}


def read_label_folder(folder: Path, ctx: ReadContext, ids: dict[int, int | str]) -> Annotations:
    """Every ``.txt`` of a labels folder whose stem is a frame of the dataset (others are an error)."""
    out = Annotations()
    for path in sorted(folder.glob("*.txt")):
        if path.name in NOT_LABELS and path.stem not in ctx.sizes:
            continue
        if path.stem not in ctx.sizes:
            raise InputError(f"{path}: no frame {path.stem!r} in the dataset (a label file of another dataset?)")
        out.frames[path.stem] = parse_label_file(path, ctx.sizes[path.stem], ids, len(ctx.classes))
        out.where[path.stem] = str(path)
    return out


class Yolo(Format):
    name = "yolo"
    help = "YOLO labels (labels/<frame>.txt; always written: data.yaml and the split lists point at them)"
    frame_dirs = (LABELS,)

    outlines = True

    def frame_files(self, record: FrameRecord, ctx: Context) -> dict[str, bytes]:
        return {label_path(record.name): yolo_lines(record, ctx.masks).encode("utf-8")}

    def export(self, out: ExportFolder) -> str:
        """A flat YOLO folder as labelImg and CVAT's "YOLO 1.1" read it: images/, labels/, classes.txt."""
        for r in out.records:
            out.image(r, f"{IMAGES}/{image_name(r)}")
            out.write(label_path(r.name), yolo_lines(r, out.ctx.masks))
        out.write("classes.txt", "".join(f"{name}\n" for name in out.ctx.classes))
        return f"a YOLO folder: images in {out.output / IMAGES}, labels in {out.output / LABELS} (classes.txt)"

    def read(self, path: Path, ctx: ReadContext) -> Annotations:
        folder = path / LABELS if (path / LABELS).is_dir() else path
        if not folder.is_dir():
            raise InputError(f"{path}: not a YOLO labels folder")
        dataset_id = marker_id(folder)
        ctx.check_id(dataset_id, path)
        found = read_label_folder(folder, ctx, id_map(class_names_beside(folder), ctx.classes))
        found.dataset_id = dataset_id
        return found

    def detect(self, path: Path) -> bool:
        folder = path / LABELS if (path / LABELS).is_dir() else path
        # Not the class lists (labelImg's classes.txt, the labelmap.txt of a VOC folder).
        return folder.is_dir() and any(p.name not in NOT_LABELS for p in folder.glob("*.txt"))

    def tolerance(self, width: int, height: int) -> float:
        return yolo_tolerance(width, height)


def data_yaml_text(classes: list[str], has_val: bool, train: str = "train.txt", val: str = "val.txt") -> str:
    """An Ultralytics ``data.yaml`` without ``path:``, so the folder can move.

    ``train`` and ``val``: the split lists or image folders, relative to the yaml's folder.
    """
    import yaml

    body = {
        "train": train,
        "val": val if has_val else train,
        "nc": len(classes),
        "names": dict(enumerate(classes)),
    }
    header = (
        "# Written by autolabel. No 'path:' key on purpose: Ultralytics then resolves\n"
        "# train/val against this file's folder, so the dataset trains wherever it is moved.\n"
    )
    if not has_val:
        header += "# No validation frames (val_fraction 0 or a single frame): val reuses train.\n"
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
