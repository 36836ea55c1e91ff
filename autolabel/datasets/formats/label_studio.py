"""Label Studio: tasks with the model's boxes as predictions, and its JSON export read back.

The export holds one task per frame (image URL, frame name, the boxes as a prediction with
their confidences) and a labeling config naming the classes. Reading takes Label Studio's
JSON export: every task with a finished (not cancelled) annotation is a reviewed frame, its
boxes those of its last finished annotation; the whole file is checked before anything is
used. Boxes are percentages of the image there; they come back in pixels, rounded to 1/100.

In a segmentation dataset each box's mask goes with it as ``polygonlabels`` regions (a labeling
config with a ``PolygonLabels`` control), one per ring, with the ids ``<box id>_r<k>``: read back,
the rings whose ids extend a rectangle's are that box's mask (parts and holes, as the journal
holds them); a polygon a reviewer drew on its own becomes a box of its own (its bounds) with the
polygon as its mask.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from autolabel.datasets.formats.base import Annotations, ExportFolder, Format, ReadContext, load_json
from autolabel.datasets.formats.base import show as _show
from autolabel.datasets.records import Box, FrameRecord
from autolabel.errors import InputError

TASKS_FILE = "label_studio_tasks.json"
CONFIG_FILE = "label_studio_config.xml"
# Label Studio stores percentages: a box drawn to the edge may land a hair outside the image.
EDGE_TOLERANCE_PX = 0.5
# Results that hold no region: skipping them loses no box.
NON_REGION_TYPES = frozenset({"choices", "textarea", "rating", "relation", "taxonomy", "number", "datetime"})


def labeling_config(classes: list[str], masks: bool = False) -> str:
    """A Label Studio labeling config: one rectangle label per class (names XML-escaped), polygons too with masks."""
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in classes)
    polygons = f'  <PolygonLabels name="polygon" toName="image">\n{labels}\n  </PolygonLabels>\n' if masks else ""
    return (
        "<View>\n"
        '  <Image name="image" value="$image"/>\n'
        '  <RectangleLabels name="label" toName="image">\n'
        f"{labels}\n"
        "  </RectangleLabels>\n"
        f"{polygons}"
        "</View>\n"
    )


def _polygons(r: FrameRecord, j: int, b: Box, classes: list[str]) -> list[dict]:
    """A box's mask as polygon regions (percent of the image), one per ring, ids ``<frame>_<j>_r<k>``."""
    from autolabel.masks.geometry import solid_ring

    out = []
    for k, ring in enumerate(b.mask or []):
        ring = solid_ring(ring)
        points = [[100 * x / r.width, 100 * y / r.height] for x, y in zip(ring[0::2], ring[1::2], strict=True)]
        out.append(
            {
                "id": f"{r.name}_{j}_r{k}",
                "type": "polygonlabels",
                "from_name": "polygon",
                "to_name": "image",
                "original_width": r.width,
                "original_height": r.height,
                "image_rotation": 0,
                "value": {"points": points, "closed": True, "polygonlabels": [classes[b.class_id]]},
                "score": b.confidence,
            }
        )
    return out


def default_url_prefix(root: Path) -> str:
    """Image URL prefix for Label Studio's Local Files storage, document root = the dataset's parent."""
    return f"/data/local-files/?d={quote(root.resolve().name)}/"


def label_studio_tasks(
    records: list[FrameRecord],
    classes: list[str],
    prefix: str,
    dataset_id: str | None = None,
    ordered: bool = False,
    masks: bool = False,
) -> list[dict]:
    """One Label Studio task per frame: the image URL, the frame's name and dataset, its boxes as a prediction.

    Tasks are numbered by frame name, or in the order given (``ordered``: a review queue); ``masks``:
    each box's mask as polygons too.
    """
    tasks = []
    for i, r in enumerate(records if ordered else sorted(records, key=lambda r: r.name), start=1):
        result = []
        for j, b in enumerate(r.boxes):
            result.append(
                {
                    "id": f"{r.name}_{j}",
                    "type": "rectanglelabels",
                    "from_name": "label",
                    "to_name": "image",
                    "original_width": r.width,
                    "original_height": r.height,
                    "image_rotation": 0,
                    "value": {
                        "x": 100 * b.x1 / r.width,
                        "y": 100 * b.y1 / r.height,
                        "width": 100 * (b.x2 - b.x1) / r.width,
                        "height": 100 * (b.y2 - b.y1) / r.height,
                        "rotation": 0,
                        "rectanglelabels": [classes[b.class_id]],
                    },
                    "score": b.confidence,
                }
            )
            if masks:
                result += _polygons(r, j, b, classes)
        scores = [b.confidence for b in r.boxes if b.confidence is not None]
        tasks.append(
            {
                "id": i,
                "data": {"image": f"{prefix}{quote(r.image)}", "frame": r.name}
                | ({"dataset": dataset_id} if dataset_id else {}),
                "predictions": [
                    {"model_version": "autolabel", "score": min(scores) if scores else None, "result": result}
                ],
            }
        )
    return tasks


def _number(v: dict, key: str, where: str, at: str, default: float | None = None) -> float:
    value = v.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        got = "nothing" if key not in v else _show(value)
        raise InputError(f"{where}: {at}.{key}: expected a finite number, got {got}")
    return float(value)


def _frame_name(task: dict, where: str) -> str:
    data = task.get("data")
    if not isinstance(data, dict):
        raise InputError(f"{where}: data: expected an object, got {_show(data)}")
    frame = data.get("frame")
    if frame is not None:
        if not isinstance(frame, str):
            raise InputError(f"{where}: data.frame: expected a frame name, got {_show(frame)}")
        return frame
    image = data.get("image")
    if not isinstance(image, str):
        raise InputError(f"{where}: task has neither data.frame nor data.image")
    return Path(image.split("?d=")[-1]).stem


def _box(v, size: tuple[int, int], classes: list[str], where: str, at: str) -> Box:
    """One rectangle of Label Studio (percent of the image) as a box in pixels, checked."""
    if not isinstance(v, dict):
        raise InputError(f"{where}: {at}: expected an object, got {_show(v)}")
    rotation = _number(v, "rotation", where, at, default=0)
    if rotation:
        raise InputError(f"{where}: {at}: rotated boxes are not supported (rotation {rotation:g})")
    names = v.get("rectanglelabels")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{where}: {at}.rectanglelabels: expected a list of class names, got {_show(names)}")
    if len(names) != 1 or names[0] not in classes:
        raise InputError(f"{where}: {at}: label {names!r} is not one of the dataset's classes {classes}")
    x, y, w, h = (_number(v, key, where, at) for key in ("x", "y", "width", "height"))
    if w <= 0 or h <= 0:
        raise InputError(f"{where}: {at}: box of width {w:g}% and height {h:g}%: both must be above 0")
    W, H = size  # noqa: N806 - image width and height
    x1, y1, x2, y2 = x * W / 100, y * H / 100, (x + w) * W / 100, (y + h) * H / 100
    tol = EDGE_TOLERANCE_PX
    if not (x1 >= -tol and y1 >= -tol and x2 <= W + tol and y2 <= H + tol):
        raise InputError(
            f"{where}: {at}: box [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}] px lies outside the {W}x{H} image"
        )
    box = Box(
        classes.index(names[0]),
        round(max(0.0, x1), 2),
        round(max(0.0, y1), 2),
        round(min(float(W), x2), 2),
        round(min(float(H), y2), 2),
        None,
    )
    if box.x2 <= box.x1 or box.y2 <= box.y1:
        raise InputError(f"{where}: {at}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] px has no area inside the image")
    return box


def _boxes(annotation: dict, size: tuple[int, int], classes: list[str], where: str, at: str) -> list[Box]:
    result = annotation.get("result")
    if not isinstance(result, list):
        raise InputError(f"{where}: {at}.result: expected a list of regions, got {_show(result)}")
    boxes, ids, polygons, others = [], [], [], []
    for k, item in enumerate(result):
        here = f"{at}.result[{k}]"
        if not isinstance(item, dict):
            raise InputError(f"{where}: {here}: expected an object, got {_show(item)}")
        kind = item.get("type")
        if not isinstance(kind, str):
            raise InputError(f"{where}: {here}.type: expected a region type, got {_show(kind)}")
        if kind == "rectanglelabels":
            boxes.append(_box(item.get("value"), size, classes, where, f"{here}.value"))
            ids.append(item.get("id") if isinstance(item.get("id"), str) else None)
        elif kind == "polygonlabels":
            label, ring = _polygon(item.get("value"), size, classes, where, f"{here}.value")
            polygons.append((item.get("id") if isinstance(item.get("id"), str) else "", label, ring))
        elif kind not in NON_REGION_TYPES:
            others.append(kind)
    if others:
        raise InputError(
            f"{where}: {at} holds {', '.join(sorted(set(others)))} regions, which autolabel cannot import "
            "(only rectanglelabels boxes and polygonlabels outlines), and importing the rest would drop them; "
            "draw them as labeled rectangles or polygons (or delete them) in Label Studio, export again and re-run "
            "the import"
        )
    return _with_masks(boxes, ids, polygons, size)


def _polygon(v, size: tuple[int, int], classes: list[str], where: str, at: str) -> tuple[int, list[float]]:
    """One polygon of Label Studio (percent of the image) as its class and a ring in pixels, checked."""
    if not isinstance(v, dict):
        raise InputError(f"{where}: {at}: expected an object, got {_show(v)}")
    names = v.get("polygonlabels")
    if not isinstance(names, list) or len(names) != 1 or names[0] not in classes:
        raise InputError(f"{where}: {at}: label {_show(names)} is not one of the dataset's classes {classes}")
    points = v.get("points")
    if not isinstance(points, list) or len(points) < 3:
        raise InputError(f"{where}: {at}.points: expected at least 3 [x, y] points, got {_show(points)}")
    W, H = size  # noqa: N806 - image width and height
    ring = []
    for point in points:
        if not isinstance(point, list) or len(point) != 2:
            raise InputError(f"{where}: {at}.points: expected [x, y] points, got {_show(point)}")
        x, y = (_number({"v": c}, "v", where, f"{at}.points") for c in point)
        if not (-EDGE_TOLERANCE_PX <= x * W / 100 <= W + EDGE_TOLERANCE_PX) or not (
            -EDGE_TOLERANCE_PX <= y * H / 100 <= H + EDGE_TOLERANCE_PX
        ):
            raise InputError(f"{where}: {at}.points: point [{x:g}%, {y:g}%] lies outside the image")
        ring += [round(x * W / 100, 2), round(y * H / 100, 2)]
    return classes.index(names[0]), ring


def _with_masks(
    boxes: list[Box], ids: list[str | None], polygons: list[tuple[str, int, list[float]]], size: tuple[int, int]
) -> list[Box]:
    """Each rectangle with the rings whose ids extend its id as its mask; other polygons become boxes of their own."""
    from autolabel.masks.geometry import normalize

    W, H = size  # noqa: N806 - image width and height
    linked: dict[int, list[list[float]]] = {}
    loose: list[tuple[int, list[float]]] = []
    for pid, cls, ring in polygons:
        owner = next((i for i, bid in enumerate(ids) if bid and pid.startswith(f"{bid}_r")), None)
        if owner is None:
            loose.append((cls, ring))
        else:
            linked.setdefault(owner, []).append(ring)
    for i, rings in linked.items():
        boxes[i].mask = rings
    for cls, ring in loose:
        xs, ys = ring[0::2], ring[1::2]
        x1, y1, x2, y2 = max(0.0, min(xs)), max(0.0, min(ys)), min(float(W), max(xs)), min(float(H), max(ys))
        if x2 > x1 and y2 > y1:
            corners = (round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2))
            boxes.append(Box(cls, *corners, None, normalize([ring], W, H)))
    return boxes


def _dataset_of(task: dict, where: str) -> str | None:
    data = task.get("data")
    value = data.get("dataset") if isinstance(data, dict) else None
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where}: data.dataset: expected a dataset id, got {_show(value)}")
    return value


def _task_id(tid, i: int) -> str:
    """How messages name a task: its id as Label Studio shows it, else its place in the export."""
    if isinstance(tid, str) and tid.isprintable() and len(tid) <= 60:
        return tid
    return _show(tid) if isinstance(tid, int | str) and not isinstance(tid, bool) else f"#{i + 1}"


def _reviews(export: Path, tasks: list, ctx: ReadContext) -> Annotations:
    """Each reviewed frame's new boxes; the whole export is checked before anything is written."""
    sizes, classes = ctx.sizes, ctx.classes
    reviews: dict[str, tuple[str, list[Box]]] = {}
    ids: dict[str, str] = {}  # dataset id -> the first task carrying it
    for i, task in enumerate(tasks):
        tid = task.get("id") if isinstance(task, dict) else None
        where = f"{export}: task {_task_id(tid, i)}"
        if not isinstance(task, dict):
            raise InputError(f"{where}: expected a task object, got {_show(task)}")
        dataset = _dataset_of(task, where)
        if dataset is not None:
            ctx.check_id(dataset, where)
            ids.setdefault(dataset, where)
            if len(ids) > 1:
                raise InputError(f"{where}: tasks of two datasets in one export ({', '.join(ids)}); import each apart")
        name = _frame_name(task, where)
        if name not in sizes:
            raise InputError(f"{where}: frame {name!r} is not in the dataset")
        annotations = task.get("annotations")
        if annotations is None:
            continue
        if not isinstance(annotations, list):
            raise InputError(f"{where}: annotations: expected a list, got {_show(annotations)}")
        done = []
        for j, annotation in enumerate(annotations):
            if not isinstance(annotation, dict):
                raise InputError(f"{where}: annotations[{j}]: expected an object, got {_show(annotation)}")
            cancelled = annotation.get("was_cancelled")
            if cancelled is not None and not isinstance(cancelled, bool):
                raise InputError(f"{where}: annotations[{j}].was_cancelled: expected true or false")
            if not cancelled:
                done.append(j)
        if not done:
            continue
        boxes = _boxes(annotations[done[-1]], sizes[name], classes, where, f"annotations[{done[-1]}]")
        if name in reviews and reviews[name][1] != boxes:
            raise InputError(
                f"{where}: frame {name!r} was also reviewed in {reviews[name][0].rsplit(': ', 1)[-1]}, "
                "with other boxes; keep one of the two tasks and export again"
            )
        reviews[name] = (where, boxes)
    return Annotations(
        frames={name: boxes for name, (_, boxes) in reviews.items()},
        dataset_id=next(iter(ids), None),
        where={name: where for name, (where, _) in reviews.items()},
    )


def read_export(path: Path, ctx: ReadContext) -> Annotations:
    """The reviewed frames of a Label Studio JSON export."""
    tasks = load_json(path, "a Label Studio export")
    if not isinstance(tasks, list):
        raise InputError(f"{path}: expected Label Studio's JSON export (a list of tasks), got {_show(tasks)}")
    return _reviews(path, tasks, ctx)


class LabelStudio(Format):
    name = "label-studio"
    help = "Label Studio (an export: tasks with the boxes as predictions, and a labeling config)"
    dataset_format = False

    def export(self, out: ExportFolder) -> str:
        prefix = out.url_prefix if out.url_prefix is not None else default_url_prefix(out.dataset)
        ctx = out.ctx
        tasks = label_studio_tasks(
            out.records, ctx.classes, prefix, ctx.dataset_id, ordered=out.queued, masks=ctx.masks
        )
        out.write(TASKS_FILE, json.dumps(tasks, indent=1))
        out.write(CONFIG_FILE, labeling_config(ctx.classes, ctx.masks))
        return (
            f"in Label Studio: the labeling config from {CONFIG_FILE}, a Local Files storage for "
            f"{out.dataset.resolve() / 'images'}, then import {out.output / TASKS_FILE} (see the README)"
        )

    def read(self, path: Path, ctx: ReadContext) -> Annotations:
        return read_export(path, ctx)

    def detect(self, path: Path) -> bool:
        if not path.is_file() or path.suffix.lower() != ".json":
            return False
        with path.open("rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        return head.startswith(b"[") and (b'"data"' in head or b'"annotations"' in head or head.strip() == b"[]")

    def tolerance(self, width: int, height: int) -> float:
        return 0.006  # read back rounded to 1/100 px, the journal's own grid (postprocess.to_boxes)
