"""What a run does for each product: its plan (:class:`Job`) and its outcome (:class:`ProductResult`).

Plain data, shared by the planner (:mod:`autolabel.resume`), the engines, the dataset
writer and the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autolabel.datasets.rederive import Rederived
from autolabel.datasets.state import State
from autolabel.masks.step import MaskCounts
from autolabel.ontology import Ontology
from autolabel.sources import Product, Source


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
    new_probes: int = 0  # frames labeled for tracking only by this run (--track)
    tracked: int = 0  # kept frames whose boxes tracking changed
    tracking_seconds: float = 0.0  # of ``seconds``, spent tracking (--track)
    sampled_frames: int | None = None  # --max-frames: the videos' sampled frames it chose among (None: not set)
    chosen_frames: int = 0  # --max-frames: of those, the frames it chose (labeled)
    seconds: float = 0.0
    split: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[tuple[str, bool]] = field(default_factory=list)  # (path, it differed: else it was missing)
    reviewed_frames: int = 0
    warnings: list[str] = field(default_factory=list)
    masks: MaskCounts | None = None  # a segmentation dataset's boxes and masks (run --masks)

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
    """What a run does for one product: the plan made before anything is written.

    Attributes:
        product: The product folder.
        ontology: Its captions and classes.
        sources: Its media files, with their stems (renamed files keep theirs).
        out: Its dataset folder.
        done: Source stem -> frame indices journaled (labeled or dropped).
        pending: Frames to label, estimated from headers (for the progress bar).
        needs_work: Some source is unfinished or an image must be made again.
        state: The dataset's state when resuming; None: start afresh.
        relabel: ``--overwrite``: the old dataset goes, once labeling starts.
        reviewed: Frames holding an imported review.
        notes: Said in the summary.
        missing_images: Journaled frames whose image was deleted: labeled again.
        source_ids: File name -> content identity, read once.
        duplicates: Source stem -> indices journaled as duplicates.
        probed: Source stem -> indices journaled as labeled for tracking only (``--track``).
        rederived: Only the box thresholds changed: the journal settled anew (written when the run starts).
        masks_change: The run changes the dataset's masks: ``add``, ``remask`` or ``strip`` (None: no change).
    """

    product: Product
    ontology: Ontology
    sources: list[Source]
    out: Path
    done: dict[str, set[int]]
    pending: int
    needs_work: bool
    state: State | None
    relabel: bool = False
    reviewed: int = 0
    notes: list[str] = field(default_factory=list)
    missing_images: int = 0
    source_ids: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, set[int]] = field(default_factory=dict)
    probed: dict[str, set[int]] = field(default_factory=dict)
    rederived: Rederived | None = None
    masks_change: str | None = None
