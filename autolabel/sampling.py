"""Streams the kept frames of videos and images: never the whole video in memory.

Frames are read sequentially: skipped frames are only grabbed (demuxed, not
converted), kept frames are retrieved. ``frame_rate`` is a stride (keep 0, N, 2N...),
``fps`` keeps F frames per second of video time.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from autolabel.errors import InputError
from autolabel.sources import Source

log = logging.getLogger(__name__)


@dataclass
class Frame:
    """One sampled frame.

    Attributes:
        source: The media file it came from.
        index: Frame index in the source (0 for still images).
        t: Time in the video, seconds (0 for still images).
        image: BGR uint8 array (H, W, 3).
    """

    source: Source
    index: int
    t: float
    image: np.ndarray

    @property
    def name(self) -> str:
        """The output file stem: ``<source stem>_<index:06d>``."""
        return frame_name(self.source.stem, self.index)


def frame_name(stem: str, index: int) -> str:
    """The output file stem for a source stem and frame index."""
    return f"{stem}_{index:06d}"


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    frame_count: int
    fps: float
    width: int
    height: int


def _open(path) -> object:
    import cv2

    # FFmpeg's own log lines (h264 warnings on sound files) would break the progress bars;
    # decoding errors still surface as InputError. Set before the first open to take effect.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{path}: cannot open video (unreadable or not a video)")
    return cap


def _info(cap, path) -> VideoInfo:
    import cv2

    info = VideoInfo(
        frame_count=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
        fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    if info.width <= 0 or info.height <= 0:
        raise InputError(f"{path}: video has no readable frames")
    return info


def probe_video(path) -> VideoInfo:
    """Reads a video's frame count, fps and size from its container."""
    cap = _open(path)
    try:
        return _info(cap, path)
    finally:
        cap.release()


def keep_indices(frame_rate: int, fps: float | None, video_fps: float) -> callable:
    """A predicate on frame index: is this frame kept?

    With ``fps``, frame i is kept when it is the first frame whose time reaches the
    next multiple of 1/fps; with ``frame_rate`` N, when ``i % N == 0``.
    """
    if fps is None:
        return lambda i: i % frame_rate == 0
    if video_fps <= 0:
        raise InputError("video has no frame rate in its header; use --frame-rate instead of --fps")
    ratio = fps / video_fps
    if ratio >= 1:
        return lambda i: True
    return lambda i: i == 0 or math.floor(i * ratio + 1e-9) > math.floor((i - 1) * ratio + 1e-9)


def expected_count(source: Source, frame_rate: int, fps: float | None) -> int:
    """How many frames sampling will yield, from the container's frame count."""
    if not source.is_video:
        return 1
    info = probe_video(source.path)
    keep = keep_indices(frame_rate, fps, info.fps)
    return sum(1 for i in range(info.frame_count) if keep(i))


def iter_frames(
    source: Source, frame_rate: int = 1, fps: float | None = None, skip: set[int] | None = None
) -> Iterator[Frame]:
    """Yields the kept frames of one source, in order.

    Args:
        source: A video or an image.
        frame_rate: Stride: keep frames 0, N, 2N, ...
        fps: Keep this many frames per second of video time instead.
        skip: Frame indices to pass over without decoding (already done).
    """
    skip = skip or set()
    if not source.is_video:
        if 0 not in skip:
            yield Frame(source, 0, 0.0, read_image(source.path))
        return

    cap = _open(source.path)
    index = 0
    try:
        info = _info(cap, source.path)
        keep = keep_indices(frame_rate, fps, info.fps)
        while True:
            if not cap.grab():
                break
            if keep(index) and index not in skip:
                ok, image = cap.retrieve()
                if not ok or image is None:
                    raise InputError(f"{source.path}: cannot decode frame {index} (corrupt video?)")
                t = index / info.fps if info.fps > 0 else 0.0
                yield Frame(source, index, t, image)
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise InputError(f"{source.path}: video has no readable frames (truncated or corrupt)")
    missing = info.frame_count - index
    # Some containers only estimate their frame count: allow a few frames of slack.
    if missing > max(2, 0.05 * info.frame_count):
        raise InputError(
            f"{source.path}: video ends at frame {index} of the {info.frame_count} its header announces "
            "(truncated?); the frames before that were labeled"
        )


def read_image(path) -> np.ndarray:
    """Reads an image as BGR uint8, with a clear error when it cannot be decoded."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"{path}: cannot decode image (unreadable or not an image)")
    return image
