"""Masks as polygons: bitmap to rings and back, exactly, then simplified within a stated tolerance.

A box's mask is stored as **rings**: closed polygons, each a flat list ``[x0, y0, x1, y1, ...]`` in
pixels (continuous coordinates, as boxes are: pixel ``i`` spans ``[i, i + 1)``; a ring runs through
the centres of the mask's boundary pixels, so its vertices sit on ``.5``), the last point joining
the first (never repeated). A pixel is in the mask when an **odd** number of rings enclose it
(boundary included): the outline of each part is a ring, the outline of each hole inside a part is
a ring (through the hole's own boundary pixels), an island inside that hole is a ring again, and
so on. So every part of a multi-part object is kept, holes are kept, and the journal reads as
plain polygons where a mask has none.

:func:`mask_to_rings` traces each level with OpenCV (``RETR_EXTERNAL`` on the mask, then on its
holes, ...), which rasterizes back (:func:`rings_to_mask`) to the same bitmap, pixel for pixel; it
then simplifies each ring (Douglas-Peucker, ``tolerance`` pixels) and keeps the simplification only
when the mask it draws has IoU >= :data:`MIN_IOU` with the exact one, halving the tolerance until it
does (down to OpenCV's lossless ``CHAIN_APPROX_SIMPLE`` points). No dropped point can so cost more
than 1% of IoU.

Files need other shapes of the same thing: one polygon per box joined as Ultralytics joins segments
(:func:`merge_multi_segment`, YOLO-seg), COCO RLE where rings nest (:func:`rle_encode`), rings of at
least three points (:func:`solid_ring`). Masks read back from files are drawn as the union of their
polygons (:func:`rings_to_mask` with ``union=True``) and traced again (:func:`normalize`).

Nothing here imports OpenCV before it is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Rings = list[list[float]]

# A simplified outline must draw the exact mask back with at least this IoU.
MIN_IOU = 0.99
# Below this Douglas-Peucker tolerance (px), the lossless outline is kept as it is.
LEAST_TOLERANCE = 0.25
# Default simplification tolerance in pixels (config masks.tolerance).
TOLERANCE = 1.0


def _cv2():
    import cv2

    return cv2


# Coordinates read back from files carry rounding (YOLO's 1e-6 of the side): a vertex this close below a pixel edge
# counts as on it, so a ring read back draws the pixels it was written with.
SNAP_PX = 0.01


def _points(ring: Sequence[float]) -> np.ndarray:
    """A ring's vertices as the pixels they lie in, (N, 1, 2) int32 (what OpenCV draws, boundary included)."""
    pts = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    return np.floor(pts + SNAP_PX).astype(np.int32).reshape(-1, 1, 2)


def _ring(contour: np.ndarray, dx: int, dy: int) -> list[float]:
    """An OpenCV contour (pixel indices in a crop at ``dx, dy``) as a ring in continuous coordinates."""
    pts = contour.reshape(-1, 2).astype(np.float64) + (dx + 0.5, dy + 0.5)
    return [float(v) for v in pts.reshape(-1)]


def _levels(mask: np.ndarray, approx: int) -> list[np.ndarray]:
    """The outlines of ``mask`` (uint8 0/1) level by level: parts, their holes, islands in those, ..."""
    cv2 = _cv2()
    out: list[np.ndarray] = []
    level = mask
    while level.any():
        contours, _ = cv2.findContours(level, cv2.RETR_EXTERNAL, approx)
        filled = np.zeros_like(level)
        cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
        out += list(contours)
        level = (filled & (1 - level)).astype(np.uint8)  # the holes of this level, as a mask of their own
    return out


def _draw(contours: Sequence[np.ndarray], shape: tuple[int, int], union: bool = False) -> np.ndarray:
    cv2 = _cv2()
    out = np.zeros(shape, np.uint8)
    if union:
        for c in contours:
            cv2.fillPoly(out, [c], 1)
        return out
    h, w = shape
    for c in contours:  # each ring drawn in its own bounds (the cost follows the ring, not the frame)
        pts = c.reshape(-1, 2)
        x0, y0 = max(int(pts[:, 0].min()), 0), max(int(pts[:, 1].min()), 0)
        x1, y1 = min(int(pts[:, 0].max()) + 1, w), min(int(pts[:, 1].max()) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        one = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(one, [c - np.array([x0, y0], np.int32)], 1)
        out[y0:y1, x0:x1] ^= one
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bitmaps (1.0 for two empty ones)."""
    a, b = a.astype(bool), b.astype(bool)
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def clean(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without parts, and with its holes filled, of fewer than ``min_area`` pixels (0: as it is)."""
    if min_area <= 0:
        return mask
    cv2 = _cv2()
    out = mask.astype(np.uint8)
    for value in (1, 0):  # specks first, then holes (background components not touching the border)
        n, labels, stats, _ = cv2.connectedComponentsWithStats((out == value).astype(np.uint8), connectivity=8)
        h, w = out.shape
        for k in range(1, n):
            x, y, bw, bh, area = stats[k]
            if area >= min_area:
                continue
            if value == 0 and (x == 0 or y == 0 or x + bw == w or y + bh == h):
                continue  # background reaching the border is no hole
            out[labels == k] = 1 - value
    return out


def mask_to_rings(mask: np.ndarray, tolerance: float = TOLERANCE, min_area: int = 0) -> Rings:
    """The rings of a bitmap (H, W; nonzero = in), simplified within ``tolerance`` px at IoU >= :data:`MIN_IOU`.

    Args:
        mask: The object's pixels in the frame.
        tolerance: Douglas-Peucker tolerance in pixels; 0: the lossless outline.
        min_area: Parts and holes of fewer pixels are dropped (filled) first; 0: every one is kept.

    Returns:
        The rings (empty for an empty mask).
    """
    cv2 = _cv2()
    mask = np.asarray(mask)
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return []
    # Work in the mask's bounding box (one pixel of margin): the cost follows the object, not the frame.
    x0, y0 = max(int(xs.min()) - 1, 0), max(int(ys.min()) - 1, 0)
    x1, y1 = min(int(xs.max()) + 2, mask.shape[1]), min(int(ys.max()) + 2, mask.shape[0])
    crop = clean(np.ascontiguousarray(mask[y0:y1, x0:x1] != 0, dtype=np.uint8), min_area)
    exact = _levels(crop, cv2.CHAIN_APPROX_SIMPLE)
    if not exact:
        return []
    chosen = exact
    eps = float(tolerance)
    while eps >= LEAST_TOLERANCE:
        simple = [cv2.approxPolyDP(c, eps, True) if len(c) > 3 else c for c in exact]
        if iou(_draw(simple, crop.shape), crop) >= MIN_IOU:
            chosen = simple
            break
        eps /= 2
    return [_ring(c, x0, y0) for c in chosen]


def rings_to_mask(rings: Rings, width: int, height: int, union: bool = False) -> np.ndarray:
    """The bitmap (H, W uint8) that ``rings`` draw: odd-count (ours), or ``union`` (polygons read from files)."""
    return _draw([_points(r) for r in rings if len(r) >= 2], (height, width), union)


def normalize(rings: Rings, width: int, height: int, tolerance: float = TOLERANCE) -> Rings:
    """Polygons read from a file (their union is the mask) as this module's rings."""
    return mask_to_rings(rings_to_mask(rings, width, height, union=True), tolerance)


def box_mask(box: Sequence[float], width: int, height: int) -> np.ndarray:
    """The pixels whose centres lie in a box (H, W uint8)."""
    x1, y1, x2, y2 = box
    out = np.zeros((height, width), np.uint8)
    c0, c1 = max(math.ceil(x1 - 0.5), 0), min(math.ceil(x2 - 0.5), width)
    r0, r1 = max(math.ceil(y1 - 0.5), 0), min(math.ceil(y2 - 0.5), height)
    out[r0:r1, c0:c1] = 1
    return out


def box_ring(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    """A box as a 4-point polygon (corners clockwise from the top left)."""
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def is_box_ring(rings: Rings, box: Sequence[float], tolerance: float) -> bool:
    """``rings`` is one 4-point polygon on the box's corners (a box written where it had no mask)."""
    if len(rings) != 1 or len(rings[0]) != 8:
        return False
    x1, y1, x2, y2 = box
    pts = np.asarray(rings[0], float).reshape(4, 2)
    corners = {(x1, y1), (x2, y1), (x2, y2), (x1, y2)}
    return all(any(abs(px - cx) <= tolerance and abs(py - cy) <= tolerance for cx, cy in corners) for px, py in pts)


def nested(rings: Rings) -> bool:
    """Some ring lies inside another (a hole, or an island in one): polygons alone cannot say it."""
    if len(rings) < 2:
        return False
    cv2 = _cv2()
    shapes = [np.asarray(r, np.float32).reshape(-1, 2) for r in rings]
    lo = np.array([s.min(axis=0) for s in shapes])
    hi = np.array([s.max(axis=0) for s in shapes])
    firsts = np.array([s[0] for s in shapes])
    solid = np.array([len(s) >= 3 for s in shapes])
    for i in range(len(shapes)):
        x, y = firsts[i]
        inside = solid & (lo[:, 0] < x) & (x < hi[:, 0]) & (lo[:, 1] < y) & (y < hi[:, 1])
        inside[i] = False
        for j in np.flatnonzero(inside):  # only the rings whose bounds hold the point are tested
            if cv2.pointPolygonTest(shapes[j].reshape(-1, 1, 2), (float(x), float(y)), False) > 0:
                return True
    return False


# Half the width of the thin polygon that stands for a part of one pixel or one straight run of pixels.
THIN_PX = 0.35


def solid_ring(ring: list[float]) -> list[float]:
    """A ring of at least 3 points: one of one or two points (a part of one pixel, or a straight run of them) becomes
    a thin polygon around those pixels' centres.

    COCO, CVAT, Label Studio and YOLO need 3 points. The polygon reaches :data:`THIN_PX` past the
    centres on every side, so a centre-inside rasterizer (pycocotools) and :func:`rings_to_mask`
    both draw those pixels again.
    """
    if len(ring) >= 6:
        return ring
    p = np.asarray(ring[:2], float)
    q = np.asarray(ring[-2:], float)
    along = q - p
    length = float(np.hypot(*along))
    e = along / length if length else np.array([1.0, 0.0])
    n = np.array([-e[1], e[0]])
    w = THIN_PX
    corners = [p - w * e + w * n, q + w * e + w * n, q + w * e - w * n, p - w * e - w * n]
    return [round(float(v), 4) for c in corners for v in c]


def inner_holes(rings: Rings, width: int, height: int) -> Rings:
    """The same mask with each hole traced along the object's pixels around it (OpenCV's ``RETR_CCOMP``).

    What a single polygon drawn boundary-inclusive (``cv2.fillPoly``, as Ultralytics draws a
    YOLO-seg line) needs: its joins to a hole then run over the object's own pixels, and the
    hole's pixels stay empty. Rings without holes come back as they are.
    """
    if not nested(rings):
        return rings
    cv2 = _cv2()
    bitmap = rings_to_mask(rings, width, height)
    ys, xs = np.nonzero(bitmap)
    if not len(xs):
        return rings
    x0, y0 = max(int(xs.min()) - 1, 0), max(int(ys.min()) - 1, 0)
    crop = np.ascontiguousarray(bitmap[y0 : int(ys.max()) + 2, x0 : int(xs.max()) + 2])
    contours, _ = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return [_ring(c, x0, y0) for c in contours]


def _min_index(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return int(i), int(j)


def _chain(segments: list[np.ndarray]) -> list[np.ndarray]:
    """The segments in an order that keeps the joins short: the longest first, then each time the nearest centre."""
    left = sorted(segments, key=len, reverse=True)
    centres = np.array([seg.mean(axis=0) for seg in left])
    free = np.ones(len(left), bool)
    order, k = [], 0
    for _ in range(len(left)):
        order.append(k)
        free[k] = False
        if free.any():
            d = ((centres - centres[k]) ** 2).sum(axis=1)
            k = int(np.argmin(np.where(free, d, np.inf)))
    return [left[i] for i in order]


def merge_multi_segment(rings: Rings) -> list[float]:
    """All rings as one polygon, joined at their closest points by thin there-and-back lines.

    Ultralytics' ``merge_multi_segment`` (its COCO converter and ``masks2segments``), reimplemented
    so that formats need not import Ultralytics, on the rings put in an order that keeps the joins
    short (the longest ring first, then each time the nearest one: fewer pixels drawn by them). Drawn as one
    polygon (``cv2.fillPoly``, as Ultralytics draws YOLO-seg labels), every part is filled and a
    hole stays a hole; the joining lines add their own pixels.
    """
    if len(rings) == 1:
        return list(rings[0])
    segments = _chain([np.asarray(r, float).reshape(-1, 2) for r in rings])
    idx_list: list[list[int]] = [[] for _ in segments]
    for i in range(1, len(segments)):
        a, b = _min_index(segments[i - 1], segments[i])
        idx_list[i - 1].append(a)
        idx_list[i].append(b)
    out: list[np.ndarray] = []
    for k in range(2):
        if k == 0:
            for i, idx in enumerate(idx_list):
                if len(idx) == 2 and idx[0] > idx[1]:
                    idx = [len(segments[i]) - 1 - x for x in idx]
                    segments[i] = segments[i][::-1, :]
                segments[i] = np.roll(segments[i], -idx[0], axis=0)
                segments[i] = np.concatenate([segments[i], segments[i][:1]])
                if i in {0, len(idx_list) - 1}:
                    out.append(segments[i])
                else:
                    span = [0, idx[1] - idx[0]]
                    out.append(segments[i][span[0] : span[1] + 1])
        else:
            for i in range(len(idx_list) - 1, -1, -1):
                if i not in {0, len(idx_list) - 1}:
                    idx = idx_list[i]
                    n = abs(idx[1] - idx[0])
                    out.append(segments[i][n:])
    return [float(v) for v in np.concatenate(out).reshape(-1)]


def rle_encode(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bitmap: ``{"size": [h, w], "counts": [...]}``, column-major, 0s first."""
    flat = np.asarray(mask, dtype=bool).reshape(-1, order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """The bitmap of an uncompressed COCO RLE (ValueError when the counts do not fill ``height x width``)."""
    values = np.asarray(counts, dtype=np.int64)
    if (values < 0).any() or int(values.sum()) != height * width:
        raise ValueError(f"RLE counts sum to {int(values.sum())}, not {height} x {width}")
    flat = np.repeat(np.arange(len(values)) % 2, values).astype(np.uint8)
    return np.ascontiguousarray(flat.reshape((height, width), order="F"))


def rle_string_decode(counts: str, height: int, width: int) -> np.ndarray:
    """The bitmap of a compressed COCO RLE string (pycocotools' encoding)."""
    from pycocotools import mask as coco_mask

    return coco_mask.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(np.uint8)


def same_mask(a: np.ndarray, b: np.ndarray) -> bool:
    """Two bitmaps differ only within one pixel of ``a``'s outline (the precision files keep)."""
    cv2 = _cv2()
    diff = (a != 0) ^ (b != 0)
    if not diff.any():
        return True
    kernel = np.ones((3, 3), np.uint8)
    band = cv2.dilate(a, kernel) & (1 - cv2.erode(a, kernel))
    return not (diff & (band == 0)).any()


def round_rings(rings: Rings, digits: int = 2) -> Rings:
    """Rings with every coordinate rounded (the journal's 1/100 px)."""
    return [[round(v, digits) for v in ring] for ring in rings]
