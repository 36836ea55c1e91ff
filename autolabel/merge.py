"""``autolabel merge``: product datasets into one, classes united by name.

Every box is remapped to its class's id in the merged class list (once, never once per
class), file names get the product as a prefix (two products' ``1.mp4`` never collide),
train/val membership is kept, and filters may run again. The merged folder is built
beside the target and swapped in whole, so re-running gives the same result and a
crash leaves the old one intact. Only autolabel product datasets are merged: never a
merge output, never a folder that is not a dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.config import FilterConfig
from autolabel.datasets import finalize
from autolabel.datasets import formats as formats_registry
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.formats import Context
from autolabel.datasets.formats.yolo import label_path, yolo_lines
from autolabel.datasets.layout import JOURNAL, MERGED_DIR
from autolabel.datasets.records import FrameRecord, boxes_per_class, dataset_warnings
from autolabel.datasets.state import MERGED as MERGED_KIND
from autolabel.datasets.state import PRODUCT, State, dataset_id
from autolabel.datasets.writer import DatasetWriter
from autolabel.errors import InputError, OutputError
from autolabel.fileio import lock_holder, make_staging_dir, output_errors, replace_dir
from autolabel.naming import SEPARATOR, safe_name
from autolabel.postprocess import FilterStats, apply_filters, filters_active
from autolabel.tracking import BLOCK as TRACK_BLOCK

# Frames merged between two commits of the merged journal (in a staging folder: a failure throws it away).
COMMIT_EVERY = 256

log = logging.getLogger(__name__)

MERGED = MERGED_DIR


@dataclass
class MergeResult:
    """What a merge produced."""

    output: Path
    products: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    frames: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def find_product_datasets(
    root: Path, exclude: Path | None = None, flag: str = "--root"
) -> tuple[list[Path], list[str]]:
    """Finished product datasets directly under ``root`` (given by ``flag``); also why others were skipped."""
    if not root.is_dir():
        raise InputError(
            f"{root}: dataset folder does not exist; run `autolabel run` first, or give the folder that holds "
            f"the product datasets with {flag}"
        )
    found, skipped = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if exclude is not None and folder.resolve() == exclude.resolve():
            continue
        try:
            _check_input(Dataset.peek(folder))
        except InputError as exc:
            holder = lock_holder(folder)  # unfinished because a run is writing it right now
            skipped.append(f"{folder}: in use by {holder}; merge again when it ends" if holder else str(exc))
            continue
        found.append(folder)
    if not found:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise InputError(f"{root}: no finished product datasets to merge{why}")
    return found, skipped


def _check_input(ds: Dataset) -> Dataset:
    folder, state = ds.root, ds.state
    if state.kind != PRODUCT:
        raise InputError(
            f"{folder}: is a {state.kind} dataset; merge outputs are never merged back in "
            "(merge its product datasets instead)"
        )
    if not state.complete:
        raise InputError(f"{folder}: unfinished run; re-run `autolabel run` to complete it before merging")
    if ds.outdated():
        raise InputError(
            f"{folder}: written by an older autolabel (dataset state version {state.version}); re-run "
            "`autolabel run` on it once (nothing is relabeled) to bring its label files to this version's format"
        )
    return ds


def _classes(states: list[tuple[Path, State]], unite_case: bool) -> tuple[list[str], dict[str, str]]:
    """The merged class list (first appearance) and, with ``unite_case``, each name's united spelling."""
    classes: list[str] = []
    spelling: dict[str, str] = {}
    by_fold: dict[str, str] = {}
    for _, state in states:
        for name in state.classes:
            first = by_fold.setdefault(name.casefold(), name)
            spelling[name] = first if unite_case else name
            if spelling[name] not in classes:
                classes.append(spelling[name])
    clashes = sorted({n for n in spelling if n != by_fold[n.casefold()]})
    for name in clashes:
        if unite_case:
            log.info("class %r united with %r (names differing only in case)", name, by_fold[name.casefold()])
        else:
            log.warning(
                "classes %r and %r differ only in case and stay separate; --unite-case merges them",
                by_fold[name.casefold()],
                name,
            )
    return classes, spelling


def _settings(ds: Dataset) -> dict:
    """What a product's frames were written with: its box thresholds (by class name) and filters, for ``eval``."""
    fp = ds.state.fingerprint or {}
    model = fp.get("model") or {}
    keys = ("base_model", "box_threshold", "class_thresholds")
    out = {"model": {k: model[k] for k in keys if k in model}, "filters": fp.get("filters") or {}}
    return out | ({"masks": fp["masks"]} if fp.get("masks") else {})


def _check_labels(folder: Path, record: FrameRecord, masks: bool) -> None:
    path = folder / label_path(record.name)
    try:
        same = path.read_text(encoding="utf-8") == yolo_lines(record, masks)
    except (OSError, UnicodeDecodeError):
        same = False
    if not same:
        raise InputError(
            f"{path}: differs from {folder / JOURNAL} (edited or deleted by hand?); the journal is the dataset's "
            "source of truth: re-run `autolabel run` to restore the file (an edited copy is kept), and bring "
            "corrections in through `autolabel import`"
        )


def merge_datasets(
    inputs: list[Path],
    output: Path,
    filters: FilterConfig | None = None,
    formats: list[str] | None = None,
    unite_case: bool = False,
) -> MergeResult:
    """Merges product datasets into ``output`` (rebuilt whole).

    Args:
        inputs: Product dataset folders.
        output: The merged dataset; must be absent, empty, or an earlier merge output.
        filters: Filters to apply while merging (counted in the result).
        formats: Output formats (default: every format all inputs have).
        unite_case: Unite classes whose names differ only in case (``hand``/``Hand``).
    """
    if not inputs:
        raise InputError("nothing to merge: give product dataset folders")
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: exists and is a file; choose another --output")
    with contextlib.ExitStack() as locks, output_errors(output):
        target = locks.enter_context(Dataset.open(output, "merge", new=True))
        if output.is_dir() and any(output.iterdir()) and (target.state is None or not target.is_merged()):
            raise OutputError(f"{output}: exists and is not a merge output; refusing to write over it")
        resolved_out = output.resolve()
        datasets: list[Dataset] = []
        for folder in inputs:
            if folder.resolve() == resolved_out:
                raise InputError(f"{folder}: is the merge output itself; it is never merged back in")
            datasets.append(_check_input(locks.enter_context(Dataset.open(folder, "merge (reading)"))))
        if formats is None:
            formats = [f for f in formats_registry.names(dataset=True) if all(f in d.formats for d in datasets)]
        return _merge(datasets, output, filters, formats, unite_case)


def _merge(
    datasets: list[Dataset],
    output: Path,
    filters: FilterConfig | None,
    formats: list[str],
    unite_case: bool,
) -> MergeResult:
    # Products by name: the same product twice is a conflict (its files would collide).
    by_slug: dict[str, Dataset] = {}
    for ds in datasets:
        slug = safe_name(str(ds.state.product or ds.root.name))
        if slug.lower() in by_slug:
            other = by_slug[slug.lower()]
            if other.classes != ds.classes:
                raise InputError(
                    f"product {slug!r} appears twice with different class lists: {other.root} has "
                    f"{other.classes}, {ds.root} has {ds.classes}"
                )
            raise InputError(f"product {slug!r} appears twice ({other.root} and {ds.root}); merge one of them")
        by_slug[slug.lower()] = ds

    classes, spelling = _classes([(d.root, d.state) for d in datasets], unite_case)
    index = {name: i for i, name in enumerate(classes)}
    staging = make_staging_dir(output)
    result = MergeResult(output=output, classes=classes)
    masks = any(d.segmented for d in datasets)
    stats = FilterStats()
    active = filters if filters is not None and filters_active(filters) else None
    records: list[FrameRecord] = []
    offset = 0  # track ids stay unique: each product's come after the previous ones'
    try:
        with DatasetWriter(staging, classes, formats, masks=masks) as writer:
            for key in sorted(by_slug):
                ds = by_slug[key]
                shift, offset = offset, offset + (max(ds.state.track_blocks.values(), default=-1) + 1) * TRACK_BLOCK
                folder = ds.root
                slug = safe_name(str(ds.state.product or folder.name))
                result.products.append(slug)
                remap = [index[spelling[name]] for name in ds.classes]
                membership = ds.splits()
                for record in ds.records():
                    if record.dropped is not None:
                        continue
                    source_image = folder / record.image
                    if not source_image.is_file():
                        raise InputError(f"{source_image}: image listed in {folder / JOURNAL} is missing")
                    _check_labels(folder, record, ds.segmented)
                    for box in [*record.boxes, *(record.model_boxes or ())]:
                        box.class_id = remap[box.class_id]
                        if box.track_id is not None:
                            box.track_id += shift
                    record.split = membership.get(record.name, "train")
                    record.product = ds.state.product or slug
                    # Cleaned names never hold "__": "<product>__<frame>" cannot collide.
                    record.name = f"{slug}{SEPARATOR}{record.name}"
                    record.source = f"{slug}{SEPARATOR}{record.source}"
                    if active is not None and apply_filters(record, active, stats):
                        continue
                    writer.add(record, image_file=source_image)
                    records.append(dataclasses.replace(record, boxes=[b.bare() for b in record.boxes]))
                    if len(records) % COMMIT_EVERY == 0:  # the journal lines (masks and all) on disk, not held
                        writer.commit()
        if not records:
            raise OutputError(f"{output}: the merge would have no frames (filters?); the previous output is kept")
        ident = dataset_id(MERGED_KIND, sorted(d.state.id or str(d.root) for d in datasets), classes)
        merged = Dataset(staging, State(kind=MERGED_KIND, classes=classes, formats=list(formats), complete=True))
        # The masks are read back from the merged journal a frame at a time: never all held.
        frames = merged.kept_frames(records) if masks else records
        for note in finalize.write_dataset(staging, frames, Context(classes, output.name, ident, masks), formats):
            log.warning("%s: %s", output, note)
        result.split = {split: sum(1 for r in records if r.split == split) for split in ("train", "val")}
        merged.state.id = ident
        # Relative to the merged dataset: the same wherever the tree is, and it moves with it.
        merged.state.inputs = [os.path.relpath(d.root.resolve(), output.resolve()) for d in datasets]
        merged.state.merge = {"filters": dataclasses.asdict(filters) if filters else None, "unite_case": unite_case}
        merged.state.products = result.products
        merged.state.floor = max((d.state.floor for d in datasets if d.state.floor is not None), default=None)
        merged.state.settings = {d.state.product or d.root.name: _settings(d) for d in datasets}
        merged.state.unscored = sorted(
            f"{safe_name(str(d.state.product or d.root.name))}{SEPARATOR}{name}"
            for d in datasets
            for name in d.state.unscored
        )
        merged.save()
        replace_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.frames = len(records)
    result.boxes_per_class = boxes_per_class(records, classes)
    result.filtered = stats.as_dict()
    result.warnings = dataset_warnings(result.boxes_per_class, result.split)
    return result


def product_folder(merged_root: Path, recorded: Path) -> Path:
    """A merged dataset's product dataset: where the merge found it, else beside the merge (the tree was moved)."""
    for candidate in (recorded, merged_root.parent / recorded.name):
        state = Dataset.state_of(candidate)
        if state is not None and state.kind == "product":
            return candidate
    raise InputError(
        f"{merged_root}: its product dataset {recorded} is gone (not there, nor beside the merge); "
        "import into the product datasets, then merge again"
    )


def merge_again(output: Path) -> MergeResult:
    """Makes a merged dataset again from its products, with the options it was made with (after an import)."""
    state = Dataset.peek(output).state
    inputs = [product_folder(output, output / p) for p in state.inputs]
    options = state.merge or {}
    filters = FilterConfig(**options["filters"]) if options.get("filters") else None
    return merge_datasets(inputs, output, filters, list(state.formats), bool(options.get("unite_case")))
