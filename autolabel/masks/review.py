"""A reviewed frame's masks: what a review tool sent back, merged with what the journal holds.

A box a reviewer left in place keeps its mask unless the reviewer changed its outline (beyond one
pixel of it, the precision files keep: :func:`autolabel.masks.geometry.same_mask`); an outline sent
back as the box's own 4 corners (what a box without a mask is written as) is no mask. A box a
reviewer moved or drew gets the outline drawn with it, if any and if it is not the old box's outline
left behind (stale); otherwise none, until a mask model at hand makes one (the import, or the next
``run``). Outlines read back are traced again (:func:`canonical`), so the journal always holds rings
as the mask step writes them.
"""

from __future__ import annotations

import dataclasses

from autolabel.datasets.formats.base import Format
from autolabel.datasets.records import Box
from autolabel.masks import geometry


def draw(rings: list[list[float]], width: int, height: int):
    """The bitmap of rings read from a file: nested rings by the odd rule (holes), others as their union."""
    return geometry.rings_to_mask(rings, width, height, union=not geometry.nested(rings))


def canonical(rings: list[list[float]], width: int, height: int, tolerance: float) -> list[list[float]]:
    """Rings read from a file, traced again as the mask step traces a model's mask."""
    return geometry.round_rings(geometry.mask_to_rings(draw(rings, width, height), tolerance))


def _as_written(box: Box, fmt: Format, width: int, height: int, above: list[Box] = ()):
    """The bitmap a format's reader gives back for ``box`` (YOLO-seg: its joined polygon; VOC: what ``above`` leave)."""
    if fmt.outlines:
        from autolabel.datasets.formats.yolo import seg_polygon

        return geometry.rings_to_mask([seg_polygon(box, width, height)], width, height, union=True)
    if box.mask:
        out = geometry.rings_to_mask(box.mask, width, height)
    else:
        out = geometry.box_mask((box.x1, box.y1, box.x2, box.y2), width, height)
    if fmt.layered:
        for b in above:  # later objects are drawn over this one
            cover = (
                geometry.rings_to_mask(b.mask, width, height)
                if b.mask
                else geometry.box_mask((b.x1, b.y1, b.x2, b.y2), width, height)
            )
            out &= 1 - cover
    return out


def _corners_close(a: Box, b: Box, tolerance: float) -> bool:
    pairs = zip((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2), strict=True)
    return a.class_id == b.class_id and all(abs(p - q) <= tolerance for p, q in pairs)


def _no_mask(read: Box, tolerance: float) -> bool:
    """The box came back without an outline, or with its own corners as one."""
    return not read.mask or geometry.is_box_ring(read.mask, (read.x1, read.y1, read.x2, read.y2), tolerance)


def merge(
    old: list[Box], new: list[Box], fmt: Format, width: int, height: int, tolerance: float, mask_tolerance: float
) -> tuple[list[Box], bool, bool] | None:
    """A reviewed frame's boxes: ``old`` (the journal's) under the review ``new`` (read from ``fmt``).

    Returns None when nothing changed (boxes within ``tolerance`` px, outlines within a pixel), else
    the new boxes, whether the boxes changed (else only masks did), and whether any mask changed.
    """
    if len(old) == len(new):
        same = []
        for o, n in zip(old, new, strict=True):
            if _corners_close(o, n, tolerance):
                same.append(True)
            elif fmt.outlines and n.mask and o.class_id == n.class_id:  # YOLO-seg: its box is the polygon's
                same.append(geometry.same_mask(_as_written(o, fmt, width, height), draw(n.mask, width, height)))
            else:
                same.append(False)
        if all(same):
            out, changed = [], False
            for k, (o, n) in enumerate(zip(old, new, strict=True)):
                if _no_mask(n, max(tolerance, 0.5)) or geometry.same_mask(
                    _as_written(o, fmt, width, height, old[k + 1 :]), draw(n.mask, width, height)
                ):
                    out.append(o)
                else:
                    out.append(dataclasses.replace(o, mask=canonical(n.mask, width, height, mask_tolerance)))
                    changed = True
            return (out, False, True) if changed else None
    boxes = []
    written: dict[int, object] = {}  # each old box's bitmap as the format reads it back, drawn once

    def as_written(i: int):
        if i not in written:
            written[i] = _as_written(old[i], fmt, width, height, old[i + 1 :])
        return written[i]

    for n in new:
        box = Box(n.class_id, round(n.x1, 2), round(n.y1, 2), round(n.x2, 2), round(n.y2, 2))
        at = next((i for i, o in enumerate(old) if _corners_close(o, n, tolerance)), None)
        twin = old[at] if at is not None else None
        if _no_mask(n, max(tolerance, 0.5)):
            box.mask = twin.mask if twin is not None else None
        else:
            read = draw(n.mask, width, height)
            stale = any(o.mask and geometry.same_mask(as_written(i), read) for i, o in enumerate(old) if i != at)
            if twin is not None and geometry.same_mask(as_written(at), read):
                box.mask = twin.mask
            elif not stale:
                box.mask = canonical(n.mask, width, height, mask_tolerance)
        boxes.append(box)
    return boxes, True, True
