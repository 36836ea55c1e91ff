"""Objects found in a self-supervised ViT's last-layer keys, no labels: seed 002's method and LOST's.

**Seed 002's method** (``model.discover.method: seeds``, the default; its ``object_detector.py``,
"an adaptation of LOST to discover multiple objects"), step by step, each a function here:

1. :func:`degrees`: each patch's number of positive correlations with the others (``k kᵀ > 0``);
2. :func:`lowest_degree_seeds`: the ``n_seeds`` lowest-degree patches;
3. :func:`cluster_seeds`: adjacent seeds (4-connected on the patch grid) are one cluster, which
   keeps its lowest-degree seed;
4. :func:`seed_box`: each seed's object is the connected component, holding the seed, of the
   patches whose raw key product with the seed is above ``correlation`` (the seed's 75, for
   ViT-B/8); where the seed is not above it itself (the seed's code then returns
   ``[0, 0, 0, 0]``), LOST's expansion of that seed (:func:`expand`) gives its object;
5. :func:`suppress`: non-maximum suppression by score ``1 - degree / N`` (the seed's scaled
   degree), dropping boxes scoring under ``score_th`` (the seed's 0.4) -- except the first seed's
   object, LOST's guarantee: every image yields at least that one.

Classification of each box and the seed's confidence cut of 0.25 happen in the labeler.

**LOST's own method, extended** (``method: lost``), as before:

Patches of one object correlate positively with each other and negatively with the
background, and an object covers less of the image than the background. So the patch
with the fewest positive correlations (the lowest degree in the graph ``k kᵀ > 0``) is a
seed inside an object; the seed's expansion is the lowest-degree patches correlated with
it; the object is the connected component, holding the seed, of the patches that
correlate positively with that expansion, and its box is that component's extent.

Several objects per image: seeds are taken in order of degree while fewer than
``number_seeds`` objects were found. A candidate is skipped when it lies in an object
already found or when its keys correlate (cosine) above ``correlation_th`` with an
earlier seed's (the same object again); the search stops at the first candidate whose
degree reaches half the patches (from there on it is background, LOST's own
assumption). The expansion of a later seed leaves out the patches of earlier objects.

Pure functions on tensors; the similarity graph is computed for a whole batch at once on
its device, the per-seed steps on small CPU arrays.

Seed 002's published defaults are for DINO ViT-B/8 at an image's own size: 40 seeds, a raw
key product of 75. The defaults here scale them to the backbone autolabel ships (ViT-S/16 at
224 px): 10 seeds (40 patches of 8 px cover the image area of 10 of 16 px; 10 are 4% of the
266 patches of a 4:3 frame, as 40 were of the seed's 256-px photos), and 75 times the key
dimension over ViT-B's 768 (a product of keys sums over their dimensions): 37.5 for ViT-S.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Discovery:
    """One object found in a patch grid: its box in patch units (end exclusive), its seed patch, its score.

    ``score`` is seed 002's: ``1 - degree / N`` of the seed (1 for method ``lost``, which has none).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    seed: int
    score: float = 1.0


# Seed 002's published defaults (ViT-B/8: 768-dimensional keys) and the ones scaled to ViT-S/16.
SEED_CORRELATION = 75.0
SEED_KEY_DIM = 768
SEED_SCORE = 0.4


def similarity(keys):
    """``k kᵀ`` per image: ``(B, N, d)`` keys to ``(B, N, N)`` float32 correlations, on the keys' device."""
    keys = keys.float()
    return keys @ keys.transpose(-1, -2)


def discover(
    keys: np.ndarray,
    affinity: np.ndarray,
    grid: tuple[int, int],
    number_seeds: int = 1,
    correlation_th: float = 1.0,
    k_patches: int = 100,
) -> list[Discovery]:
    """The objects LOST finds in one image.

    Args:
        keys: ``(N, d)`` patch keys (prefix tokens removed), row-major over ``grid``.
        affinity: ``(N, N)`` their correlations (:func:`similarity`).
        grid: ``(rows, cols)`` of the patch grid, ``rows * cols == N``.
        number_seeds: At most this many objects.
        correlation_th: Skip a seed whose cosine with an earlier seed's keys is above this.
        k_patches: Size of the seed expansion's candidate set (LOST's k).
    """
    from scipy import ndimage

    rows, cols = grid
    n = rows * cols
    if keys.shape[0] != n or affinity.shape != (n, n):
        raise ValueError(f"keys {keys.shape} and affinity {affinity.shape} do not fit a {rows}x{cols} grid")
    positive = affinity > 0
    degree = positive.sum(axis=1)
    order = np.argsort(degree, kind="stable")
    norms = np.linalg.norm(keys, axis=1, keepdims=True)
    unit = keys / np.maximum(norms, 1e-12)
    used = np.zeros(n, dtype=bool)
    found: list[Discovery] = []
    seeds: list[int] = []
    for seed in order:
        seed = int(seed)
        if len(found) >= number_seeds or 2 * degree[seed] >= n:
            break
        if used[seed] or any(float(unit[seed] @ unit[s]) > correlation_th for s in seeds):
            continue
        seeds.append(seed)
        potentials = order[~used[order]][:k_patches]
        similars = potentials[positive[seed, potentials]]
        mask = (affinity[similars].sum(axis=0) > 0).reshape(rows, cols)
        if not mask.flat[seed]:
            continue  # the seed's own expansion disowns it: no object here
        labeled, _ = ndimage.label(mask)
        component = labeled == labeled.flat[seed]
        ys, xs = np.nonzero(component)
        found.append(Discovery(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, seed))
        used |= component.reshape(-1)
    return found


def degrees(affinity: np.ndarray) -> np.ndarray:
    """Each patch's positive correlations with the other patches (the diagonal left out, as the seed does)."""
    positive = affinity > 0
    return positive.sum(axis=1) - np.diagonal(positive)


def lowest_degree_seeds(degree: np.ndarray, n_seeds: int) -> np.ndarray:
    """The ``n_seeds`` lowest-degree patches, lowest first (ties: the lower index, so the order is stable)."""
    return np.argsort(degree, kind="stable")[:n_seeds]


def cluster_seeds(seeds: np.ndarray, degree: np.ndarray, grid: tuple[int, int]) -> list[int]:
    """One seed per group of adjacent seeds (4-connected): the group's lowest-degree one, in ``seeds``' order.

    ``seeds`` come lowest degree first, so the first seed always stays (LOST's seed).
    """
    from scipy import ndimage

    rows, cols = grid
    marks = np.zeros(rows * cols, dtype=bool)
    marks[seeds] = True
    labeled, _ = ndimage.label(marks.reshape(rows, cols))
    kept, seen = [], set()
    for s in seeds:  # lowest degree first: the first seed met in a cluster is its lowest-degree one
        cluster = int(labeled.flat[int(s)])
        if cluster not in seen:
            seen.add(cluster)
            kept.append(int(s))
    return kept


def _component_box(mask: np.ndarray, seed: int, score: float) -> Discovery | None:
    """The box of ``mask``'s connected component (4-connected) holding ``seed``; None when the seed is outside."""
    from scipy import ndimage

    if not mask.flat[seed]:
        return None
    labeled, _ = ndimage.label(mask)
    ys, xs = np.nonzero(labeled == labeled.flat[seed])
    return Discovery(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, seed, score)


def seed_box(row: np.ndarray, seed: int, grid: tuple[int, int], correlation: float, score: float = 1.0):
    """Seed 002's box of a seed: the component of ``row > correlation`` (the seed's raw products) holding it.

    None where the seed's own product is not above ``correlation`` (the seed's code returns ``[0, 0, 0, 0]``).
    """
    return _component_box((row > correlation).reshape(grid), seed, score)


def expand(affinity: np.ndarray, degree: np.ndarray, seed: int, grid: tuple[int, int], k_patches: int, score=1.0):
    """LOST's expansion of ``seed``: the component, holding it, of the patches correlated with its similars.

    Its similars are those of the ``k_patches`` lowest-degree patches it correlates positively with.
    A seed its expansion disowns (LOST's "should not happen") is an object of its own patch.
    """
    potentials = np.argsort(degree, kind="stable")[:k_patches]
    similars = potentials[affinity[seed, potentials] > 0]
    if len(similars):
        found = _component_box((affinity[similars].sum(axis=0) > 0).reshape(grid), seed, score)
        if found is not None:
            return found
    cols = grid[1]
    y, x = divmod(seed, cols)
    return Discovery(x, y, x + 1, y + 1, seed, score)


def _iou(a: Discovery, b: Discovery) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    inter = max(0, w) * max(0, h)
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union else 0.0


def suppress(found: list[Discovery], iou: float = 0.5, score_th: float = SEED_SCORE) -> list[Discovery]:
    """Non-maximum suppression by score; boxes scoring under ``score_th`` go, except the first (LOST's seed).

    Returns the kept boxes, the first one first, then by score (ties: in ``found``'s order).
    """
    if not found:
        return []
    first, rest = found[0], sorted(found[1:], key=lambda d: -d.score)
    kept = [first]
    for d in rest:
        if d.score >= score_th and all(_iou(d, k) <= iou for k in kept):
            kept.append(d)
    return kept


def discover_seeds(
    affinity: np.ndarray,
    grid: tuple[int, int],
    n_seeds: int = 10,
    correlation: float = SEED_CORRELATION,
    k_patches: int = 100,
    score_th: float = SEED_SCORE,
    nms_iou: float = 0.5,
) -> list[Discovery]:
    """Seed 002's objects in one image (see the module's steps); the first seed's object always first.

    Args:
        affinity: ``(N, N)`` raw key products (:func:`similarity`).
        grid: ``(rows, cols)`` of the patch grid.
        n_seeds: Candidate seeds (the seed's 40 at patch 8).
        correlation: A patch joins a seed's object where its raw key product with the seed is above this.
        k_patches: LOST's expansion, for a seed not above ``correlation`` itself.
        score_th: Seed 002's NMS score threshold (a seed's ``1 - degree / N``).
        nms_iou: Its NMS IoU.
    """
    rows, cols = grid
    n = rows * cols
    if affinity.shape != (n, n):
        raise ValueError(f"affinity {affinity.shape} does not fit a {rows}x{cols} grid")
    degree = degrees(affinity)
    found = []
    for s in cluster_seeds(lowest_degree_seeds(degree, n_seeds), degree, grid):
        score = 1.0 - float(degree[s]) / n
        box = seed_box(affinity[s], s, grid, correlation, score)
        found.append(box if box is not None else expand(affinity, degree, s, grid, k_patches, score))
    return suppress(found, nms_iou, score_th)
