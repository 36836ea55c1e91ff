"""Label Studio round trip: export boxes as predictions, import the reviewed annotations.

The export holds one task per frame (image URL, frame name, the boxes as a prediction
with their confidences) and a labeling config naming the classes. ``autolabel import``
reads Label Studio's JSON export, checks all of it, then replaces each reviewed frame's
boxes in the journal (one atomic rewrite, the frame marked ``reviewed``) and only then
in the files derived from it: YOLO labels, VOC and COCO. :func:`repair_derived` makes the
derived files agree with the journal again, so an import killed half way is finished by
the next import (or run). Boxes drawn or changed by a person get no confidence; a frame
accepted as it was keeps its boxes and their confidences.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from autolabel.datasets import finalize
from autolabel.datasets.formats import labelmap_problem, labelmap_text
from autolabel.datasets.layout import (
    ANNOTATIONS,
    JOURNAL,
    LABELMAP,
    LABELS,
    SPLITS,
    STATE_VERSION,
    Box,
    FrameRecord,
    read_journal,
    read_splits,
    require_state,
    write_state,
)
from autolabel.errors import InputError
from autolabel.fileio import (
    FolderLock,
    atomic_write_bytes,
    atomic_write_text,
    make_staging_dir,
    output_errors,
    remove_stale_temporaries,
    sync_dir,
)

TASKS_FILE = "label_studio_tasks.json"
CONFIG_FILE = "label_studio_config.xml"
# Label Studio stores percentages: a box drawn to the edge may land a hair outside the image.
EDGE_TOLERANCE_PX = 0.5
# Results that hold no region: skipping them loses no box.
NON_REGION_TYPES = frozenset({"choices", "textarea", "rating", "relation", "taxonomy", "number", "datetime"})
# Boxes a reviewer left in place (within rounding) keep their coordinates and confidences.
SAME_BOX_PX = 0.01


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


def default_url_prefix(root: Path) -> str:
    """Image URL prefix for Label Studio's Local Files storage, document root = the dataset's parent."""
    return f"/data/local-files/?d={quote(root.resolve().name)}/"


def label_studio_tasks(records: list[FrameRecord], classes: list[str], prefix: str) -> list[dict]:
    """One Label Studio task per frame (by name): the image URL, the frame's name, its boxes as a prediction."""
    tasks = []
    for i, r in enumerate(sorted(records, key=lambda r: r.name), start=1):
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
                "data": {"image": f"{prefix}{quote(r.image)}", "frame": r.name},
                "predictions": [
                    {"model_version": "autolabel", "score": min(scores) if scores else None, "result": result}
                ],
            }
        )
    return tasks


def only_flagged(root: Path, records: list[FrameRecord], classes: list[str]) -> list[FrameRecord]:
    """The records of the frames the report flags (a review queue); an error when none is."""
    from autolabel.report import ReportOptions, flagged_names

    names = flagged_names(root, records, classes, ReportOptions())
    flagged = [r for r in records if r.name in names]
    if not flagged:
        raise InputError(f"{root}: no frame is flagged by the report; export without --only-flagged to review them all")
    return flagged


def export_label_studio(root: Path, url_prefix: str | None = None, flagged: bool = False) -> tuple[Path, Path]:
    """Writes ``label_studio_tasks.json`` and ``label_studio_config.xml`` into the dataset.

    Args:
        root: The dataset.
        url_prefix: Prefix of image URLs; default Label Studio's local-files storage with
            ``LOCAL_FILES_DOCUMENT_ROOT`` set to the dataset's parent folder.
        flagged: Only the frames in one of the report's lists (``--only-flagged``).
    """
    classes = _classes(root)
    prefix = url_prefix if url_prefix is not None else default_url_prefix(root)
    with output_errors(root), FolderLock(root, "export"):
        records = [r for r in read_journal(root, len(classes)) if r.dropped is None]
        if flagged:
            records = only_flagged(root, records, classes)
        tasks_path, config_path = root / TASKS_FILE, root / CONFIG_FILE
        atomic_write_text(tasks_path, json.dumps(label_studio_tasks(records, classes, prefix), indent=1))
        atomic_write_text(config_path, labeling_config(classes))
    return tasks_path, config_path


# --- derived files -------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_frame_files(root: Path, record: FrameRecord, classes: list[str], voc: bool) -> int:
    """Rewrites a frame's YOLO label (and VOC) file where it differs from the record; returns how many."""
    return len(finalize.sync_frame_files(root, record, classes, voc, keep_edits=False))


def _coco_paths(root: Path) -> list[Path]:
    return [root / f"coco_{split}.json" for split in SPLITS]


def _sync_coco(root: Path, records: list[FrameRecord], classes: list[str]) -> int:
    """Rewrites ``coco_*.json`` where it differs from what the journal says; returns how many files.

    Frames in no split (an unfinished run) are left out, as finalizing leaves them out.
    """
    splits = read_splits(root)
    split_records = []
    for r in records:
        split = splits.get(r.name) or r.split
        if split is not None:
            split_records.append(dataclasses.replace(r, split=split))
    remove_stale_temporaries(root, "coco")
    staging = make_staging_dir(root / "coco")
    written = 0
    try:
        finalize.write_coco(staging, split_records, classes)
        for path in _coco_paths(root):
            data = (staging / path.name).read_bytes()
            if _read_bytes(path) != data:
                atomic_write_bytes(path, data, sync_parent=False)
                written += 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def _sync_derived(root: Path, records: list[FrameRecord], classes: list[str], names: set[str] | None = None) -> int:
    """Makes labels, VOC and COCO agree with ``records`` (only frames in ``names`` when given)."""
    voc = (root / ANNOTATIONS).is_dir()
    written = 0
    for r in {r.name: r for r in records}.values():
        if names is None or r.name in names:
            written += write_frame_files(root, r, classes, voc)
    if written:
        sync_dir(root / LABELS)
        if voc:
            sync_dir(root / ANNOTATIONS)
    if voc and labelmap_problem(classes) is None and _read_bytes(root / LABELMAP) != labelmap_text(classes).encode():
        atomic_write_text(root / LABELMAP, labelmap_text(classes))
        written += 1
    if any(path.exists() for path in _coco_paths(root)):
        coco = _sync_coco(root, records, classes)
        if coco:
            sync_dir(root)
        written += coco
    return written


def repair_derived(root: Path, classes: list[str]) -> int:
    """Rewrites every derived file that disagrees with the journal; returns how many files it rewrote.

    The journal is the dataset's source of truth. Each kept frame's YOLO label (always),
    VOC file (when the dataset has ``annotations/``) and the COCO files (when the dataset
    has them) are compared with what the journal says and rewritten, atomically, where
    they differ or are missing: this finishes an import killed between its journal
    rewrite and its derived files. The caller holds the dataset's lock.
    """
    records = [r for r in read_journal(root, len(classes)) if r.dropped is None]
    return _sync_derived(root, records, classes)


# --- import --------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What an import changed."""

    frames_reviewed: int
    frames_changed: int
    boxes_before: int
    boxes_after: int
    reviewed_total: int = 0
    frames_total: int = 0


class _Constant:
    """``NaN``, ``Infinity`` or ``-Infinity`` in the export: kept as a marker, refused where a number is read."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _show(value) -> str:
    if isinstance(value, _Constant):
        return value.literal
    text = json.dumps(value, default=lambda v: v.literal if isinstance(v, _Constant) else str(v))
    return text if len(text) <= 60 else text[:57] + "..."


def _load_export(export: Path) -> list:
    try:
        text = export.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{export}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{export}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        tasks = json.loads(text, parse_constant=_Constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{export}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise InputError(f"{export}: JSON nested too deeply to be a Label Studio export") from exc
    if not isinstance(tasks, list):
        raise InputError(f"{export}: expected Label Studio's JSON export (a list of tasks), got {_show(tasks)}")
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


def _box(v, record: FrameRecord, classes: list[str], where: str, at: str) -> Box:
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
    W, H = record.width, record.height  # noqa: N806 - image width and height
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


def _boxes(annotation: dict, record: FrameRecord, classes: list[str], where: str, at: str) -> list[Box]:
    result = annotation.get("result")
    if not isinstance(result, list):
        raise InputError(f"{where}: {at}.result: expected a list of regions, got {_show(result)}")
    boxes, others = [], []
    for k, item in enumerate(result):
        here = f"{at}.result[{k}]"
        if not isinstance(item, dict):
            raise InputError(f"{where}: {here}: expected an object, got {_show(item)}")
        kind = item.get("type")
        if not isinstance(kind, str):
            raise InputError(f"{where}: {here}.type: expected a region type, got {_show(kind)}")
        if kind == "rectanglelabels":
            boxes.append(_box(item.get("value"), record, classes, where, f"{here}.value"))
        elif kind not in NON_REGION_TYPES:
            others.append(kind)
    if others:
        raise InputError(
            f"{where}: {at} holds {', '.join(sorted(set(others)))} regions, which autolabel cannot import "
            "(only rectanglelabels boxes), and importing the rest would drop them; draw them as labeled "
            "rectangles (or delete them) in Label Studio, export again and re-run the import"
        )
    return boxes


def _reviews(export: Path, tasks: list, by_name: dict[str, FrameRecord], classes: list[str]) -> dict[str, list[Box]]:
    """Each reviewed frame's new boxes; the whole export is checked before anything is written."""
    reviews: dict[str, tuple[str, list[Box]]] = {}
    for i, task in enumerate(tasks):
        tid = task.get("id") if isinstance(task, dict) else None
        where = f"{export}: task {tid if isinstance(tid, int | str) and not isinstance(tid, bool) else f'#{i + 1}'}"
        if not isinstance(task, dict):
            raise InputError(f"{where}: expected a task object, got {_show(task)}")
        name = _frame_name(task, where)
        if name not in by_name:
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
        boxes = _boxes(annotations[done[-1]], by_name[name], classes, where, f"annotations[{done[-1]}]")
        if name in reviews and reviews[name][1] != boxes:
            raise InputError(
                f"{where}: frame {name!r} was also reviewed in {reviews[name][0].rsplit(': ', 1)[-1]}, "
                "with other boxes; keep one of the two tasks and export again"
            )
        reviews[name] = (where, boxes)
    return {name: boxes for name, (_, boxes) in reviews.items()}


def _same_boxes(old: list[Box], new: list[Box]) -> bool:
    def same(a: Box, b: Box) -> bool:
        pairs = zip((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2), strict=True)
        return a.class_id == b.class_id and all(abs(p - q) <= SAME_BOX_PX for p, q in pairs)

    return len(old) == len(new) and all(same(a, b) for a, b in zip(old, new, strict=True))


def import_label_studio(root: Path, export: Path) -> ImportResult:
    """Replaces reviewed frames' boxes with those of a Label Studio JSON export.

    Holds the dataset's lock throughout. First finishes an earlier import that was
    killed (:func:`repair_derived`), then checks the whole export, then rewrites the
    journal once (reviewed frames get their new boxes and ``reviewed``), and only then
    the labels, VOC and COCO of the frames that changed.
    """
    state = require_state(root)
    if state.get("kind") != "product":
        raise InputError(
            f"{root}: is a {state.get('kind')} dataset, rebuilt whole by every merge, so a review imported here would "
            "be lost; import into the product datasets (their frame names are the part after '__'), then merge again"
        )
    classes = list(state["classes"])
    tasks = _load_export(export)
    with output_errors(root), FolderLock(root, "import"):
        remove_stale_temporaries(root)  # what a killed command left
        records = list(read_journal(root, len(classes)))
        kept = [r for r in records if r.dropped is None]
        _sync_derived(root, kept, classes)
        if state["version"] < STATE_VERSION:  # its derived files are now in this version's format
            write_state(root, state | {"version": STATE_VERSION})
        by_name = {r.name: r for r in kept}
        reviews = _reviews(export, tasks, by_name, classes)
        before = sum(len(by_name[name].boxes) for name in reviews)
        changed: set[str] = set()
        journal_changed = False
        for r in kept:
            boxes = reviews.get(r.name)
            if boxes is None:
                continue
            if not _same_boxes(r.boxes, boxes):
                r.boxes = boxes
                changed.add(r.name)
            journal_changed |= not r.reviewed
            r.reviewed = True
        if changed or journal_changed:
            atomic_write_text(root / JOURNAL, "".join(r.to_json() + "\n" for r in records))
        if changed or journal_changed:  # COCO says which frames were reviewed, changed or not
            _sync_derived(root, kept, classes, changed)
    return ImportResult(
        frames_reviewed=len(reviews),
        frames_changed=len(changed),
        boxes_before=before,
        boxes_after=sum(len(b) for b in reviews.values()),
        reviewed_total=sum(1 for r in by_name.values() if r.reviewed),
        frames_total=len(by_name),
    )
