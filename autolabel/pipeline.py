"""``autolabel run``: wires sources, sampling, a labeler and the dataset writer per product.

Decoding runs on a prefetch thread and writing on a worker thread, so the model is
never waiting for either. A product's output holds a journal: a re-run skips the
frames it lists, and refuses to mix labels made with other settings.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import yaml

from autolabel import __version__, progress
from autolabel.config import FORMATS, RunConfig, to_dict
from autolabel.datasets import finalize
from autolabel.datasets.finalize import repair_derived
from autolabel.datasets.layout import (
    IMAGE_SUFFIX,
    IMAGES,
    JOURNAL,
    RUN_YAML,
    STATE,
    STATE_DIR,
    STATE_VERSION,
    FrameRecord,
    boxes_per_class,
    read_journal,
    read_state,
    repair_journal,
    write_state,
)
from autolabel.datasets.split import assign_splits
from autolabel.datasets.writer import DatasetWriter, encode_jpeg
from autolabel.errors import AutolabelError, InputError, OutputError
from autolabel.fileio import (
    TMP_MARK,
    FolderLock,
    atomic_write_text,
    output_errors,
    remove_stale_temporaries,
    sync_dir,
)
from autolabel.identity import DigestCache, source_identity
from autolabel.labelers.base import CLASS_NAME, Labeler
from autolabel.merge import MERGED
from autolabel.ontology import Ontology
from autolabel.postprocess import FilterStats, apply_filters, filters_active, nms, to_boxes
from autolabel.sampling import Frame, estimated_count, frame_name, iter_frames
from autolabel.selection import DUPLICATE, SIGNAL, Deduper, embedding, farthest_point, thumbnail
from autolabel.sources import Product, Source, discover_products, list_sources
from autolabel.threads import Worker, prefetch
from autolabel.weights import cache_dir

log = logging.getLogger(__name__)


ENCODE_THREADS = 4
BACKUPS = ".autolabel-backups"
RESERVED_OUTPUTS = {MERGED}


@dataclass
class ProductResult:
    """What one product's run did (plain data for the summary)."""

    product: str
    output: Path | None = None
    frames: int = 0
    new_frames: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    empty_frames: int = 0
    dropped_frames: int = 0  # by filters
    duplicate_frames: int = 0  # left out as near-duplicates (--dedup), never labeled
    new_duplicates: int = 0  # of those, found by this run
    seconds: float = 0.0
    split: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[tuple[str, bool]] = field(default_factory=list)  # (path, it differed: else it was missing)
    reviewed_frames: int = 0

    @property
    def fps(self) -> float:
        """Frames labeled per second in this run."""
        return self.new_frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors


@dataclass
class Job:
    product: Product
    ontology: Ontology
    sources: list[Source]
    out: Path
    done: dict[str, set[int]]  # source stem -> frame indices journaled (labeled or dropped)
    pending: int  # frames to label, estimated from headers (for the progress bar)
    needs_work: bool
    state: dict | None  # the dataset's state when resuming; None: start afresh
    relabel: bool = False  # --overwrite: the old dataset goes, once labeling starts
    reviewed: int = 0  # frames holding an imported review
    notes: list[str] = field(default_factory=list)
    missing_images: int = 0  # journaled frames whose image was deleted: labeled again
    source_ids: dict[str, str] = field(default_factory=dict)  # file name -> content identity, read once
    duplicates: dict[str, set[int]] = field(default_factory=dict)  # source stem -> indices journaled as duplicates


@dataclass(frozen=True)
class SourceEnd:
    """Every kept frame of ``source`` was read: it is complete once the frames before this are journaled."""

    source: Source


@dataclass(frozen=True)
class Duplicate:
    """A sampled frame left out as a near-duplicate of the last kept one: journaled, never labeled."""

    source: Source
    index: int
    t: float
    width: int
    height: int

    def record(self) -> FrameRecord:
        name = frame_name(self.source.stem, self.index)
        return FrameRecord(name, self.source.stem, self.index, self.t, self.width, self.height, dropped=DUPLICATE)


@dataclass(frozen=True)
class _NewClasses:
    """The class list grew (a discovering labeler named new classes): recorded before any frame that uses them."""

    classes: tuple[str, ...]


@dataclass(frozen=True)
class SourceFailed:
    """Reading ``source`` stopped with ``message``: frames before it are kept, it stays incomplete."""

    source: Source
    message: str


@dataclass
class Labeled:
    """A labeled frame on its way to the writer.

    Attributes:
        record: Its journal record, boxes after NMS (filters are the writer's).
        image: Its pixels (BGR), or its JPEG bytes when encoded already (by a Ray actor).
        names: Each box's class name, for a labeler with open-ended classes (the record's
            class ids are then provisional); None otherwise.
    """

    record: FrameRecord
    image: np.ndarray | bytes
    names: tuple[str, ...] | None = None


# What an engine hands the writer, per product, in frame order.
Event = Labeled | Duplicate | SourceEnd | SourceFailed


def model_files(mc, cache: str | None) -> dict[str, Path | None]:
    """Where the files that make the model are on disk now (None: not yet); nothing downloads."""
    from autolabel.fetch import locate
    from autolabel.labelers import model_files as files_of

    root = cache_dir(cache)
    return {f.key: locate(f, root) for f in files_of(mc, cache)}


def model_identity(mc, cache: str | None) -> dict[str, str | None]:
    """What each model file is (None where it is not on disk yet): sha256, cached by path, size and mtime.

    A hub model (``--hf-model ORG/NAME``) counts by its cached snapshot's commit, ``ORG/NAME@<sha>``.
    """
    from autolabel.fetch import identity, locate
    from autolabel.labelers import model_files as files_of

    root = cache_dir(cache)
    digests = DigestCache(root)
    try:
        found = [(f, locate(f, root)) for f in files_of(mc, cache)]
        return {f.key: identity(f, path, digests) if path is not None else None for f, path in found}
    finally:
        digests.save()


def fingerprint(config: RunConfig, ontology: Ontology, model_id: dict[str, str | None] | None = None) -> dict:
    """The settings that decide a product's labels; a resumed run must match them.

    Model files count by content (sha256), not by name: a retrained ``best.pt`` under
    the same name is another model.
    """
    m, s = config.model, config.sampling
    return {
        "ontology": ontology.to_mapping(),
        "sampling": {
            "frame_rate": s.frame_rate if s.fps is None else None,
            "fps": s.fps,
            # Absent unless set, so datasets made before these settings existed resume as they are.
            **({"dedup": s.dedup} if s.dedup else {}),
            **({"max_frames": s.max_frames} if s.max_frames is not None else {}),
            **({"selection_signal": SIGNAL} if s.dedup or s.max_frames is not None else {}),
        },
        "model": {
            "base_model": m.base_model,
            "files": dict(model_id or {}),
            "box_threshold": m.box_threshold,
            "text_threshold": m.text_threshold,
            "nms_iou": m.nms_iou,
            "image_size": m.image_size,
            "max_size": m.max_size,
            "precision": m.precision,
            # Only for discover, so datasets of the other models resume as they are.
            **({"discover": _discover_settings(m.discover)} if m.base_model == "discover" else {}),
        },
        "filters": dataclasses.asdict(config.filters),
        "jpeg_quality": config.dataset.jpeg_quality,
    }


def _discover_settings(dc) -> dict:
    """The discovery knobs that shape labels (the weights count by content, in ``files``)."""
    return {k: v for k, v in dataclasses.asdict(dc).items() if k not in ("backbone_weights", "classifier_weights")}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if prefix == "model.files." and (a is None or b is None):
            continue  # a file not on disk yet: checked again once the model is loaded
        if isinstance(a, dict) and isinstance(b, dict) and key != "ontology":
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            if key == "ontology":
                diffs.append("ontology.json changed")
            elif prefix == "model.files.":
                diffs.append(f"model file {key} has other content (sha256 {a[:12]}... -> {b[:12]}...)")
            else:
                diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


def _check_target(out: Path, product: str) -> dict | None:
    """The state of ``out`` when it holds this product's dataset, None when absent or empty; refuses anything else."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is a file; remove it or choose another --output")
    state = read_state(out) if out.is_dir() else None
    # A run killed before its first state write leaves only an empty .autolabel/: that is an empty folder.
    leftovers = (
        [e for e in out.iterdir() if not (e.name == STATE_DIR and e.is_dir() and not any(e.iterdir()))]
        if (out.is_dir())
        else []
    )
    if state is None and leftovers:
        raise OutputError(f"{out}: exists and is not an autolabel dataset; remove it or choose another --output")
    if state is not None and state.get("kind") != "product":
        raise OutputError(
            f"{out}: holds a {state.get('kind')} dataset, not product {product!r}'s; choose another --output"
        )
    return state


def _source_changes(
    state: dict, sources: list[Source], done: dict[str, set[int]], ids: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Sources replaced since their frames were labeled (hard changes), and sources gone (soft)."""
    recorded = state.get("sources", {})
    replaced = []
    present = {s.path.name for s in sources}
    for source in sources:
        info = recorded.get(source.path.name)
        if info and done.get(info["stem"]) and info.get("id") != ids[source.path.name]:
            replaced.append(f"{source.path.name} was replaced since its frames were labeled")
    gone = [
        f"{name} is gone; its {len(done.get(info['stem'], ()))} frames are kept (--overwrite relabels without them)"
        for name, info in sorted(recorded.items())
        if name not in present and done.get(info["stem"])
    ]
    return replaced, gone


def _carry_renames(state: dict, sources: list[Source], ids: dict[str, str]) -> list[Source]:
    """A source renamed since it was labeled (same content, new name) keeps its stem and frames.

    Without this, the renamed file would be labeled again under a new stem while the old
    frames stay: every frame twice, and twins across train and val.
    """
    recorded = state.get("sources", {})
    present = {s.path.name for s in sources}
    gone = {info.get("id"): name for name, info in recorded.items() if name not in present}
    if not gone:
        return sources
    carried = []
    for source in sources:
        old = gone.pop(ids[source.path.name], None) if source.path.name not in recorded else None
        if old is not None:
            entry = recorded.pop(old)
            recorded[source.path.name] = entry
            source = dataclasses.replace(source, stem=entry["stem"])
            log.info("%s: %s was renamed to %s; its frames are kept", source.path.parent, old, source.path.name)
        carried.append(source)
    return carried


def _plan(product: Product, config: RunConfig, output: Path, overwrite: bool, model_id: dict[str, str | None]) -> Job:
    """Decides, without writing, what a product's run does: start, resume, relabel, or refuse."""
    if product.slug.lower() in RESERVED_OUTPUTS:
        raise InputError(
            f"{product.folder}: the product name {product.name!r} is reserved for merge output; rename the folder"
        )
    if config.model.base_model == "discover" and not product.ontology_path.exists():
        ontology = Ontology.empty()  # every discovered object keeps its ImageNet-21k name
    else:
        ontology = Ontology.load(product.ontology_path)
    out = output / product.slug
    state = _check_target(out, product.name)
    recorded = {name: info["stem"] for name, info in (state or {}).get("sources", {}).items()}
    sources = list_sources(product, recorded)
    ids = {s.path.name: source_identity(s.path) for s in sources}
    if state is not None:
        sources = _carry_renames(state, sources, ids)
    records = list(read_journal(out, len(state["classes"]))) if state is not None else []
    done: dict[str, set[int]] = {}
    for record in records:
        done.setdefault(record.source, set()).add(record.index)
    relabel, notes = False, []
    reviewed = sum(1 for r in records if r.reviewed)
    if state is not None:
        changes = _differences(state.get("fingerprint") or {}, fingerprint(config, ontology, model_id))
        replaced, gone = _source_changes(state, sources, done, ids)
        changes += replaced
        if changes or (overwrite and gone):
            if not overwrite:
                raise OutputError(
                    f"{out}: was labeled with other settings or sources ({'; '.join(changes[:3])}); "
                    "re-run with --overwrite to relabel it, or pick another --output"
                )
            if reviewed and product.name not in (config.products or []):
                raise OutputError(
                    f"{out}: holds {reviewed} reviewed frames (autolabel import) and would be relabeled "
                    f"({'; '.join((changes or gone)[:2])}); to relabel it anyway, name it: "
                    f"--overwrite --product {product.name!r} (the reviewed labels are backed up first)"
                )
            relabel, state, done, records = True, None, {}, []
        else:
            notes = gone
    duplicates: dict[str, set[int]] = {}
    for record in records:
        if record.dropped == DUPLICATE:
            duplicates.setdefault(record.source, set()).add(record.index)
    complete = {name for name, info in (state or {}).get("sources", {}).items() if info.get("complete")}
    pending = 0  # for the progress bar only: a source is done when read to its end, whatever its header says
    s = config.sampling
    for source in sources:
        if source.path.name not in complete:
            try:
                count = estimated_count(source, s.frame_rate, s.fps)
                if s.max_frames is not None and source.is_video:
                    count = min(count, s.max_frames)
            except InputError:
                count = 1  # reported when it is read
            pending += max(0, count - len(done.get(source.stem, ())))
    missing = _missing_images(out, records, state, sources)
    needs_work = state is None or bool(missing) or any(src.path.name not in complete for src in sources)
    job = Job(product, ontology, sources, out, done, pending, needs_work, state, relabel, notes=notes)
    job.reviewed = reviewed
    job.missing_images = len(missing)
    job.source_ids = ids
    job.duplicates = duplicates
    return job


def _missing_images(out: Path, records: list[FrameRecord], state: dict | None, sources: list[Source]) -> list:
    """Journaled frames whose image is gone; an error when one cannot be made again."""
    missing = [r for r in records if r.dropped is None and not (out / r.image).is_file()]
    if not missing:
        return []
    by_stem = {info["stem"]: name for name, info in state["sources"].items()}
    present = {s.path.name for s in sources}
    lost = [r for r in missing if r.reviewed or by_stem.get(r.source) not in present]
    if lost:
        raise InputError(
            f"{out / lost[0].image}: image missing and cannot be made again "
            f"({'it holds a review' if lost[0].reviewed else 'its source is gone'}; {len(lost)} such frames); "
            "restore it, or relabel with --overwrite"
        )
    return missing


def _new_state(job: Job, config: RunConfig, model_id: dict[str, str | None]) -> dict:
    return {
        "kind": "product",
        "version": STATE_VERSION,
        "product": job.product.name,
        "classes": list(job.ontology.classes),
        "fingerprint": fingerprint(config, job.ontology, model_id),
        "formats": list(config.dataset.formats),
        "sources": {},
        "complete": False,
    }


def init_output(job: Job, config: RunConfig, model_id: dict[str, str | None]) -> dict:
    """Creates (or, for --overwrite, replaces) the product's folder; records its sources before any frame.

    Returns the state as written. An --overwrite moves the old folder aside in one
    rename before deleting it, so a crash leaves either the old dataset or none, never
    a half-deleted one that claims to be complete.
    """
    out = job.out
    if job.relabel and out.exists():
        if job.reviewed:
            backup = out.parent / BACKUPS / f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            backup.mkdir(parents=True, exist_ok=True)
            for name in (JOURNAL, STATE, RUN_YAML):
                if (out / name).is_file():
                    shutil.copy2(out / name, backup / Path(name).name)
            log.warning("%s: %d reviewed frames backed up to %s before relabeling", out, job.reviewed, backup)
        aside = out.with_name(f".{out.name}{TMP_MARK}overwritten")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(out, aside)
        sync_dir(out.parent)
        shutil.rmtree(aside)
    out.mkdir(parents=True, exist_ok=True)
    repair_journal(out)
    state = dict(job.state) if job.state is not None else _new_state(job, config, model_id)
    state["complete"] = False  # unfinished again until finalized
    state["formats"] = sorted(set(state.get("formats", [])) | set(config.dataset.formats), key=FORMATS.index)
    sources = dict(state.get("sources", {}))
    for source in job.sources:
        info = dict(sources.get(source.path.name) or {"stem": source.stem, "complete": False})
        identity = job.source_ids[source.path.name]
        if info.get("id") != identity:  # new, or changed before any of its frames was labeled
            info["id"], info["complete"] = identity, False
        sources[source.path.name] = info
    state["sources"] = sources
    write_state(out, state)
    return state


def selects(source: Source, config: RunConfig) -> bool:
    """Whether a source's frames are chosen by comparing them (--dedup, --max-frames): a sequential pass."""
    return source.is_video and (config.sampling.max_frames is not None or bool(config.sampling.dedup))


def source_frames(source: Source, config: RunConfig, done: set[int], duplicates: set[int]) -> Iterator:
    """A source's pending frames in order: each a Frame to label, or a Duplicate (--dedup) to journal.

    Raises:
        InputError: The source cannot be read (after the frames read before the problem).
    """
    s = config.sampling
    if source.is_video and s.max_frames is not None:
        yield from _chosen_frames(source, config, done)
    elif source.is_video and s.dedup:
        yield from _deduplicated(source, config, done, duplicates)
    else:
        yield from iter_frames(source, s.frame_rate, s.fps, skip=done)


def _items(job: Job, config: RunConfig, complete: set[str]) -> Iterator[Frame | SourceEnd | SourceFailed]:
    """The pending frames of every unfinished source, each source closed by an end (or failure) marker."""
    for source in job.sources:
        if source.path.name in complete:
            continue
        done, duplicates = job.done.get(source.stem, set()), job.duplicates.get(source.stem, set())
        try:
            yield from source_frames(source, config, done, duplicates)
        except InputError as exc:
            yield SourceFailed(source, str(exc))
            continue
        yield SourceEnd(source)


def _decode_one(source: Source, config: RunConfig, index: int) -> np.ndarray | None:
    """The thumbnail of one sampled frame, decoded again (None when it does not decode)."""
    s = config.sampling
    with contextlib.closing(iter_frames(source, s.frame_rate, s.fps, only={index})) as frames:
        frame = next(frames, None)
    return thumbnail(frame.image) if frame is not None and frame.index == index else None


def _duplicate(frame: Frame) -> Duplicate:
    h, w = frame.image.shape[:2]
    return Duplicate(frame.source, frame.index, frame.t, w, h)


def _deduplicated(source: Source, config: RunConfig, done: set[int], duplicates: set[int]) -> Iterator:
    """The pending sampled frames of a video, each a Frame to label or a Duplicate of the last kept one.

    Each decision compares a frame with the last frame kept before it, whichever run kept it:
    one kept by an earlier run (a resumed run, or a frame relabeled because its image was
    lost) is decoded again, so a resumed run decides as an uninterrupted one.
    """
    s = config.sampling
    earlier = sorted(done - duplicates)  # kept (labeled) by earlier runs
    dedup = Deduper(s.dedup)
    for frame in iter_frames(source, s.frame_rate, s.fps, skip=done):
        before = bisect.bisect_left(earlier, frame.index)
        if before and (dedup.reference is None or dedup.reference[0] < earlier[before - 1]):
            ref = _decode_one(source, config, earlier[before - 1])
            dedup.reference = (earlier[before - 1], ref) if ref is not None else None
        if dedup.check(frame.index, thumbnail(frame.image)) is None:
            yield frame
        else:
            yield _duplicate(frame)


def _chosen_frames(source: Source, config: RunConfig, done: set[int]) -> Iterator:
    """``--max-frames``: the pending frames of the N most diverse sampled frames, and the duplicates, in order.

    A first pass decodes every sampled frame and keeps only its embedding (and, with
    ``--dedup``, drops near-duplicates of the last kept frame there); farthest-point
    selection then picks N; a second pass decodes only those. A resumed run makes the
    same first pass, so it picks the same frames.
    """
    s = config.sampling
    dedup = Deduper(s.dedup) if s.dedup else None
    dups: list[Duplicate] = []
    indices: list[int] = []
    embeddings: list[np.ndarray] = []
    failure: InputError | None = None
    try:
        for frame in iter_frames(source, s.frame_rate, s.fps):
            thumb = thumbnail(frame.image)
            if dedup is not None and dedup.check(frame.index, thumb) is not None:
                dups.append(_duplicate(frame))
                continue
            indices.append(frame.index)
            embeddings.append(embedding(thumb))
    except InputError as exc:  # a truncated file: choose among the frames it has, report it after them
        if not indices:
            raise
        failure = exc
    chosen = [indices[i] for i in farthest_point(np.stack(embeddings), s.max_frames)] if indices else []
    del embeddings
    pending = [d for d in dups if d.index not in done]
    k = 0
    for frame in iter_frames(source, s.frame_rate, s.fps, skip=done, only=chosen):
        while k < len(pending) and pending[k].index < frame.index:
            yield pending[k]
            k += 1
        yield frame
    yield from pending[k:]
    if failure is not None:
        raise failure


def batches(items: Iterator, size: int) -> Iterator[list[Frame | Duplicate] | SourceEnd | SourceFailed]:
    """Batches of at most ``size`` frames of one size (a frame's labels never depend on its batch-mates).

    Duplicates ride along in their place (they are journaled in frame order, never labeled);
    markers pass through in order, closing the batch before them.
    """
    batch: list[Frame | Duplicate] = []
    frames, shape = 0, None  # the batch's frame count and their image shape
    for item in items:
        if isinstance(item, Duplicate):
            batch.append(item)
            continue
        if not isinstance(item, Frame):
            if batch:
                yield batch
                batch, frames, shape = [], 0, None
            yield item
            continue
        if shape is not None and shape != item.image.shape:
            yield batch
            batch, frames = [], 0
        batch.append(item)
        frames, shape = frames + 1, item.image.shape
        if frames >= size:
            yield batch
            batch, frames, shape = [], 0, None
    if batch:
        yield batch


def versions() -> dict[str, str]:
    """Versions of the packages that shape the output."""
    out = {"autolabel": __version__, "python": platform.python_version()}
    for dist in (
        "torch",
        "torchvision",
        "timm",
        "rf-groundingdino",
        "transformers",
        "supervision",
        "ultralytics",
        "opencv-python-headless",
        "numpy",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def labeled_frame(frame: Frame, detections, nms_iou: float) -> Labeled:
    """A labeled frame with its journal record: the model's boxes after class-aware NMS (filters come later).

    A labeler with open-ended classes names each box's class (``data[CLASS_NAME]``): NMS then
    goes by name, and the record's class ids are provisional until the writer numbers the
    names in the dataset's class list.
    """
    named = CLASS_NAME in detections.data
    if named:
        local: dict[str, int] = {}
        names = [str(n) for n in detections.data[CLASS_NAME]]
        detections.class_id = np.array([local.setdefault(n, len(local)) for n in names], dtype=int)
    det = nms(detections, nms_iou)
    h, w = frame.image.shape[:2]
    record = FrameRecord(frame.name, frame.source.stem, frame.index, frame.t, w, h, to_boxes(det))
    if not named:
        return Labeled(record, frame.image)
    return Labeled(record, frame.image, tuple(str(n) for n in det.data[CLASS_NAME]) if len(det) else ())


def label_batch(labeler: Labeler, batch: list, ontology: Ontology, nms_iou: float) -> list[Labeled | Duplicate]:
    """Labels one batch's frames in one call; its duplicates stay in their place, unlabeled."""
    frames = [f for f in batch if isinstance(f, Frame)]
    detections = labeler.label([f.image for f in frames], ontology) if frames else []
    labeled = iter(list(zip(frames, detections, strict=True)))
    out: list[Labeled | Duplicate] = []
    for item in batch:
        if isinstance(item, Duplicate):
            out.append(item)
        else:
            frame, det = next(labeled)
            out.append(labeled_frame(frame, det, nms_iou))
    return out


def complete_sources(state: dict) -> set[str]:
    """File names of the sources a dataset's state records as read to their end."""
    return {name for name, info in state["sources"].items() if info.get("complete")}


def local_events(job: Job, config: RunConfig, labeler: Labeler, state: dict) -> Iterator[Event]:
    """The local engine: decoding on a prefetch thread, the labeler in this process, batch by batch."""
    items = prefetch(_items(job, config, complete_sources(state)), depth=max(8, 2 * labeler.batch_size))
    with contextlib.closing(items):
        for batch in batches(items, labeler.batch_size):
            if isinstance(batch, SourceEnd | SourceFailed):
                yield batch
            else:
                yield from label_batch(labeler, batch, job.ontology, config.model.nms_iou)


def write_product(
    job: Job,
    config: RunConfig,
    result: ProductResult,
    state: dict,
    events: Generator[Event, None, None],
    status: Callable[[], dict] | None = None,
) -> None:
    """Writes and journals an engine's events for one product, in their order; marks each source
    complete once read to its end. Every engine writes through here, so their datasets are identical.

    ``status`` (optional) gives the progress bar's postfix (a Ray run's active actors).
    """
    classes = list(state["classes"])  # grows as a discovering labeler names new classes
    class_ids = {name: i for i, name in enumerate(classes)}
    writer = DatasetWriter(job.out, classes, state["formats"], config.dataset.jpeg_quality)
    stats = FilterStats()
    filters = config.filters if filters_active(config.filters) else None
    done_count = sum(len(v) for v in job.done.values())

    quality = config.dataset.jpeg_quality
    # JPEG encoding and the files' writes and fsyncs run on a small pool (OpenCV and the OS
    # release the GIL); one thread puts the files in place and journals them, in frame
    # order, committing in groups.
    encoders = ThreadPoolExecutor(max_workers=ENCODE_THREADS, thread_name_prefix="autolabel-jpeg")
    finished: list[str] = []  # sources read to their end, marked complete at the next commit

    def stage(record: FrameRecord, image: np.ndarray | bytes) -> list:
        return writer.stage(record, image if isinstance(image, bytes) else encode_jpeg(image, quality))

    def write(item) -> None:
        if isinstance(item, SourceEnd):
            finished.append(item.source.path.name)
            return
        if isinstance(item, _NewClasses):
            # Before the files and journal lines that use the new ids: a crash leaves none of
            # them pointing past the recorded list (and a finished dataset's lists name them too).
            state["classes"] = list(item.classes)
            write_state(job.out, state)
            finalize.update_class_list(job.out, state["classes"])
            return
        record, staged = item
        writer.add(record, staged=staged.result() if staged is not None else [])

    def commit() -> None:
        writer.commit()
        if finished:
            for name in finished:
                state["sources"][name]["complete"] = True
            finished.clear()
            write_state(job.out, state)

    worker = Worker(write, depth=4 * ENCODE_THREADS + 8, flush=commit)
    bar = progress.bar(done_count + job.pending, job.product.name, initial=done_count)
    try:
        with contextlib.closing(events):
            for event in events:
                if isinstance(event, SourceFailed):
                    log.error("%s", event.message)
                    result.errors.append(event.message)
                    continue
                if isinstance(event, SourceEnd):
                    worker.put(event)
                    continue
                if isinstance(event, Duplicate):
                    worker.put((event.record(), None))
                    result.new_duplicates += 1
                else:
                    record = event.record
                    if event.names is not None and _number_classes(record, event.names, class_ids):
                        writer.classes[:] = list(class_ids)
                        worker.put(_NewClasses(tuple(class_ids)))
                    if filters is not None:
                        record.dropped = apply_filters(record, filters, stats)
                    staged = encoders.submit(stage, record, event.image) if record.dropped is None else None
                    worker.put((record, staged))
                    result.new_frames += 1
                if status is not None:
                    bar.set_postfix(status(), refresh=False)
                bar.update(1)
    finally:
        bar.close()
        try:
            worker.close()
        finally:
            encoders.shutdown(wait=True)
            writer.close()
    result.filtered = stats.as_dict()


def _number_classes(record: FrameRecord, names: tuple[str, ...], class_ids: dict[str, int]) -> bool:
    """Gives ``record``'s boxes the ids of their class names, numbering new names in order; True when some were new."""
    before = len(class_ids)
    for box, name in zip(record.boxes, names, strict=True):
        box.class_id = class_ids.setdefault(name, len(class_ids))
    return len(class_ids) > before


def _restore_missing_images(job: Job, state: dict) -> None:
    """Unjournals frames whose image was deleted, so this run labels them again."""
    records = list(read_journal(job.out, len(state["classes"])))
    missing = {r.name: r for r in records if r.dropped is None and not (job.out / r.image).is_file()}
    if not missing:
        return
    by_stem = {info["stem"]: name for name, info in state["sources"].items()}
    atomic_write_text(job.out / JOURNAL, "".join(r.to_json() + "\n" for r in records if r.name not in missing))
    for r in missing.values():
        state["sources"][by_stem[r.source]]["complete"] = False
        job.done.get(r.source, set()).discard(r.index)
    write_state(job.out, state)
    log.warning("%s: %d frames had lost their image; labeling them again", job.out, len(missing))


def finalize_product(job: Job, config: RunConfig, result: ProductResult, state: dict) -> None:
    """Splits, writes data.yaml, every format the dataset has, run.yaml and the summary counts.

    Files derived from the journal (labels, VOC, COCO) that disagree with it are written
    again from it, and named.
    """
    classes = list(state["classes"])  # the ontology's, and those a discovering labeler added
    all_records = list(read_journal(job.out, len(classes)))
    records = [r for r in all_records if r.dropped is None]
    result.duplicate_frames = sum(1 for r in all_records if r.dropped == DUPLICATE)
    result.dropped_frames = len(all_records) - len(records) - result.duplicate_frames
    d = config.dataset
    splits = assign_splits(records, d.val_fraction, d.seed)
    for r in records:
        r.split = splits[r.name]
    formats = state["formats"]
    # Frames journaled by this run (the journal's last lines) were just written; earlier ones are checked.
    journaled = result.new_frames + result.new_duplicates
    earlier = [r for r in all_records[: len(all_records) - journaled] if r.dropped is None]
    if state["version"] < STATE_VERSION:  # an older autolabel's label files: rewritten in today's format
        upgraded = repair_derived(job.out, earlier, classes, formats, keep_edits=False)
        if upgraded:
            result.notes.append(
                f"rewrote {len(upgraded)} label files from the journal in this version's format "
                f"(dataset state version {state['version']} -> {STATE_VERSION})"
            )
        state["version"] = STATE_VERSION
    else:
        result.repaired = repair_derived(job.out, earlier, classes, formats)
    listed = {r.name for r in records}
    stray = sorted(p.name for p in (job.out / IMAGES).glob(f"*{IMAGE_SUFFIX}") if p.stem not in listed)
    if stray:
        result.notes.append(
            f"{len(stray)} images in {job.out / IMAGES} are not in the journal (e.g. {stray[0]}), so not in the "
            "dataset: lines removed from detections.jsonl by hand? --overwrite relabels the product"
        )
    result.split = finalize.write_split_lists(job.out, records)
    finalize.write_data_yaml(job.out, classes, has_val=result.split.get("val", 0) > 0)
    if "coco" in formats:
        finalize.write_coco(job.out, records, classes)
    if "voc" in formats and (problem := finalize.write_labelmap(job.out, classes)):
        result.notes.append(f"no labelmap.txt: {problem}")
    result.frames = len(records)
    result.reviewed_frames = sum(1 for r in records if r.reviewed)
    result.boxes_per_class = boxes_per_class(records, classes)
    result.empty_frames = sum(1 for r in records if not r.boxes)
    run_info = {
        "product": job.product.name,
        "ontology": job.ontology.to_mapping(),
        "classes": classes,
        # Where it ran (the engine) is no setting of the labels: a dataset is the same file for file either way.
        "config": {k: v for k, v in to_dict(config).items() if k != "engine"} | {"products": [job.product.name]},
        "model": state.get("model") or {"files": model_files_of(state)},
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
    state["complete"] = True
    state["source_errors"] = list(result.errors)
    write_state(job.out, state)


def model_files_of(state: dict) -> dict[str, str | None]:
    """The model files' sha256 that a dataset was labeled with."""
    return dict(sorted(state["fingerprint"]["model"]["files"].items()))


def _check_layout(input_dir: Path, output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: output path exists and is a file; choose a folder for --output")
    try:
        inside = output.resolve().is_relative_to(input_dir.resolve())
    except OSError:
        inside = False
    if inside:
        raise OutputError(
            f"{output}: the output folder is inside the input folder {input_dir}; it would be read as a product. "
            "Choose an --output outside it"
        )


def run(
    config: RunConfig,
    labeler_factory: Callable[[], Labeler],
    overwrite: bool = False,
) -> list[ProductResult]:
    """Labels every product under ``config.input`` into ``config.output``.

    Bad input in one product is reported in its result and the others go on;
    errors that concern the whole run (missing weights, an unusable output folder)
    raise. Each product's folder is locked for the whole run: a second process on the
    same product stops at once with a message naming the holder.
    """
    input_dir, output = Path(config.input), Path(config.output)
    if config.engine.name == "ray":
        from autolabel.engines.ray_engine import import_ray

        import_ray()  # not installed: say so before any work
    _check_layout(input_dir, output)
    products = discover_products(input_dir, config.products or None)
    model_id = model_identity(config.model, config.cache_dir)
    results: list[ProductResult] = []
    jobs: list[tuple[Job | None, ProductResult]] = []
    with contextlib.ExitStack() as locks:
        with output_errors(output):
            output.mkdir(parents=True, exist_ok=True)
        for product in products:
            result = ProductResult(product.name)
            try:
                with output_errors(output):
                    locks.enter_context(FolderLock(output / product.slug, "run"))
                    remove_stale_temporaries(output, prefix=product.slug)
                    remove_stale_temporaries(output / product.slug)  # ours now: what a killed run left
                job = _plan(product, config, output, overwrite, model_id)
                result.output = job.out
                result.notes += job.notes
            except AutolabelError as exc:
                log.error("%s", exc)
                result.errors.append(str(exc))
                job = None
            jobs.append((job, result))
            results.append(result)
        labeler: Labeler | None = None
        engine = None
        working = [job for job, _ in jobs if job is not None and job.needs_work]
        if working:
            if config.engine.name == "ray":
                from autolabel.engines.ray_engine import RayEngine

                engine = locks.enter_context(RayEngine(config, labeler_factory))
                labeler = engine.model([job.ontology for job in working])
            else:
                labeler = labeler_factory()
            loaded = model_identity(config.model, config.cache_dir)  # files the labeler downloaded count now
            if loaded != model_id:
                for i, (job, result) in enumerate(jobs):
                    if job is None or job.state is None:
                        continue
                    diffs = _differences(job.state.get("fingerprint") or {}, fingerprint(config, job.ontology, loaded))
                    if diffs:
                        msg = f"{job.out}: was labeled with another model ({diffs[0]}); re-run with --overwrite"
                        log.error("%s", msg)
                        result.errors.append(msg)
                        result.output = None
                        jobs[i] = (None, result)
                model_id = loaded
        if engine is None:
            for job, result in jobs:
                if job is None:
                    continue
                state = _start_job(job, config, labeler, result, model_id)
                if state is not None:
                    events = local_events(job, config, labeler, state) if job.needs_work else None
                    _finish_job(job, config, result, state, events)
        else:
            # Every product's folder is ready before the first frame is labeled: the cluster then
            # labels all products in one stream, and the products are written one after the other.
            started = [(job, result, _start_job(job, config, labeler, result, model_id)) for job, result in jobs if job]
            started = [(job, result, state) for job, result, state in started if state is not None]
            stream = engine.stream([(job, state) for job, _, state in started if job.needs_work])
            for job, result, state in started:
                events = stream.events(job) if job.needs_work else None
                _finish_job(job, config, result, state, events, stream.status)
    return results


def _start_job(
    job: Job, config: RunConfig, labeler: Labeler | None, result: ProductResult, model_id: dict[str, str | None]
) -> dict | None:
    """Makes a job's folder ready to be written: its state, lost images unjournaled, the model recorded.

    Returns the state, or None when the product failed (the error is in its result).
    """
    start = time.perf_counter()
    try:
        if job.needs_work:
            if labeler is None:
                raise InputError(f"{job.product.folder}: frames to label but no model was loaded")
            labeler.prepare(job.ontology)  # an ontology the model cannot label creates nothing
        with output_errors(job.out):
            state = init_output(job, config, model_id)
            if job.missing_images:
                _restore_missing_images(job, state)
            if job.needs_work:
                model = labeler.describe() | {"files": model_files_of(state)}
                if state.get("model") != model:
                    state["model"] = model
                    write_state(job.out, state)
        return state
    except (InputError, OutputError) as exc:
        log.error("%s: %s", job.product.name, exc)
        result.errors.append(str(exc))
        result.output = None
        return None
    finally:
        result.seconds += time.perf_counter() - start


def _finish_job(
    job: Job,
    config: RunConfig,
    result: ProductResult,
    state: dict,
    events: Generator[Event, None, None] | None,
    status: Callable[[], dict] | None = None,
) -> None:
    """Writes a job's labeled frames (``events``, None when it has none to label), then finalizes it."""
    start = time.perf_counter()
    try:
        with output_errors(job.out):
            if events is not None:
                write_product(job, config, result, state, events, status)
            finalize_product(job, config, result, state)
    except (InputError, OutputError) as exc:
        log.error("%s: %s", job.product.name, exc)
        result.errors.append(str(exc))
        result.output = None if not result.new_frames else result.output
    finally:
        result.seconds += time.perf_counter() - start
