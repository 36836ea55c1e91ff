"""The review round trip: frames out to a review tool, corrections back into the dataset.

``report --export label-studio`` writes Label Studio tasks into the dataset. ``autolabel
import`` reads a reviewed file or folder in any format the registry can read (Label
Studio's JSON export, CVAT, COCO, YOLO, VOC, ...), checks all of it, then replaces each
reviewed frame's boxes in the journal (one atomic rewrite, the frame marked ``reviewed``,
and only then in the files derived from
it. The derived files are made to agree with the journal first, so an import killed half
way is finished by the next import (or run). Boxes drawn or changed by a person get no
confidence; a frame accepted as it was keeps its boxes and their confidences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from autolabel.datasets import formats
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.derive import sync_dataset_files, sync_frame_files
from autolabel.datasets.formats import Context, ReadContext
from autolabel.datasets.formats.label_studio import (
    CONFIG_FILE,
    TASKS_FILE,
    default_url_prefix,
    label_studio_tasks,
    labeling_config,
)
from autolabel.datasets.records import Box, FrameRecord
from autolabel.errors import ConfigError, InputError
from autolabel.fileio import atomic_write_text, output_errors

# Boxes a reviewer left in place (within rounding) keep their coordinates and confidences.
SAME_BOX_PX = 0.01

__all__ = ["CONFIG_FILE", "TASKS_FILE", "ImportResult", "export_label_studio", "import_annotations"]


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
    with output_errors(root), Dataset.open(root, "export") as ds:
        prefix = url_prefix if url_prefix is not None else default_url_prefix(root)
        records = ds.kept()
        if flagged:
            records = only_flagged(root, records, ds.classes)
        tasks_path, config_path = root / TASKS_FILE, root / CONFIG_FILE
        atomic_write_text(tasks_path, json.dumps(label_studio_tasks(records, ds.classes, prefix), indent=1))
        atomic_write_text(config_path, labeling_config(ds.classes))
    return tasks_path, config_path


def sync_derived(ds: Dataset, records: list[FrameRecord], names: set[str] | None = None) -> int:
    """Makes the frame files (of ``names``, when given) and the dataset files agree with ``records``.

    Dataset files (COCO's, VOC's labelmap) are written for a finished dataset only (an unfinished
    one gets them when its run finishes); frames in no split are left out of them, as finalizing
    leaves them out. Returns how many files were written.
    """
    ctx = Context(ds.classes, ds.name, ds.state.id)
    chosen = formats.written(ds.formats)
    written = len(sync_frame_files(ds.root, records, ctx, chosen, names))
    if ds.complete:
        split_records = ds.with_splits(strict=False)
        written += len(sync_dataset_files(ds.root, split_records, ctx, chosen))
    return written


def repair_derived(root: Path) -> int:
    """Rewrites every derived file that disagrees with the journal; returns how many files it rewrote."""
    with output_errors(root), Dataset.open(root, "repair") as ds:
        return sync_derived(ds, ds.kept())


@dataclass
class ImportResult:
    """What an import changed."""

    frames_reviewed: int
    frames_changed: int
    boxes_before: int
    boxes_after: int
    reviewed_total: int = 0
    frames_total: int = 0
    source_format: str = ""


def _same_boxes(old: list[Box], new: list[Box]) -> bool:
    def same(a: Box, b: Box) -> bool:
        pairs = zip((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2), strict=True)
        return a.class_id == b.class_id and all(abs(p - q) <= SAME_BOX_PX for p, q in pairs)

    return len(old) == len(new) and all(same(a, b) for a, b in zip(old, new, strict=True))


def detect_format(source: Path) -> str:
    """The registered format that ``source`` looks like; ConfigError when none or several do."""
    if not source.exists():
        raise InputError(f"{source}: does not exist")
    found = [name for name, fmt in formats.registry().items() if fmt.readable() and fmt.detect(source)]
    if not found and source.is_file() and source.suffix.lower() == ".json":
        return "label-studio"  # what `import` always read: its reader says what is wrong with the file
    if len(found) != 1:
        readable = [n for n, f in formats.registry().items() if f.readable()]
        what = "no format" if not found else f"several formats ({', '.join(found)})"
        raise ConfigError(f"{source}: looks like {what}; name it with --from ({', '.join(readable)})")
    return found[0]


def import_annotations(root: Path, source: Path, from_: str | None = None) -> ImportResult:
    """Replaces reviewed frames' boxes with those ``source`` holds (a file or folder in format ``from_``).

    Holds the dataset's lock throughout. First finishes an earlier import that was killed
    (the derived files are made to agree with the journal), then reads and checks the whole
    source, then rewrites the journal once (reviewed frames get their new boxes and
    ``reviewed``), and only then the derived files of the frames that changed.
    """
    name = from_ or detect_format(source)
    fmt = formats.get(name)
    if not fmt.readable():
        readable = [n for n, f in formats.registry().items() if f.readable()]
        raise ConfigError(f"--from {name}: autolabel cannot read that format; choose one of {', '.join(readable)}")
    state = Dataset.peek(root).state
    if state.kind != "product":
        raise InputError(
            f"{root}: is a {state.kind} dataset, rebuilt whole by every merge, so a review imported here would "
            "be lost; import into the product datasets (their frame names are the part after '__'), then merge again"
        )
    with output_errors(root), Dataset.open(root, "import") as ds:
        records = list(ds.records())
        kept = [r for r in records if r.dropped is None]
        sync_derived(ds, kept)
        if ds.outdated():  # its derived files are now in this version's format
            ds.upgrade([r.name for r in records if r.reviewed])
            ds.save()
        by_name = {r.name: r for r in kept}
        ctx = ReadContext(ds.classes, {r.name: (r.width, r.height) for r in kept})
        reviews = fmt.read(source, ctx).frames
        before = sum(len(by_name[n].boxes) for n in reviews)
        changed: set[str] = set()
        journal_changed = False
        for r in kept:
            boxes = reviews.get(r.name)
            if boxes is None:
                continue
            if not _same_boxes(r.boxes, boxes):
                if r.model_boxes is None:  # the model's boxes were the frame's: kept beside the review
                    r.model_boxes = r.boxes
                r.boxes = boxes
                changed.add(r.name)
            journal_changed |= not r.reviewed
            r.reviewed = True
        if changed or journal_changed:
            ds.rewrite_journal(records)
            sync_derived(ds, kept, changed)  # COCO says which frames were reviewed, changed or not
    return ImportResult(
        frames_reviewed=len(reviews),
        frames_changed=len(changed),
        boxes_before=before,
        boxes_after=sum(len(b) for b in reviews.values()),
        reviewed_total=sum(1 for r in by_name.values() if r.reviewed),
        frames_total=len(by_name),
        source_format=name,
    )


def import_label_studio(root: Path, export: Path) -> ImportResult:
    """Brings a Label Studio JSON export's reviewed tasks into the dataset."""
    return import_annotations(root, export, "label-studio")
