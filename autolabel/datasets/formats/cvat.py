"""CVAT for images 1.1: ``annotations.xml`` (in ``annotations.zip``) for a task made of the frames' images.

Exported as ``images/`` (the frames, flat) and ``annotations.zip``: in CVAT, create a task
from the images, then upload the zip as "CVAT 1.1". Read back from the XML, the zip, or a
folder holding either (a task CVAT exported).

In a segmentation dataset each box's mask goes with it as shapes of the same ``group_id``: its
rings as ``<polygon>`` s, or, where rings nest (a hole), one ``<mask>`` (CVAT's run lengths over
the mask's bounding pixels, row by row, background first). Read back, a group's polygons and masks
are its box's mask; a polygon or mask in no box's group becomes a box of its own (its bounds).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path
from xml.dom.minidom import parseString
from xml.etree.ElementTree import Element, SubElement, tostring

import numpy as np

from autolabel.datasets.formats.base import (
    Annotations,
    ExportFolder,
    Format,
    ReadContext,
    image_name,
    marker_id,
    parse_xml,
    read_source,
    text_number,
)
from autolabel.datasets.records import Box, FrameRecord
from autolabel.errors import InputError

CVAT_ZIP = "annotations.zip"
CVAT_XML = "annotations.xml"
# Zip entries get a fixed time stamp: the same dataset exports to the same bytes.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
MAX_XML_BYTES = 1 << 30
EDGE_PX = 0.5


def _mask_shapes(image: Element, b: Box, r: FrameRecord, attrs: dict[str, str]) -> None:
    """A box's mask as CVAT shapes in its group: polygons, or one ``<mask>`` where rings nest."""
    from autolabel.masks import geometry

    if not b.mask:
        return
    if geometry.nested(b.mask):
        bitmap = geometry.rings_to_mask(b.mask, r.width, r.height)
        ys, xs = bitmap.nonzero()
        left, top, right, bottom = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        flat = bitmap[top : bottom + 1, left : right + 1].reshape(-1)
        runs = geometry.rle_encode(flat[None, :])["counts"]  # one row: row-major order
        rle = {"rle": ", ".join(map(str, runs)), "left": str(left), "top": str(top)}
        size = {"width": str(right - left + 1), "height": str(bottom - top + 1)}
        SubElement(image, "mask", attrs | rle | size | {"z_order": "0"})
        return
    for ring in b.mask:
        points = ";".join(f"{x:.2f},{y:.2f}" for x, y in zip(*[iter(geometry.solid_ring(ring))] * 2, strict=True))
        SubElement(image, "polygon", attrs | {"points": points, "z_order": "0"})


def cvat_xml(records: list[FrameRecord], classes: list[str], task: str, masks: bool = False) -> str:
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
            root, "image", {"id": str(i), "name": image_name(r), "width": str(r.width), "height": str(r.height)}
        )
        for j, b in enumerate(r.boxes):
            attrs = {
                "label": classes[b.class_id],
                "source": "auto" if b.confidence is not None and not r.reviewed else "manual",
                "occluded": "0",
            }
            if masks:
                attrs["group_id"] = str(j + 1)
            corners = {"xtl": f"{b.x1:.2f}", "ytl": f"{b.y1:.2f}", "xbr": f"{b.x2:.2f}", "ybr": f"{b.y2:.2f}"}
            SubElement(image, "box", attrs | corners | {"z_order": "0"})
            if masks:
                _mask_shapes(image, b, r, attrs)
    return parseString(tostring(root, encoding="unicode")).toprettyxml(indent="  ", encoding="utf-8").decode("utf-8")


def cvat_zip(xml: str) -> bytes:
    """``annotations.zip`` holding ``annotations.xml`` (fixed time stamp: the same input, the same bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        entry = zipfile.ZipInfo(CVAT_XML, ZIP_TIME)
        entry.compress_type = zipfile.ZIP_DEFLATED
        entry.create_system = 3  # Unix: unzip applies the mode below (less the user's umask)
        entry.external_attr = 0o644 << 16  # readable by all, as any file; 0 unzips as 0600 or 0000
        zf.writestr(entry, xml)
    return buf.getvalue()


def _xml_bytes(path: Path) -> tuple[bytes, str]:
    """The XML of a CVAT export: the file itself, the entry of a zip, or either inside a folder."""
    if path.is_dir():
        for candidate in (path / CVAT_XML, path / CVAT_ZIP):
            if candidate.is_file():
                return _xml_bytes(candidate)
        raise InputError(f"{path}: no {CVAT_XML} or {CVAT_ZIP} there")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if Path(n).name == CVAT_XML]
                if not names:
                    raise InputError(f"{path}: no {CVAT_XML} in the zip (a CVAT for images 1.1 export?)")
                info = zf.getinfo(names[0])
                if info.file_size > MAX_XML_BYTES:
                    raise InputError(f"{path}: {names[0]} is {info.file_size} bytes unpacked; too large")
                return zf.read(names[0]), f"{path}:{names[0]}"
        with path.open("rb") as fh:
            zipped = fh.read(4) == b"PK\x03\x04"
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        # RuntimeError: an encrypted entry; NotImplementedError: a compression zipfile cannot undo.
        raise InputError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    if zipped or path.suffix.lower() == ".zip":
        raise InputError(f"{path}: not a valid zip file (truncated or damaged?); download the export again")
    return read_source(path, f"a {CVAT_XML}", MAX_XML_BYTES), str(path)


def _coordinate(box, key: str, where: str, default: str | None = None) -> float:
    return text_number(box.get(key, default), where, key)


def parse_cvat(path: Path, ctx: ReadContext) -> Annotations:
    """The frames (by image name) and rectangles of a CVAT for images 1.1 file."""
    data, where = _xml_bytes(path)
    root = parse_xml(data, where, "a CVAT annotations file")
    if root.tag != "annotations":
        raise InputError(f"{where}: not a CVAT for images 1.1 file (root element <{root.tag}>)")
    if root.find("track") is not None:
        raise InputError(f"{where}: holds tracks (CVAT for video); export the task as CVAT for images 1.1")
    out = Annotations()
    dataset = root.find("meta/task/autolabel_dataset")
    if dataset is not None and dataset.text:
        out.dataset_id = dataset.text.strip()
    out.dataset_id = out.dataset_id or marker_id(path)
    ctx.check_id(out.dataset_id, where)
    for k, image in enumerate(root.findall("image")):
        at = f"{where}: image {image.get('name') or k!r}"
        name = Path((image.get("name") or "").replace("\\", "/")).stem
        if name not in ctx.sizes:
            raise InputError(f"{at}: no frame {name!r} in the dataset (a task of another dataset?)")
        if name in out.frames:
            raise InputError(f"{at}: listed twice")
        width, height = ctx.sizes[name]
        boxes: list[tuple[Box, str]] = []  # each box with its group ("0": none)
        outlines: list[tuple[str, str, list[list[float]]]] = []  # (group, label, rings) of polygons and masks
        for j, shape in enumerate(image):
            here = f"{at}, {shape.tag} {j + 1}"
            if shape.tag == "tag":
                continue
            if shape.tag not in ("box", "polygon", "mask"):
                raise InputError(
                    f"{here}: {shape.tag} shapes cannot be imported (only boxes, polygons and masks), and importing "
                    "the rest would drop them; draw them as boxes (or delete them) in CVAT and export again"
                )
            label = shape.get("label")
            if label not in ctx.classes:
                raise InputError(f"{here}: class {label!r} is not one of the dataset's classes {ctx.classes}")
            group = shape.get("group_id") or "0"
            if shape.tag != "box":
                outlines.append((group, label, _outline(shape, width, height, here)))
                continue
            if _coordinate(shape, "rotation", here, default="0"):
                raise InputError(f"{here}: rotated boxes are not supported")
            x1, y1, x2, y2 = (_coordinate(shape, key, here) for key in ("xtl", "ytl", "xbr", "ybr"))
            if x1 < -EDGE_PX or y1 < -EDGE_PX or x2 > width + EDGE_PX or y2 > height + EDGE_PX:
                raise InputError(f"{here}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the image")
            if x2 <= x1 or y2 <= y1:
                raise InputError(f"{here}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has no area")
            clipped = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
            boxes.append((Box(ctx.classes.index(label), *clipped), group))
        out.frames[name], out.where[name] = _assemble(boxes, outlines, ctx.classes, width, height), at
    return out


def _outline(shape, width: int, height: int, where: str) -> list[list[float]]:
    """A CVAT polygon's or mask's rings, checked (pixels)."""
    from autolabel.masks import geometry

    if shape.tag == "polygon":
        ring = []
        for pair in (shape.get("points") or "").split(";"):
            xy = pair.split(",")
            if len(xy) != 2:
                raise InputError(f"{where}: points must be 'x,y;x,y;...', got {(shape.get('points') or '')[:40]!r}")
            ring += [text_number(v, where, "a point") for v in xy]
        if len(ring) < 6:
            raise InputError(f"{where}: a polygon needs at least 3 points")
        xs, ys = ring[0::2], ring[1::2]
        if min(xs) < -EDGE_PX or min(ys) < -EDGE_PX or max(xs) > width + EDGE_PX or max(ys) > height + EDGE_PX:
            raise InputError(f"{where}: polygon lies outside the image")
        return [ring]
    left, top, w, h = (int(_coordinate(shape, k, where)) for k in ("left", "top", "width", "height"))
    if left < 0 or top < 0 or w < 1 or h < 1 or left + w > width or top + h > height:
        raise InputError(f"{where}: mask [{left}, {top}, {w}, {h}] lies outside the image")
    try:
        runs = [int(v) for v in (shape.get("rle") or "").replace(" ", "").split(",") if v]
        region = geometry.rle_decode(runs, 1, w * h).reshape(h, w)
    except ValueError as exc:
        raise InputError(f"{where}: not a valid mask rle ({exc})") from exc
    bitmap = np.zeros((height, width), np.uint8)
    bitmap[top : top + h, left : left + w] = region
    return geometry.mask_to_rings(bitmap, 0)


def _assemble(
    boxes: list[tuple[Box, str]], outlines: list[tuple[str, str, list[list[float]]]], classes: list[str], w: int, h: int
) -> list[Box]:
    """Each box with the polygons and masks of its group as its mask; shapes in no box's group become boxes."""
    grouped = {group for _, group in boxes if group != "0"}
    out = []
    for box, group in boxes:
        if group != "0":
            box.mask = [ring for g, _, rings in outlines if g == group for ring in rings] or None
        out.append(box)
    for group, label, rings in outlines:
        if group in grouped or not rings:
            continue
        xs = [x for ring in rings for x in ring[0::2]]
        ys = [y for ring in rings for y in ring[1::2]]
        x1, y1, x2, y2 = max(0.0, min(xs)), max(0.0, min(ys)), min(float(w), max(xs)), min(float(h), max(ys))
        if x2 > x1 and y2 > y1:
            out.append(Box(classes.index(label), x1, y1, x2, y2, mask=rings))
    return out


class Cvat(Format):
    name = "cvat"
    help = "CVAT for images 1.1 (an export: images/ and annotations.zip for a CVAT task)"
    dataset_format = False

    def export(self, out: ExportFolder) -> str:
        for r in out.records:
            out.image(r, f"images/{image_name(r)}")
        xml = cvat_xml(sorted(out.records, key=lambda r: r.name), out.ctx.classes, out.ctx.title, out.ctx.masks)
        out.write(CVAT_ZIP, cvat_zip(xml))
        return (
            f"in CVAT, create a task from the images in {out.output / 'images'}, then Actions > Upload "
            f"annotations > format 'CVAT 1.1' > {out.output / CVAT_ZIP}"
        )

    def read(self, path: Path, ctx: ReadContext) -> Annotations:
        return parse_cvat(path, ctx)

    def detect(self, path: Path) -> bool:
        if path.is_dir():
            return (path / CVAT_XML).is_file() or (path / CVAT_ZIP).is_file()
        if path.suffix.lower() == ".zip":
            return zipfile.is_zipfile(path)
        if path.suffix.lower() == ".xml":
            with path.open("rb") as fh:
                return b"<annotations" in fh.read(4096)
        return False

    def tolerance(self, width: int, height: int) -> float:
        return 0.006  # corners with 2 decimals
