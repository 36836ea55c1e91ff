"""LOST (Siméoni et al., 2021): objects found in a self-supervised ViT's last-layer keys, no labels.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Discovery:
    """One object found in a patch grid: its box in patch units (end exclusive), its seed patch."""

    x0: int
    y0: int
    x1: int
    y1: int
    seed: int


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
