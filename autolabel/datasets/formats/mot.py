"""MOT Challenge: one sequence per video, ``gt/gt.txt`` and ``seqinfo.ini``, for a dataset made with ``--track``.

Each sequence is one source video: ``<sequence>/img1/<frame>.jpg`` (the kept frames, hard
links), ``<sequence>/gt/gt.txt`` with MOT17's columns ``frame,id,bb_left,bb_top,bb_width,
bb_height,conf,class,visibility`` (frame = the source frame's index + 1, so rows line up with
the video; conf 1, visibility 1; class = class id + 1, named in ``classes.txt`` at the
export's root) and ``seqinfo.ini``. Rows exist for the kept frames. A box without a track
id (one a reviewer drew) gets an id of its own above every track's.
"""

from __future__ import annotations

import configparser
import io
from collections import defaultdict
from pathlib import Path

from autolabel.datasets.formats.base import (
    Annotations,
    ExportFolder,
    Format,
    ReadContext,
    boxes_only,
    read_text,
    text_number,
)
from autolabel.datasets.records import Box, FrameRecord, frames_per_second
from autolabel.errors import InputError
from autolabel.sampling import frame_name

GT = "gt/gt.txt"
SEQINFO = "seqinfo.ini"
IMAGES = "img1"


def seqinfo(name: str, frames: list[FrameRecord]) -> str:
    """A sequence's ``seqinfo.ini`` (its length: up to its last kept frame)."""
    ini = configparser.ConfigParser()
    ini.optionxform = str  # MOT's keys are camelCase
    ini["Sequence"] = {
        "name": name,
        "imDir": IMAGES,
        "frameRate": f"{round(frames_per_second(frames), 3):g}",
        "seqLength": str(frames[-1].index + 1),
        "imWidth": str(frames[0].width),
        "imHeight": str(frames[0].height),
        "imExt": ".jpg",
    }
    out = io.StringIO()
    ini.write(out)
    return out.getvalue()


def gt_lines(frames: list[FrameRecord], first_free: int) -> tuple[str, int]:
    """A sequence's ``gt.txt`` rows, frame by frame; returns them and the next free id for untracked boxes."""
    rows = []
    for r in frames:
        for b in r.boxes:
            ident = b.track_id
            if ident is None:
                ident, first_free = first_free, first_free + 1
            w, h = b.x2 - b.x1, b.y2 - b.y1
            rows.append(f"{r.index + 1},{ident},{b.x1:.3f},{b.y1:.3f},{w:.3f},{h:.3f},1,{b.class_id + 1},1")
    return "".join(f"{row}\n" for row in rows), first_free


class Mot(Format):
    name = "mot"
    help = "MOT Challenge (an export of a --track dataset: a sequence per video, gt/gt.txt and seqinfo.ini)"
    dataset_format = False
    empty_frames = False  # a frame without boxes has no row

    def detect(self, path: Path) -> bool:
        return path.is_dir() and any(path.glob(f"*/{GT}")) or path.name == "gt.txt"

    def tolerance(self, width: int, height: int) -> float:
        return 0.002

    def export(self, out: ExportFolder) -> str:
        records = boxes_only(out.records)  # MOT holds boxes: no outline is read
        tracked = [b.track_id for r in records for b in r.boxes if b.track_id is not None]
        if not tracked:
            raise InputError(f"{out.dataset}: has no track ids; label it with --track to export MOT sequences")
        by_source: dict[str, list[FrameRecord]] = defaultdict(list)
        for r in records:
            by_source[r.source].append(r)
        first_free = max(tracked) + 1
        for source in sorted(by_source):
            frames = sorted(by_source[source], key=lambda r: r.index)
            for r in frames:
                out.image(r, f"{source}/{IMAGES}/{r.index + 1:06d}.jpg")
            text, first_free = gt_lines(frames, first_free)
            out.write(f"{source}/{GT}", text)
            out.write(f"{source}/{SEQINFO}", seqinfo(source, frames))
        out.write("classes.txt", "".join(f"{name}\n" for name in out.ctx.classes))
        return f"MOT sequences in {out.output} (one per video: gt/gt.txt, seqinfo.ini, img1/)"

    def read(self, path: Path, ctx: ReadContext) -> Annotations:
        files = [path] if path.is_file() else sorted(path.glob(f"*/{GT}"))
        if not files:
            raise InputError(f"{path}: no MOT sequences (<sequence>/gt/gt.txt) there")
        found = Annotations()
        for file in files:
            sequence = file.parent.parent.name
            for lineno, line in enumerate(read_text(file, "a MOT gt.txt").splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{file}:{lineno}"
                fields = line.split(",")
                if len(fields) < 6:
                    raise InputError(f"{where}: expected frame,id,bb_left,bb_top,bb_width,bb_height,...")
                frame, ident = (
                    text_number(v.strip(), where, k) for v, k in zip(fields[:2], ("frame", "id"), strict=True)
                )
                x, y, w, h = (text_number(v.strip(), where, k) for v, k in zip(fields[2:6], "xywh", strict=True))
                cls = int(text_number(fields[7].strip(), where, "class")) - 1 if len(fields) > 7 else 0
                name = frame_name(sequence, int(frame) - 1)
                if name not in ctx.sizes:
                    raise InputError(f"{where}: no frame {name!r} in the dataset (a sequence of another dataset?)")
                if not 0 <= cls < len(ctx.classes) or w <= 0 or h <= 0:
                    raise InputError(f"{where}: class {cls + 1} or box size {w:g}x{h:g} does not fit the dataset")
                box = Box(cls, x, y, x + w, y + h, track_id=int(ident))
                found.frames.setdefault(name, []).append(box)
                found.where.setdefault(name, where)
        return found
