"""``--track``: the boxes of each video linked into tracks, so the dataset holds objects, not frame-by-frame guesses.

The detector runs on every ``--track-stride``-th frame of a video and on its kept frames;
every detected frame is journaled with the model's boxes (frames off the dataset as
``probe`` records). Per video, in frame order, ByteTrack (the ``trackers`` package, the
successor supervision points to: it takes ``sv.Detections`` as they are, and uses the
low-scored boxes to carry a track through a weak frame) links the boxes into tracks. Then,
per track:

- its class is the score-weighted vote of its boxes (one class per object);
- a track with fewer than ``--min-track`` boxes, or none above its class's box threshold, is
  dropped (a blip, or background the model was never sure of);
- a kept frame the track skips, with the track seen at most ``--max-gap`` frames before and
  after, gets the box interpolated between the two (origin ``interpolated``).

A kept frame's boxes are then its tracks' boxes, each with its track id, and the filters
apply as always; a reviewed frame keeps its reviewer's boxes. Tracking is a function of the
journal alone, run when a product's dataset is finalized: a resumed or a Ray run tracks as
an uninterrupted local one, and new thresholds re-track without the model. Track ids are
unique in a product dataset: ``block * 100000 + n``, where each video's block is given once,
in the order the videos were first tracked, and ``n`` numbers its tracks by first frame.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from autolabel.config import TrackingConfig
from autolabel.datasets.records import INTERPOLATED, Box, FrameRecord, frames_per_second
from autolabel.postprocess import Thresholds, iou, to_detections

BLOCK = 100_000
# ByteTrack's association IoU between a track's predicted box and a new one.
MATCH_IOU = 0.1


@dataclass
class _Track:
    """One track's boxes, in frame order: (frame position, box)."""

    seen: list[tuple[int, Box]] = field(default_factory=list)

    def vote(self) -> int:
        weights: dict[int, float] = defaultdict(float)
        for _, b in self.seen:
            weights[b.class_id] += b.confidence if b.confidence is not None else 1.0
        return max(sorted(weights), key=lambda c: weights[c])


def _tracker(config: TrackingConfig, fps: float, start: float):
    from trackers import ByteTrackTracker

    # The buffer is counted in frames at 30 fps: a track outlives a gap of max_gap frames plus a stride.
    lost = max(1, math.ceil((config.max_gap + config.stride) * 30.0 / fps))
    return ByteTrackTracker(
        lost_track_buffer=lost,
        frame_rate=fps,
        track_activation_threshold=start,
        minimum_consecutive_frames=1,
        minimum_iou_threshold=MATCH_IOU,
        high_conf_det_threshold=start,
    )


def _link(frames: list[FrameRecord], config: TrackingConfig, thresholds: Thresholds) -> dict[int, _Track]:
    """ByteTrack over one video's detected frames (in frame order): each track's boxes."""

    start = thresholds.lowest() if thresholds.applies else 0.0
    tracker = _tracker(config, frames_per_second(frames), start)
    tracks: dict[int, _Track] = {}
    unclaimed: dict[int, list[Box]] = {}  # per frame: the confident boxes given no track id (a track's birth)
    for position, r in enumerate(frames):
        model = r.model_boxes if r.model_boxes is not None else r.boxes
        det = to_detections(model)
        det.data = {"box": np.arange(len(model))}  # which box each row is, through the tracker
        out = tracker.update(det, timestamp=r.t)
        for k in range(len(out)):
            tid, box = int(out.tracker_id[k]), model[int(out.data["box"][k])]
            if tid >= 0:
                tracks.setdefault(tid, _Track()).seen.append((position, box))
            elif box.confidence is None or box.confidence >= start:
                unclaimed.setdefault(position, []).append(box)
    # ByteTrack gives a track its id on its second box: its first, in the frame before, is found again here.
    for tid in sorted(tracks, key=lambda t: (tracks[t].seen[0][0], t)):
        first, box = tracks[tid].seen[0]
        births = unclaimed.get(first - 1, [])
        overlaps = [(iou(b, box), -k) for k, b in enumerate(births)]
        best = max(overlaps, default=(0.0, 0))
        if best[0] >= MATCH_IOU:
            tracks[tid].seen.insert(0, (first - 1, births.pop(-best[1])))
    return tracks


def _between(a: Box, b: Box, share: float, class_id: int) -> Box:
    """The box a share of the way from ``a`` to ``b`` (rounded to 1/100 px), scored as the weaker end."""
    corners = [
        round(p + (q - p) * share, 2) for p, q in zip((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2), strict=True)
    ]
    scores = [s for s in (a.confidence, b.confidence) if s is not None]
    return Box(class_id, *corners, min(scores) if scores else None, origin=INTERPOLATED)


def track_source(
    frames: list[FrameRecord], config: TrackingConfig, thresholds: Thresholds, block: int
) -> dict[str, list[Box]]:
    """One video's tracked boxes for each of its kept frames (by name).

    Args:
        frames: The video's detected frames (kept ones and probes), in frame order.
        config: ``--track``'s settings.
        thresholds: The box thresholds (a track must have a box above its class's).
        block: The video's block of track ids.
    """
    if not frames:
        return {}
    tracks = _link(frames, config, thresholds)
    out: dict[str, list[tuple[int, Box]]] = {r.name: [] for r in frames if r.dropped is None}
    numbered = 0
    for tid in sorted(tracks, key=lambda t: (tracks[t].seen[0][0], t)):
        track = tracks[tid]
        cls = track.vote()
        scores = [b.confidence if b.confidence is not None else 1.0 for _, b in track.seen]
        if len(track.seen) < config.min_track or (thresholds.applies and max(scores) <= thresholds.of(cls)):
            continue  # a blip, or a track the model was never sure of
        numbered += 1
        track_id = block * BLOCK + numbered
        for position, box in track.seen:
            r = frames[position]
            if r.dropped is None:
                out[r.name].append(
                    (numbered, Box(cls, box.x1, box.y1, box.x2, box.y2, box.confidence, track_id=track_id))
                )
        for (p, a), (q, b) in zip(track.seen, track.seen[1:], strict=False):
            gap = frames[q].index - frames[p].index - 1
            if gap <= 0 or gap > config.max_gap:
                continue
            for middle in frames[p + 1 : q]:
                if middle.dropped is None:
                    share = (middle.index - frames[p].index) / (frames[q].index - frames[p].index)
                    filled = _between(a, b, share, cls)
                    filled.track_id = track_id
                    out[middle.name].append((numbered, filled))
    return {name: [b for _, b in sorted(boxes, key=lambda nb: nb[0])] for name, boxes in out.items()}


def _untracked(box: Box) -> Box:
    """A box as the model gave it: no track id, no mask."""
    return dataclasses.replace(box.bare(), track_id=None)


def retrack(
    records: list[FrameRecord], config, blocks: dict[str, int], classes: list[str], videos: set[str]
) -> set[str]:
    """Tracks every video of a product's journal and settles its kept, unreviewed frames on their tracks.

    Args:
        records: The whole journal, in order (kept frames, probes, duplicates, dropped ones);
            kept frames' boxes and model boxes are changed in place.
        config: The run's settings (``config.tracking``, the thresholds, the filters).
        blocks: Each video's block of track ids by source stem (a new video gets the next one).
        classes: The dataset's classes.
        videos: The stems of the product's videos (a still image has no track; a source gone keeps its boxes).

    Returns the names of the kept frames whose boxes changed. Frame filters (``--drop-empty``,
    ``--drop-multi``) judged the model's boxes when the frame was written and stay as they are;
    the box filters (size, overlap) apply to the tracked boxes.
    """
    from autolabel.datasets.records import PROBE
    from autolabel.postprocess import settle

    thresholds = Thresholds.of_run(config, classes)
    box_filters = dataclasses.replace(config.filters, drop_empty=False, drop_multi=False)
    by_source: dict[str, list[FrameRecord]] = defaultdict(list)
    for r in records:
        if (r.dropped is None or r.dropped == PROBE) and r.source in videos:
            by_source[r.source].append(r)
    changed = set()
    for stem in sorted(by_source, key=lambda s: (s not in blocks, blocks.get(s, 0), s)):
        frames = sorted(by_source[stem], key=lambda r: r.index)
        if stem not in blocks:
            blocks[stem] = max(blocks.values(), default=0) + 1
        tracked = track_source(frames, config.tracking, thresholds, blocks[stem])
        for r in frames:
            if r.dropped is not None or r.reviewed:
                continue
            # The model's own boxes: kept apart, or the frame's without the track ids an earlier tracking gave.
            model = r.model_boxes if r.model_boxes is not None else [_untracked(b) for b in r.boxes]
            before = (r.boxes, r.model_boxes)
            settle(r, tracked[r.name], Thresholds(0.0, applies=False), box_filters)
            r.dropped = None
            # The model's boxes are kept apart only where tracking changed more than the track ids.
            untracked = [_untracked(b) for b in r.boxes]
            r.model_boxes = None if untracked == model else list(model)
            if (r.boxes, r.model_boxes) != before:
                changed.add(r.name)
    return changed
