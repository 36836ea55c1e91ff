"""The review round trip's dataset side: Label Studio tasks written into a dataset, derived files kept in step.

``report --export label-studio`` writes Label Studio tasks into the dataset (``autolabel
import`` brings the review back: :mod:`autolabel.imports`). :func:`sync_derived` makes a
dataset's frame files and dataset files agree with its journal, the source of truth.
"""

from __future__ import annotations

import json
from pathlib import Path

from autolabel.datasets import formats
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.derive import sync_dataset_files, sync_frame_files
from autolabel.datasets.formats import Context
from autolabel.datasets.formats.label_studio import (
    CONFIG_FILE,
    TASKS_FILE,
    default_url_prefix,
    label_studio_tasks,
    labeling_config,
)
from autolabel.datasets.records import FrameRecord
from autolabel.errors import InputError
from autolabel.fileio import atomic_write_text, output_errors

# Boxes a reviewer left in place (within rounding) keep their coordinates and confidences.
SAME_BOX_PX = 0.01

__all__ = ["CONFIG_FILE", "TASKS_FILE", "export_label_studio", "repair_derived", "sync_derived"]


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
        atomic_write_text(
            tasks_path, json.dumps(label_studio_tasks(records, ds.classes, prefix, ds.state.id), indent=1)
        )
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
