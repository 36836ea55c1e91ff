"""Streams the kept frames of videos and images: never the whole video in memory.

Videos are read with PyAV. A first pass over the container's packets (no decoding)
finds every frame's timestamp and the keyframes; decoding then seeks to the keyframe
before each kept frame when that skips frames, and converts only kept frames to BGR.
``frame_rate`` is a stride by frame index (keep 0, N, 2N...); ``fps`` keeps the first frame
at or after each multiple of 1/F seconds of presentation time (timestamps, so variable frame
rates too).
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import os
import re
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import numpy as np

from autolabel.errors import InputError
from autolabel.sources import Source

log = logging.getLogger(__name__)

# Images whose header claims more pixels are refused before decoding (about 300 MB as BGR).
MAX_IMAGE_PIXELS = 100_000_000
# Pillow's names of the formats sources.py lists.
_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
_PIXEL_LIMIT = f"autolabel reads at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels (a decompression bomb?)"

# A seek flushes the decoder (and its threads' pipeline): worth it once it skips this many frames.
SEEK_MIN_SKIP = 4


@dataclass
class Frame:
    """One sampled frame.

    Attributes:
        source: The media file it came from.
        index: Frame index in the source (0 for still images).
        t: Time in the video, seconds (0 for still images).
        image: BGR uint8 array (H, W, 3).
        kept: A frame of the dataset; False: labeled for tracking only (``--track``), never written.
    """

    source: Source
    index: int
    t: float
    image: np.ndarray
    kept: bool = True

    @property
    def name(self) -> str:
        """The output file stem: ``<source stem>_<index:06d>``."""
        return frame_name(self.source.stem, self.index)


def frame_name(stem: str, index: int) -> str:
    """The output file stem for a source stem and frame index."""
    return f"{stem}_{index:06d}"


@dataclass(frozen=True)
class VideoIndex:
    """Where every frame of a video is, read from the container's packets without decoding.

    Frame ``i`` is the ``i``-th frame shown. Where the timestamps follow that order (checked
    on the first frames), frame ``i`` is the picture with the ``i``-th smallest timestamp,
    so the same frame gets the same index whether decoding reaches it forward or by
    seeking; otherwise frames are counted as the decoder outputs them, without seeking.

    Attributes:
        pts: Timestamp of each frame, ascending; None when the timestamps are missing,
            repeated or out of display order (frames are then counted as the decoder
            outputs them, without seeking).
        keyframes: Indices of the frames a decoder can start from.
        time_base: Seconds per timestamp unit.
        fps: The container's average frame rate (0 when unknown).
        frames: Frames found (packets with a picture).
        header_frames: Frames the container's header announces (0 when it does not say).
    """

    pts: np.ndarray | None
    keyframes: tuple[int, ...]
    time_base: float
    fps: float
    frames: int
    header_frames: int


@dataclass
class DecodeStats:
    """What reading a video cost: frames decoded (kept or not) and seeks made."""

    decoded: int = 0
    seeks: int = 0


def _open_container(path):
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(
            f"{path}: cannot open video ({why}): truncated (a copy or recording that did not finish loses the "
            "index MP4 and MOV files keep at their end) or not a video"
        ) from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: has no video stream (an audio-only file, or a damaged or truncated video)")
    return container


def _video_stream(container):
    """The stream FFmpeg picks as the video (not a cover picture), as players and OpenCV do."""
    return container.streams.best("video")


def _frame_rate(stream) -> float:
    """The stream's average frame rate, else its base rate (0 when the container gives neither)."""
    return float(stream.average_rate or stream.base_rate or 0)


@functools.lru_cache(maxsize=4)
def _index(path: str, size: int, mtime_ns: int) -> VideoIndex:
    import av

    with _open_container(path) as container:
        stream = _video_stream(container)
        stamps: list[int] = []
        keys: list[int] = []
        has_pts = True
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue  # the end-of-stream packet; frames an edit list cuts (the decoder drops them)
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    has_pts = False
                    stamp = len(stamps)
                stamps.append(stamp)
                keys.append(packet.is_keyframe)
        except av.FFmpegError as exc:
            log.debug("%s: demuxing stopped at packet %d: %s", path, len(stamps), exc)
        if has_pts and len(set(stamps)) != len(stamps):
            has_pts = False  # repeated timestamps cannot tell frames apart
        order = sorted(range(len(stamps)), key=stamps.__getitem__) if has_pts else range(len(stamps))
        shown = [stamps[i] for i in order]
        if has_pts and not _shown_in_timestamp_order(path, shown):
            # Timestamps that do not follow the order frames are shown in (written as decode order,
            # say) cannot name frames: count them as shown, and read without seeking.
            log.debug("%s: timestamps out of display order; reading without seeking", path)
            has_pts, order = False, range(len(stamps))
        return VideoIndex(
            pts=np.asarray(shown, dtype=np.int64) if has_pts else None,
            keyframes=tuple(rank for rank, i in enumerate(order) if keys[i]),
            time_base=float(stream.time_base) if stream.time_base else 0.0,
            fps=_frame_rate(stream),
            frames=len(stamps),
            header_frames=max(stream.frames or 0, 0),
        )


def _shown_in_timestamp_order(path: str, stamps: list[int], probe: int = 32) -> bool:
    """Whether the first ``probe`` frames come out of the decoder carrying the smallest timestamps, in order."""
    import av

    with _open_container(path) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        try:
            for k, frame in enumerate(container.decode(stream)):
                if k >= min(probe, len(stamps)) or frame.pts != stamps[k]:
                    return k >= min(probe, len(stamps))
        except av.FFmpegError:
            return False
    return True


def index_video(path) -> VideoIndex:
    """The frame index of a video (cached per file, size and modification time)."""
    stat = os.stat(path)
    return _index(str(path), stat.st_size, stat.st_mtime_ns)


# Timestamps this far before a multiple of 1/fps count as at it: Matroska rounds them to milliseconds.
TIME_TOLERANCE = 1e-3


def keep_by_time(times: np.ndarray, fps: float) -> list[int]:
    """Indices of the first frame at or after each multiple of ``1/fps`` seconds.

    Args:
        times: Each frame's presentation time in seconds from the first frame, ascending.
        fps: Frames to keep per second of video time.

    A gap longer than ``1/fps`` keeps one frame (the first after it), not one per multiple it spans.
    """
    if not len(times):
        return []
    cells = np.floor((np.asarray(times, dtype=np.float64) + TIME_TOLERANCE) * fps)
    return [0, *(np.flatnonzero(np.diff(cells) > 0) + 1).tolist()]


def frame_times(index: VideoIndex) -> np.ndarray | None:
    """Each frame's presentation time in seconds from the first frame: from the timestamps, else from the
    index and the header's frame rate; None when the file gives neither."""
    if index.pts is not None and index.time_base > 0:
        return (index.pts - index.pts[0]).astype(np.float64) * index.time_base
    if index.fps > 0:
        return np.arange(index.frames, dtype=np.float64) / index.fps
    return None


def _kept(index: VideoIndex, frame_rate: int, fps: float | None, path) -> list[int]:
    """The frame indices sampling keeps: a stride by index, or by presentation time under ``fps``."""
    if fps is None:
        return list(range(0, index.frames, frame_rate))
    times = frame_times(index)
    if times is None:
        raise InputError(f"{path}: video has neither timestamps nor a frame rate; use --frame-rate instead of --fps")
    return keep_by_time(times, fps)


@dataclass(frozen=True)
class VideoHeader:
    """What a container's header says about its video stream (nothing read beyond it).

    Attributes:
        frames: The frame count the header states; None when it states none (Matroska and WebM,
            a file still being written, a stream whose count is 0).
        fps: Average frame rate, else base rate (0 when unknown).
        seconds: Duration (0 when unknown).
    """

    frames: int | None
    fps: float
    seconds: float


def probe_video(path) -> VideoHeader:
    """Frame count, frame rate and duration from the container's header (nothing read beyond it)."""
    with _open_container(path) as container:
        stream = _video_stream(container)
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        else:
            seconds = (container.duration or 0) / 1_000_000  # microseconds
        return VideoHeader(stream.frames if stream.frames and stream.frames > 0 else None, _frame_rate(stream), seconds)


def expected_count(source: Source, frame_rate: int, fps: float | None) -> int | None:
    """How many frames :func:`iter_frames` will yield, from the container's header; None when unknown.

    None means the header cannot say: it states no frame count (Matroska and WebM, a file still
    being written, a stream whose count is 0), or ``fps`` is set (which frames that keeps depends
    on every frame's timestamp, not in the header). A caller must then not take any number of
    frames done as the whole source: it is complete only once :func:`iter_frames` has read it to
    its end. A count can still be more than the file holds (a truncated file): ``iter_frames``
    then raises :class:`InputError` at the end. For progress bars, see :func:`estimated_count`.
    """
    if not source.is_video:
        return 1
    header = probe_video(source.path)
    if fps is not None or header.frames is None:
        return None
    return len(range(0, header.frames, frame_rate))


def estimated_count(source: Source, frame_rate: int, fps: float | None) -> int:
    """About how many frames :func:`iter_frames` will yield (header count, else duration times rate).

    For progress bars only: never to decide whether a source is done (see :func:`expected_count`).
    """
    if not source.is_video:
        return 1
    header = probe_video(source.path)
    frames = header.frames or round(header.seconds * header.fps)
    if fps is None:
        return len(range(0, frames, frame_rate))
    return min(frames, math.ceil(header.seconds * fps))


def sampled_indices(source: Source, frame_rate: int = 1, fps: float | None = None) -> list[int]:
    """The frame indices sampling keeps from a source, read from its packets (nothing decoded).

    Raises:
        InputError: The video holds no readable frame, or ``fps`` is set and it has neither
            timestamps nor a frame rate (the errors :func:`iter_frames` raises first).
    """
    if not source.is_video:
        return [0]
    index = index_video(source.path)
    if index.frames == 0:
        raise InputError(f"{source.path}: video has no readable frames (truncated or corrupt)")
    return _kept(index, frame_rate, fps, source.path)


def group_starts(source: Source) -> set[int] | None:
    """Frame indices where decoding can start without the frames before them (keyframes of a
    seekable video); None when the file cannot be sought (frames are then read from the start)."""
    if not source.is_video:
        return None
    index = index_video(source.path)
    return set(index.keyframes) if index.pts is not None else None


def iter_frames(
    source: Source,
    frame_rate: int = 1,
    fps: float | None = None,
    skip: set[int] | None = None,
    stats: DecodeStats | None = None,
    only: Collection[int] | None = None,
    check_end: bool = True,
) -> Iterator[Frame]:
    """Yields the kept frames of one source, in order, reading a video to its end.

    Which frames are kept comes from the frames the file holds (its packets), never from
    the header's frame count: a file whose header states none (Matroska, a file still being
    written) is read to its last frame, and so is one resumed with ``skip``. Under ``fps``
    the kept frames are the first at or after each multiple of ``1/fps`` seconds of
    presentation time (variable-frame-rate video included); ``Frame.index`` is still the
    frame's display index.

    Only what the kept frames need is decoded: where the next kept frame lies past a
    keyframe, the decoder seeks to that keyframe instead of decoding the frames in
    between, and only kept frames are converted to BGR.

    Args:
        source: A video or an image.
        frame_rate: Stride: keep frames 0, N, 2N, ...
        fps: Keep this many frames per second of presentation time instead.
        skip: Frame indices to pass over without decoding (already done).
        stats: Counts the frames decoded and the seeks made, when given.
        only: Of the sampled frames, keep only these indices (frames chosen by
            :mod:`autolabel.selection`, or one part of a video); the video is still checked
            to its end.
        check_end: Whether a video that ends before its header says raises at the end
            (False for a part of a video that is not its last).
    """
    skip = skip or set()
    if not source.is_video:
        if 0 not in skip and (only is None or 0 in only):
            yield Frame(source, 0, 0.0, read_image(source.path))
        return
    index = index_video(source.path)
    if index.frames == 0:
        raise InputError(f"{source.path}: video has no readable frames (truncated or corrupt)")
    wanted = [i for i in _kept(index, frame_rate, fps, source.path) if i not in skip]
    if only is not None:
        only = set(only)
        wanted = [i for i in wanted if i in only]
    yield from _decode(source, index, wanted, stats if stats is not None else DecodeStats())
    # Some containers only estimate their frame count: allow a few frames of slack.
    if check_end and index.header_frames - index.frames > max(2, 0.05 * index.header_frames):
        raise InputError(
            f"{source.path}: video ends at frame {index.frames} of the {index.header_frames} its header announces "
            "(truncated?); the frames before that were labeled"
        )


class _Reader:
    """One video's decoder: reads forward, or seeks to a keyframe when that skips frames.

    A seek that lands past the keyframe it asked for (an imprecise container index)
    turns seeking off and starts decoding again from the first frame.
    """

    def __init__(self, path, index: VideoIndex, stats: DecodeStats) -> None:
        self.path = path
        self.index = index
        self.stats = stats
        self.rank = {int(stamp): i for i, stamp in enumerate(index.pts)} if index.pts is not None else None
        self.seekable = self.rank is not None
        self._open()

    def _open(self) -> None:
        self.container = _open_container(self.path)
        self.stream = _video_stream(self.container)
        self.stream.thread_type = "AUTO"
        self.frames = self.container.decode(self.stream)
        self.high = -1  # the highest frame index decoded since the last seek
        self.counted = -1  # frames in decoder order (the index when the container has no timestamps)

    def close(self) -> None:
        self.container.close()

    def _restart(self, why: str) -> None:
        """Decoding again from the first frame, seeking off for the rest of this file."""
        log.debug("%s: %s; decoding from the start without seeking", self.path, why)
        self.close()
        self._open()
        self.seekable = False

    def read(self, key: int) -> Iterator[tuple[int, object]]:
        """(frame index, av.VideoFrame) pairs, from the keyframe ``key`` on where that skips frames."""
        check = False
        if self.seekable and key - self.high > SEEK_MIN_SKIP:
            self.container.seek(int(self.index.pts[key]), stream=self.stream, backward=True, any_frame=False)
            self.stats.seeks += 1
            self.frames = self.container.decode(self.stream)
            self.high, check = key - 1, True
        while True:
            for frame in self.frames:
                self.counted += 1
                self.stats.decoded += 1
                i = self.counted if self.rank is None else self.rank.get(frame.pts)
                if i is None:
                    # The decoder's timestamps are not the container's: count frames instead.
                    self._restart("decoded frames carry unknown timestamps")
                    self.rank, check = None, False
                    break
                if check and i > key:
                    self._restart(f"seeking to frame {key} landed at {i}")
                    check = False
                    break
                check = False
                self.high = max(self.high, i)
                yield i, frame
            else:
                return


def _to_bgr(frame) -> np.ndarray:
    """A decoded frame as BGR uint8, turned upright as the file says (phones film portrait this way)."""
    image = frame.to_ndarray(format="bgr24")
    quarter_turns = round(frame.rotation / 90) % 4  # degrees counterclockwise, from the display matrix
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def _decode(source: Source, index: VideoIndex, wanted: list[int], stats: DecodeStats) -> Iterator[Frame]:
    """Decodes the ``wanted`` frames (ascending), seeking past the gaps that hold a keyframe."""
    import av

    wanted_set = set(wanted)
    times = frame_times(index)
    ready: dict[int, np.ndarray] = {}  # wanted frames the decoder gave out ahead of their turn
    reader = _Reader(source.path, index, stats)
    try:
        for target in wanted:
            following = bisect.bisect_right(index.keyframes, target)
            key = index.keyframes[following - 1] if following else 0
            end = index.keyframes[following] if following < len(index.keyframes) else index.frames
            if target not in ready:
                try:
                    for i, frame in reader.read(key):
                        if i >= target and i in wanted_set and i not in ready:
                            ready[i] = _to_bgr(frame)
                        if target in ready or i >= end:
                            break  # found, or past the keyframe after it: it will not come
                except av.FFmpegError as exc:
                    raise InputError(f"{source.path}: cannot decode frame {target} (corrupt video?): {exc}") from exc
            image = ready.pop(target, None)
            if image is None:
                log.debug("%s: frame %d did not decode; skipped", source.path, target)
                continue
            yield Frame(source, target, float(times[target]) if times is not None else 0.0, image)
    finally:
        reader.close()


def probe_image(path) -> tuple[int, int]:
    """Width and height from an image's header, nothing decoded; one clear error when it cannot be read.

    Pillow's plugins for the formats autolabel reads parse the header. ``PIL.Image.open`` is
    not used: Ultralytics replaces it with one that installs a package when a file is not an image.

    Raises:
        InputError: The file cannot be read, is not an image, or its header claims more than
            :data:`MAX_IMAGE_PIXELS` (a few megabytes of PNG can claim gigapixels).
    """
    from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401 (registers)

    try:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            for name in _IMAGE_FORMATS:
                factory, accept = Image.OPEN[name]
                accepted = accept is None or accept(prefix)
                if accepted and not isinstance(accepted, str):  # a string says why it is not accepted
                    fp.seek(0)
                    width, height = factory(fp, str(path)).size
                    break
            else:
                raise InputError(f"{path}: cannot decode image (not a JPEG, PNG, WebP or BMP file)")
    except Image.DecompressionBombError as exc:  # WebP checks its own header against Pillow's limit, above ours
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(claimed.group(1)) / 1e6:.0f} megapixels" if claimed else "more pixels than Pillow opens"
        raise InputError(f"{path}: image has {pixels} by its header; {_PIXEL_LIMIT}") from None
    except (SyntaxError, IndexError, TypeError, ValueError, EOFError, struct.error) as exc:
        raise InputError(f"{path}: cannot decode image (corrupt header: {exc})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: image is {width}x{height} ({width * height / 1e6:.0f} megapixels); {_PIXEL_LIMIT}")
    return width, height


def read_image(path) -> np.ndarray:
    """Reads an image as BGR uint8 (turned upright by its EXIF orientation), with a clear error when it cannot be.

    The header's size is checked before anything is decoded (see :func:`probe_image`).
    """
    import cv2

    probe_image(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"{path}: cannot decode image (truncated or corrupt)")
    return image
