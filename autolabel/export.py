"""``autolabel export``: a dataset in the folder layout another tool imports.

Layouts (``--to``): every registered format (:mod:`autolabel.datasets.formats`); the built-ins:

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
- ``yolo``: ``images/``, ``labels/`` and ``classes.txt``, flat, as labelImg reads them.

Everything is written from the journal (the dataset's source of truth) and its split
lists. Images are hard-linked where the file system allows (copied otherwise), so a
20,000-frame export costs no image copies. The export is built in a staging folder
beside the output and swapped in whole; the output must be absent, empty, or an earlier
export of the same dataset (``.autolabel-export.json`` says which, and lists the files it
wrote), never anything else. Files a user put into an earlier export (notes, a training
run's folder) are kept: hard-linked into the new export before the swap, so a crash at any
moment leaves them in one of the two folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.datasets import formats
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.formats import ExportFolder
from autolabel.datasets.formats.base import EXPORT_MARK
from autolabel.datasets.layout import JOURNAL, SPLITS
from autolabel.datasets.records import FrameRecord
from autolabel.errors import ConfigError, InputError, OutputError
from autolabel.fileio import (
    TMP_MARK,
    FolderLock,
    atomic_write_text,
    make_staging_dir,
    output_errors,
    remove_stale_temporaries,
    replace_dir,
    sync_dir,
)

MARK = EXPORT_MARK


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
    unreviewed: int | None = None  # with --review: the unreviewed frames the queue chose from
    total: int = 0  # frames in the dataset
    kept: list[str] = field(default_factory=list)  # files of the user's in an earlier export, kept


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


def _records(ds: Dataset) -> list[FrameRecord]:
    """Kept frames in journal order, each with its split from train.txt/val.txt; their images must exist.

    Without their masks: a segmentation dataset's are read as a stream (:meth:`Dataset.kept_frames`).
    """
    records = ds.with_splits(strict=True, masks=False)
    for r in records:
        if not (ds.root / r.image).is_file():
            raise InputError(f"{ds.root / r.image}: image listed in {ds.root / JOURNAL} is missing")
    if not records:
        raise InputError(f"{ds.root}: has no frames to export")
    return records


def _with_masks(ds: Dataset, queue: list[FrameRecord]) -> list[FrameRecord]:
    """The review queue's frames (read without masks) with their masks, in the queue's order."""
    wanted = {r.name: k for k, r in enumerate(queue)}
    out: list[FrameRecord | None] = [None] * len(queue)
    for r in ds.records():
        k = wanted.get(r.name)
        if k is not None:
            r.split = queue[k].split
            out[k] = r
    return [r for r in out if r is not None]


def export_dataset(
    dataset: Path, to: str, output: Path, image_url_prefix: str | None = None, review: int | None = None
) -> ExportResult:
    """Writes ``dataset`` (a product or merged dataset) into ``output`` in the layout of format ``to``.

    Args:
        dataset: An autolabel dataset folder.
        to: A registered format's name.
        output: The export folder: absent, empty, or an earlier export of this dataset.
        image_url_prefix: Label Studio only: the image URL prefix (default: Local Files).
        review: Label Studio only: just the N frames the review queue puts first, in its order.
    """
    if to not in formats.registry():
        raise ConfigError(f"--to {to!r}: choose one of {', '.join(formats.names())}")
    fmt = formats.get(to)
    # Resolved: '.' or '..' has no name to stage and swap beside, and a symlink is kept (its target is written).
    output = output.resolve()
    if image_url_prefix is not None and to != "label-studio":
        raise ConfigError("--image-url-prefix applies to --to label-studio only")
    if review is not None and to != "label-studio":
        raise ConfigError("--review applies to --to label-studio only (tasks for a reviewer)")
    if not Dataset.peek(dataset).complete:
        raise InputError(f"{dataset}: unfinished run; re-run `autolabel run` to complete it before exporting")
    _check_output(dataset, output)
    result = ExportResult(output=output, to=to)
    with contextlib.ExitStack() as stack, output_errors(output):
        stack.enter_context(FolderLock(output, "export"))
        ds = stack.enter_context(Dataset.open(dataset, "export (reading)"))
        _check_output(dataset, output)  # again, now that no one else can be writing it
        old = output.with_name(f".{output.name}{TMP_MARK}old")
        if not output.exists() and old.is_dir():  # a swap killed half-way: the earlier export is brought back
            os.replace(old, output)
        remove_stale_temporaries(output.parent, prefix=output.name)
        records = _records(ds)
        result.total = len(records)
        frames = ds.kept_frames(records) if ds.segmented else records  # the masks, a frame at a time
        if review is not None:
            result.unreviewed = sum(1 for r in records if not r.reviewed)
            from autolabel.review import review_queue

            records = review_queue(ds, records, review)
            frames = _with_masks(ds, records) if ds.segmented else records
        staging = make_staging_dir(output)
        try:
            ex = ExportFolder(
                staging, dataset, output, frames, ds.context(), image_url_prefix, queued=review is not None
            )
            result.load = fmt.export(ex)
            own = _files(staging)
            result.kept = _keep_user_files(output, staging, own)
            mark = {"dataset": str(dataset.resolve()), "to": to, "dataset_id": ds.state.id, "files": sorted(own)}
            atomic_write_text(staging / MARK, json.dumps(mark, ensure_ascii=False) + "\n", sync_parent=False)
            for folder in sorted(ex.dirs | {staging}, key=lambda p: len(p.parts), reverse=True):
                sync_dir(folder)
            replace_dir(staging, output)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    result.linked, result.copied = ex.linked, ex.copied
    result.frames = len(records)
    result.boxes = sum(len(r.boxes) for r in records)
    result.split = {split: sum(1 for r in records if r.split == split) for split in SPLITS}
    return result


def _files(folder: Path) -> set[str]:
    """Every file (and symlink) under ``folder``, as paths relative to it."""
    out = set()
    for top, dirs, names in os.walk(folder):
        rel = Path(top).relative_to(folder)
        out |= {(rel / n).as_posix() for n in names}
        out |= {(rel / d).as_posix() for d in dirs if (Path(top) / d).is_symlink()}
    return out


def _keep_user_files(output: Path, staging: Path, own: set[str]) -> list[str]:
    """Links the files a user added to an earlier export in ``output`` into ``staging``; returns their paths.

    The earlier export's own files are those its mark lists; an export made before marks listed
    them counts every file the new one does not write as the user's. A file of the user's at a
    path the new export writes is an error (nothing is written over).
    """
    if not output.is_dir():
        return []
    try:
        listed = json.loads((output / MARK).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    earlier = set(listed) if isinstance(listed, list) else None
    kept = []
    for rel in sorted(_files(output) - {MARK}):
        if earlier is not None and rel in earlier:
            continue
        if rel in own:
            if earlier is None:
                continue  # an older export's file, written again
            raise OutputError(
                f"{output / rel}: was not written by the earlier export, and the new one writes a file there; "
                "move it out of the export folder first"
            )
        src, dst = output / rel, staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        kept.append(rel)
    for top, dirs, _ in os.walk(output):  # empty folders of the user's too
        for d in dirs:
            rel = (Path(top) / d).relative_to(output)
            if not (Path(top) / d).is_symlink() and not any((Path(top) / d).iterdir()):
                (staging / rel).mkdir(parents=True, exist_ok=True)
    return kept
