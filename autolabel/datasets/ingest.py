"""Writes an engine's events into a product's dataset: files, journal, filters, progress.

Every engine writes through :func:`write_product`, so their datasets are identical file for
file. JPEG encoding and the files' writes and fsyncs run on a small pool (OpenCV and the OS
release the GIL); one thread puts the files in place and journals them, in frame order,
committing in groups.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from autolabel import progress
from autolabel.config import RunConfig
from autolabel.datasets import finalize
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.records import PROBE, FrameRecord
from autolabel.datasets.writer import DatasetWriter, encode_jpeg
from autolabel.events import Duplicate, Event, SourceEnd, SourceFailed
from autolabel.jobs import Job, ProductResult
from autolabel.postprocess import FilterStats, Thresholds, settle
from autolabel.threads import Worker

log = logging.getLogger(__name__)

ENCODE_THREADS = 4


@dataclass(frozen=True)
class _NewClasses:
    """The class list grew (a discovering labeler named new classes): recorded before any frame that uses them."""

    classes: tuple[str, ...]


def number_classes(record: FrameRecord, names: tuple[str, ...], class_ids: dict[str, int]) -> bool:
    """Gives ``record``'s boxes the ids of their class names, numbering new names in order; True when some were new."""
    before = len(class_ids)
    for box, name in zip(record.boxes, names, strict=True):
        box.class_id = class_ids.setdefault(name, len(class_ids))
    return len(class_ids) > before


def restore_missing_images(ds: Dataset, job: Job) -> None:
    """Unjournals frames whose image was deleted, so this run labels them again."""
    records = list(ds.records(masks=False))
    missing = {r.name: r for r in records if r.dropped is None and not (ds.root / r.image).is_file()}
    if not missing:
        return
    by_stem = {info.stem: name for name, info in ds.state.sources.items()}
    for r in missing.values():  # their sources unfinished first: a kill after the journal still relabels them
        ds.state.sources[by_stem[r.source]].complete = False
        job.done.get(r.source, set()).discard(r.index)
    ds.save()
    ds.rewrite_journal([r for r in records if r.name not in missing], changed=set())
    log.warning("%s: %d frames had lost their image; labeling them again", ds.root, len(missing))


def write_product(
    ds: Dataset,
    job: Job,
    config: RunConfig,
    result: ProductResult,
    events: Iterator[Event],
    status: Callable[[], dict | None] | None = None,
) -> None:
    """Writes and journals an engine's events for one product, in their order; marks each source
    complete once read to its end.

    ``status`` (optional) gives the progress bar's postfix (a Ray run's active actors).
    """
    state = ds.state
    classes = list(state.classes)  # grows as a discovering labeler names new classes
    class_ids = {name: i for i, name in enumerate(classes)}
    writer = DatasetWriter(job.out, classes, state.formats, config.dataset.jpeg_quality, state.segmented)
    stats = FilterStats()
    thresholds = Thresholds.of_run(config, classes)
    done_count = sum(len(v) for v in job.done.values())
    quality = config.dataset.jpeg_quality
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
            state.classes = list(item.classes)
            ds.save()
            finalize.update_class_list(job.out, state.classes, state.formats, state.segmented)
            return
        record, staged = item
        writer.add(record, staged=staged.result() if staged is not None else [])

    def commit() -> None:
        writer.commit()
        if finished:
            for name in finished:
                state.sources[name].complete = True
            finished.clear()
            ds.save()

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
                elif event.record.dropped == PROBE:  # for tracking only: the model's boxes, journaled
                    record = event.record
                    if event.names is not None and number_classes(record, event.names, class_ids):
                        writer.classes[:] = list(class_ids)
                        worker.put(_NewClasses(tuple(class_ids)))
                    worker.put((record, None))
                    result.new_probes += 1
                else:
                    record = event.record
                    if event.names is not None and number_classes(record, event.names, class_ids):
                        writer.classes[:] = list(class_ids)
                        worker.put(_NewClasses(tuple(class_ids)))
                    settle(record, record.boxes, thresholds, config.filters, stats)
                    staged = encoders.submit(stage, record, event.image) if record.dropped is None else None
                    worker.put((record, staged))
                    result.new_frames += 1
                if status is not None and (postfix := status()) is not None:
                    bar.set_postfix(postfix, refresh=False)
                bar.update(1)
    finally:
        bar.close()
        try:
            worker.close()
        finally:
            encoders.shutdown(wait=True)
            writer.close()
    result.filtered = stats.as_dict()
