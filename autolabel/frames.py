"""Which frames of a source are labeled: every sampled one, or those ``--dedup`` and ``--max-frames`` keep.

A source's pending frames come out in order, each a :class:`~autolabel.sampling.Frame` to
label or a :class:`~autolabel.events.Duplicate` to journal, and every engine reads them
through here, so a local run, a Ray run and a resumed run choose the same frames.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator

import numpy as np

from autolabel.config import RunConfig
from autolabel.errors import InputError
from autolabel.events import Duplicate, SourceEnd, SourceFailed
from autolabel.jobs import Job
from autolabel.sampling import Frame, iter_frames, sampled_indices
from autolabel.selection import Deduper, embedding, farthest_point, thumbnail
from autolabel.sources import Source


def selects(source: Source, config: RunConfig) -> bool:
    """Whether a source's frames are chosen by comparing them (--dedup, --max-frames): a sequential pass."""
    return source.is_video and (config.sampling.max_frames is not None or bool(config.sampling.dedup))


def probe_indices(source: Source, config: RunConfig) -> set[int]:
    """The frames ``--track`` labels for tracking: every ``--track-stride``-th frame of a video (none otherwise)."""
    if not config.tracking.enabled or not source.is_video:
        return set()
    return set(sampled_indices(source, config.tracking.stride))


def source_frames(
    source: Source, config: RunConfig, done: set[int], duplicates: set[int], probed: set[int] = frozenset()
) -> Iterator:
    """A source's pending frames in order: each a Frame to label, or a Duplicate (--dedup) to journal.

    With ``--track`` the frames on the tracking grid come too, as frames that are not kept
    (``Frame.kept`` False: labeled and journaled for tracking, never written).

    Args:
        source: The media file.
        config: The run's settings.
        done: Frames journaled already (kept, duplicates, probes).
        duplicates: Of those, the near-duplicates (--dedup).
        probed: Of those, the frames labeled for tracking only.

    Raises:
        InputError: The source cannot be read (after the frames read before the problem).
    """
    s = config.sampling
    probes = probe_indices(source, config)
    if source.is_video and s.max_frames is not None:
        yield from _chosen_frames(source, config, done, probes)
    elif source.is_video and s.dedup:
        yield from _deduplicated(source, config, done, duplicates | set(probed), probes)
    else:
        yield from _pending(source, config, done, probes)


def _pending(
    source: Source, config: RunConfig, done: set[int], probes: set[int], chosen: list[int] | None = None
) -> Iterator[Frame]:
    """The sampled frames not yet done (``chosen``: of those, these only), and the probes among them marked
    as not kept (labeled for tracking only)."""
    s = config.sampling
    if not probes:
        yield from iter_frames(source, s.frame_rate, s.fps, skip=done, only=chosen)
        return
    kept = set(chosen) if chosen is not None else set(sampled_indices(source, s.frame_rate, s.fps))
    for frame in iter_frames(source, 1, None, skip=done, only=sorted(kept | probes)):
        frame.kept = frame.index in kept
        yield frame


def job_frames(
    job: Job, config: RunConfig, complete: set[str]
) -> Iterator[Frame | Duplicate | SourceEnd | SourceFailed]:
    """The pending frames of every unfinished source, each source closed by an end (or failure) marker."""
    for source in job.sources:
        if source.path.name in complete:
            continue
        done, duplicates = job.done.get(source.stem, set()), job.duplicates.get(source.stem, set())
        try:
            yield from source_frames(source, config, done, duplicates, job.probed.get(source.stem, set()))
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


def _deduplicated(
    source: Source, config: RunConfig, done: set[int], not_kept: set[int], probes: set[int] = frozenset()
) -> Iterator:
    """The pending sampled frames of a video, each a Frame to label or a Duplicate of the last kept one.

    Each decision compares a frame with the last frame kept before it, whichever run kept it:
    one kept by an earlier run (a resumed run, or a frame relabeled because its image was
    lost) is decoded again, so a resumed run decides as an uninterrupted one. ``not_kept``:
    the journaled frames that are no kept frame (duplicates, probes). ``probes``: frames to
    label for tracking only, never compared.
    """
    s = config.sampling
    earlier = sorted(done - not_kept)  # kept (labeled) by earlier runs
    dedup = Deduper(s.dedup)
    for frame in _pending(source, config, done, probes):
        if not frame.kept:
            yield frame
            continue
        before = bisect.bisect_left(earlier, frame.index)
        if before and (dedup.reference is None or dedup.reference[0] < earlier[before - 1]):
            ref = _decode_one(source, config, earlier[before - 1])
            dedup.reference = (earlier[before - 1], ref) if ref is not None else None
        if dedup.check(frame.index, thumbnail(frame.image)) is None:
            yield frame
        else:
            yield _duplicate(frame)


def _chosen_frames(source: Source, config: RunConfig, done: set[int], probes: set[int] = frozenset()) -> Iterator:
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
    extra = probes - {d.index for d in dups}  # frames to label for tracking only (a duplicate is not probed)
    for frame in _pending(source, config, done, extra, chosen):
        while k < len(pending) and pending[k].index < frame.index:
            yield pending[k]
            k += 1
        yield frame
    yield from pending[k:]
    if failure is not None:
        raise failure
