"""``autolabel run --engine ray``: decoding and labeling on every GPU of a machine or a Ray cluster.

The work of all products is one Ray Data stream::

    work items --flat_map (CPU tasks)--> batches of frames --map_batches (actor per GPU)--> labeled batches
        --iter_rows (in order)--> this process: write_product, as the local engine

A work item is one video's run of kept frames (or a whole source when its frames are
chosen by comparing them: ``--dedup``, ``--max-frames``; a still image; a video that cannot
be sought). Items are cut between the labeler's batches, so each batch holds the frames a
local run puts in it, and at keyframes where the file allows, so no frame is decoded twice.
Each labeler actor loads the model once, labels a batch, applies NMS and encodes the JPEGs;
the driver only writes. Results come back in the items' order (``preserve_order``): the
journal, names and files are those of a local run. A worker that dies has its task run
again (Ray Data's defaults: decode tasks and labeler actor tasks are retried on system
failures, dead actors are restarted); only the output of a task that finished reaches
the driver, so nothing is written twice. An exception in our code is not retried: it
stops the run, as it would a local one.

Ray is imported here only, when a run asks for it.
"""

from __future__ import annotations

import bisect
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.config import RunConfig
from autolabel.datasets.state import State
from autolabel.datasets.writer import encode_jpeg
from autolabel.engines.base import batches, label_batch
from autolabel.errors import AutolabelError, ConfigError, InputError
from autolabel.events import Event, Labeled, SourceEnd, SourceFailed
from autolabel.frames import selects, source_frames
from autolabel.jobs import Job
from autolabel.ontology import Ontology
from autolabel.sampling import group_starts, iter_frames, sampled_indices
from autolabel.sources import Source

log = logging.getLogger(__name__)

INSTALL = "--engine ray needs Ray, which is not installed: pip install 'autolabel[ray]' (or pip install 'ray[data]')"
# An actor counts as active while it delivered a batch within this many seconds.
ACTIVE_SECONDS = 30.0
# The probe that loads the model once for the driver: run again this often if its worker dies.
PROBE_RETRIES = 3


def import_ray():
    """The ``ray`` module with Ray Data; one clear line when it is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401 (the extra that --engine ray needs)
    except ImportError:
        raise ConfigError(INSTALL) from None
    return ray


@dataclass(frozen=True)
class WorkItem:
    """One task's share of a product: a run of one source's kept frames.

    Attributes:
        product: The product's place in the stream.
        source: The media file.
        indices: The kept frames to decode, ascending; None: the whole source's pending frames
            (chosen by comparing them, or a still image, or a video that cannot be sought).
        done: Frames journaled already (whole-source items).
        duplicates: Of those, the ones journaled as near-duplicates (``--dedup``).
        last: The source's last item: it closes the source (end or error marker).
        failure: The source could not be read when planned: this item reports it.
    """

    product: int
    source: Source
    indices: tuple[int, ...] | None
    done: frozenset[int] = frozenset()
    duplicates: frozenset[int] = frozenset()
    probed: frozenset[int] = frozenset()
    last: bool = True
    failure: str | None = None


def split_kept(kept: list[int], group_starts: set[int], size: int, batch: int) -> list[list[int]]:
    """Cuts a video's pending kept frames into parts of about ``size`` frames.

    Parts end only between the labeler's batches (every ``batch`` frames from the first), so
    a part batches its frames as the whole video would, and where possible where a keyframe
    lies between two kept frames, so no frame is decoded by two parts; a part grows to at
    most twice ``size`` looking for such a place.
    """
    starts = sorted(group_starts)

    def new_group(a: int, b: int) -> bool:  # a keyframe in (a, b]
        k = bisect.bisect_right(starts, a)
        return k < len(starts) and starts[k] <= b

    parts: list[list[int]] = []
    current: list[int] = []
    for j in range(0, len(kept), batch):
        chunk = kept[j : j + batch]
        if len(current) >= size and (new_group(current[-1], chunk[0]) or len(current) >= 2 * size):
            parts.append(current)
            current = []
        current += chunk
    if current:
        parts.append(current)
    return parts


def plan_items(product: int, job: Job, config: RunConfig, state: State, batch_size: int) -> list[WorkItem]:
    """A product's work items, in the order the local engine reads its sources and frames."""
    s = config.sampling
    size = batch_size * config.engine.item_batches
    items: list[WorkItem] = []
    complete = state.complete_sources()
    for source in job.sources:
        if source.path.name in complete:
            continue
        done = frozenset(job.done.get(source.stem, ()))
        whole = WorkItem(
            product,
            source,
            None,
            done,
            frozenset(job.duplicates.get(source.stem, ())),
            frozenset(job.probed.get(source.stem, ())),
        )
        # Frames chosen by comparing them, and --track's probes: one task reads the source in order.
        if not source.is_video or selects(source, config) or config.tracking.enabled:
            items.append(whole)
            continue
        try:
            kept = [i for i in sampled_indices(source, s.frame_rate, s.fps) if i not in done]
            starts = group_starts(source)
        except InputError as exc:
            items.append(WorkItem(product, source, None, failure=str(exc)))
            continue
        if starts is None:  # cannot seek: one task reads it from the start
            items.append(whole)
            continue
        parts = split_kept(kept, starts, size, batch_size) or [[]]  # nothing pending: still read to its end
        items += [WorkItem(product, source, tuple(p), last=k == len(parts) - 1) for k, p in enumerate(parts)]
    return items


@dataclass
class Unit:
    """What travels from a decode task to a labeler actor: a batch of frames (and duplicates), or a marker."""

    product: int
    payload: list | SourceEnd | SourceFailed


@dataclass
class Done:
    """What travels from a labeler actor to the driver: one unit's events, and which actor made them."""

    product: int
    events: list[Event]
    actor: str | None


def _frames(item: WorkItem, config: RunConfig, folder: str) -> Iterator:
    """An item's frames (and duplicates), then the source's end marker if it is the last, or its error."""
    s = config.sampling
    source = item.source
    try:
        enter(folder)
        if item.failure is not None:
            raise InputError(item.failure)
        if item.indices is None:
            yield from source_frames(source, config, set(item.done), set(item.duplicates), set(item.probed))
        else:
            yield from iter_frames(source, s.frame_rate, s.fps, only=item.indices, check_end=item.last)
    except InputError as exc:
        yield SourceFailed(source, str(exc))
        return
    if item.last:
        yield SourceEnd(source)


def enter(folder: str) -> None:
    """Works in the driver's folder, as the local engine does: relative paths (``-i videos``, ``--weights``)
    then name the same files, and messages name them as a local run would.

    A worker process runs only this job's tasks, so the change stays in this job.
    """
    try:
        here = os.getcwd()
    except OSError:  # the folder this worker started in is gone
        here = None
    if here != folder:
        try:
            os.chdir(folder)
        except OSError:
            raise InputError(
                f"{folder}: the folder autolabel was started in is not on this Ray node ({platform.node()}); "
                "run it from a folder every node has at the same path (a shared file system, docs/SCALE.md)"
            ) from None


def decode(row: dict, items: list[WorkItem], config: RunConfig, batch_size: int, folder: str) -> Iterator[dict]:
    """A decode task: one work item's frames (the row names it), in the batches the local engine makes."""
    item = items[row["item"]]
    for unit in batches(_frames(item, config, folder), batch_size):
        yield {"unit": Unit(item.product, unit)}


def _objects(values: list) -> np.ndarray:
    """A 1-D object array (numpy would turn a list of equal-length lists into a 2-D one)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class LabelActor:
    """A labeler actor: the model loaded once, then batches labeled, NMS applied and JPEGs encoded."""

    def __init__(
        self, factory: Callable, ontologies: dict[int, Ontology], nms_iou: float, jpeg_quality: int, folder: str
    ) -> None:
        import ray

        enter(folder)
        self.labeler = factory()
        self.ontologies = ontologies
        for ontology in ontologies.values():
            self.labeler.prepare(ontology)
        self.nms_iou = nms_iou
        self.jpeg_quality = jpeg_quality
        self.actor = ray.get_runtime_context().get_actor_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for unit in batch["unit"]:
            if isinstance(unit.payload, list):
                events = label_batch(self.labeler, unit.payload, self.ontologies[unit.product], self.nms_iou)
                for event in events:
                    if isinstance(event, Labeled):
                        event.image = encode_jpeg(event.image, self.jpeg_quality)
            else:
                events = [unit.payload]
            out.append(Done(unit.product, events, self.actor))
        return {"done": _objects(out)}


def _probe(factory: Callable, ontologies: list[Ontology], folder: str):
    """What the driver needs to know of the model (loaded once on a worker, as an actor would)."""
    try:
        enter(folder)
        labeler = factory()
    except AutolabelError as exc:  # re-raised on the driver: the message a local run gives
        return exc
    errors: list[InputError | None] = []
    for ontology in ontologies:
        try:
            labeler.prepare(ontology)
            errors.append(None)
        except InputError as exc:
            errors.append(exc)
    return labeler.batch_size, labeler.describe(), errors


class RemoteModel:
    """The driver's view of the model that the actors hold: batch size, description, ontology checks."""

    def __init__(self, batch_size: int, description: dict, errors: dict[int, InputError | None]) -> None:
        self.batch_size = batch_size
        self._description = description
        self._errors = errors

    def prepare(self, ontology: Ontology) -> None:
        """Raises the error the model gave for this ontology, if any."""
        error = self._errors.get(id(ontology))
        if error is not None:
            raise error

    def describe(self) -> dict:
        """What identifies the model's output, as an actor's labeler describes it."""
        return self._description


class RayStream:
    """The driver's end of the stream: each product's events in order, and the active actors."""

    def __init__(self, rows: Iterator[dict], keys: dict[int, int]) -> None:
        self._rows = rows
        self._keys = keys  # id(job) -> product number
        self._next: Done | None = None
        self._seen: dict[str, float] = {}

    def status(self) -> dict:
        """The progress bar's postfix: labeler actors that delivered lately."""
        now = time.monotonic()
        return {"actors": sum(1 for t in self._seen.values() if now - t < ACTIVE_SECONDS)}

    def events(self, job: Job) -> Generator[Event, None, None]:
        """One product's events, in order; what a product left unread (it failed) is passed over."""
        key = self._keys[id(job)]
        failed: set[str] = set()  # sources whose reading failed: the local engine reads nothing after that
        while True:
            if self._next is None:
                row = next(self._rows, None)
                if row is None:
                    return
                self._next = row["done"]
            done = self._next
            if done.product > key:
                return
            self._next = None
            if done.product < key:
                continue
            if done.actor is not None:
                self._seen[done.actor] = time.monotonic()
            for event in done.events:
                stem = event.record.source if isinstance(event, Labeled) else event.source.stem
                if stem in failed:
                    continue
                if isinstance(event, SourceFailed):
                    failed.add(stem)
                yield event


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """ConfigError unless ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a connection within ``timeout`` s.

    Ray itself retries an address that answers nothing for minutes, printing its own warnings.
    ``None`` (start a local instance) and ``auto`` (this node's cluster, which Ray finds or
    refuses at once) are left to Ray.
    """
    import socket

    if address is None or address == "auto":
        return
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"--ray-address {address}: nothing answers there ({exc.strerror or type(exc).__name__}); "
            "is the cluster up (ray start --head) and the port open?"
        ) from None


class _NotForUsers(logging.Filter):
    """Drops Ray's note that token authentication is on (as it should be); its warning when it is off stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token authentication is enabled")


def quiet_ray() -> None:
    """Ray's lines that tell an autolabel user nothing, off before Ray starts (``--debug`` keeps them).

    The note that token authentication is on, and Ray Data's note that its progress bars are off
    (ours show). Its C++ core worker's lines are left alone: silencing them (``RAY_BACKEND_LOG_LEVEL``)
    prints a line of its own, and hides real failures' context.
    """
    if logging.getLogger("autolabel").isEnabledFor(logging.DEBUG):
        return
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _NotForUsers) for f in auth.filters):
        auth.addFilter(_NotForUsers())
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def worker_env() -> dict | None:
    """The runtime environment that makes Ray's workers import this autolabel, wherever the run started.

    Ray's workers put the driver's working directory first on their path. Run from the folder
    that holds a clone (named ``autolabel``, no ``__init__.py``), that folder would be imported as
    an empty namespace package: an editable install is found by an import hook, after every path
    entry. The folder that holds the package goes on the workers' ``PYTHONPATH`` then, so the real
    package is found on the path itself (a regular package beats a namespace portion).
    """
    import autolabel

    home = Path(autolabel.__file__).resolve().parents[1]
    on_path = {Path(p or ".").resolve() for p in sys.path}
    if home in on_path:  # an installed or PYTHONPATH copy: found on the path already
        return None
    paths = [str(home), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}


class RayEngine:
    """Connects to Ray (or starts it), and runs products' work through one Ray Data stream."""

    def __init__(self, config: RunConfig, labeler_factory: Callable) -> None:
        self.config = config
        self.factory = labeler_factory
        self.ray = import_ray()
        self.started = False
        self.batch_size = 1
        self._stream: RayStream | None = None

    def __enter__(self) -> RayEngine:
        ray = self.ray
        if not ray.is_initialized():
            address = self.config.engine.ray_address
            check_reachable(address)
            quiet_ray()
            try:
                ray.init(
                    address=address,
                    include_dashboard=False if address is None else None,
                    logging_level=logging.WARNING,
                    log_to_driver=False,  # workers' logs stay in the session's log folder
                    runtime_env=worker_env(),
                )
            except ConnectionError as exc:
                raise ConfigError(f"--ray-address {address}: cannot join a Ray cluster there ({exc})") from None
            self.started = True
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # frames come back in order: the local engine's journal
        ctx.enable_progress_bars = False  # one bar per product is ours
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            self.ray.shutdown()

    def _resources(self) -> tuple[int, dict]:
        """How many labeler actors, and each one's resources."""
        e, device = self.config.engine, self.config.model.device
        gpus = self.ray.cluster_resources().get("GPU", 0)
        on_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
        if on_gpu and not gpus:  # Ray would wait for a GPU forever
            raise ConfigError(f"model.device is {device!r} but the Ray cluster has no GPU")
        actors = e.actors or (max(1, int(gpus * e.actors_per_gpu)) if on_gpu else 1)
        if on_gpu and actors > gpus * e.actors_per_gpu:  # the actors past the GPUs would wait forever
            raise ConfigError(
                f"engine.actors is {actors}, but the Ray cluster's {gpus:g} GPU(s) hold at most "
                f"{int(gpus * e.actors_per_gpu)} labeler actor(s) at engine.actors_per_gpu {e.actors_per_gpu}"
            )
        args = {"num_cpus": e.actor_cpus, "num_gpus": 1 / e.actors_per_gpu if on_gpu else 0}
        return actors, args

    def load(self, ontologies: list[Ontology]) -> RemoteModel:
        """Loads the model once on a worker to learn its batch size and description, and checks the ontologies."""
        _, args = self._resources()
        probe = self.ray.remote(max_retries=PROBE_RETRIES, **args)(_probe)
        answer = self.ray.get(probe.remote(self.factory, ontologies, os.getcwd()))
        if isinstance(answer, AutolabelError):
            raise answer
        batch_size, description, errors = answer
        self.batch_size = batch_size
        return RemoteModel(batch_size, description, {id(o): e for o, e in zip(ontologies, errors, strict=True)})

    def start(self, jobs: list[tuple[Job, State]]) -> None:
        """Starts labeling every job's pending frames in one stream, read product by product."""
        self._stream = self.stream(jobs)

    def events(self, job: Job, state: State) -> Generator[Event, None, None]:
        """One started job's events, in order."""
        return self._stream.events(job)

    def status(self) -> dict | None:
        """Labeler actors that delivered lately (the progress bar's postfix)."""
        return self._stream.status() if self._stream is not None else None

    def stream(self, jobs: list[tuple[Job, State]]) -> RayStream:
        """Starts labeling every job's pending frames; the stream is read product by product."""
        ray, e = self.ray, self.config.engine
        keys = {id(job): k for k, (job, _) in enumerate(jobs)}
        items = [
            item
            for k, (job, state) in enumerate(jobs)
            for item in plan_items(k, job, self.config, state, self.batch_size)
        ]
        if not items:
            return RayStream(iter(()), keys)
        actors, args = self._resources()
        ontologies = {k: job.ontology for k, (job, _) in enumerate(jobs)}
        # Rows are item numbers (plain ints for Arrow); the items travel once, with the function.
        ds = ray.data.from_items([{"item": k} for k in range(len(items))], override_num_blocks=len(items))
        ds = ds.flat_map(
            decode,
            fn_kwargs={"items": items, "config": self.config, "batch_size": self.batch_size, "folder": os.getcwd()},
            num_cpus=e.decode_cpus,
        )
        ds = ds.map_batches(
            LabelActor,
            fn_constructor_kwargs={
                "factory": self.factory,
                "ontologies": ontologies,
                "nms_iou": self.config.model.nms_iou,
                "jpeg_quality": self.config.dataset.jpeg_quality,
                "folder": os.getcwd(),
            },
            batch_size=1,  # one unit: a batch the size the local engine labels
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            **args,
        )
        log.info(
            "ray: %d work items, %d labeler actors (%g GPU, %g CPU each)",
            len(items),
            actors,
            args["num_gpus"],
            args["num_cpus"],
        )
        return RayStream(iter(ds.iter_rows()), keys)
