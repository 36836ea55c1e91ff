"""``autolabel run``: wires sources, sampling, a labeler and the dataset writer per product.

Decoding runs on a prefetch thread and writing on a worker thread, so the model is
never waiting for either. A product's output holds a journal: a re-run skips the
frames it lists, and refuses to mix labels made with other settings.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

from autolabel import __version__, progress
from autolabel.config import RunConfig, to_dict
from autolabel.datasets import finalize
from autolabel.datasets.layout import (
    RUN_YAML,
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
from autolabel.fileio import atomic_write_text, remove_stale_temporaries
from autolabel.labelers.base import Labeler
from autolabel.merge import MERGED
from autolabel.ontology import Ontology
from autolabel.postprocess import FilterStats, apply_filters, filters_active, nms, to_boxes
from autolabel.sampling import Frame, expected_count, iter_frames
from autolabel.sources import Product, Source, discover_products, list_sources
from autolabel.threads import Worker, prefetch
from autolabel.weights import GROUNDING_DINO_WEIGHTS
from autolabel.yolo import DEFAULT_ULTRALYTICS_WEIGHTS

log = logging.getLogger(__name__)

DEFAULT_CONFIG_NAME = "GroundingDINO_SwinT_OGC.py"

ENCODE_THREADS = 4
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
    dropped_frames: int = 0
    seconds: float = 0.0
    split: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames labeled per second in this run."""
        return self.new_frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors


@dataclass
class _Job:
    product: Product
    ontology: Ontology
    sources: list[Source]
    out: Path
    done: dict[str, set[int]]
    pending: int
    resume: bool


def fingerprint(config: RunConfig, ontology: Ontology) -> dict:
    """The settings that decide a product's labels; a resumed run must match them."""
    m, s = config.model, config.sampling

    def base(p: str | None, default: str) -> str:
        return Path(p).name if p else default

    gdino = m.base_model == "grounding-dino"
    return {
        "ontology": ontology.to_mapping(),
        "sampling": {"frame_rate": s.frame_rate if s.fps is None else None, "fps": s.fps},
        "model": {
            "base_model": m.base_model,
            # File names, defaults resolved: the same model passed by path or found in the cache matches.
            "weights": base(m.weights, GROUNDING_DINO_WEIGHTS.name) if gdino else None,
            "model_config": base(m.model_config, DEFAULT_CONFIG_NAME) if gdino else None,
            "text_encoder": base(m.text_encoder, "bert-base-uncased") if gdino else None,
            "base_weights": None if gdino else base(m.base_weights, DEFAULT_ULTRALYTICS_WEIGHTS),
            "box_threshold": m.box_threshold,
            "text_threshold": m.text_threshold,
            "nms_iou": m.nms_iou,
            "image_size": m.image_size,
            "max_size": m.max_size,
            "precision": m.precision,
        },
        "filters": dataclasses.asdict(config.filters),
        "jpeg_quality": config.dataset.jpeg_quality,
    }


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "ontology":
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}" if key != "ontology" else "ontology.json changed")
    return diffs


def check_output(out: Path, config: RunConfig, ontology: Ontology, product: str, overwrite: bool) -> dict | None:
    """Checks, without writing, that ``out`` may receive this product's labels.

    Returns the dataset's state when ``out`` holds this product's labels made with the
    same settings (resume), None when it must be created (or cleared, with ``overwrite``).
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is a file; remove it or choose another --output")
    state = read_state(out) if out.is_dir() else None
    if out.is_dir() and state is None and any(out.iterdir()):
        raise OutputError(f"{out}: exists and is not an autolabel dataset; remove it or choose another --output")
    if state is None:
        return None
    if state.get("kind") != "product":
        raise OutputError(
            f"{out}: holds a {state.get('kind')} dataset, not product {product!r}'s; choose another --output"
        )
    if overwrite:
        return None
    wanted = fingerprint(config, ontology)
    if state.get("fingerprint") != wanted:
        diffs = _differences(state.get("fingerprint") or {}, wanted)
        raise OutputError(
            f"{out}: was labeled with other settings ({'; '.join(diffs[:3])}); "
            "re-run with --overwrite to relabel it, or pick another --output"
        )
    return state


def init_output(job: _Job, config: RunConfig) -> None:
    """Creates (or, when not resuming, clears) the product's output folder and its state."""
    if not job.resume and job.out.exists():
        shutil.rmtree(job.out)
    job.out.mkdir(parents=True, exist_ok=True)
    state = read_state(job.out)
    if state is not None and state.get("complete"):
        write_state(job.out, state | {"complete": False})  # unfinished again until finalized
    if state is None:
        write_state(
            job.out,
            {
                "kind": "product",
                "version": STATE_VERSION,
                "product": job.product.name,
                "classes": list(job.ontology.classes),
                "fingerprint": fingerprint(config, job.ontology),
                "complete": False,
            },
        )
    remove_stale_temporaries(job.out)


def _plan(product: Product, config: RunConfig, output: Path, overwrite: bool) -> _Job:
    if product.slug.lower() in RESERVED_OUTPUTS:
        raise InputError(
            f"{product.folder}: the product name {product.name!r} is reserved for merge output; rename the folder"
        )
    ontology = Ontology.load(product.ontology_path)
    sources = list_sources(product)
    out = output / product.slug
    state = check_output(out, config, ontology, product.name, overwrite)
    resume = state is not None
    if resume:
        recorded = state.get("sources", {})
        for source in sources:
            if source.stem in recorded and recorded[source.stem] != _source_id(source):
                raise OutputError(
                    f"{source.path}: changed since {out} was labeled from it; re-run with --overwrite to relabel "
                    "the product, or give the new file another name"
                )
    done: dict[str, set[int]] = {}
    for record in read_journal(out) if resume else ():
        done.setdefault(record.source, set()).add(record.index)
    s = config.sampling
    pending = 0
    for source in sources:
        try:
            pending += max(0, expected_count(source, s.frame_rate, s.fps) - len(done.get(source.stem, ())))
        except InputError:
            pending += 1  # reported when it is read
    return _Job(product, ontology, sources, out, done, pending, resume)


def _source_id(source: Source) -> list[int]:
    """Size and modification time: enough to notice a replaced file under the same name."""
    stat = source.path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _frames(job: _Job, config: RunConfig, errors: list[str]) -> Iterator[Frame]:
    s = config.sampling
    for source in job.sources:
        try:
            yield from iter_frames(source, s.frame_rate, s.fps, skip=job.done.get(source.stem))
        except InputError as exc:
            log.error("%s", exc)
            errors.append(str(exc))


def _batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def versions() -> dict[str, str]:
    """Versions of the packages that shape the output."""
    out = {"autolabel": __version__, "python": platform.python_version()}
    for dist in (
        "torch",
        "torchvision",
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


def label_product(job: _Job, config: RunConfig, labeler: Labeler, result: ProductResult) -> None:
    """Labels a job's pending frames and journals them."""
    init_output(job, config)
    repair_journal(job.out)
    writer = DatasetWriter(job.out, list(job.ontology.classes), config.dataset.formats, config.dataset.jpeg_quality)
    stats = FilterStats()
    filters = config.filters if filters_active(config.filters) else None
    done_count = sum(len(v) for v in job.done.values())

    quality = config.dataset.jpeg_quality
    # JPEG encoding runs on a small pool (OpenCV releases the GIL); files and journal lines
    # are written by one thread, in frame order.
    encoders = ThreadPoolExecutor(max_workers=ENCODE_THREADS, thread_name_prefix="autolabel-jpeg")

    def write(item: tuple[FrameRecord, Future | None]) -> None:
        record, encoded = item
        writer.add(record, image_bytes=encoded.result() if encoded is not None else None)

    worker = Worker(write, depth=4 * ENCODE_THREADS + 8)
    bar = progress.bar(done_count + job.pending, job.product.name, initial=done_count)
    try:
        frames = prefetch(_frames(job, config, result.errors), depth=max(8, 2 * labeler.batch_size))
        for batch in _batches(frames, labeler.batch_size):
            detections = labeler.label([f.image for f in batch], job.ontology)
            for frame, det in zip(batch, detections, strict=True):
                det = nms(det, config.model.nms_iou)
                h, w = frame.image.shape[:2]
                record = FrameRecord(frame.name, frame.source.stem, frame.index, frame.t, w, h, to_boxes(det))
                if filters is not None:
                    record.dropped = apply_filters(record, filters, stats)
                encoded = encoders.submit(encode_jpeg, frame.image, quality) if record.dropped is None else None
                worker.put((record, encoded))
                result.new_frames += 1
            bar.update(len(batch))
    finally:
        bar.close()
        try:
            worker.close()
        finally:
            encoders.shutdown(wait=True)
            writer.close()
    result.filtered = stats.as_dict()


def finalize_product(job: _Job, config: RunConfig, result: ProductResult, labeler: Labeler | None) -> None:
    """Splits, writes data.yaml, COCO, run.yaml and the summary counts."""
    records = []
    for r in read_journal(job.out):
        if r.dropped is None:
            records.append(r)
        else:
            result.dropped_frames += 1
    d = config.dataset
    splits = assign_splits(records, d.val_fraction, d.seed)
    for r in records:
        r.split = splits[r.name]
    classes = list(job.ontology.classes)
    result.split = finalize.write_split_lists(job.out, records)
    finalize.write_data_yaml(job.out, classes, has_val=result.split.get("val", 0) > 0)
    if "voc" in d.formats:
        finalize.write_missing_voc(job.out, records, classes)  # frames labeled before VOC was asked for
    if "coco" in d.formats:
        finalize.write_coco(job.out, records, classes)
    result.frames = len(records)
    result.boxes_per_class = boxes_per_class(records, classes)
    result.empty_frames = sum(1 for r in records if not r.boxes)
    if labeler is not None or not (job.out / RUN_YAML).exists():
        run_info = {
            "product": job.product.name,
            "ontology": job.ontology.to_mapping(),
            "classes": classes,
            "config": to_dict(config) | {"products": [job.product.name]},
            "model": labeler.describe() if labeler is not None else None,
            "versions": versions(),
        }
        atomic_write_text(
            job.out / RUN_YAML,
            "# Written by autolabel run: the settings these labels were made with.\n"
            + yaml.safe_dump(run_info, sort_keys=False, allow_unicode=True),
        )
    state = read_state(job.out) or {}
    state["sources"] = {s.stem: _source_id(s) for s in job.sources}
    state["complete"] = True
    state["source_errors"] = list(result.errors)
    write_state(job.out, state)


def run(
    config: RunConfig,
    labeler_factory: Callable[[], Labeler],
    overwrite: bool = False,
) -> list[ProductResult]:
    """Labels every product under ``config.input`` into ``config.output``.

    Bad input in one product is reported in its result and the others go on;
    errors that concern the whole run (missing weights, an unusable output folder)
    raise.
    """
    input_dir, output = Path(config.input), Path(config.output)
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: output path exists and is a file; choose a folder for --output")
    products = discover_products(input_dir, config.products or None)
    results: list[ProductResult] = []
    jobs: list[tuple[_Job | None, ProductResult]] = []
    for product in products:
        result = ProductResult(product.name)
        try:
            job = _plan(product, config, output, overwrite)
            result.output = job.out
        except AutolabelError as exc:
            log.error("%s", exc)
            result.errors.append(str(exc))
            job = None
        jobs.append((job, result))
        results.append(result)
    labeler: Labeler | None = None
    if any(job is not None and job.pending for job, _ in jobs):
        labeler = labeler_factory()
    for job, result in jobs:
        if job is None:
            continue
        start = time.perf_counter()
        try:
            if job.pending or not job.resume:
                labeler.prepare(job.ontology)
                label_product(job, config, labeler, result)
            finalize_product(job, config, result, labeler if result.new_frames else None)
        except (InputError, OutputError) as exc:
            log.error("%s: %s", job.product.name, exc)
            result.errors.append(str(exc))
            result.output = None if not result.new_frames else result.output
        result.seconds = time.perf_counter() - start
    return results
