"""What each dataset format says about a frame: YOLO lines, Pascal VOC XML, COCO dicts, a VOC label map.

Pure functions of journal records, shared by the native dataset (writer, finalize,
import) and ``autolabel export``. Their output depends on nothing but the records and
the class list, so a file rewritten from the journal is byte-identical to the first.

- YOLO: class id and normalized center/size with 6 decimals, rounded on a grid so that
  no box reaches past the image (``cx + w/2 <= 1`` and ``cx - w/2 >= 0``, also in
  float32, as Ultralytics reads them).
- Pascal VOC: the devkit's 1-based inclusive pixel corners (supervision's), every
  object with ``<pose>``, ``<truncated>`` (the box touches the image border) and
  ``<difficult>``, our own ``<database>``.
- COCO: ``info`` and ``licenses`` present (pycocotools' ``loadRes`` needs ``info``),
  image ids by journal order and annotation ids by (image, box) so that an import that
  changes one frame's boxes renumbers no other frame's, and a ``score`` on every box
  (1.0 on reviewed frames, which also carry ``reviewed: true``), so the file can be
  read as results too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from xml.dom.minidom import parseString
from xml.etree.ElementTree import Element, SubElement, tostring

import numpy as np

from autolabel.datasets.layout import IMAGE_SUFFIX, SPLITS, Box, FrameRecord

# YOLO coordinates are integers on this grid (1e-6 of the image side: 0.002 px at 1920 px).
YOLO_GRID = 1_000_000
# COCO annotation ids are image_id * block + box index + 1; the block grows past 999 boxes a frame.
MIN_ID_BLOCK = 1000
VOC_DATABASE = "autolabel"
COCO_DESCRIPTION = "Labeled by autolabel (Grounding DINO or another base model), reviewed where 'reviewed' is true"
# Pixels from the border within which a box counts as cut by the image edge (VOC <truncated>).
EDGE_PX = 0.5


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


def _grid(value: int) -> str:
    return f"{value // YOLO_GRID}.{value % YOLO_GRID:06d}"


def yolo_line(box: Box, width: int, height: int) -> str:
    """One YOLO label line (no newline)."""
    cx, w = _yolo_span(box.x1, box.x2, width)
    cy, h = _yolo_span(box.y1, box.y2, height)
    return f"{box.class_id} {_grid(cx)} {_grid(cy)} {_grid(w)} {_grid(h)}"


def yolo_lines(record: FrameRecord) -> str:
    """A frame's YOLO label file; empty when it has no boxes."""
    return "".join(f"{yolo_line(b, record.width, record.height)}\n" for b in record.boxes)


def _touches_edge(box: Box, width: int, height: int) -> bool:
    return box.x1 <= EDGE_PX or box.y1 <= EDGE_PX or box.x2 >= width - EDGE_PX or box.y2 >= height - EDGE_PX


def voc_xml(record: FrameRecord, classes: list[str], folder: str = "images") -> str:
    """A frame's Pascal VOC XML (names XML-escaped by ElementTree)."""
    from supervision.dataset.formats.pascal_voc import object_to_pascal_voc

    root = Element("annotation")
    SubElement(root, "folder").text = folder
    SubElement(root, "filename").text = f"{record.name}{IMAGE_SUFFIX}"
    source = SubElement(root, "source")
    SubElement(source, "database").text = VOC_DATABASE
    size = SubElement(root, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        SubElement(size, tag).text = str(value)
    SubElement(root, "segmented").text = "0"
    for b in record.boxes:
        obj = object_to_pascal_voc(np.array([b.x1, b.y1, b.x2, b.y2]), classes[b.class_id])
        # A sliver under half a pixel at the far edge would round past it: keep corners in 1..size.
        for tag in ("xmin", "xmax", "ymin", "ymax"):
            size = record.width if tag[0] == "x" else record.height
            corner = obj.find(f"bndbox/{tag}")
            corner.text = str(min(int(corner.text), size))
        truncated = str(int(_touches_edge(b, record.width, record.height)))
        # The devkit's order: name, pose, truncated, difficult, bndbox.
        for i, (tag, value) in enumerate((("pose", "Unspecified"), ("truncated", truncated), ("difficult", "0")), 1):
            child = Element(tag)
            child.text = value
            obj.insert(i, child)
        root.append(obj)
    return parseString(tostring(root, encoding="unicode")).toprettyxml(indent="  ")


def labelmap_text(classes: list[str]) -> str:
    """``labelmap.txt`` as datumaro (and CVAT) read it: every class, boxes or not, in id order.

    ``name:r,g,b:parts:actions`` per line after a header; ``background`` first, as the
    VOC convention has it (readers skip it for detection). A name holding ``:`` cannot
    be written in this format and is refused by the caller.
    """
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    for i, name in enumerate(classes, start=1):
        r, g, b = _voc_color(i)
        lines.append(f"{name}:{r},{g},{b}::")
    return "\n".join(lines) + "\n"


def _voc_color(index: int) -> tuple[int, int, int]:
    """The VOC palette's color for a label index (the devkit's bit-interleaving)."""
    r = g = b = 0
    c = index
    for shift in range(7, -1, -1):
        r |= (c & 1) << shift
        g |= ((c >> 1) & 1) << shift
        b |= ((c >> 2) & 1) << shift
        c >>= 3
    return r, g, b


def coco_categories(classes: list[str]) -> list[dict]:
    """COCO categories, ids from 1 (supervision's)."""
    from supervision.dataset.formats.coco import classes_to_coco_categories

    return classes_to_coco_categories(list(classes))


def id_block(records: Iterable[FrameRecord]) -> int:
    """The annotation id block: the smallest power of ten, at least 1000, above every frame's box count."""
    most = max((len(r.boxes) for r in records), default=0)
    block = MIN_ID_BLOCK
    while block <= most:
        block *= 10
    return block


def coco_files(
    records: list[FrameRecord], classes: list[str], file_name: Callable[[FrameRecord], str]
) -> dict[str, dict]:
    """The COCO dict of each split.

    Args:
        records: Every kept frame in journal order, each with its split.
        classes: The dataset's class names.
        file_name: A frame's ``file_name`` as the layout wants it.

    Image ids are positions in ``records`` (from 1), the same whichever split a frame
    is in; annotation ids are ``image_id * block + box index + 1``.
    """
    from autolabel import __version__

    block = id_block(records)
    categories = coco_categories(classes)
    files = {
        split: {
            "info": {"description": COCO_DESCRIPTION, "version": __version__, "contributor": "autolabel"},
            "licenses": [],
            "images": [],
            "annotations": [],
            "categories": categories,
        }
        for split in SPLITS
    }
    for image_id, r in enumerate(records, start=1):
        if r.split not in files:
            continue
        out = files[r.split]
        out["images"].append({"id": image_id, "file_name": file_name(r), "width": r.width, "height": r.height})
        for j, b in enumerate(r.boxes):
            x, y, w, h = float(b.x1), float(b.y1), float(b.x2 - b.x1), float(b.y2 - b.y1)
            score = 1.0 if r.reviewed or b.confidence is None else float(b.confidence)
            out["annotations"].append(
                {
                    "id": image_id * block + j + 1,
                    "image_id": image_id,
                    "category_id": b.class_id + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "segmentation": [],
                    "iscrowd": 0,
                    "score": score,
                    "reviewed": r.reviewed,
                }
            )
    return files


def labelmap_problem(classes: list[str]) -> str | None:
    """Why ``labelmap.txt`` cannot list these classes (its fields are split on ``:``), or None."""
    for name in classes:
        if ":" in name or name.lstrip().startswith("#") or name != name.strip():
            return f"class {name!r} cannot be written in labelmap.txt (no ':', no leading '#' or spaces)"
    return None


def cvat_xml(records: list[FrameRecord], classes: list[str], task: str) -> str:
    """CVAT for images 1.1 ``annotations.xml`` for a task made of these frames (flat image names).

    ``records`` in the task's frame order (CVAT sorts uploaded files by name): each
    ``<image>``'s ``id`` is its frame number, which CVAT falls back on when a name does
    not match. No ``subset`` attribute: CVAT writes it only for projects, and readers drop
    such images from a task file.
    """
    root = Element("annotations")
    SubElement(root, "version").text = "1.1"
    meta = SubElement(SubElement(root, "meta"), "task")
    SubElement(meta, "name").text = task
    SubElement(meta, "size").text = str(len(records))
    SubElement(meta, "mode").text = "annotation"
    labels = SubElement(meta, "labels")
    for name in classes:
        label = SubElement(labels, "label")
        SubElement(label, "name").text = name
        SubElement(label, "type").text = "rectangle"
        SubElement(label, "attributes")
    for i, r in enumerate(records):
        image = SubElement(
            root,
            "image",
            {"id": str(i), "name": f"{r.name}{IMAGE_SUFFIX}", "width": str(r.width), "height": str(r.height)},
        )
        for b in r.boxes:
            SubElement(
                image,
                "box",
                {
                    "label": classes[b.class_id],
                    "source": "auto" if b.confidence is not None and not r.reviewed else "manual",
                    "occluded": "0",
                    "xtl": f"{b.x1:.2f}",
                    "ytl": f"{b.y1:.2f}",
                    "xbr": f"{b.x2:.2f}",
                    "ybr": f"{b.y2:.2f}",
                    "z_order": "0",
                },
            )
    return parseString(tostring(root, encoding="unicode")).toprettyxml(indent="  ", encoding="utf-8").decode("utf-8")
