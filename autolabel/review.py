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
from autolabel.datasets.derive import format_writers, sync_dataset_files, sync_frame_files
from autolabel.datasets.formats.label_studio import (
    CONFIG_FILE,
    TASKS_FILE,
    default_url_prefix,
    label_studio_tasks,
    labeling_config,
)
from autolabel.datasets.records import FrameRecord
from autolabel.errors import ConfigError, InputError
from autolabel.fileio import atomic_write_text, output_errors

__all__ = ["CONFIG_FILE", "TASKS_FILE", "export_label_studio", "repair_derived", "sync_derived"]


def review_queue(ds: Dataset, records: list[FrameRecord], n: int) -> list[FrameRecord]:
    """The ``n`` unreviewed frames the review queue puts first, in its order; an error when none is left.

    ``records``: every kept frame of ``ds`` (the queue ranks each against its neighbours).
    """
    from autolabel.queue import for_dataset

    if n < 1:
        raise ConfigError(f"--review {n}: give how many frames to review (1 or more)")
    by_name = {r.name: r for r in records}
    chosen = [by_name[e.name] for e in for_dataset(ds, records)[:n] if e.name in by_name]
    if not chosen:
        raise InputError(f"{ds.root}: every frame is reviewed already; nothing left in the review queue")
    return chosen


def export_label_studio(root: Path, url_prefix: str | None = None, review: int | None = None) -> tuple[Path, Path, int]:
    """Writes ``label_studio_tasks.json`` and ``label_studio_config.xml`` into the dataset.

    Args:
        root: The dataset.
        url_prefix: Prefix of image URLs; default Label Studio's local-files storage with
            ``LOCAL_FILES_DOCUMENT_ROOT`` set to the dataset's parent folder.
        review: Only the N frames the review queue puts first (``--review N``), in its order.

    Returns the tasks file, the config file and how many tasks were written.
    """
    with output_errors(root), Dataset.open(root, "export") as ds:
        prefix = url_prefix if url_prefix is not None else default_url_prefix(root)
        records = ds.kept()
        if review is not None:
            records = review_queue(ds, records, review)
        tasks_path, config_path = root / TASKS_FILE, root / CONFIG_FILE
        masks = ds.segmented
        tasks = label_studio_tasks(records, ds.classes, prefix, ds.state.id, ordered=review is not None, masks=masks)
        atomic_write_text(tasks_path, json.dumps(tasks, indent=1))
        atomic_write_text(config_path, labeling_config(ds.classes, masks))
    return tasks_path, config_path, len(tasks)


def sync_derived(ds: Dataset, records: list[FrameRecord], names: set[str] | None = None) -> int:
    """Makes the frame files (of ``names``, when given) and the dataset files agree with ``records``.

    Dataset files (COCO's, VOC's labelmap) are written for a finished dataset only (an unfinished
    one gets them when its run finishes); frames in no split are left out of them, as finalizing
    leaves them out. Returns how many files were written.
    """
    ctx = ds.context()
    chosen = formats.written(ds.formats)
    written = len(sync_frame_files(ds.root, records, ctx, chosen, names))
    if ds.complete:
        split_records = ds.with_splits(strict=False)
        written += len(sync_dataset_files(ds.root, format_writers(split_records, ctx, chosen))[0])
    return written


def repair_derived(root: Path) -> int:
    """Rewrites every derived file that disagrees with the journal; returns how many files it rewrote."""
    with output_errors(root), Dataset.open(root, "repair") as ds:
        return sync_derived(ds, ds.kept())
