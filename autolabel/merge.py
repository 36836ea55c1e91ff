"""``autolabel merge``: product datasets into one, classes united by name.

Every box is remapped to its class's id in the merged class list (once, never once per
class), file names get the product as a prefix (two products' ``1.mp4`` never collide),
train/val membership is kept, and filters may run again. The merged folder is built
beside the target and swapped in whole, so re-running gives the same result and a
crash leaves the old one intact. Only autolabel product datasets are merged: never a
merge output, never a folder that is not a dataset.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.config import FilterConfig
from autolabel.datasets import finalize
from autolabel.datasets.layout import (
    JOURNAL,
    STATE_VERSION,
    FrameRecord,
    boxes_per_class,
    read_journal,
    read_splits,
    read_state,
    require_state,
    write_state,
)
from autolabel.datasets.writer import DatasetWriter
from autolabel.errors import InputError, OutputError
from autolabel.fileio import TMP_MARK, replace_dir
from autolabel.naming import safe_name
from autolabel.postprocess import FilterStats, apply_filters, filters_active

log = logging.getLogger(__name__)

MERGED = "merged"


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


def find_product_datasets(root: Path, exclude: Path | None = None) -> tuple[list[Path], list[str]]:
    """Finished product datasets directly under ``root``; also why others were skipped."""
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder does not exist; run `autolabel run` first")
    found, skipped = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if exclude is not None and folder.resolve() == exclude.resolve():
            continue
        try:
            _check_input(folder)
        except InputError as exc:
            skipped.append(str(exc))
            continue
        found.append(folder)
    if not found:
        raise InputError(f"{root}: no finished product datasets to merge")
    return found, skipped


def _check_input(folder: Path) -> dict:
    state = require_state(folder)
    if state.get("kind") != "product":
        raise InputError(
            f"{folder}: is a {state.get('kind')} dataset; merge outputs are never merged back in "
            "(merge its product datasets instead)"
        )
    if not state.get("complete"):
        raise InputError(f"{folder}: unfinished run; re-run `autolabel run` to complete it before merging")
    return state


def merge_datasets(
    inputs: list[Path], output: Path, filters: FilterConfig | None = None, formats: list[str] | None = None
) -> MergeResult:
    """Merges product datasets into ``output`` (rebuilt whole).

    Args:
        inputs: Product dataset folders.
        output: The merged dataset; must be absent, empty, or an earlier merge output.
        filters: Filters to apply while merging (counted in the result).
        formats: Output formats (default: yolo, voc).
    """
    formats = formats or ["yolo", "voc"]
    if not inputs:
        raise InputError("nothing to merge: give product dataset folders")
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: exists and is a file; choose another --output")
    if output.is_dir() and any(output.iterdir()):
        state = read_state(output)
        if state is None or state.get("kind") != MERGED:
            raise OutputError(f"{output}: exists and is not a merge output; refusing to write over it")
    resolved_out = output.resolve()
    states: list[tuple[Path, dict]] = []
    for folder in inputs:
        if folder.resolve() == resolved_out:
            raise InputError(f"{folder}: is the merge output itself; it is never merged back in")
        states.append((folder, _check_input(folder)))

    # Products by name: the same product twice is a conflict (its files would collide).
    by_slug: dict[str, tuple[Path, dict]] = {}
    for folder, state in states:
        slug = safe_name(str(state.get("product") or folder.name))
        if slug in by_slug:
            other, other_state = by_slug[slug]
            if other_state.get("classes") != state.get("classes"):
                raise InputError(
                    f"product {slug!r} appears twice with different class lists: {other} has "
                    f"{other_state.get('classes')}, {folder} has {state.get('classes')}"
                )
            raise InputError(f"product {slug!r} appears twice ({other} and {folder}); merge one of them")
        by_slug[slug] = (folder, state)

    classes: list[str] = []
    for _, state in states:
        for name in state.get("classes", []):
            if name not in classes:
                classes.append(name)
    index = {name: i for i, name in enumerate(classes)}

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}{TMP_MARK}", dir=output.parent))
    result = MergeResult(output=output, classes=classes, products=sorted(by_slug))
    stats = FilterStats()
    active = filters if filters is not None and filters_active(filters) else None
    records: list[FrameRecord] = []
    try:
        with DatasetWriter(staging, classes, formats) as writer:
            for slug in sorted(by_slug):
                folder, state = by_slug[slug]
                remap = [index[name] for name in state.get("classes", [])]
                membership = read_splits(folder)
                for record in read_journal(folder):
                    if record.dropped is not None:
                        continue
                    source_image = folder / record.image
                    if not source_image.is_file():
                        raise InputError(f"{source_image}: image listed in {folder / JOURNAL} is missing")
                    for box in record.boxes:
                        box.class_id = remap[box.class_id]
                    record.split = membership.get(record.name, "train")
                    record.product = state.get("product") or slug
                    record.name = f"{slug}_{record.name}"
                    record.source = f"{slug}_{record.source}"
                    if active is not None and apply_filters(record, active, stats):
                        continue
                    writer.add(record, image_file=source_image)
                    records.append(record)
        result.split = finalize.write_split_lists(staging, records)
        finalize.write_data_yaml(staging, classes, has_val=result.split.get("val", 0) > 0)
        if "coco" in formats:
            finalize.write_coco(staging, records, classes)
        write_state(
            staging,
            {
                "kind": MERGED,
                "version": STATE_VERSION,
                "classes": classes,
                "sources": [str(f) for f, _ in states],
                "products": result.products,
                "complete": True,
            },
        )
        replace_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.frames = len(records)
    result.boxes_per_class = boxes_per_class(records, classes)
    result.filtered = stats.as_dict()
    return result
