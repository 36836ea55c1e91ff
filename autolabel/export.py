"""``autolabel export``: a dataset in the folder layout another tool imports.

Layouts (``--to``):

- ``ultralytics``: ``images/{train,val}/``, ``labels/{train,val}/``, ``data.yaml`` (no
  ``path:``, so it trains wherever the folder is); CVAT's "Ultralytics YOLO Detection 1.0".
- ``coco``: ``annotations/instances_{train,val}.json`` with bare ``file_name`` s and
  ``images/{train,val}/``.
- ``voc``: ``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/{train,val}.txt`` and
  ``labelmap.txt``, as the VOC devkit, datumaro and CVAT's "PASCAL VOC 1.1" read it.
- ``cvat``: ``annotations.zip`` in CVAT's own "CVAT for images 1.1" format for a task made
  from ``images/`` (the frames, flat).
- ``label-studio``: ``label_studio_tasks.json`` and ``label_studio_config.xml`` (image
  URLs point at the dataset's own images through Label Studio's Local Files storage).

Everything is written from the journal (the dataset's source of truth) and its split
lists. Images are hard-linked where the file system allows (copied otherwise), so a
20,000-frame export costs no image copies. The export is built in a staging folder
beside the output and swapped in whole; the output must be absent, empty, or an earlier
export of the same dataset (``.autolabel-export.json`` says which), never anything else.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.datasets import finalize
from autolabel.datasets.formats import coco_files, cvat_xml, labelmap_problem, labelmap_text, voc_xml, yolo_lines
from autolabel.datasets.layout import (
    IMAGE_SUFFIX,
    JOURNAL,
    SPLITS,
    FrameRecord,
    read_journal,
    read_splits,
    require_state,
)
from autolabel.errors import ConfigError, InputError, OutputError
from autolabel.fileio import (
    FolderLock,
    atomic_write_bytes,
    atomic_write_text,
    link_or_copy,
    make_staging_dir,
    output_errors,
    remove_stale_temporaries,
    replace_dir,
    sync_dir,
)

MARK = ".autolabel-export.json"
CVAT_ZIP = "annotations.zip"
# Zip entries get a fixed time stamp: the same dataset exports to the same bytes.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass
class ExportResult:
    """What an export wrote."""

    output: Path
    to: str
    frames: int = 0
    boxes: int = 0
    split: dict[str, int] = field(default_factory=dict)
    linked: int = 0
    copied: int = 0
    load: str = ""


@dataclass
class _Export:
    """One export being built in ``root`` (the staging folder)."""

    root: Path
    dataset: Path
    classes: list[str]
    records: list[FrameRecord]
    result: ExportResult
    title: str  # the product's name (or the dataset folder's), for formats that name the set
    url_prefix: str | None = None
    dirs: set[Path] = field(default_factory=set)

    def image(self, record: FrameRecord, rel: str) -> None:
        """Links (or copies) a frame's image to ``rel`` under the export."""
        target = self.root / rel
        self.dirs.add(target.parent)
        if link_or_copy(self.dataset / record.image, target, sync_parent=False):
            self.result.linked += 1
        else:
            self.result.copied += 1

    def text(self, rel: str, text: str) -> None:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        self.dirs.add(target.parent)
        atomic_write_text(target, text, sync_parent=False)

    def split(self, name: str) -> list[FrameRecord]:
        return [r for r in self.records if r.split == name]


def _ultralytics(ex: _Export) -> str:
    for r in ex.records:
        ex.image(r, f"images/{r.split}/{r.name}{IMAGE_SUFFIX}")
        ex.text(f"labels/{r.split}/{r.name}.txt", yolo_lines(r))
    has_val = bool(ex.split("val"))
    finalize.write_data_yaml(ex.root, ex.classes, has_val, train="images/train", val="images/val")
    return f"yolo train data={ex.result.output / 'data.yaml'}"


def _coco(ex: _Export) -> str:
    for r in ex.records:
        ex.image(r, f"images/{r.split}/{r.name}{IMAGE_SUFFIX}")
    (ex.root / "annotations").mkdir()
    for split, body in coco_files(ex.records, ex.classes, lambda r: f"{r.name}{IMAGE_SUFFIX}").items():
        finalize.write_json(ex.root / "annotations" / f"instances_{split}.json", body)
    ex.dirs.add(ex.root / "annotations")
    return f"COCO(annotations/instances_train.json), images in images/train/ (and val) under {ex.result.output}"


def _voc(ex: _Export) -> str:
    for r in ex.records:
        ex.image(r, f"JPEGImages/{r.name}{IMAGE_SUFFIX}")
        ex.text(f"Annotations/{r.name}.xml", voc_xml(r, ex.classes, folder="JPEGImages"))
    for split in SPLITS:
        ex.text(f"ImageSets/Main/{split}.txt", "".join(f"{r.name}\n" for r in sorted(ex.split(split), key=_name)))
    problem = labelmap_problem(ex.classes)
    if problem:
        raise InputError(f"{ex.dataset}: {problem}, which VOC readers (datumaro, CVAT) need; rename the class")
    ex.text("labelmap.txt", labelmap_text(ex.classes))
    return f"a Pascal VOC folder: {ex.result.output} (labelmap.txt lists the classes)"


def _cvat(ex: _Export) -> str:
    for r in ex.records:
        ex.image(r, f"images/{r.name}{IMAGE_SUFFIX}")
    xml = cvat_xml(sorted(ex.records, key=_name), ex.classes, ex.title)
    path = ex.root / CVAT_ZIP
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        entry = zipfile.ZipInfo("annotations.xml", ZIP_TIME)
        entry.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(entry, xml)
    atomic_write_bytes(path, buf.getvalue(), sync_parent=False)
    return (
        f"in CVAT, create a task from the images in {ex.result.output / 'images'}, then Actions > Upload "
        f"annotations > format 'CVAT 1.1' > {ex.result.output / CVAT_ZIP}"
    )


def _label_studio(ex: _Export) -> str:
    from autolabel.review import CONFIG_FILE, TASKS_FILE, default_url_prefix, label_studio_tasks, labeling_config

    prefix = ex.url_prefix if ex.url_prefix is not None else default_url_prefix(ex.dataset)
    ex.text(TASKS_FILE, json.dumps(label_studio_tasks(ex.records, ex.classes, prefix), indent=1))
    ex.text(CONFIG_FILE, labeling_config(ex.classes))
    return (
        f"in Label Studio: the labeling config from {CONFIG_FILE}, a Local Files storage for "
        f"{ex.dataset.resolve() / 'images'}, then import {ex.result.output / TASKS_FILE} (see the README)"
    )


def _name(r: FrameRecord) -> str:
    return r.name


TARGETS: dict[str, Callable[[_Export], str]] = {
    "ultralytics": _ultralytics,
    "coco": _coco,
    "voc": _voc,
    "cvat": _cvat,
    "label-studio": _label_studio,
}


def _check_output(dataset: Path, output: Path) -> None:
    """Refuses an output that is the dataset, inside it, or something other than an export of it."""
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: exists and is a file; choose a folder for --output")
    resolved, source = output.resolve(), dataset.resolve()
    if resolved == source or resolved.is_relative_to(source) or source.is_relative_to(resolved):
        raise OutputError(f"{output}: is the dataset {dataset}, inside it, or holds it; export to a folder beside it")
    if not output.is_dir() or not any(output.iterdir()):
        return
    try:
        mark = json.loads((output / MARK).read_text(encoding="utf-8"))
        same = isinstance(mark, dict) and mark.get("dataset") == str(source)
    except (OSError, ValueError):
        same = False
    if not same:
        raise OutputError(
            f"{output}: exists and is not an earlier export of {dataset}; refusing to write over it "
            "(choose a new or empty --output)"
        )


def _records(dataset: Path, classes: list[str]) -> list[FrameRecord]:
    """Kept frames in journal order, each with its split from train.txt/val.txt; their images must exist."""
    splits = read_splits(dataset)
    records = []
    for r in read_journal(dataset, len(classes)):
        if r.dropped is not None:
            continue
        r.split = splits.get(f"{r.name}")
        if r.split is None:
            raise InputError(
                f"{dataset / JOURNAL}: frame {r.name!r} is in neither train.txt nor val.txt; "
                "re-run `autolabel run` to finish the dataset"
            )
        if not (dataset / r.image).is_file():
            raise InputError(f"{dataset / r.image}: image listed in {dataset / JOURNAL} is missing")
        records.append(r)
    if not records:
        raise InputError(f"{dataset}: has no frames to export")
    return records


def export_dataset(
    dataset: Path, to: str, output: Path, image_url_prefix: str | None = None, only_flagged: bool = False
) -> ExportResult:
    """Writes ``dataset`` (a product or merged dataset) into ``output`` in the layout ``to``.

    Args:
        dataset: An autolabel dataset folder.
        to: One of :data:`TARGETS`.
        output: The export folder: absent, empty, or an earlier export of this dataset.
        image_url_prefix: Label Studio only: the image URL prefix (default: Local Files).
        only_flagged: Label Studio only: just the frames the report flags (a review queue).
    """
    if to not in TARGETS:
        raise ConfigError(f"--to {to!r}: choose one of {', '.join(TARGETS)}")
    # Resolved: '.' or '..' has no name to stage and swap beside, and a symlink is kept (its target is written).
    output = output.resolve()
    if image_url_prefix is not None and to != "label-studio":
        raise ConfigError("--image-url-prefix applies to --to label-studio only")
    if only_flagged and to != "label-studio":
        raise ConfigError("--only-flagged applies to --to label-studio only (a review queue)")
    state = require_state(dataset)
    if not state.get("complete"):
        raise InputError(f"{dataset}: unfinished run; re-run `autolabel run` to complete it before exporting")
    classes = list(state["classes"])
    _check_output(dataset, output)
    result = ExportResult(output=output, to=to)
    with contextlib.ExitStack() as stack, output_errors(output):
        stack.enter_context(FolderLock(output, "export"))
        stack.enter_context(FolderLock(dataset, "export (reading)"))
        _check_output(dataset, output)  # again, now that no one else can be writing it
        remove_stale_temporaries(output.parent, prefix=output.name)
        records = _records(dataset, classes)
        if only_flagged:
            from autolabel.review import only_flagged as flagged

            records = flagged(dataset, records, classes)
        staging = make_staging_dir(output)
        try:
            title = str(state.get("product") or dataset.resolve().name)
            ex = _Export(staging, dataset, classes, records, result, title, image_url_prefix)
            result.load = TARGETS[to](ex)
            atomic_write_text(
                staging / MARK,
                json.dumps({"dataset": str(dataset.resolve()), "to": to}, ensure_ascii=False) + "\n",
                sync_parent=False,
            )
            for folder in sorted(ex.dirs | {staging}, key=lambda p: len(p.parts), reverse=True):
                sync_dir(folder)
            replace_dir(staging, output)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    result.frames = len(records)
    result.boxes = sum(len(r.boxes) for r in records)
    result.split = {split: sum(1 for r in records if r.split == split) for split in SPLITS}
    return result
