"""Turns a journaled dataset into its split lists, data.yaml and COCO files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

from autolabel.datasets.formats import coco_files, labelmap_problem, labelmap_text, voc_xml, yolo_lines
from autolabel.datasets.layout import (
    ANNOTATIONS,
    DATA_YAML,
    IMAGE_SUFFIX,
    LABELMAP,
    LABELS,
    SPLITS,
    STATE_DIR,
    FrameRecord,
)
from autolabel.fileio import TMP_MARK, atomic_write_bytes, atomic_write_text, file_mode, sync_dir


def write_split_lists(root: Path, records: list[FrameRecord]) -> dict[str, int]:
    """Writes ``train.txt`` and ``val.txt`` (``./images/<name>.jpg`` lines, relative to the dataset)."""
    counts = {}
    for split in SPLITS:
        names = sorted(r.name for r in records if r.split == split)
        atomic_write_text(root / f"{split}.txt", "".join(f"./images/{n}{IMAGE_SUFFIX}\n" for n in names))
        counts[split] = len(names)
    return counts


def write_data_yaml(
    root: Path, classes: list[str], has_val: bool, train: str = "train.txt", val: str = "val.txt"
) -> None:
    """Writes an Ultralytics ``data.yaml`` without ``path:``, so the folder can move.

    ``train`` and ``val``: the split lists or image folders, relative to ``root``.
    """
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
    atomic_write_text(root / DATA_YAML, header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))


def update_class_list(root: Path, classes: list[str]) -> None:
    """Rewrites an existing ``data.yaml`` and ``labelmap.txt`` for a class list that grew.

    A discovering labeler adds classes while a dataset that was finalized before is
    extended; its class lists must name every id a label file on disk uses, at any moment.
    """
    path = root / DATA_YAML
    if path.is_file():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        write_data_yaml(root, classes, has_val=data.get("val") != data.get("train"))
    if (root / LABELMAP).is_file():
        write_labelmap(root, classes)


def write_coco(root: Path, records: list[FrameRecord], classes: list[str]) -> None:
    """Writes ``coco_train.json`` and ``coco_val.json`` (``file_name`` relative to the dataset).

    ``records``: every kept frame in journal order, each with its split (see
    :func:`autolabel.datasets.formats.coco_files` for the ids).
    """
    for split, body in coco_files(records, classes, lambda r: r.image).items():
        write_json(root / f"coco_{split}.json", body)
    sync_dir(root)


def write_json(path: Path, body: dict) -> None:
    """Streams a JSON document into place atomically (durable, not yet the folder entry)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(body, out, ensure_ascii=False)
            out.flush()
            os.fchmod(out.fileno(), file_mode())
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_labelmap(root: Path, classes: list[str]) -> str | None:
    """Writes the VOC ``labelmap.txt`` (every class in id order, those without boxes too).

    Returns why it could not be written (a class name its format cannot hold), or None.
    """
    problem = labelmap_problem(classes)
    if problem is None:
        atomic_write_text(root / LABELMAP, labelmap_text(classes))
    return problem


def sync_frame_files(
    root: Path, record: FrameRecord, classes: list[str], voc: bool, keep_edits: bool
) -> list[tuple[str, bool]]:
    """Writes a frame's YOLO label (and VOC) file again where it differs from its journal record.

    Args:
        root: The dataset.
        record: The frame's journal record (the source of truth).
        classes: The dataset's class names.
        voc: Whether the dataset has VOC files.
        keep_edits: Move a differing file (a hand edit) to ``.autolabel/edited/`` first.

    Returns the paths written, relative to ``root``, each with whether a differing file
    was there (False: it was missing). The folders are not flushed here: callers flush
    them once for the lot.
    """
    wanted = [(root / LABELS / f"{record.name}.txt", yolo_lines(record))]
    if voc:
        wanted.append((root / ANNOTATIONS / f"{record.name}.xml", voc_xml(record, classes)))
    written = []
    for path, text in wanted:
        data = text.encode("utf-8")
        try:
            if path.read_bytes() == data:
                continue
            existed = True
            if keep_edits:
                edited = root / STATE_DIR / "edited" / path.relative_to(root)
                edited.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, edited)
        except FileNotFoundError:
            existed = False
        atomic_write_bytes(path, data, sync_parent=False)
        written.append((path.relative_to(root).as_posix(), existed))
    return written


def repair_derived(
    root: Path, records: list[FrameRecord], classes: list[str], formats: list[str], keep_edits: bool = True
) -> list[tuple[str, bool]]:
    """Writes again every label (and VOC) file that is missing or differs from the journal, the source of truth.

    A file that was there but differed (a hand edit) is kept under ``.autolabel/edited/``
    first, unless ``keep_edits`` is False (files an older autolabel wrote in its own
    format). Returns the paths written, relative to ``root``, each with whether it
    differed (True) or was missing (False).
    """
    repaired = []
    for r in records:
        repaired += sync_frame_files(root, r, classes, "voc" in formats, keep_edits=keep_edits)
    if repaired:
        for sub in (LABELS, ANNOTATIONS):
            if (root / sub).is_dir():
                sync_dir(root / sub)
    return repaired
