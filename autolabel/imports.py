"""``autolabel import``: corrections from any review tool back into the dataset.

Reads a reviewed file or folder in any format the registry can read (Label Studio's JSON
export, CVAT for images 1.1, COCO as CVAT, FiftyOne and our export write it, a YOLO labels
folder as labelImg or a run's ``.autolabel/edited/`` copies leave it, a VOC Annotations
folder), checks all of it, then replaces each reviewed frame's boxes in the journal (one
atomic rewrite, the frame marked ``reviewed``, the model's own boxes kept beside the
reviewer's) and only then the files derived from it, and refreshes ``report.html``.

- **Identity.** Our exports carry the dataset's id (Label Studio task data, COCO ``info``,
  the ``.autolabel-export.json`` marker of an export folder). A source carrying another
  dataset's id is refused before its frames are looked at (their names may well match:
  another product filmed with the same file names), and nothing is written; one without an
  id (a labelImg folder, a file another tool re-exported) is matched by frame name, and the
  result says so.
- **Bad input.** Every reader checks the whole source first and raises one line naming the
  file and the place. A box with no width or height is refused from every source (the
  journal still holds one where a model gave it), as is a class the dataset lacks where a
  box uses it (a class list may name more: labelImg's predefined classes, CVAT's labels).
- **What counts as reviewed.** Every frame the source holds (an annotated task for Label
  Studio); the others are untouched. A frame whose boxes are the same within the format's
  precision keeps its boxes and their scores.
- **Masks** (a segmentation dataset) come back with their boxes where the format holds them
  (:mod:`autolabel.masks.review`); a box drawn or moved gets its mask from the dataset's mask model
  when it is on disk (:mod:`autolabel.masks.step`), else its box polygon until a run makes one.
- **Merged datasets.** Each frame goes to its product dataset, and the merge is made again.

The derived files are made to agree with the journal first, so an import killed half way
is finished by the next import (or run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autolabel.datasets import formats
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.formats import Annotations, Format, ReadContext
from autolabel.datasets.formats.base import marker_id
from autolabel.datasets.records import Box, FrameRecord
from autolabel.errors import ConfigError, InputError
from autolabel.fileio import output_errors
from autolabel.masks import step as mask_step
from autolabel.masks.geometry import TOLERANCE
from autolabel.masks.review import merge as merge_masks
from autolabel.masks.step import MaskCounts, MaskLoader
from autolabel.naming import SEPARATOR
from autolabel.review import sync_derived

# Boxes a reviewer left in place (within rounding) keep their coordinates and confidences.
SAME_BOX_PX = 0.01


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
    matched_by_name: bool = False  # the source carried no dataset id
    products: list[str] | None = None  # a merged dataset's products that took frames
    masks: MaskCounts | None = None  # a segmentation dataset's boxes and masks after the import


def readable() -> list[str]:
    """The formats ``import`` can read."""
    return [n for n, f in formats.registry().items() if f.readable()]


def detect_format(source: Path) -> str:
    """The registered format that ``source`` looks like; ConfigError when none or several do."""
    if not source.exists():
        raise InputError(f"{source}: does not exist")
    found = [name for name, fmt in formats.registry().items() if fmt.readable() and fmt.detect(source)]
    if not found and source.is_file() and source.suffix.lower() == ".json":
        return "label-studio"  # what `import` always read: its reader says what is wrong with the file
    if len(found) != 1:
        what = "no format" if not found else f"several formats ({', '.join(found)})"
        raise ConfigError(f"{source}: looks like {what}; name it with --from ({', '.join(readable())})")
    return found[0]


def _format(name: str | None, source: Path) -> tuple[str, Format]:
    name = name or detect_format(source)
    fmt = formats.get(name)
    if not fmt.readable():
        raise ConfigError(f"--from {name}: autolabel cannot read that format; choose one of {', '.join(readable())}")
    return name, fmt


def _read(fmt: Format, source: Path, ds: Dataset, kept: list) -> Annotations:
    """Everything ``source`` says, checked: another dataset's source is refused before its frames are looked at.

    The export folder's marker is checked first, the readers check an id inside the file
    as soon as they find it, and the id a (plug-in) reader returns is checked last.
    """
    ctx = ReadContext(ds.classes, {r.name: (r.width, r.height) for r in kept}, ds.state.id, str(ds.root))
    ctx.check_id(marker_id(source), source)
    found = fmt.read(source, ctx)
    ctx.check_id(found.dataset_id, source)
    return found


def import_annotations(root: Path, source: Path, from_: str | None = None) -> ImportResult:
    """Replaces reviewed frames' boxes with those ``source`` holds (a file or folder in format ``from_``).

    Holds the dataset's lock throughout. First finishes an earlier import that was killed
    (the derived files are made to agree with the journal), then reads and checks the whole
    source, then rewrites the journal once (reviewed frames get their new boxes and
    ``reviewed``), and only then the derived files of the frames that changed.
    """
    name, fmt = _format(from_, source)
    if Dataset.peek(root).is_merged():
        return _import_merged(root, source, name, fmt)
    with output_errors(root), Dataset.open(root, "import") as ds:
        records = list(ds.records())
        found = _read(fmt, source, ds, [r for r in records if r.dropped is None])
        result = apply_review(ds, records, found.frames, fmt)
    result.source_format, result.matched_by_name = name, found.dataset_id is None
    _refresh_report(root)
    return result


def apply_review(ds: Dataset, records: list[FrameRecord], reviews: dict[str, list[Box]], fmt: Format) -> ImportResult:
    """Writes reviewed frames into an opened product dataset (``records``: its journal): the journal, then the files."""
    kept = [r for r in records if r.dropped is None]
    sync_derived(ds, kept)
    if ds.outdated():  # its derived files are now in this version's format
        ds.upgrade([r.name for r in records if r.reviewed])
        ds.save()
    by_name = {r.name: r for r in kept}
    before = sum(len(by_name[n].boxes) for n in reviews)
    changed: set[str] = set()
    journal_changed = False
    mask_tolerance = float(((ds.state.fingerprint or {}).get("masks") or {}).get("tolerance", TOLERANCE))
    for r in kept:
        boxes = reviews.get(r.name)
        if boxes is None:
            continue
        tolerance = max(SAME_BOX_PX, fmt.tolerance(r.width, r.height))
        merged = merge_masks(r.boxes, boxes, fmt, r.width, r.height, tolerance, mask_tolerance)
        if merged is not None:
            new_boxes, boxes_changed, _ = merged
            if boxes_changed and r.model_boxes is None:  # the model's boxes were the frame's: kept beside the review
                r.model_boxes = [b.bare() for b in r.boxes]
            r.boxes = new_boxes
            changed.add(r.name)
        journal_changed |= not r.reviewed
        r.reviewed = True
    masks = None
    if changed or journal_changed:
        ds.rewrite_journal(records)
        if ds.segmented:  # boxes drawn or moved get their masks where the dataset's mask model is at hand
            masks = mask_step.apply(ds, MaskLoader(cache=None), reviewed=True)
            if masks.frames:  # their boxes have masks now (some empty)
                kept = ds.kept()
        sync_derived(ds, kept, changed)  # COCO says which frames were reviewed, changed or not
    elif ds.segmented:
        masks = mask_step.count(records)
    return ImportResult(
        frames_reviewed=len(reviews),
        frames_changed=len(changed),
        boxes_before=before,
        boxes_after=sum(len(b) for b in reviews.values()),
        reviewed_total=sum(1 for r in by_name.values() if r.reviewed),
        frames_total=len(by_name),
        masks=masks,
    )


def _product_folder(merged: Dataset, product: str) -> Path:
    """The folder of the product dataset that a merged dataset's frames of ``product`` came from."""
    from autolabel.merge import product_folder
    from autolabel.naming import safe_name

    for recorded in merged.state.inputs:
        folder = product_folder(merged.root, merged.root / recorded)
        state = Dataset.state_of(folder)
        if safe_name(state.product or folder.name) == safe_name(product):
            return folder
    raise InputError(f"{merged.root}: no product dataset of {product!r} among this merge's inputs")


def _import_merged(root: Path, source: Path, name: str, fmt: Format) -> ImportResult:
    """Sends each reviewed frame of a merged dataset to its product, then merges again with the same options."""
    from autolabel.merge import merge_again

    merged = Dataset.peek(root)
    kept = [r for r in merged.records() if r.dropped is None]
    found = _read(fmt, source, merged, kept)
    by_name = {r.name: r for r in kept}
    per_product: dict[str, dict[str, list[Box]]] = {}
    for frame, boxes in found.frames.items():
        record = by_name[frame]
        product = record.product or frame.split(SEPARATOR, 1)[0]
        per_product.setdefault(product, {})[frame.split(SEPARATOR, 1)[1]] = boxes
    total = ImportResult(0, 0, 0, 0, source_format=name, matched_by_name=found.dataset_id is None, products=[])
    folders = {product: _product_folder(merged, product) for product in per_product}  # all found before any write
    for product, frames in sorted(per_product.items()):
        folder = folders[product]
        with output_errors(folder), Dataset.open(folder, "import") as ds:
            remap = {}
            for c, cls in enumerate(merged.classes):
                match = [i for i, own in enumerate(ds.classes) if own == cls or own.casefold() == cls.casefold()]
                remap[c] = match[0] if match else None
            for frame, boxes in frames.items():
                for b in boxes:
                    if remap[b.class_id] is None:
                        raise InputError(f"{source}: frame {frame!r}: class {merged.classes[b.class_id]!r} is not "
                                         f"one of product {product!r}'s classes {ds.classes}")  # fmt: skip
                    b.class_id = remap[b.class_id]
            part = apply_review(ds, list(ds.records()), frames, fmt)
        for key in ("frames_reviewed", "frames_changed", "boxes_before", "boxes_after"):
            setattr(total, key, getattr(total, key) + getattr(part, key))
        total.products.append(product)
        _refresh_report(folder)
    merge_again(root)
    again = Dataset.peek(root)
    reviewed = [r for r in again.records() if r.dropped is None]
    total.reviewed_total, total.frames_total = sum(r.reviewed for r in reviewed), len(reviewed)
    _refresh_report(root)
    return total


def _refresh_report(root: Path) -> None:
    """An existing ``report.html`` is written again: it shows the review."""
    if (root / "report.html").is_file():
        from autolabel.report import write_report

        write_report(root)


def import_label_studio(root: Path, export: Path) -> ImportResult:
    """Brings a Label Studio JSON export's reviewed tasks into the dataset."""
    return import_annotations(root, export, "label-studio")
