"""Label Studio round trip: export boxes as predictions, import the reviewed annotations.

The export holds one task per frame (image URL, frame name, the boxes as a prediction
with their confidences) and a labeling config naming the classes. ``autolabel import``
reads Label Studio's JSON export and replaces each reviewed frame's boxes in the
dataset: journal, YOLO labels, VOC and COCO, each rewritten atomically. Boxes drawn or
kept by a person get no confidence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from autolabel.datasets import finalize
from autolabel.datasets.layout import (
    ANNOTATIONS,
    JOURNAL,
    LABELS,
    Box,
    FrameRecord,
    read_journal,
    read_splits,
    require_state,
)
from autolabel.datasets.writer import voc_xml, yolo_lines
from autolabel.errors import InputError
from autolabel.fileio import atomic_write_text

TASKS_FILE = "label_studio_tasks.json"
CONFIG_FILE = "label_studio_config.xml"


def _classes(root: Path) -> list[str]:
    return list(require_state(root).get("classes", []))


def labeling_config(classes: list[str]) -> str:
    """A Label Studio labeling config with one rectangle label per class (names XML-escaped)."""
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in classes)
    return (
        "<View>\n"
        '  <Image name="image" value="$image"/>\n'
        '  <RectangleLabels name="label" toName="image">\n'
        f"{labels}\n"
        "  </RectangleLabels>\n"
        "</View>\n"
    )


def export_label_studio(root: Path, url_prefix: str | None = None) -> tuple[Path, Path]:
    """Writes ``label_studio_tasks.json`` and ``label_studio_config.xml`` into the dataset.

    Args:
        root: The dataset.
        url_prefix: Prefix of image URLs; default Label Studio's local-files storage with
            ``LOCAL_FILES_DOCUMENT_ROOT`` set to the dataset's parent folder.
    """
    classes = _classes(root)
    prefix = url_prefix if url_prefix is not None else f"/data/local-files/?d={root.name}/"
    tasks = []
    for i, r in enumerate(sorted((r for r in read_journal(root) if r.dropped is None), key=lambda r: r.name), start=1):
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
        scores = [b.confidence for b in r.boxes if b.confidence is not None]
        tasks.append(
            {
                "id": i,
                "data": {"image": f"{prefix}{r.image}", "frame": r.name},
                "predictions": [
                    {"model_version": "autolabel", "score": min(scores) if scores else None, "result": result}
                ],
            }
        )
    tasks_path, config_path = root / TASKS_FILE, root / CONFIG_FILE
    atomic_write_text(tasks_path, json.dumps(tasks, indent=1))
    atomic_write_text(config_path, labeling_config(classes))
    return tasks_path, config_path


@dataclass
class ImportResult:
    """What an import changed."""

    frames_reviewed: int
    frames_changed: int
    boxes_before: int
    boxes_after: int


def _frame_name(task: dict, where: str) -> str:
    data = task.get("data") or {}
    if isinstance(data.get("frame"), str):
        return data["frame"]
    image = data.get("image")
    if not isinstance(image, str):
        raise InputError(f"{where}: task has neither data.frame nor data.image")
    return Path(image.split("?d=")[-1]).stem


def _boxes(annotation: dict, record: FrameRecord, classes: list[str], where: str) -> list[Box]:
    boxes = []
    for item in annotation.get("result", []):
        if item.get("type") != "rectanglelabels":
            continue
        v = item.get("value", {})
        if v.get("rotation", 0):
            raise InputError(f"{where}: rotated boxes are not supported (rotation {v['rotation']})")
        names = v.get("rectanglelabels") or []
        if len(names) != 1 or names[0] not in classes:
            raise InputError(f"{where}: label {names!r} is not one of the dataset's classes {classes}")
        try:
            x, y, w, h = (float(v[k]) for k in ("x", "y", "width", "height"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: box without x, y, width, height ({exc})") from exc
        W, H = record.width, record.height  # noqa: N806 - image width and height
        x1, y1 = max(0.0, x * W / 100), max(0.0, y * H / 100)
        x2, y2 = min(float(W), (x + w) * W / 100), min(float(H), (y + h) * H / 100)
        boxes.append(Box(classes.index(names[0]), round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2), None))
    return boxes


def import_label_studio(root: Path, export: Path) -> ImportResult:
    """Replaces reviewed frames' boxes with those of a Label Studio JSON export."""
    classes = _classes(root)
    try:
        tasks = json.loads(export.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{export}: cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{export}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(tasks, list):
        raise InputError(f"{export}: expected Label Studio's JSON export (a list of tasks)")
    records = list(read_journal(root))
    by_name = {r.name: r for r in records}
    reviewed: dict[str, list[Box]] = {}
    for i, task in enumerate(tasks):
        where = f"{export}: task {task.get('id', i) if isinstance(task, dict) else i}"
        if not isinstance(task, dict):
            raise InputError(f"{where}: not a task object")
        name = _frame_name(task, where)
        if name not in by_name:
            raise InputError(f"{where}: frame {name!r} is not in {root}")
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if done:
            reviewed[name] = _boxes(done[-1], by_name[name], classes, where)
    before = sum(len(by_name[n].boxes) for n in reviewed)
    changed = 0
    for name, boxes in reviewed.items():
        record = by_name[name]
        old = [(b.class_id, b.x1, b.y1, b.x2, b.y2) for b in record.boxes]
        if old == [(b.class_id, b.x1, b.y1, b.x2, b.y2) for b in boxes]:
            continue
        changed += 1
        record.boxes = boxes
        atomic_write_text(root / LABELS / f"{name}.txt", yolo_lines(record))
        if (root / ANNOTATIONS).is_dir():
            atomic_write_text(root / ANNOTATIONS / f"{name}.xml", voc_xml(record, classes))
    if changed:
        atomic_write_text(root / JOURNAL, "".join(r.to_json() + "\n" for r in records))
        if (root / "coco_train.json").exists():
            splits = read_splits(root)
            kept = [r for r in records if r.dropped is None]
            for r in kept:
                r.split = splits.get(r.name, "train")
            finalize.write_coco(root, kept, classes)
    return ImportResult(len(reviewed), changed, before, sum(len(b) for b in reviewed.values()))
