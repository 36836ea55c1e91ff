"""Frame selection: which similarity signal for --dedup, what it keeps, and what it costs.

Three parts, printed as tables:

1. Signals: a 640x480 synthetic printed box, held still (sensor noise 2-8, JPEG, up to
   1 px of hand tremor) or turned by 2, 3 and 5 degrees, scored by each candidate signal
   against the still frame: a perceptual hash (dHash, pHash), whole-frame correlation and
   whole-frame SSIM on small thumbnails, and ours (the lowest 8x8-tile SSIM of a 64x48
   thumbnail). A signal must score still frames above T and turned ones below it.
2. Frames kept by ``--dedup T`` (the pipeline's own code path) on the bundled videos at
   strides 1, 5 and 30, and on a synthetic 640x480 clip: 60 frozen frames (noise and
   0.5 px tremor) then 60 frames of a box turning 3 degrees a frame.
3. Cost: thumbnail + similarity per 640x480 frame (the check), embedding, and
   farthest-point selection, on this CPU.

    python bench/dedup.py
    python bench/dedup.py --videos /work/shared/data/videos
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.sampling import iter_frames  # noqa: E402
from autolabel.selection import Deduper, embedding, farthest_point, similarity, thumbnail  # noqa: E402
from autolabel.sources import Source  # noqa: E402

THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.99)


# --- a synthetic product ---------------------------------------------------------------


def scene(size=(640, 480), product=3, cell=8, seed=0):
    """A grey gradient and a printed box (random ``cell``-pixel blocks) 1/``product`` of the frame wide."""
    rng = np.random.default_rng(seed)
    w, h = size
    background = np.zeros((h, w, 3), np.uint8)
    background[:] = np.linspace(150, 200, w, dtype=np.uint8)[None, :, None]
    pw, ph = w // product, h // product
    blocks = rng.integers(0, 255, (max(1, ph // cell), max(1, pw // cell), 3), dtype=np.uint8)
    box = cv2.resize(blocks, (pw, ph), interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(box, (0, 0), (pw - 1, ph - 1), (0, 200, 255), 4)
    return background, box


def render(background, box, angle, rng, noise=3.0, dx=0.0, dy=0.0):
    h, w = background.shape[:2]
    ph, pw = box.shape[:2]
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
    m[:, 2] += ((w - pw) / 2 + dx, (h - ph) / 2 + dy)
    alpha = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), m, (w, h)).astype(np.float32)[..., None] / 255
    image = background * (1 - alpha) + cv2.warpAffine(box, m, (w, h)) * alpha + rng.normal(0, noise, background.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg(image, quality=85):
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


# --- candidate signals -----------------------------------------------------------------


def _grey(image, size):
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), size, interpolation=cv2.INTER_AREA).astype(np.float32)


def _dhash(image):
    s = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (9, 8), interpolation=cv2.INTER_AREA)
    return (s[:, 1:] > s[:, :-1]).ravel()


def _phash(image):
    d = cv2.dct(_grey(image, (32, 32)))[:8, :8].ravel()
    return d > np.median(d[1:])


def _hamming(a, b):
    return 1 - np.count_nonzero(a != b) / a.size


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))


def _ssim(a, b):
    c1, c2, k = (0.01 * 255) ** 2, (0.03 * 255) ** 2, (7, 7)
    ma, mb = cv2.GaussianBlur(a, k, 1.5), cv2.GaussianBlur(b, k, 1.5)
    va, vb = cv2.GaussianBlur(a * a, k, 1.5) - ma * ma, cv2.GaussianBlur(b * b, k, 1.5) - mb * mb
    cov = cv2.GaussianBlur(a * b, k, 1.5) - ma * mb
    return float((((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))).mean())


SIGNALS = {
    "dHash 64 bit": (_dhash, _hamming),
    "pHash 64 bit": (_phash, _hamming),
    "NCC 32x24": (lambda im: _grey(im, (32, 24)), _ncc),
    "SSIM 64x48 (frame mean)": (lambda im: _grey(im, (64, 48)), _ssim),
    "ours: SSIM 64x48, worst 8x8 tile": (thumbnail, similarity),
}


def signals_table() -> None:
    cases = {"still": [], "turned 2°": [], "turned 3°": [], "turned 5°": []}
    for seed in range(4):
        rng = np.random.default_rng(seed)
        for product, cell in ((3, 8), (4, 6), (6, 16)):
            background, box = scene(product=product, cell=cell, seed=seed)
            base = jpeg(render(background, box, 0.0, rng))
            for _ in range(4):
                noise, dx, dy = rng.uniform(2, 8), rng.uniform(-1, 1), rng.uniform(-1, 1)
                cases["still"].append((base, jpeg(render(background, box, 0.0, rng, noise, dx, dy))))
            for angle in (2, 3, 5):
                cases[f"turned {angle}°"].append((base, jpeg(render(background, box, angle, rng))))
    print("\n1. Signals: similarity of a still / turned product to the still frame (640x480, 48 scenes each)")
    print(f"{'signal':34} " + " ".join(f"{c:>17}" for c in cases) + "  still>=.98  3°<.98")
    for name, (feature, sim) in SIGNALS.items():
        cells, score = [], {}
        for case, pairs in cases.items():
            v = np.array([sim(feature(a), feature(b)) for a, b in pairs])
            score[case] = v
            cells.append(f"{v.min():.3f}-{v.max():.3f}".rjust(17))
        caught = np.mean(score["still"] >= 0.98)
        kept = np.mean(score["turned 3°"] < 0.98)
        print(f"{name:34} " + " ".join(cells) + f"  {caught:9.0%}  {kept:5.0%}")


# --- frames kept -----------------------------------------------------------------------


def kept(frames: list[np.ndarray], threshold: float | None) -> list[int]:
    """Indices --dedup keeps (the pipeline's Deduper on thumbnails)."""
    if threshold is None:
        return list(range(len(frames)))
    d = Deduper(threshold)
    return [i for i, t in enumerate(thumbnail(f) for f in frames) if d.check(i, t) is None]


def synthetic_clip(path: Path, frozen=60, turning=60, step=3.0) -> Path:
    """A 640x480 mp4v clip: ``frozen`` still frames (noise, 0.5 px tremor), then a 3°/frame turn."""
    rng = np.random.default_rng(0)
    background, box = scene()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frozen + turning):
        angle = 0.0 if i < frozen else step * (i - frozen + 1)
        writer.write(render(background, box, angle, rng, 3.0, rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)))
    writer.release()
    return path


def kept_table(videos: Path) -> None:
    print("\n2. Frames kept by --dedup T (first kept frame included)")
    header = f"{'video':34} {'stride':>6} {'sampled':>7} " + " ".join(f"{'T=' + str(t):>7}" for t in THRESHOLDS)
    print(header)
    for path in sorted(videos.glob("*/*.mp4")):
        all_frames = [f.image for f in iter_frames(Source(path, path.stem, True), 1)]
        for stride in (1, 5, 30):
            frames = all_frames[::stride]
            counts = [len(kept(frames, t)) for t in THRESHOLDS]
            name = str(path.relative_to(videos))
            print(f"{name:34} {stride:6} {len(frames):7} " + " ".join(f"{c:7}" for c in counts))
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_clip(Path(tmp) / "frozen_then_turning.mp4")
        frames = [f.image for f in iter_frames(Source(path, path.stem, True), 1)]
    for t in (None, *THRESHOLDS):
        k = kept(frames, t)
        frozen, moving = sum(1 for i in k if i < 60), sum(1 for i in k if i >= 60)
        label = "off" if t is None else f"T={t}"
        print(f"synthetic 60 frozen + 60 turning 3°/frame, {label:7}: kept {frozen:2} frozen + {moving:2} turning")


# --- cost ------------------------------------------------------------------------------


def cost_table() -> None:
    rng = np.random.default_rng(0)
    background, box = scene()
    frames = [render(background, box, a, rng) for a in np.linspace(0, 90, 300)]
    print("\n3. Cost on this CPU (640x480 BGR frames, one thread)")
    cv2.setNumThreads(1)
    for name, (feature, sim) in SIGNALS.items():
        start = time.perf_counter()
        prev = feature(frames[0])
        for f in frames[1:]:
            cur = feature(f)
            sim(prev, cur)
            prev = cur
        per = (time.perf_counter() - start) / (len(frames) - 1)
        print(f"{name:34} {per * 1e3:6.3f} ms/frame  {1 / per:7.0f} frames/s (feature + similarity)")
    start = time.perf_counter()
    thumbs = [thumbnail(f) for f in frames]
    t_thumb = (time.perf_counter() - start) / len(frames)
    start = time.perf_counter()
    emb = np.stack([embedding(t) for t in thumbs])
    t_emb = (time.perf_counter() - start) / len(frames)
    print(f"thumbnail alone {t_thumb * 1e3:.3f} ms/frame; embedding from it {t_emb * 1e3:.3f} ms/frame")
    big = np.tile(emb, (34, 1))[:10_000]
    for n in (50, 200):
        start = time.perf_counter()
        farthest_point(big, n)
        print(f"farthest-point selection of {n} among {len(big)} candidates: {time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=ROOT / "videos", help="product folders of videos")
    args = parser.parse_args()
    signals_table()
    kept_table(args.videos)
    cost_table()


if __name__ == "__main__":
    main()
