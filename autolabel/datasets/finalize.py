"""Turns a journaled dataset into its split lists, data.yaml and each format's dataset files."""

from __future__ import annotations

import itertools
import platform
import time
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

import yaml

from autolabel.config import RunConfig, to_dict
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.derive import (
    format_writers,
    record_written,
    sync_dataset_files,
    sync_frame_files,
    write_changes,
)
from autolabel.datasets.formats import Context, written
from autolabel.datasets.formats.base import FrameStream, boxes_only
from autolabel.datasets.formats.yolo import data_yaml_text
from autolabel.datasets.layout import DATA_YAML, IMAGE_SUFFIX, IMAGES, LABELMAP, RUN_YAML, SPLITS
from autolabel.datasets.records import PROBE, FrameRecord, boxes_per_class, dataset_warnings
from autolabel.datasets.split import assign_splits
from autolabel.datasets.state import STATE_VERSION
from autolabel.errors import InputError
from autolabel.fileio import atomic_write_text
from autolabel.jobs import Job, ProductResult
from autolabel.masks import step as mask_step
from autolabel.masks.step import MaskLoader
from autolabel.sampling import sampled_indices
from autolabel.selection import DUPLICATE
from autolabel.tracking import retrack

# The packages whose versions shape the output (run.yaml lists them).
VERSIONED = (
    "torch",
    "torchvision",
    "timm",
    "rf-groundingdino",
    "transformers",
    "supervision",
    "ultralytics",
    "opencv-python-headless",
    "numpy",
)


def split_list_text(records: list[FrameRecord], split: str) -> str:
    """``<split>.txt``: ``./images/<name>.jpg`` lines, relative to the dataset, sorted."""
    return "".join(f"./images/{n}{IMAGE_SUFFIX}\n" for n in sorted(r.name for r in records if r.split == split))


def write_data_yaml(root: Path, classes: list[str], has_val: bool) -> None:
    """Writes an Ultralytics ``data.yaml`` over the split lists, without ``path:`` so the folder can move."""
    atomic_write_text(root / DATA_YAML, data_yaml_text(classes, has_val))


def write_dataset(root: Path, records: list[FrameRecord] | FrameStream, ctx: Context, formats: list[str]) -> list[str]:
    """Writes the split lists, ``data.yaml`` and every format's dataset files; returns notes for the summary.

    Each file is streamed to a temporary file and hashed on the way, then kept under
    ``.autolabel/edited/`` first where it was edited by hand since autolabel wrote it, and put in
    place where it differs.

    Args:
        root: The dataset.
        records: Every kept frame in journal order, each with its split: a list, or a segmentation
            dataset's :class:`FrameStream` (its masks read from the journal on each pass).
        ctx: Classes, title and id.
        formats: The dataset's formats.
    """
    chosen = written(formats)
    boxes = boxes_only(records)  # the split lists and data.yaml need no outline
    has_val = any(r.split == "val" for r in boxes)
    own = {f"{split}.txt": split_list_text(boxes, split).encode() for split in SPLITS}
    own[DATA_YAML] = data_yaml_text(ctx.classes, has_val).encode()
    writers = {rel: (lambda fh, data=data: fh.write(data)) for rel, data in own.items()}
    writers |= format_writers(records, ctx, chosen)
    _, edited = sync_dataset_files(root, writers, keep_edits=True)
    notes = []
    if edited:
        notes.append(
            f"rewrote {len(edited)} dataset files edited by hand since autolabel wrote them ({', '.join(edited)}); "
            "the edited copies are in .autolabel/edited/. They are made from the journal: change the split with "
            "--val-fraction/--seed, the labels with autolabel import"
        )
    return notes + [note for fmt in chosen for note in fmt.notes(ctx)]


def update_class_list(root: Path, classes: list[str], formats: list[str], masks: bool = False) -> None:
    """Rewrites an existing ``data.yaml`` (and the formats' class lists) for a class list that grew.

    A discovering labeler adds classes while a dataset that was finalized before is
    extended; its class lists must name every id a label file on disk uses, at any moment.
    """
    path = root / DATA_YAML
    record_written(root, [DATA_YAML, LABELMAP], forget=True)
    if path.is_file():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        write_data_yaml(root, classes, has_val=data.get("val") != data.get("train"))
    ctx = Context(classes, masks=masks)
    for fmt in written(formats):
        fmt.classes_changed(root, ctx)
    record_written(root, [DATA_YAML, LABELMAP])


def versions() -> dict[str, str]:
    """Versions of the packages that shape the output."""
    from autolabel import __version__

    out = {"autolabel": __version__, "python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _kept(records: Iterable[FrameRecord]) -> Iterator[FrameRecord]:
    return (r for r in records if r.dropped is None)


def _count_chosen(job: Job, config: RunConfig, records: list, result: ProductResult) -> None:
    """``--max-frames``: how many sampled frames of the product's videos there were, and how many it chose."""
    videos = {s.stem: s for s in job.sources if s.is_video}
    sampled = 0
    for source in videos.values():
        try:
            sampled += len(sampled_indices(source, config.sampling.frame_rate, config.sampling.fps))
        except InputError:
            continue  # reported where it is read
    result.sampled_frames = sampled
    result.chosen_frames = sum(1 for r in records if r.source in videos and r.dropped not in (DUPLICATE, PROBE))


def finalize_product(
    ds: Dataset, job: Job, config: RunConfig, result: ProductResult, masks: MaskLoader | None = None
) -> None:
    """Splits, writes data.yaml, every format the dataset has, run.yaml and the summary counts.

    Files derived from the journal (labels, VOC, ...) that disagree with it are written
    again from it, and named. In a segmentation dataset the boxes without a mask then get one
    (:mod:`autolabel.masks.step`; ``masks``: the run's mask model, shared by its products).
    """
    state = ds.state
    classes = list(state.classes)  # the ontology's, and those a discovering labeler added
    # The boxes without their masks: a long video's outlines are never all in memory. Files that hold
    # masks are written from the journal read again as a stream.
    all_records = list(ds.records(masks=False))
    ctx = Context(classes, state.product or job.product.name, state.id, state.segmented)
    chosen = written(state.formats)
    if config.tracking.enabled:  # the kept frames settled on their tracks, from the journal
        start = time.perf_counter()
        videos = {s.stem for s in job.sources if s.is_video}
        tracked = retrack(all_records, config, state.track_blocks, classes, videos)
        result.tracking_seconds = time.perf_counter() - start
        if tracked:  # a box the tracks left in place keeps its mask
            write_changes(ds, all_records, tracked, ctx)
            result.tracked = len(tracked)
    records = [r for r in all_records if r.dropped is None]
    result.duplicate_frames = sum(1 for r in all_records if r.dropped == DUPLICATE)
    probes = sum(1 for r in all_records if r.dropped == PROBE)
    result.dropped_frames = len(all_records) - len(records) - result.duplicate_frames - probes
    if config.sampling.max_frames is not None:
        _count_chosen(job, config, all_records, result)
    d = config.dataset
    splits = assign_splits(records, d.val_fraction, d.seed)
    for r in records:
        r.split = splits[r.name]
    # Frames journaled by this run (the journal's last lines) were just written; earlier ones are checked.
    journaled = result.new_frames + result.new_duplicates + result.new_probes
    earlier = _kept(itertools.islice(ds.records(), len(all_records) - journaled))
    # A re-derivation (new box thresholds, mask settings) not yet in every file, or an older autolabel's
    # label files: the files follow the journal. Otherwise a file that disagrees with it is a hand edit, kept.
    pending, outdated = state.pending, ds.outdated()
    synced = sync_frame_files(job.out, earlier, ctx, chosen, keep_edits=not (pending or outdated))
    state.pending = False
    if outdated:
        if synced and not pending:
            result.notes.append(
                f"rewrote {len(synced)} label files from the journal in this version's format "
                f"(dataset state version {state.version} -> {STATE_VERSION})"
            )
        ds.upgrade([r.name for r in all_records if r.reviewed])
    elif not pending:
        result.repaired += synced
    if state.segmented:  # after every change to the boxes (thresholds, filters, reviews, tracks): their outlines
        loader = masks or MaskLoader(config.masks, config.model.device, config.model.precision, config.cache_dir)
        result.masks = mask_step.apply(ds, loader, job.product.name)
    listed = {r.name for r in records}
    stray = sorted(p.name for p in (job.out / IMAGES).glob(f"*{IMAGE_SUFFIX}") if p.stem not in listed)
    if stray:
        result.notes.append(
            f"{len(stray)} images in {job.out / IMAGES} are not in the journal (e.g. {stray[0]}), so not in the "
            "dataset: lines removed from detections.jsonl by hand? --overwrite relabels the product"
        )
    frames = ds.kept_frames(records) if state.segmented else records  # the masks read as a stream
    result.notes += write_dataset(job.out, frames, ctx, state.formats)
    result.split = {split: sum(1 for r in records if r.split == split) for split in SPLITS}
    result.frames = len(records)
    result.reviewed_frames = sum(1 for r in records if r.reviewed)
    result.boxes_per_class = boxes_per_class(records, classes)
    result.empty_frames = sum(1 for r in records if not r.boxes)
    result.warnings = dataset_warnings(result.boxes_per_class, result.split)
    run_info = {
        "product": job.product.name,
        "ontology": job.ontology.to_mapping(),
        "classes": classes,
        # Where it ran (the engine) is no setting of the labels: a dataset is the same file for file either way.
        "config": {k: v for k, v in to_dict(config).items() if k != "engine"} | {"products": [job.product.name]},
        "model": state.model or {"files": state.model_files()},
        **({"masks": (state.fingerprint or {}).get("masks")} if state.segmented else {}),
        "frames": {
            "kept": len(records),
            "dropped_as_duplicates": result.duplicate_frames,
            "dropped_by_filters": result.dropped_frames,
        },
        "versions": versions(),
    }
    atomic_write_text(
        job.out / RUN_YAML,
        "# Written by autolabel run: the settings these labels were made with.\n"
        + yaml.safe_dump(run_info, sort_keys=False, allow_unicode=True),
    )
    state.complete = True
    state.source_errors = list(result.errors)
    ds.save()
