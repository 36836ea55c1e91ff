"""The mask step: every kept box without a mask gets one, after the boxes are final; the files follow.

It runs when a product dataset is finalized (``run``) and after an ``import``, over the journal:
thresholds, filters, re-derivations, reviews (and tracking) have settled the boxes by then, and a
box whose corners changed lost its mask on the way (:attr:`autolabel.datasets.records.Box.mask`).
So ``--masks`` on an existing dataset adds masks without labeling a box again, and the engines
(local, Ray) never see a mask model.

For the frames whose boxes lack a mask, in journal order, windows of :data:`WINDOW` frames are done
one at a time: their images are read from the dataset's ``images/``, go through the mask model in
batches (one image embedding per frame), each box's bitmap becomes rings at once
(:func:`autolabel.masks.geometry.mask_to_rings`) and is dropped, so memory holds one window's
records, one batch of images and one bitmap whatever the video's length: the journal is read as a
stream. Each window's masks are appended to ``.autolabel/masks.jsonl`` (flushed to disk), then its
files are written; the state says ``pending`` meanwhile, as the files run ahead of the journal. At
the end the masks are folded into the journal in one streamed rewrite and ``pending`` is cleared. A
kill in between: the next command to open the dataset folds the windows that reached the disk
(:func:`autolabel.datasets.journal.fold_masks`), the next run finishes the files from the journal
(none taken for a hand edit), and the windows it cuts are the ones an uninterrupted run cut, so the
dataset ends byte-identical.

A mask model is *at hand* when the run names one (``--masks``), or when the dataset's recorded one
(its fingerprint's ``masks``) is on disk with the recorded content. Without one, boxes keep no mask
and the files hold their box polygons; the run summary and the report count them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel import progress
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.derive import sync_frame_files
from autolabel.datasets.formats import Context, written
from autolabel.datasets.records import FrameRecord
from autolabel.errors import InputError, MissingWeightsError

log = logging.getLogger(__name__)

# Frames masked between two appends to masks.jsonl (a multiple of every power-of-two batch size up to 64).
WINDOW = 128


@dataclass
class MaskCounts:
    """What a dataset's boxes hold after the mask step (the run summary and the report say it).

    Attributes:
        boxes: Kept boxes.
        masked: Boxes with a mask.
        empty: Boxes whose mask came out empty: their box polygon stands.
        missing: Boxes without a mask (no mask model at hand, or a box a reviewer drew or moved): box polygons.
        made: Masks made by this command.
        frames: Frames masked by this command.
        seconds: Time spent in the mask step (model load included).
        model: What made them (the mask model's description), when one ran.
    """

    boxes: int = 0
    masked: int = 0
    empty: int = 0
    missing: int = 0
    made: int = 0
    frames: int = 0
    seconds: float = 0.0
    model: dict | None = None

    def add(self, r: FrameRecord) -> None:
        """Counts a frame's boxes (a kept frame's: a dropped one has none in the dataset)."""
        if r.dropped is None:
            for b in r.boxes:
                self.boxes += 1
                if b.mask is None:
                    self.missing += 1
                elif b.mask:
                    self.masked += 1
                else:
                    self.empty += 1


def count(records: Iterable[FrameRecord]) -> MaskCounts:
    """The kept boxes' mask counts (``records`` read once: the journal's stream will do)."""
    out = MaskCounts()
    for r in records:
        out.add(r)
    return out


class MaskLoader:
    """The mask model of a command, loaded on first need and shared by every product.

    Args:
        mc: The run's ``masks:`` config (None for a command without one: ``import``).
        device, precision: Where and how to run it (the ``model:`` config's).
        cache: autolabel's cache folder setting.
    """

    def __init__(self, mc=None, device: str = "auto", precision: str = "auto", cache: str | None = None) -> None:
        self.mc = mc
        self.device = device
        self.precision = precision
        self.cache = cache
        self._files: dict | None = None
        self._models: dict[tuple, object] = {}
        self.seconds = 0.0

    @property
    def named(self) -> bool:
        """The command names a mask model (``--masks NAME``)."""
        from autolabel.masks import NONE

        return self.mc is not None and self.mc.model not in (None, NONE)

    def fetch(self, progress_bars: bool = True) -> None:
        """Gets the named model's files now (one download; offline, one line naming what is missing)."""
        from autolabel.masks import fetch_files

        if self.named and self._files is None:
            self._files = fetch_files(self.mc, self.cache, progress_bars)

    def for_dataset(self, recorded: dict | None):
        """The mask model for a dataset whose fingerprint records ``recorded``; None when none is at hand."""
        from autolabel.masks import create, fetch_files, identity

        if self.named:
            key = (self.mc.model, self.mc.mask_model, self.mc.revision)
            if key not in self._models:
                start = time.perf_counter()
                self.fetch(progress.enabled())
                self._models[key] = create(self.mc, self._files, self.device, self.precision)
                self.seconds += time.perf_counter() - start
            return self._models[key]
        if not recorded:
            return None
        mc = recorded_config(recorded)
        key = (mc.model, mc.mask_model, None)
        if key not in self._models:
            try:
                if identity(mc, self.cache) != recorded.get("files"):
                    return None  # not on disk, or other content than the dataset's
                start = time.perf_counter()
                self._models[key] = create(mc, fetch_files(mc, self.cache, False), self.device, self.precision)
                self.seconds += time.perf_counter() - start
            except (MissingWeightsError, InputError) as exc:
                log.info("the dataset's mask model is not at hand (%s)", exc)
                return None
        return self._models[key]


def recorded_config(recorded: dict):
    """A ``masks:`` config from what a dataset's fingerprint records of its masks."""
    from autolabel.config import MaskConfig

    return MaskConfig(
        model=recorded.get("model"),
        mask_model=recorded.get("source"),
        tolerance=float(recorded.get("tolerance", MaskConfig.tolerance)),
        min_area=int(recorded.get("min_area", MaskConfig.min_area)),
    )


def _settings(recorded: dict | None, loader: MaskLoader) -> tuple[float, int]:
    """The simplification tolerance and least area masks are made with (the run's, else the dataset's)."""
    from autolabel.config import MaskConfig

    if loader.named:
        return loader.mc.tolerance, loader.mc.min_area
    recorded = recorded or {}
    return float(recorded.get("tolerance", MaskConfig.tolerance)), int(recorded.get("min_area", MaskConfig.min_area))


def _read(root: Path, record: FrameRecord) -> np.ndarray:
    import cv2

    image = cv2.imread(str(root / record.image), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{root / record.image}: cannot read the frame's image to make its masks")
    return image


def apply(ds: Dataset, loader: MaskLoader, title: str | None = None, reviewed: bool = True) -> MaskCounts:
    """Makes the missing masks of the dataset's kept boxes and their files; the journal holds them after.

    Args:
        ds: The dataset, opened (locked); it must be a segmentation dataset.
        loader: Where the mask model comes from.
        title: The progress bar's name.
        reviewed: Mask reviewed frames' boxes too (a box a reviewer drew gets its mask where the model is at hand).

    Returns:
        The counts after the step.
    """
    start = time.perf_counter()
    counts = MaskCounts()
    recorded = (ds.state.fingerprint or {}).get("masks")

    def wanted(r: FrameRecord) -> bool:
        return r.dropped is None and (reviewed or not r.reviewed) and any(b.mask is None for b in r.boxes)

    todo = 0
    for r in ds.records():  # what is to do, and the counts before
        counts.add(r)
        todo += wanted(r)
    masker = loader.for_dataset(recorded) if todo else None
    if masker is not None:
        tolerance, min_area = _settings(recorded, loader)
        ctx = ds.context()
        formats = written(ds.formats)
        ds.state.pending = True  # the files run ahead of the journal until the masks are folded into it
        ds.save()
        bar = progress.bar(todo, f"{title or ds.name} masks")
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="autolabel-mask-read") as reader:
                for window in _windows(r for r in ds.records() if wanted(r)):
                    was = count(window)
                    counts.made += _window(ds, window, masker, reader, tolerance, min_area, bar)
                    now = count(window)  # the counts follow the window's boxes (no pass over the journal again)
                    counts.masked += now.masked - was.masked
                    counts.empty += now.empty - was.empty
                    counts.missing += now.missing - was.missing
                    ds.append_masks(window)
                    sync_frame_files(ds.root, window, ctx, formats, keep_edits=False)
                    counts.frames += len(window)
        finally:
            bar.close()
        ds.fold_masks()
        ds.state.pending = False
        ds.save()
        counts.model = masker.describe()
    counts.seconds = time.perf_counter() - start
    return counts


def _windows(records: Iterator[FrameRecord]) -> Iterator[list[FrameRecord]]:
    """``records`` in lists of :data:`WINDOW`."""
    window: list[FrameRecord] = []
    for r in records:
        window.append(r)
        if len(window) == WINDOW:
            yield window
            window = []
    if window:
        yield window


def _window(ds: Dataset, window: list[FrameRecord], masker, reader, tolerance: float, min_area: int, bar) -> int:
    """Masks one window's boxes in place; returns how many masks were made."""
    from autolabel.masks.geometry import mask_to_rings, round_rings

    made = 0
    size = max(1, masker.batch_size)
    batches = [window[i : i + size] for i in range(0, len(window), size)]
    pending = reader.submit(lambda b: [_read(ds.root, r) for r in b], batches[0])
    for k, batch in enumerate(batches):
        images = pending.result()
        if k + 1 < len(batches):  # the next batch's images decode while this one runs
            pending = reader.submit(lambda b: [_read(ds.root, r) for r in b], batches[k + 1])
        targets = [[b for b in r.boxes if b.mask is None] for r in batch]
        prompts = [[(b.x1, b.y1, b.x2, b.y2) for b in boxes] for boxes in targets]
        for i, j, bitmap in masker.masks(images, prompts):
            targets[i][j].mask = round_rings(mask_to_rings(bitmap, tolerance, min_area))
            made += 1
        missed = [b for boxes in targets for b in boxes if b.mask is None]
        if missed:  # a model that yields nothing for a box found nothing there
            for b in missed:
                b.mask = []
        bar.update(len(batch))
    return made


def switch(ds: Dataset, change: str, before: Context) -> list[tuple[str, bool]]:
    """A run's new mask settings: hand edits kept (read as before), masks cleared where needed, files to follow.

    Args:
        ds: The dataset (its fingerprint takes the new settings after this, once the journal follows them).
        change: ``add`` (masks for a dataset without), ``remask`` (other mask settings: the model's masks
            of unreviewed frames are made again) or ``strip`` (``--masks none``: the files hold boxes again).
        before: The formats' context before the change, to tell hand edits from files of the old settings.

    Returns:
        The files kept as hand edits (as :func:`autolabel.datasets.derive.sync_frame_files` says).
    """
    kept = (r for r in ds.records() if r.dropped is None)
    edits = sync_frame_files(ds.root, kept, before, written(ds.formats), keep_edits=True)
    if change == "strip":  # the formats' mask-only folders (VOC's PNGs) go
        import shutil

        for folder in {d for fmt in written(ds.formats) for d in fmt.mask_dirs}:
            shutil.rmtree(ds.root / folder, ignore_errors=True)
    ds.state.pending = True  # every frame file follows the journal at finalize, none taken for a hand edit
    ds.save()
    if change in ("remask", "strip"):
        ds.rewrite_journal(_unmasked(r) for r in ds.records())
    return edits


def _unmasked(r: FrameRecord) -> FrameRecord:
    """A frame without the model's masks (a reviewed frame's stay: a reviewer's outlines are kept)."""
    if r.dropped is None and not r.reviewed:
        for b in r.boxes:
            b.mask = None
    return r
