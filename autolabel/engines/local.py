"""The local engine: decoding on a prefetch thread, the labeler in this process, batch by batch."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from autolabel.config import RunConfig
from autolabel.datasets.state import State
from autolabel.engines.base import batches, label_batch
from autolabel.events import Event, SourceEnd, SourceFailed
from autolabel.frames import job_frames
from autolabel.jobs import Job
from autolabel.labelers.base import Labeler
from autolabel.ontology import Ontology
from autolabel.threads import prefetch


class LocalEngine:
    """Labels in this process: the model loaded once, frames decoded ahead on a thread."""

    def __init__(self, config: RunConfig, labeler_factory: Callable[[], Labeler]) -> None:
        self.config = config
        self.factory = labeler_factory
        self.labeler: Labeler | None = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.labeler = None

    def load(self, ontologies: list[Ontology]) -> Labeler:
        """Loads the model (ontologies are checked by the caller through ``prepare``)."""
        self.labeler = self.factory()
        return self.labeler

    def start(self, jobs: list[tuple[Job, State]]) -> None:
        """Nothing to start: each job is labeled when its events are read."""

    def events(self, job: Job, state: State) -> Iterator[Event]:
        return local_events(job, self.config, self.labeler, state)

    def status(self) -> dict | None:
        return None


def local_events(job: Job, config: RunConfig, labeler: Labeler, state: State) -> Iterator[Event]:
    """A job's events: its pending frames decoded on a prefetch thread, labeled here batch by batch."""
    items = prefetch(job_frames(job, config, state.complete_sources()), depth=max(8, 2 * labeler.batch_size))
    with contextlib.closing(items):
        for batch in batches(items, labeler.batch_size):
            if isinstance(batch, SourceEnd | SourceFailed):
                yield batch
            else:
                yield from label_batch(labeler, batch, job.ontology, config.model.nms_iou)
