"""What a format is: files of a frame, files of a dataset, an export layout, and reading its files back.

A format is a :class:`Format` subclass, registered by name (built-ins in code, others
through the ``autolabel.formats`` entry point group; see docs/PLUGINS.md). Its output
depends on nothing but the records and the :class:`Context`, so a file written again
from the journal is byte-identical to the first.

- :meth:`Format.frame_files`: a frame's own files in a dataset (YOLO's ``labels/<name>.txt``),
  written as each frame is labeled and checked against the journal on every run.
- :meth:`Format.dataset_files`: files of the whole dataset (COCO's ``coco_train.json``),
  written when the dataset is finalized, merged or imported into.
- :meth:`Format.export`: ``autolabel export --to NAME``, the layout another tool imports.
- :meth:`Format.read`: the boxes a folder or file in this format holds, for ``autolabel import``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from autolabel.datasets.layout import IMAGE_SUFFIX, IMAGES, SPLITS
from autolabel.datasets.records import Box, FrameRecord
from autolabel.fileio import atomic_write_bytes, atomic_write_stream, link_or_copy


@dataclass
class Context:
    """What a format needs besides the records.

    Attributes:
        classes: The dataset's class names by id.
        title: The product's name (or the dataset folder's), for formats that name the set.
        dataset_id: The dataset's id, for formats that carry it (an import checks it).
        masks: A segmentation dataset (``run --masks``): every box is written with its outline, its
            mask's rings (:attr:`autolabel.datasets.records.Box.mask`) or, where it has none, its box
            as a 4-point polygon (:func:`outline`).
    """

    classes: list[str]
    title: str = "autolabel"
    dataset_id: str | None = None
    masks: bool = False


@dataclass
class ReadContext:
    """What reading needs to know of the dataset the boxes go into.

    Attributes:
        classes: The dataset's class names by id (a name outside them is an error).
        sizes: Each frame's (width, height) by name (formats with relative coordinates need them).
        dataset_id: The dataset's id: a source that carries another is refused (:meth:`check_id`).
        dataset: The dataset's folder, for that message.
    """

    classes: list[str]
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    dataset_id: str | None = None
    dataset: str = "the dataset"

    def check_id(self, found: str | None, where: object) -> None:
        """Refuses a source carrying another dataset's id; readers call it as soon as they find the id.

        Called before the frames are checked, so that another dataset's export (whose frame or
        class names may well differ) is named as such.
        """
        from autolabel.errors import InputError

        if found is not None and self.dataset_id is not None and found != self.dataset_id:
            shown = found if found.isprintable() and len(found) <= 60 else show(found)
            raise InputError(
                f"{where}: holds frames of another dataset (id {shown}; {self.dataset} is {self.dataset_id}); "
                "import it into the dataset it was exported from. Nothing was written"
            )


@dataclass
class Annotations:
    """What a file or folder in some format says about frames.

    Attributes:
        frames: Each frame's boxes by frame name (class ids in the dataset's list, pixels).
        dataset_id: The dataset id the source carries, or None (matched by file name).
        where: Each frame's place in the source, for messages.
    """

    frames: dict[str, list[Box]] = field(default_factory=dict)
    dataset_id: str | None = None
    where: dict[str, str] = field(default_factory=dict)


class FrameStream:
    """Kept frames, with their masks, read afresh from the journal on each pass (a segmentation dataset's).

    What :meth:`Format.dataset_writers` may be given instead of a list: iterating it yields one full
    record at a time; :attr:`boxes` holds the same frames without their masks, in memory, for the
    passes that need no outline (:func:`boxes_only`).

    Args:
        boxes: The frames without masks, each with its split, in journal order.
        read: Yields the same frames with their masks, each with its split, in the same order.
    """

    def __init__(self, boxes: list[FrameRecord], read: Callable[[], Iterable[FrameRecord]]) -> None:
        self.boxes = boxes
        self._read = read

    def __iter__(self):
        return iter(self._read())


def boxes_only(records: Iterable[FrameRecord]) -> list[FrameRecord]:
    """``records`` as a list, without reading a :class:`FrameStream`'s masks (its :attr:`FrameStream.boxes`)."""
    return records.boxes if isinstance(records, FrameStream) else list(records)


@dataclass
class ExportFolder:
    """An export being built in ``root`` (a staging folder, swapped in whole when done).

    Attributes:
        root: Where the files go.
        dataset: The dataset folder (images are hard-linked from it).
        output: The export's final folder (for load hints).
        records: The kept frames in journal order, each with its split: a list, or a segmentation
            dataset's :class:`FrameStream` (iterate it, more than once if need be; :func:`boxes_only`
            for the passes that need no outline).
        ctx: Classes, title and dataset id.
        url_prefix: Label Studio: the image URL prefix (None: its Local Files storage).
        queued: ``records`` are a review queue, in its order (formats that number frames keep it).
    """

    root: Path
    dataset: Path
    output: Path
    records: Iterable[FrameRecord]
    ctx: Context
    url_prefix: str | None = None
    queued: bool = False
    linked: int = 0
    copied: int = 0
    dirs: set[Path] = field(default_factory=set)

    def image(self, record: FrameRecord, rel: str) -> None:
        """Links (or copies) a frame's image to ``rel`` under the export."""
        target = self.root / rel
        self.dirs.add(target.parent)
        if link_or_copy(self.dataset / record.image, target, sync_parent=False):
            self.linked += 1
        else:
            self.copied += 1

    def write(self, rel: str, data: bytes | str) -> None:
        """Writes one file of the export (durably; the folders are flushed once at the end)."""
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        self.dirs.add(target.parent)
        atomic_write_bytes(target, data.encode("utf-8") if isinstance(data, str) else data, sync_parent=False)

    def write_with(self, rel: str, write: Callable[[BinaryIO], object]) -> None:
        """Writes one file of the export through ``write`` (given the open file: streaming)."""
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        self.dirs.add(target.parent)
        atomic_write_stream(target, write, sync_parent=False)

    def split(self, name: str) -> list[FrameRecord]:
        """The frames of one split, in journal order (without their masks where :attr:`records` is a stream)."""
        return [r for r in boxes_only(self.records) if r.split == name]


# What ``autolabel export`` leaves in an export folder: which dataset it came from (path, format, id).
EXPORT_MARK = ".autolabel-export.json"


def marker_id(path: Path) -> str | None:
    """The dataset id of the export that ``path`` (a file or folder) lies in, from its marker; None: no marker."""
    import json

    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder.parent, folder.parent.parent):
        mark = candidate / EXPORT_MARK
        if mark.is_file():
            try:
                data = json.loads(mark.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            value = data.get("dataset_id") if isinstance(data, dict) else None
            return value if isinstance(value, str) else None
    return None


def outline(box: Box) -> list[list[float]]:
    """The rings a segmentation dataset writes for ``box``: its mask, or its box's 4 corners where it has none."""
    from autolabel.masks.geometry import box_ring

    return box.mask if box.mask else [box_ring(box.x1, box.y1, box.x2, box.y2)]


def image_name(record: FrameRecord) -> str:
    """A frame's image file name."""
    return f"{record.name}{IMAGE_SUFFIX}"


class Format:
    """A dataset format. Subclasses set ``name`` and ``help`` and override what they support.

    Attributes:
        name: The name in ``--format`` and ``export --to``.
        help: One line for ``--help`` and docs.
        frame_dirs: The folders its frame files go in (flushed before the journal line).
        dataset_format: It can be part of a dataset (``run --format``, ``merge``).
        empty_frames: Its files list frames without boxes (MOT's rows do not).
        mask_dirs: The folders its frame files go in only in a segmentation dataset.
        outlines: In a segmentation dataset its boxes are the boxes of their polygons (YOLO-seg).
        layered: Its masks are drawn into one picture, later objects over earlier ones (VOC).
    """

    name: str = ""
    help: str = ""
    frame_dirs: tuple[str, ...] = ()
    dataset_format: bool = True
    empty_frames: bool = True  # its files list a frame without boxes (so reading it back gives the frame)
    # The folders its frame files go in only in a segmentation dataset (VOC's PNGs).
    mask_dirs: tuple[str, ...] = ()
    # Its boxes are read back from polygons (YOLO-seg): a box is compared by its outline, not its corners.
    outlines: bool = False
    # Its masks are layers of one picture (VOC's PNGs): a later object covers an earlier one where they overlap.
    layered: bool = False

    def frame_files(self, record: FrameRecord, ctx: Context) -> dict[str, bytes]:
        """A frame's files in a dataset, by path relative to the dataset (none by default)."""
        return {}

    def dataset_files(self, records: list[FrameRecord], ctx: Context) -> dict[str, bytes]:
        """The dataset's files in this format, from every kept frame in journal order, each with its split."""
        return {}

    def dataset_writers(self, records: Iterable[FrameRecord], ctx: Context) -> dict[str, Callable[[BinaryIO], object]]:
        """The dataset's files as writers to a binary file, for files too large to hold whole.

        ``records`` are those of :meth:`dataset_files`, read again from the journal on each pass
        (they may be iterated more than once). By default, :meth:`dataset_files`' bytes.
        """
        if type(self).dataset_files is Format.dataset_files:
            return {}
        files = self.dataset_files(records if isinstance(records, list) else list(records), ctx)  # masks and all
        return {rel: (lambda fh, data=data: fh.write(data)) for rel, data in files.items()}

    def notes(self, ctx: Context) -> list[str]:
        """Why some of its files cannot be written for these classes (said in the run summary)."""
        return []

    def classes_changed(self, root: Path, ctx: Context) -> None:
        """The class list grew while the dataset is written: rewrite files that list the classes (if present)."""

    def export(self, out: ExportFolder) -> str:
        """Writes the export layout into ``out``; returns one line saying how to load it.

        The default: every frame's image under ``images/``, its frame files and the dataset files.
        """
        for r in out.records:
            out.image(r, f"{IMAGES}/{image_name(r)}")
            for rel, data in self.frame_files(r, out.ctx).items():
                out.write(rel, data)
        for rel, write in self.dataset_writers(out.records, out.ctx).items():
            out.write_with(rel, write)
        return f"{self.name} files in {out.output}"

    def read(self, path: Path, ctx: ReadContext) -> Annotations:
        """The boxes that ``path`` (a file or folder in this format) holds."""
        from autolabel.errors import InputError

        raise InputError(f"{path}: reading the {self.name} format is not supported")

    def readable(self) -> bool:
        """Whether :meth:`read` is implemented."""
        return type(self).read is not Format.read

    def detect(self, path: Path) -> bool:
        """Whether ``path`` looks like this format (for ``import`` without ``--from``)."""
        return False

    def tolerance(self, width: int, height: int) -> float:
        """How far (pixels) a corner read back may lie from the one written, on a ``width`` x ``height`` frame.

        The format's precision (decimals written, a coordinate grid, whole pixels); the
        contract tests compare what :meth:`read` gives back with the records within it.
        """
        return 0.01


def by_split(records: Iterable[FrameRecord]) -> dict[str, list[FrameRecord]]:
    """Records grouped by split (train and val always present), journal order kept."""
    out: dict[str, list[FrameRecord]] = {s: [] for s in SPLITS}
    for r in records:
        if r.split in out:
            out[r.split].append(r)
    return out


class Constant:
    """``NaN``, ``Infinity`` or ``-Infinity`` in a JSON file: kept as a marker, refused where a number is read."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def show(value) -> str:
    """A value from a file, short, for messages."""
    import json

    if isinstance(value, Constant):
        return value.literal
    text = json.dumps(value, default=lambda v: v.literal if isinstance(v, Constant) else str(v))
    return text if len(text) <= 60 else text[:57] + "..."


# A JSON or XML file larger than this is not a review export (reading it would take that much memory, and more).
MAX_SOURCE_BYTES = 1 << 30


def read_source(path: Path, what: str, limit: int = MAX_SOURCE_BYTES) -> bytes:
    """A source file's bytes; one line naming it when it cannot be read or is larger than ``limit``."""
    from autolabel.errors import InputError

    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"{path}: {size} bytes is too large to be {what} (at most {limit})")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def read_text(path: Path, what: str, limit: int = MAX_SOURCE_BYTES) -> str:
    """A source text file's content (UTF-8, a leading BOM allowed); one line naming it when it cannot be read."""
    from autolabel.errors import InputError

    data = read_source(path, what, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def text_number(text: str | None, where: str, what: str, longest: int = 40) -> float:
    """A finite number written as text in a file (an XML attribute or element), else one line saying what was there."""
    from autolabel.errors import InputError

    shown = repr(str(text)[:20]) if text is not None else "nothing"
    try:
        if text is None or len(text) > longest or "_" in text:
            raise ValueError
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {what} must be a number, got {shown}") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {what} must be finite, got {shown}")
    return value


def _place(text: str, index: int) -> str:
    """``line:column`` of ``text[index]``."""
    return f"{text.count(chr(10), 0, index) + 1}:{index - text.rfind(chr(10), 0, index)}"


def load_json(path: Path, what: str):
    """A JSON file's content; one line naming the file (and line:column) when it cannot be read.

    A leading BOM is allowed (Windows tools write one); ``NaN`` and the infinities become
    :class:`Constant` markers; a number Python will not parse (thousands of digits) is an error
    naming its line and column; a file over :data:`MAX_SOURCE_BYTES` is refused unread.
    """
    import json
    import re

    from autolabel.errors import InputError

    text = read_text(path, what)
    try:
        return json.loads(text, parse_constant=Constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise InputError(f"{path}: JSON nested too deeply to be {what}") from exc
    except ValueError as exc:  # an integer past Python's digit limit
        import sys

        long = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1},}}", text)
        at, digits = (f":{_place(text, long.start())}", len(long[0])) if long else ("", "too many")
        raise InputError(f"{path}{at}: a number of {digits} digits is too long to read") from exc


def parse_xml(data: bytes, where: str, what: str):
    """The root element of an XML source, parsed by defusedxml; one line naming ``where`` when it cannot be.

    Entity declarations (the billion laughs, external entities) are refused, not expanded.
    """
    from defusedxml import ElementTree as SafeET
    from defusedxml.common import DefusedXmlException

    from autolabel.errors import InputError

    try:
        return SafeET.fromstring(data)
    except SafeET.ParseError as exc:
        raise InputError(f"{where}: not {what} (XML: {exc})") from exc
    except DefusedXmlException as exc:
        raise InputError(
            f"{where}: not {what} (XML: entity declarations and external references are not allowed; "
            f"refused, not expanded: {type(exc).__name__})"
        ) from exc


def number(value, where: str) -> float:
    """A finite number read from a file, else an InputError saying what was there."""
    from autolabel.errors import InputError

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: expected a finite number, got {show(value)}")
    try:
        out = float(value)
    except OverflowError:
        raise InputError(f"{where}: expected a finite number, got a number too large") from None
    if not math.isfinite(out):
        raise InputError(f"{where}: expected a finite number, got {show(value)}")
    return out
