"""COCO: ``coco_train.json`` and ``coco_val.json`` in a dataset; ``annotations/instances_*.json`` as an export.

``info`` and ``licenses`` are present (pycocotools' ``loadRes`` needs ``info``); image ids
are positions in the journal and annotation ids ``image_id * block + box index + 1``, so
that an import that changes one frame's boxes renumbers no other frame's; every box has
a ``score`` (1.0 on reviewed frames, which also carry ``reviewed: true``), so the file can
be read as results too. Category ids start at 1 (supervision's).

In a segmentation dataset (``run --masks``) every annotation has a ``segmentation``: its
mask's rings as polygons (a part of one or two pixels as the rectangle around them), or, where
rings nest (a hole, an island in a hole, which polygons cannot hold), COCO's uncompressed RLE
(``{"size": [h, w], "counts": [...]}``, as supervision writes masks with holes; ``iscrowd`` stays
0, so COCOeval and Ultralytics' converter keep the object); a box without a mask has its 4
corners. ``area`` is then the mask's pixel count.

Reading takes a COCO file as CVAT, FiftyOne and our export write it (or a folder holding
``annotations/instances_*.json`` or ``coco_*.json``): frames by image file name, with each
annotation's polygons or RLE (compressed or not) as its box's mask.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from autolabel.datasets.formats.base import (
    Annotations,
    Context,
    ExportFolder,
    Format,
    FrameStream,
    ReadContext,
    boxes_only,
    by_split,
    image_name,
    load_json,
    number,
    outline,
    show,
)
from autolabel.datasets.layout import SPLITS
from autolabel.datasets.records import Box, FrameRecord
from autolabel.errors import InputError

# COCO annotation ids are image_id * block + box index + 1; the block grows past 999 boxes a frame.
MIN_ID_BLOCK = 1000
COCO_DESCRIPTION = "Labeled by autolabel (Grounding DINO or another base model), reviewed where 'reviewed' is true"
EDGE_PX = 0.5


def coco_categories(classes: list[str]) -> list[dict]:
    """COCO categories, ids from 1 (supervision's)."""
    from supervision.dataset.formats.coco import classes_to_coco_categories

    return classes_to_coco_categories(list(classes))


def id_block(records: list[FrameRecord]) -> int:
    """The annotation id block: the smallest power of ten, at least 1000, above every frame's box count."""
    most = max((len(r.boxes) for r in records), default=0)
    block = MIN_ID_BLOCK
    while block <= most:
        block *= 10
    return block


def segmentation(box: Box, width: int, height: int) -> tuple[list | dict, float]:
    """A box's COCO ``segmentation`` (polygons, or RLE where rings nest) and its area in pixels."""
    from autolabel.masks import geometry

    rings = outline(box)
    if not box.mask:
        return [rings[0]], (box.x2 - box.x1) * (box.y2 - box.y1)
    bitmap = geometry.rings_to_mask(rings, width, height)
    pixels = float(bitmap.sum())
    if geometry.nested(rings):
        return geometry.rle_encode(bitmap), pixels
    return [geometry.solid_ring(r) for r in rings], pixels


def _info(dataset_id: str | None) -> dict:
    from autolabel import __version__

    return {"description": COCO_DESCRIPTION, "version": __version__, "contributor": "autolabel"} | (
        {"autolabel_dataset": dataset_id} if dataset_id else {}
    )


def _image(image_id: int, r: FrameRecord, file_name: Callable[[FrameRecord], str]) -> dict:
    return {"id": image_id, "file_name": file_name(r), "width": r.width, "height": r.height}


def _annotations(image_id: int, r: FrameRecord, block: int, masks: bool) -> Iterator[dict]:
    """A frame's annotations, ids ``image_id * block + box index + 1``."""
    for j, b in enumerate(r.boxes):
        x, y, w, h = float(b.x1), float(b.y1), float(b.x2 - b.x1), float(b.y2 - b.y1)
        score = 1.0 if r.reviewed or b.confidence is None else float(b.confidence)
        seg, area = segmentation(b, r.width, r.height) if masks else ([], w * h)
        annotation = {
            "id": image_id * block + j + 1,
            "image_id": image_id,
            "category_id": b.class_id + 1,
            "bbox": [x, y, w, h],
            "area": area,
            "segmentation": seg,
            "iscrowd": 0,
            "score": score,
            "reviewed": r.reviewed,
        }
        if b.track_id is not None:  # --track: the object it belongs to (as CVAT and FiftyOne read it)
            annotation["attributes"] = {"track_id": b.track_id}
        yield annotation


def coco_files(
    records: list[FrameRecord],
    classes: list[str],
    file_name: Callable[[FrameRecord], str],
    dataset_id: str | None = None,
    masks: bool = False,
) -> dict[str, dict]:
    """The COCO dict of each split.

    Args:
        records: Every kept frame in journal order, each with its split.
        classes: The dataset's class names.
        file_name: A frame's ``file_name`` as the layout wants it.
        dataset_id: The dataset's id, in ``info.autolabel_dataset`` (an import checks it).
        masks: Write each box's ``segmentation`` (a segmentation dataset).

    Image ids are positions in ``records`` (from 1), the same whichever split a frame
    is in; annotation ids are ``image_id * block + box index + 1``.
    """
    block = id_block(records)
    categories = coco_categories(classes)
    files = {
        split: {"info": _info(dataset_id), "licenses": [], "images": [], "annotations": [], "categories": categories}
        for split in SPLITS
    }
    for image_id, r in enumerate(records, start=1):
        if r.split not in files:
            continue
        files[r.split]["images"].append(_image(image_id, r, file_name))
        files[r.split]["annotations"].extend(_annotations(image_id, r, block, masks))
    return files


def write_coco(
    fh: BinaryIO,
    records: Iterable[FrameRecord],
    split: str,
    classes: list[str],
    file_name: Callable[[FrameRecord], str],
    dataset_id: str | None = None,
    masks: bool = False,
) -> None:
    """Streams one split's COCO file, byte for byte ``dumps(coco_files(...)[split])``, one frame in memory at a time.

    The id block and the images come from the frames without their masks (:func:`boxes_only`); the
    annotations from one pass over ``records``.
    """
    boxes = boxes_only(records)
    if not isinstance(records, FrameStream):
        records = boxes  # a list, or an iterator read once into it
    block = id_block(boxes)
    head = json.dumps({"info": _info(dataset_id), "licenses": []}, ensure_ascii=False)
    fh.write(head[:-1].encode("utf-8") + b', "images": [')
    sep = b""
    for image_id, r in enumerate(boxes, start=1):
        if r.split == split:
            fh.write(sep + json.dumps(_image(image_id, r, file_name), ensure_ascii=False).encode("utf-8"))
            sep = b", "
    fh.write(b'], "annotations": [')
    sep = b""
    for image_id, r in enumerate(records, start=1):
        if r.split == split:
            for annotation in _annotations(image_id, r, block, masks):
                fh.write(sep + json.dumps(annotation, ensure_ascii=False).encode("utf-8"))
                sep = b", "
    fh.write(b'], "categories": ' + dumps(coco_categories(classes)) + b"}")


def dumps(body: dict) -> bytes:
    """A COCO file's bytes (compact, UTF-8)."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected an object, got {show(value)}")
    return value


def _list(body: dict, key: str, where: str) -> list:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise InputError(f"{where}: '{key}' must be a list, got {show(value)}")
    return value


def _int_id(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{where}: expected an id, got {show(value)}")
    return value


def _new_id(value, seen: dict, what: str, where: str) -> int | str:
    """An id of a category or an image, which no earlier one of the file has (``seen``: id -> its index)."""
    value = _int_id(value, where)
    if value in seen:
        raise InputError(f"{where}: id {show(value)} is also the id of {what}[{seen[value]}]")
    return value


def parse_coco(path: Path, ctx: ReadContext, out: Annotations) -> None:
    """Adds one COCO file's frames (by image file name) and boxes to ``out``."""
    body = _object(load_json(path, "a COCO file"), str(path))
    info = body.get("info")
    if isinstance(info, dict) and isinstance(info.get("autolabel_dataset"), str):
        out.dataset_id = info["autolabel_dataset"]
        ctx.check_id(out.dataset_id, path)
    categories: dict = {}  # id -> the dataset's class id, or the name that is none of its classes
    seen: dict = {}
    for k, cat in enumerate(_list(body, "categories", str(path))):
        where = f"{path}: categories[{k}]"
        cat = _object(cat, where)
        name = cat.get("name")
        cid = _new_id(cat.get("id"), seen, "categories", where)
        # A category no box uses may be unknown (CVAT lists every label of its project).
        categories[cid], seen[cid] = ctx.classes.index(name) if name in ctx.classes else show(name), k
    images: dict = {}
    seen = {}
    for k, image in enumerate(_list(body, "images", str(path))):
        where = f"{path}: images[{k}]"
        image = _object(image, where)
        file_name = image.get("file_name")
        if not isinstance(file_name, str):
            raise InputError(f"{where}: file_name: expected a file name, got {show(file_name)}")
        name = Path(file_name.replace("\\", "/")).stem
        if name not in ctx.sizes:
            raise InputError(f"{where}: no frame {name!r} in the dataset (an export of another dataset?)")
        if name in out.frames:
            raise InputError(f"{where}: frame {name!r} is listed twice (also {out.where[name]})")
        iid = _new_id(image.get("id"), seen, "images", where)
        images[iid], seen[iid] = name, k
        out.frames[name], out.where[name] = [], where
    for k, ann in enumerate(_list(body, "annotations", str(path))):
        where = f"{path}: annotations[{k}]"
        ann = _object(ann, where)
        name = images.get(_int_id(ann.get("image_id"), f"{where}.image_id"))
        if name is None:
            raise InputError(f"{where}: image_id {show(ann.get('image_id'))} is not one of the file's images")
        cls = categories.get(_int_id(ann.get("category_id"), f"{where}.category_id"))
        if cls is None:
            raise InputError(f"{where}: category_id {show(ann.get('category_id'))} is not one of its categories")
        if isinstance(cls, str):
            raise InputError(f"{where}: class {cls} is not one of the dataset's classes {ctx.classes}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise InputError(f"{where}: bbox: expected [x, y, width, height], got {show(bbox)}")
        x, y, w, h = (number(v, f"{where}.bbox") for v in bbox)
        width, height = ctx.sizes[name]
        if w <= 0 or h <= 0:
            raise InputError(f"{where}: box of width {w:g} and height {h:g}: both must be above 0")
        if x < -EDGE_PX or y < -EDGE_PX or x + w > width + EDGE_PX or y + h > height + EDGE_PX:
            raise InputError(f"{where}: box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the {width}x{height} image")
        box = Box(cls, max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h))
        box.mask = _mask(ann.get("segmentation"), width, height, f"{where}.segmentation")
        out.frames[name].append(box)


def _mask(seg, width: int, height: int, where: str) -> list[list[float]] | None:
    """An annotation's segmentation as mask rings: polygons as they are, RLE traced (None: it has none)."""
    from autolabel.masks import geometry

    if seg is None or seg == []:
        return None
    if isinstance(seg, list):
        rings = []
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise InputError(f"{where}[{k}]: expected a polygon [x0, y0, x1, y1, x2, y2, ...], got {show(poly)}")
            rings.append([number(v, f"{where}[{k}]") for v in poly])
        return rings
    if not isinstance(seg, dict) or not isinstance(seg.get("size"), list) or "counts" not in seg:
        raise InputError(f"{where}: expected polygons or an RLE {{size, counts}}, got {show(seg)}")
    if seg["size"] != [height, width]:
        raise InputError(f"{where}: RLE of size {show(seg['size'])}, but the image is {height} x {width}")
    counts = seg["counts"]
    try:
        if isinstance(counts, str):
            bitmap = geometry.rle_string_decode(counts, height, width)
        elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            bitmap = geometry.rle_decode(counts, height, width)
        else:
            raise ValueError(f"counts must be a list of run lengths or a string, got {show(counts)}")
    except (ValueError, UnicodeEncodeError) as exc:
        raise InputError(f"{where}: not a valid RLE ({exc})") from exc
    return geometry.mask_to_rings(bitmap, 0)


def _dataset_image(r: FrameRecord) -> str:
    return r.image


def _writers(records: Iterable[FrameRecord], ctx: Context, file_name: Callable[[FrameRecord], str]) -> dict:
    """Each split's COCO file as a streaming writer (:func:`write_coco`), by split."""
    return {
        split: functools.partial(
            write_coco,
            records=records,
            split=split,
            classes=ctx.classes,
            file_name=file_name,
            dataset_id=ctx.dataset_id,
            masks=ctx.masks,
        )
        for split in SPLITS
    }


class Coco(Format):
    name = "coco"
    help = "COCO (coco_train.json, coco_val.json; an export: annotations/instances_*.json with images/)"

    def dataset_writers(self, records: Iterable[FrameRecord], ctx: Context) -> dict:
        return {f"coco_{split}.json": write for split, write in _writers(records, ctx, _dataset_image).items()}

    def export(self, out: ExportFolder) -> str:
        for r in boxes_only(out.records):
            out.image(r, f"images/{r.split}/{image_name(r)}")
        (out.root / "annotations").mkdir(exist_ok=True)
        for split, write in _writers(out.records, out.ctx, image_name).items():  # streamed, a frame at a time
            out.write_with(f"annotations/instances_{split}.json", write)
        return f"COCO(annotations/instances_train.json), images in images/train/ (and val) under {out.output}"

    def read(self, path: Path, ctx: ReadContext) -> Annotations:
        if path.is_dir():
            files = sorted((path / "annotations").glob("instances_*.json")) or sorted(path.glob("coco_*.json"))
            if not files:
                raise InputError(f"{path}: no COCO files (annotations/instances_*.json or coco_*.json) there")
        else:
            files = [path]
        out = Annotations()
        for file in files:
            parse_coco(file, ctx, out)
        return out

    def detect(self, path: Path) -> bool:
        if path.is_dir():
            return any((path / "annotations").glob("instances_*.json")) or any(path.glob("coco_*.json"))
        if path.suffix.lower() != ".json":
            return False
        with path.open("rb") as fh:
            head = fh.read(4096)
        return b'"images"' in head or b'"info"' in head or b'"categories"' in head

    def tolerance(self, width: int, height: int) -> float:
        return 1e-6  # floats as they are


__all__ = ["Coco", "by_split", "coco_files", "id_block"]
