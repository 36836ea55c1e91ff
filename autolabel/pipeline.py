"""``autolabel run``: plans each product, labels through an engine, writes and finalizes each dataset.

One path for every engine: each product's folder is opened (locked) and planned
(:mod:`autolabel.resume`), the model is loaded once by the engine, every product that has
work is made ready, then each product's events are written (:mod:`autolabel.datasets.ingest`)
and its dataset finalized (:mod:`autolabel.datasets.finalize`). Bad input in one product is
reported in its result and the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from autolabel import progress
from autolabel.config import RunConfig
from autolabel.datasets import rederive
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.finalize import finalize_product
from autolabel.datasets.ingest import restore_missing_images, write_product
from autolabel.engines import make_engine
from autolabel.errors import AutolabelError, InputError, OutputError
from autolabel.events import Event
from autolabel.fileio import output_errors
from autolabel.jobs import Job, ProductResult
from autolabel.labelers.base import Labeler
from autolabel.masks.step import MaskLoader
from autolabel.masks.step import switch as switch_masks
from autolabel.resume import differences, fingerprint, init_output, model_identity, plan, refresh_soft
from autolabel.sources import discover_products

log = logging.getLogger(__name__)


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


def run(config: RunConfig, labeler_factory: Callable[[], Labeler], overwrite: bool = False) -> list[ProductResult]:
    """Labels every product under ``config.input`` into ``config.output``.

    Errors that concern the whole run (missing weights, an unusable output folder) raise.
    Each product's folder is locked for the whole run: a second process on the same
    product stops at once with a message naming the holder.
    """
    input_dir, output = Path(config.input), Path(config.output)
    engine = make_engine(config, labeler_factory)  # Ray not installed: said before any work
    _check_layout(input_dir, output)
    products = discover_products(input_dir, config.products or None)
    masks = MaskLoader(config.masks, config.model.device, config.model.precision, config.cache_dir)
    masks.fetch(progress.enabled())  # a missing mask model is said before any frame is labeled
    model_id = model_identity(config.model, config.cache_dir)
    jobs: list[tuple[Job | None, Dataset | None, ProductResult]] = []
    with contextlib.ExitStack() as stack:
        with output_errors(output):
            output.mkdir(parents=True, exist_ok=True)
        for product in products:
            result = ProductResult(product.name)
            job = ds = None
            try:
                with output_errors(output):
                    ds = stack.enter_context(Dataset.open(output / product.slug, "run", new=True))
                job = plan(ds, product, config, overwrite, model_id)
                result.output = job.out
                result.notes += job.notes
            except AutolabelError as exc:
                log.error("%s", exc)
                result.errors.append(str(exc))
                job = None
            jobs.append((job, ds, result))
        labeler: Labeler | None = None
        if any(job is not None and job.needs_work for job, _, _ in jobs):
            stack.enter_context(engine)
            labeler = engine.load([job.ontology for job, _, _ in jobs if job is not None and job.needs_work])
            loaded = model_identity(config.model, config.cache_dir)  # files the labeler downloaded count now
            if loaded != model_id:
                _recheck(jobs, config, loaded)
                model_id = loaded
        started = []
        for job, ds, result in jobs:
            if job is not None and _start_job(ds, job, config, labeler, result, model_id):
                started.append((job, ds, result))
        if labeler is not None:
            engine.start([(job, ds.state) for job, ds, _ in started if job.needs_work])
        for job, ds, result in started:
            events = engine.events(job, ds.state) if job.needs_work else None
            _finish_job(ds, job, config, result, events, engine.status, masks)
    return [result for _, _, result in jobs]


def _recheck(jobs: list, config: RunConfig, loaded: dict[str, str | None]) -> None:
    """Refuses resumed products labeled with other model files than those the labeler just fetched."""
    for i, (job, ds, result) in enumerate(jobs):
        if job is None or job.state is None:
            continue
        diffs = differences(job.state.fingerprint or {}, fingerprint(config, job.ontology, loaded))
        if diffs:
            msg = f"{job.out}: was labeled with another model ({diffs[0]}); re-run with --overwrite"
            log.error("%s", msg)
            result.errors.append(msg)
            result.output = None
            jobs[i] = (None, ds, result)


def _start_job(
    ds: Dataset, job: Job, config: RunConfig, labeler: Labeler | None, result: ProductResult, model_id: dict
) -> bool:
    """Makes a job's folder ready to be written: its state, lost images unjournaled, the model recorded.

    Returns False when the product failed (the error is in its result).
    """
    start = time.perf_counter()
    try:
        if job.needs_work:
            if labeler is None:
                raise InputError(f"{job.product.folder}: frames to label but no model was loaded")
            labeler.prepare(job.ontology)  # an ontology the model cannot label creates nothing
        with output_errors(job.out):
            before = ds.context() if job.masks_change else None  # how the files were written until now
            state = init_output(ds, job, config, model_id)
            if before is not None:  # first: its hand edits are read as the files were written (then pending)
                result.repaired += switch_masks(ds, job.masks_change, before)
            if job.rederived is not None:
                result.repaired += rederive.apply(ds, job.rederived)
            if job.missing_images:
                restore_missing_images(ds, job)
            if job.state is not None:  # the journal follows the new thresholds and mask settings: now recorded
                refresh_soft(state.fingerprint, config)
                ds.save()
            if job.needs_work:
                model = labeler.describe() | {"files": state.model_files()}
                floor = config.model.floor() if state.floor is None else max(state.floor, config.model.floor())
                if state.model != model or state.floor != floor:
                    state.model, state.floor = model, floor
                    ds.save()
        return True
    except (InputError, OutputError) as exc:
        log.error("%s: %s", job.product.name, exc)
        result.errors.append(str(exc))
        result.output = None
        return False
    finally:
        result.seconds += time.perf_counter() - start


def _finish_job(
    ds: Dataset,
    job: Job,
    config: RunConfig,
    result: ProductResult,
    events: Iterator[Event] | None,
    status: Callable[[], dict | None] | None = None,
    masks: MaskLoader | None = None,
) -> None:
    """Writes a job's labeled frames (``events``, None when it has none to label), then finalizes it."""
    start = time.perf_counter()
    try:
        with output_errors(job.out):
            if events is not None:
                write_product(ds, job, config, result, events, status)
            finalize_product(ds, job, config, result, masks)
    except (InputError, OutputError) as exc:
        log.error("%s: %s", job.product.name, exc)
        result.errors.append(str(exc))
        result.output = None if not result.new_frames else result.output
    finally:
        result.seconds += time.perf_counter() - start
