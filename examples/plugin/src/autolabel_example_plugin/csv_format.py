"""``example-csv``: one ``boxes.csv`` per dataset, a row per box.

Columns ``image,class,x0,y0,x1,y1,score``: the frame's image relative to the dataset
(``images/<name>.jpg``), the class by name, the box's pixel corners with 2 decimals and its
score (empty for a box without one, such as one a reviewer drew). A frame without boxes is
one row with only its image, so the file lists every frame. Written with the csv module, so
a class name holding commas, quotes or line breaks is quoted as CSV readers expect.

It is a dataset format (``run --format yolo,example-csv`` writes ``boxes.csv`` when the dataset
is finalized; ``export --to example-csv`` writes ``images/`` and ``boxes.csv``) and a readable
one (``import --from example-csv boxes.csv``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from autolabel.datasets.formats.base import Annotations, Context, Format, ReadContext, read_text, text_number
from autolabel.datasets.records import Box, FrameRecord
from autolabel.errors import InputError

CSV_FILE = "boxes.csv"
COLUMNS = ("image", "class", "x0", "y0", "x1", "y1", "score")
# A box may reach this far past the image (rounding in other tools); it is cut at the edge.
EDGE_PX = 0.5
# A boxes.csv larger than this is not one.
MAX_BYTES = 1 << 30


def csv_text(records: list[FrameRecord], classes: list[str]) -> str:
    """The file's text: a header, then each frame's boxes (or one bare row) in journal order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in records:
        if not r.boxes:
            writer.writerow([r.image, "", "", "", "", "", ""])
        for b in r.boxes:
            score = "" if b.confidence is None else f"{b.confidence:.4f}"
            writer.writerow([r.image, classes[b.class_id], *(f"{v:.2f}" for v in (b.x1, b.y1, b.x2, b.y2)), score])
    return buf.getvalue()


def _row(row: list[str], ctx: ReadContext, where: str) -> tuple[str, Box | None]:
    """One row's frame name and box (None for a frame's bare row), checked."""
    if len(row) != len(COLUMNS):
        raise InputError(f"{where}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), got {len(row)}")
    image, label, *corners, score = row
    name = Path(image.replace("\\", "/")).stem
    if name not in ctx.sizes:
        raise InputError(f"{where}: no frame {name!r} in the dataset (a file of another dataset?)")
    if not label and not any(corners) and not score:
        return name, None
    if label not in ctx.classes:
        raise InputError(f"{where}: class {label!r} is not one of the dataset's classes {ctx.classes}")
    x1, y1, x2, y2 = (text_number(v, where, c) for v, c in zip(corners, COLUMNS[2:6], strict=True))
    width, height = ctx.sizes[name]
    if x1 < -EDGE_PX or y1 < -EDGE_PX or x2 > width + EDGE_PX or y2 > height + EDGE_PX:
        raise InputError(f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the {width}x{height} image")
    if x2 < x1 or y2 < y1:
        raise InputError(f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has its corners reversed")
    confidence = None
    if score:
        confidence = text_number(score, where, "score")
        if not 0.0 <= confidence <= 1.0:
            raise InputError(f"{where}: score must be between 0 and 1, got {score[:20]!r}")
    box = Box(ctx.classes.index(label), max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
    box.confidence = confidence
    return name, box


def read_csv(path: Path, ctx: ReadContext) -> Annotations:
    """The frames (by image stem) and boxes of one ``boxes.csv``; InputError naming ``file:line`` when malformed."""
    text = read_text(path, f"a {CSV_FILE}", MAX_BYTES)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out = Annotations()
    try:
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise InputError(f"{path}:1: expected the header {','.join(COLUMNS)}, got {','.join(header or [])[:60]!r}")
        for row in reader:
            if not row:
                continue
            where = f"{path}:{reader.line_num}"
            name, box = _row(row, ctx, where)
            out.where.setdefault(name, where)
            boxes = out.frames.setdefault(name, [])
            if box is not None:
                boxes.append(box)
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: not CSV ({exc})") from exc
    return out


class CsvFormat(Format):
    """``boxes.csv``: a dataset file (written at finalize, merge, import), an export, and readable."""

    name = "example-csv"
    help = "Example plug-in: boxes.csv, a row per box (image, class name, pixel corners, score)"

    def dataset_files(self, records: list[FrameRecord], ctx: Context) -> dict[str, bytes]:
        return {CSV_FILE: csv_text(records, ctx.classes).encode("utf-8")}

    def read(self, path: Path, ctx: ReadContext) -> Annotations:
        file = path / CSV_FILE if path.is_dir() else path
        if not file.is_file():
            raise InputError(f"{path}: no {CSV_FILE} there")
        return read_csv(file, ctx)

    def detect(self, path: Path) -> bool:
        return (path / CSV_FILE).is_file() if path.is_dir() else path.name == CSV_FILE

    def tolerance(self, width: int, height: int) -> float:
        return 0.006  # corners with 2 decimals
