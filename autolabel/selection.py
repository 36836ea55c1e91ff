"""Which sampled frames are worth labeling: near-duplicate removal and diversity selection.

Two cheap per-frame signals, both from a 64x48 grey thumbnail (``cv2.INTER_AREA``, so
sensor noise averages out over each 10x10 block of a 640x480 frame):

- :func:`similarity` (near-duplicates): SSIM between two thumbnails (7x7 Gaussian
  windows), averaged over 8x8-pixel tiles, and the *lowest* tile taken. A product is a
  small part of the frame: the mean SSIM over the whole frame barely moves when it turns
  (the table and the wall dominate), the worst tile does. ``bench/dedup.py`` measured the
  choice against a perceptual hash, whole-frame correlation and whole-frame SSIM at
  several sizes (README, "Choosing --dedup and --max-frames").
- :func:`embedding` (diversity): the thumbnail shrunk to 32x24, zero mean, unit norm,
  float16 (1.5 kB a frame); :func:`farthest_point` picks frames far apart in it.

Both are deterministic: the same decoded frames give the same decisions, on any run.
"""

from __future__ import annotations

import numpy as np

# Bumped when a signal changes: the settings fingerprint carries it, so a dataset whose
# frames were chosen by another signal is not resumed with this one.
SIGNAL = "ssim64x48-tile8-min.v1"
DUPLICATE = "duplicate"  # a journal record's ``dropped`` for a frame left out as a near-duplicate

THUMB = (64, 48)  # (width, height) of a landscape frame's thumbnail; portrait frames get (48, 64)
TILE = 8  # pixels of the thumbnail per tile whose mean SSIM counts
EMBED = (32, 24)
_CHUNK = 8192  # rows converted to float32 at a time in farthest_point, past:
_FLOAT32_BYTES = 128 << 20  # embeddings converted to float32 at once up to this size (about 43,000 frames)
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # SSIM's constants for 8-bit images


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A BGR frame as a float32 grey thumbnail, 64x48 (48x64 for portrait frames)."""
    import cv2

    h, w = image.shape[:2]
    size = THUMB if w >= h else THUMB[::-1]
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two thumbnails are, in [0, 1]: the lowest mean SSIM over the 8x8 tiles.

    1 means the same picture; a product held still (sensor noise, a pixel of hand tremor)
    stays above 0.98, a product turned by 3 degrees falls below it (``bench/dedup.py``).
    Thumbnails of different shapes (a rotated stream) are not alike at all (0).
    """
    import cv2

    if a.shape != b.shape:
        return 0.0
    k, s = (7, 7), 1.5
    mu_a, mu_b = cv2.GaussianBlur(a, k, s), cv2.GaussianBlur(b, k, s)
    var_a = cv2.GaussianBlur(a * a, k, s) - mu_a * mu_a
    var_b = cv2.GaussianBlur(b * b, k, s) - mu_b * mu_b
    cov = cv2.GaussianBlur(a * b, k, s) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / ((mu_a * mu_a + mu_b * mu_b + _C1) * (var_a + var_b + _C2))
    h, w = ssim.shape
    tiles = ssim[: h // TILE * TILE, : w // TILE * TILE].reshape(h // TILE, TILE, w // TILE, TILE).mean(axis=(1, 3))
    return float(min(1.0, max(0.0, tiles.min())))


def embedding(thumb: np.ndarray) -> np.ndarray:
    """A thumbnail as a diversity embedding: 32x24 grey, zero mean, unit norm, float16."""
    import cv2

    h, w = thumb.shape
    small = cv2.resize(thumb, EMBED if w >= h else EMBED[::-1], interpolation=cv2.INTER_AREA).ravel()
    small = small - small.mean()
    norm = float(np.sqrt((small * small).sum()))
    return (small / norm if norm > 1e-6 else small).astype(np.float16)


class Deduper:
    """Drops a frame whose :func:`similarity` to the last kept frame is at least ``threshold``.

    ``reference`` is that last kept frame, as ``(index, thumbnail)``; a resumed run sets it
    from the frame it decodes again, so its decisions are the uninterrupted run's.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.reference: tuple[int, np.ndarray] | None = None

    def check(self, index: int, thumb: np.ndarray) -> float | None:
        """The similarity when the frame is a near-duplicate (and dropped), else None (it is the new reference)."""
        if self.reference is not None:
            score = similarity(self.reference[1], thumb)
            if score >= self.threshold:
                return score
        self.reference = (index, thumb)
        return None


def farthest_point(embeddings: np.ndarray, n: int) -> list[int]:
    """Greedy farthest-point selection: ``n`` row indices, spread over the embedding space.

    Starts from row 0 (the first candidate frame), then repeatedly takes the row farthest
    from all taken ones (ties: the lowest index). Deterministic; ascending on return.
    Memory: the embeddings, once more as float32 up to 128 MB (else a chunk at a time), and one
    float32 distance per row.
    """
    m = len(embeddings)
    if n >= m:
        return list(range(m))
    nearest = np.full(m, np.inf, dtype=np.float32)
    # float32 for the distances: all at once when that is small, else a chunk at a time.
    whole = np.asarray(embeddings, dtype=np.float32) if embeddings.size * 4 <= _FLOAT32_BYTES else None
    chosen = [0]
    for _ in range(n - 1):
        last = np.asarray(embeddings[chosen[-1]], dtype=np.float32)
        for start in range(0, m, m if whole is not None else _CHUNK):
            rows = whole if whole is not None else np.asarray(embeddings[start : start + _CHUNK], dtype=np.float32)
            diff = rows - last
            part = nearest[start : start + len(rows)]
            np.minimum(part, np.einsum("ij,ij->i", diff, diff), out=part)
        nearest[chosen[-1]] = -1.0  # taken: never again
        chosen.append(int(np.argmax(nearest)))
    return sorted(chosen)
