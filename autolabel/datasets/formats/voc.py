"""Pascal VOC: ``annotations/<name>.xml`` per frame and ``labelmap.txt``; the devkit layout as an export.

Corners are the devkit's 1-based inclusive pixels (supervision's; detectron2 and
supervision subtract 1 when reading, FiftyOne's and datumaro's VOC readers do not and so
read boxes 1-1.5 px off); every object has ``<pose>``, ``<truncated>`` (the box touches
the image border) and ``<difficult>``; ``<database>`` names us. ``labelmap.txt`` lists
every class in id order as datumaro (and CVAT) read it.

In a segmentation dataset (``run --masks``) each frame also gets the devkit's two PNGs, in the
VOC palette (``labelmap.txt``'s colours): ``SegmentationClass/<name>.png`` (pixel = class index,
``background`` 0) and ``SegmentationObject/<name>.png`` (pixel = the object's place in the XML,
1, 2, ...), each object drawn from its mask (its box where it has none) in XML order, a later
object over an earlier one where they overlap; the XML says ``<segmented>1</segmented>``. An
import reads each object's pixels in ``SegmentationObject`` back as its mask.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.dom.minidom import parseString
from xml.etree.ElementTree import Element, SubElement, tostring

import numpy as np

from autolabel.datasets.formats.base import (
    Annotations,
    Context,
    ExportFolder,
    Format,
    ReadContext,
    image_name,
    marker_id,
    parse_xml,
    read_source,
    text_number,
)
from autolabel.datasets.layout import ANNOTATIONS, LABELMAP, SPLITS
from autolabel.datasets.records import Box, FrameRecord
from autolabel.errors import InputError

VOC_DATABASE = "autolabel"
# Pixels from the border within which a box counts as cut by the image edge (VOC <truncated>).
EDGE_PX = 0.5
# An annotation file larger than this is not one frame's.
MAX_XML_BYTES = 16 << 20


def _touches_edge(box: Box, width: int, height: int) -> bool:
    return box.x1 <= EDGE_PX or box.y1 <= EDGE_PX or box.x2 >= width - EDGE_PX or box.y2 >= height - EDGE_PX


def voc_span(lo: float, hi: float, side: int) -> tuple[int, int]:
    """The devkit's 1-based inclusive pixel corners of ``[lo, hi]`` on a side of ``side`` pixels.

    Each corner rounds as supervision rounds it. A box under a pixel whose rounded corners
    cross becomes the pixel around its center (supervision's would reach the pixel after it,
    up to 1.5 px off); corners stay in ``1..side``.
    """
    first, last = round(lo + 1), round(hi)
    if last < first:
        first = last = min(max(math.floor((lo + hi) / 2) + 1, 1), side)
    return min(first, side), min(last, side)


SEGMENTATION_CLASS = "SegmentationClass"
SEGMENTATION_OBJECT = "SegmentationObject"
# The devkit's index for "void" (object borders, unlabeled): never an object or a class.
VOID = 255


def palette() -> list[int]:
    """The VOC palette, 256 RGB triples flat (index 255 is the devkit's void colour)."""
    return [c for i in range(256) for c in voc_color(i)]


def segmentation_pngs(record: FrameRecord, classes: list[str]) -> tuple[bytes, bytes]:
    """A frame's ``SegmentationClass`` and ``SegmentationObject`` PNGs (paletted, the VOC palette)."""
    from autolabel.masks import geometry

    by_class = np.zeros((record.height, record.width), np.uint8)
    by_object = np.zeros_like(by_class)
    for j, b in enumerate(record.boxes[: VOID - 1]):
        if b.mask:
            pixels = geometry.rings_to_mask(b.mask, record.width, record.height).astype(bool)
        else:
            pixels = geometry.box_mask((b.x1, b.y1, b.x2, b.y2), record.width, record.height).astype(bool)
        by_class[pixels] = b.class_id + 1
        by_object[pixels] = j + 1
    return _png(by_class), _png(by_object)


def _png(indices: np.ndarray) -> bytes:
    import io

    from PIL import Image

    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette())
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def read_objects(path: Path, size: tuple[int, int], count: int) -> list[list[list[float]] | None]:
    """Each object's mask rings from a ``SegmentationObject`` PNG (None where the object has no pixel)."""
    from PIL import Image, UnidentifiedImageError

    from autolabel.masks import geometry

    try:
        with Image.open(path) as image:
            if image.mode != "P" or image.size != size:
                got = f"{image.mode} {image.size[0]}x{image.size[1]}"
                raise InputError(f"{path}: expected a paletted PNG of {size[0]}x{size[1]}, got {got}")
            indices = np.asarray(image)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: not a readable PNG ({exc})") from exc
    out: list[list[list[float]] | None] = []
    for k in range(1, count + 1):
        rings = geometry.mask_to_rings((indices == k).astype(np.uint8), 0)
        out.append(rings or None)
    return out


def voc_xml(record: FrameRecord, classes: list[str], folder: str = "images", segmented: bool = False) -> str:
    """A frame's Pascal VOC XML (names XML-escaped by ElementTree)."""
    from supervision.dataset.formats.pascal_voc import object_to_pascal_voc

    root = Element("annotation")
    SubElement(root, "folder").text = folder
    SubElement(root, "filename").text = image_name(record)
    source = SubElement(root, "source")
    SubElement(source, "database").text = VOC_DATABASE
    size = SubElement(root, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        SubElement(size, tag).text = str(value)
    SubElement(root, "segmented").text = "1" if segmented else "0"
    for b in record.boxes:
        obj = object_to_pascal_voc(np.array([b.x1, b.y1, b.x2, b.y2]), classes[b.class_id])
        # A box under a pixel (at the far edge too) is the pixel around its center, inside the image.
        for axis, lo, hi, side in (("x", b.x1, b.x2, record.width), ("y", b.y1, b.y2, record.height)):
            first, last = voc_span(lo, hi, side)
            obj.find(f"bndbox/{axis}min").text = str(first)
            obj.find(f"bndbox/{axis}max").text = str(last)
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
    be written in this format (see :func:`labelmap_problem`).
    """
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    for i, name in enumerate(classes, start=1):
        r, g, b = voc_color(i)
        lines.append(f"{name}:{r},{g},{b}::")
    return "\n".join(lines) + "\n"


def voc_color(index: int) -> tuple[int, int, int]:
    """The VOC palette's color for a label index (the devkit's bit-interleaving)."""
    r = g = b = 0
    c = index
    for shift in range(7, -1, -1):
        r |= (c & 1) << shift
        g |= ((c >> 1) & 1) << shift
        b |= ((c >> 2) & 1) << shift
        c >>= 3
    return r, g, b


def labelmap_problem(classes: list[str]) -> str | None:
    """Why ``labelmap.txt`` cannot list these classes (its fields are split on ``:``), or None."""
    for name in classes:
        if ":" in name or name.lstrip().startswith("#") or name != name.strip():
            return f"class {name!r} cannot be written in labelmap.txt (no ':', no leading '#' or spaces)"
    return None


def annotation_path(name: str) -> str:
    """A frame's VOC file, relative to the dataset."""
    return f"{ANNOTATIONS}/{name}.xml"


def _number(obj, tag: str, where: str) -> float:
    node = obj.find(tag)
    return text_number((node.text or "").strip() if node is not None else None, where, f"<{tag}>", longest=20)


def parse_voc(path: Path, ctx: ReadContext) -> tuple[str, list[Box]]:
    """One VOC file's frame name (its ``<filename>``'s stem, else the file's) and boxes in pixels.

    Masks come from ``SegmentationObject/<name>.png`` beside the annotations folder, when there is one.
    """
    root = parse_xml(read_source(path, "one frame's VOC annotation", MAX_XML_BYTES), str(path), "a VOC annotation")
    if root.tag != "annotation":
        raise InputError(f"{path}: not a VOC annotation (root element <{root.tag}>)")
    filename = (root.findtext("filename") or "").strip()
    name = Path(filename).stem if filename else path.stem
    if name not in ctx.sizes:
        raise InputError(f"{path}: no frame {name!r} in the dataset (an annotation of another dataset?)")
    width, height = ctx.sizes[name]
    boxes = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{path}: object {k + 1}"
        label = (obj.findtext("name") or "").strip()
        if not label:
            raise InputError(f"{where}: no <name> (the object's class)")
        if label not in ctx.classes:
            raise InputError(f"{where}: class {label!r} is not one of the dataset's classes {ctx.classes}")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise InputError(f"{where}: no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bndbox, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax  # 1-based inclusive -> pixel edges
        if x1 < -EDGE_PX or y1 < -EDGE_PX or x2 > width + EDGE_PX or y2 > height + EDGE_PX:
            raise InputError(f"{where}: box [{xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}] lies outside the image")
        if x2 <= x1 or y2 <= y1:  # 1-based inclusive: xmax = xmin is one pixel, xmax = xmin - 1 none
            raise InputError(f"{where}: box [{xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}] has no area")
        boxes.append(
            Box(ctx.classes.index(label), max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
        )
    png = path.parent.parent / SEGMENTATION_OBJECT / f"{name}.png"
    if boxes and png.is_file():
        for box, rings in zip(boxes, read_objects(png, (width, height), len(boxes)), strict=True):
            box.mask = rings
    return name, boxes


class Voc(Format):
    name = "voc"
    help = "Pascal VOC (annotations/<frame>.xml, 1-based pixel corners, and labelmap.txt)"
    frame_dirs = (ANNOTATIONS,)
    mask_dirs = (SEGMENTATION_CLASS, SEGMENTATION_OBJECT)
    layered = True

    def frame_files(self, record: FrameRecord, ctx: Context) -> dict[str, bytes]:
        out = {annotation_path(record.name): voc_xml(record, ctx.classes, segmented=ctx.masks).encode("utf-8")}
        if ctx.masks:
            by_class, by_object = segmentation_pngs(record, ctx.classes)
            out[f"{SEGMENTATION_CLASS}/{record.name}.png"] = by_class
            out[f"{SEGMENTATION_OBJECT}/{record.name}.png"] = by_object
        return out

    def dataset_files(self, records: list[FrameRecord], ctx: Context) -> dict[str, bytes]:
        if labelmap_problem(ctx.classes) is not None:
            return {}
        return {LABELMAP: labelmap_text(ctx.classes).encode("utf-8")}

    def dataset_writers(self, records, ctx: Context) -> dict:
        return super().dataset_writers([], ctx)  # the labelmap: the classes alone

    def notes(self, ctx: Context) -> list[str]:
        problem = labelmap_problem(ctx.classes)
        return [f"no labelmap.txt: {problem}"] if problem else []

    def classes_changed(self, root: Path, ctx: Context) -> None:
        from autolabel.fileio import atomic_write_text

        if (root / LABELMAP).is_file() and labelmap_problem(ctx.classes) is None:
            atomic_write_text(root / LABELMAP, labelmap_text(ctx.classes))

    def export(self, out: ExportFolder) -> str:
        """``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/{train,val}.txt``, ``labelmap.txt``."""
        masks = out.ctx.masks
        for r in out.records:
            out.image(r, f"JPEGImages/{image_name(r)}")
            out.write(f"Annotations/{r.name}.xml", voc_xml(r, out.ctx.classes, folder="JPEGImages", segmented=masks))
            if masks:
                by_class, by_object = segmentation_pngs(r, out.ctx.classes)
                out.write(f"{SEGMENTATION_CLASS}/{r.name}.png", by_class)
                out.write(f"{SEGMENTATION_OBJECT}/{r.name}.png", by_object)
        for split in SPLITS:
            names = sorted(r.name for r in out.split(split))
            out.write(f"ImageSets/Main/{split}.txt", "".join(f"{n}\n" for n in names))
            if masks:
                out.write(f"ImageSets/Segmentation/{split}.txt", "".join(f"{n}\n" for n in names))
        problem = labelmap_problem(out.ctx.classes)
        if problem:
            raise InputError(f"{out.dataset}: {problem}, which VOC readers (datumaro, CVAT) need; rename the class")
        out.write(LABELMAP, labelmap_text(out.ctx.classes))
        return f"a Pascal VOC folder: {out.output} (labelmap.txt lists the classes)"

    def read(self, path: Path, ctx: ReadContext) -> Annotations:
        folder = next((path / d for d in ("Annotations", ANNOTATIONS) if (path / d).is_dir()), path)
        files = [folder] if folder.is_file() else sorted(folder.glob("*.xml")) if folder.is_dir() else []
        if not files:
            raise InputError(f"{path}: no VOC annotations (.xml files) there")
        out = Annotations(dataset_id=marker_id(files[0]))
        ctx.check_id(out.dataset_id, path)
        for file in files:
            name, boxes = parse_voc(file, ctx)
            if name in out.frames:
                raise InputError(f"{file}: frame {name!r} is also annotated in {out.where[name]}")
            out.frames[name], out.where[name] = boxes, str(file)
        return out

    def detect(self, path: Path) -> bool:
        folder = next((path / d for d in ("Annotations", ANNOTATIONS) if (path / d).is_dir()), path)
        return folder.is_dir() and any(folder.glob("*.xml"))

    def tolerance(self, width: int, height: int) -> float:
        return 1.0  # whole pixels; a box under a pixel becomes the pixel around its center
