"""How well the review queue finds planted errors: their share in its top 10% and 20%, against random order.

A synthetic clip (a red and a blue square moving across a textured background, every frame
kept) is labeled by a labeler that finds the squares by colour and, at known frames, plants
an error of one of four kinds: a miss (the square scored under the box threshold), a
spurious box (somewhere else, scored just over it), a class flip (the red square called by
the blue one's class, confidently) or a 20 px shift. Frames also carry the low-scored
background candidates a real detector gives, and a quarter of them a right box scored just
over the threshold (a detector unsure of a good box: near the threshold, yet no error).
The dataset is written by the pipeline as a
run writes it, its queue built as ``export --review N`` builds it, and the share of planted
errors among the queue's first 10% and 20% of frames is printed beside what a random order
gets (10% and 20%). Target: at least 3x random.

    python bench/review_queue.py                 # 300 frames, 10% of them with an error
    python bench/review_queue.py --frames 600 --seed 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from clips import read_stamp, stamp, write_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
W, H, SIDE = 320, 240, 40
CELL = 8
KINDS = ("miss", "spurious", "flip", "shift")


def positions(i: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where the red and the blue square are in frame ``i`` (their top-left corners)."""
    red = (int(20 + (i * 2) % (W - SIDE - 40)), int(40 + 30 * np.sin(i / 15)))
    blue = (int(W - SIDE - 20 - (i * 1.5) % (W - SIDE - 40)), int(150 + 20 * np.cos(i / 20)))
    return red, blue


def make_clip(path: Path, frames: int) -> None:
    """The clip: frame ``i`` carries ``i`` in binary in its top-left corner, so the labeler knows which it is."""
    rng = np.random.default_rng(0)
    texture = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)

    def frame(i: int) -> np.ndarray:
        img = texture.copy()
        (rx, ry), (bx, by) = positions(i)
        img[ry : ry + SIDE, rx : rx + SIDE] = (0, 0, 230)
        img[by : by + SIDE, bx : bx + SIDE] = (230, 0, 0)
        stamp(img, i, CELL)
        return img

    write_clip(path, frames, (W, H), frame)


def frame_index(image: np.ndarray) -> int:
    return read_stamp(image, CELL)


class PlantingLabeler:
    """Finds the squares where they are; at the planted frames, makes the planted error."""

    batch_size = 8

    def __init__(self, planted: dict[int, str], seed: int) -> None:
        self.planted = planted
        self.seed = seed

    def prepare(self, ontology) -> None:
        pass

    def describe(self) -> dict:
        return {"base_model": "planting", "precision": "fp32"}

    def label(self, images, ontology):
        import supervision as sv

        out = []
        for image in images:
            i = frame_index(image)
            rng = np.random.default_rng(self.seed * 100_003 + i)
            (rx, ry), (bx, by) = positions(i)
            boxes = [[rx, ry, rx + SIDE, ry + SIDE], [bx, by, bx + SIDE, by + SIDE]]
            classes = [0, 1]
            scores = list(rng.uniform(0.7, 0.95, 2))
            if rng.random() < 0.25:  # a right box a real detector is unsure of: scored just over the threshold
                scores[int(rng.integers(0, 2))] = rng.uniform(0.36, 0.5)
            kind = self.planted.get(i)
            if kind == "miss":
                scores[0] = rng.uniform(0.2, 0.34)
            elif kind == "spurious":
                x, y = rng.uniform(0, W - SIDE), rng.uniform(60, H - SIDE)
                boxes.append([x, y, x + SIDE, y + SIDE])
                classes.append(int(rng.integers(0, 2)))
                scores.append(rng.uniform(0.36, 0.55))
            elif kind == "flip":
                classes[0] = 1
            elif kind == "shift":
                boxes[0] = [rx + 20, ry, rx + 20 + SIDE, ry + SIDE]
            for _ in range(int(rng.integers(0, 4))):  # background candidates, as real detectors give them
                x, y = rng.uniform(0, W - 30), rng.uniform(10, H - 30)
                boxes.append([x, y, x + 30, y + 30])
                classes.append(int(rng.integers(0, 2)))
                scores.append(rng.uniform(0.1, 0.33))
            out.append(
                sv.Detections(
                    xyxy=np.array(boxes, np.float32),
                    class_id=np.array(classes),
                    confidence=np.array(scores, np.float32),
                )
            )
        return out


def main() -> None:
    from autolabel import progress, queue
    from autolabel.config import load_config
    from autolabel.datasets.dataset import Dataset
    from autolabel.pipeline import run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--share", type=float, default=0.1, help="share of frames with a planted error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    progress.configure(False)
    rng = np.random.default_rng(args.seed)
    count = int(args.frames * args.share)
    # Not the first or last frame (they have one neighbour) and never two side by side.
    candidates = rng.permutation(np.arange(2, args.frames - 2, 2))[:count]
    planted = {int(i): KINDS[k % len(KINDS)] for k, i in enumerate(sorted(candidates))}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "videos" / "squares").mkdir(parents=True)
        make_clip(root / "videos" / "squares" / "clip.mp4", args.frames)
        (root / "videos" / "squares" / "ontology.json").write_text(
            json.dumps({"red square": "red", "blue square": "blue"})
        )
        settings = {
            "input": str(root / "videos"),
            "output": str(root / "ds"),
            "sampling.frame_rate": 1,
            "report": False,
        }
        (result,) = run(load_config(None, settings), lambda: PlantingLabeler(planted, args.seed))
        assert result.ok, result.errors
        ds = Dataset.peek(root / "ds" / "squares")
        order = [e.name for e in queue.for_dataset(ds, ds.kept())]
    names = {f"clip_{i:06d}": kind for i, kind in planted.items()}
    figures = {
        "frames": len(order),
        "planted": len(names),
        "by_kind": {k: sum(v == k for v in names.values()) for k in KINDS},
    }
    kinds = ", ".join(f"{k} {n}" for k, n in figures["by_kind"].items())
    print(f"{len(order)} frames, {len(names)} with a planted error ({kinds})")
    print(f"{'queue head':>12} {'planted found':>14} {'random':>8} {'x random':>9}   by kind")
    for share in (0.1, 0.2):
        head = order[: round(share * len(order))]
        found = [n for n in head if n in names]
        recall = len(found) / len(names)
        kinds = {k: sum(names[n] == k for n in found) for k in KINDS}
        figures[f"top_{int(share * 100)}"] = {
            "share_found": recall,
            "random": share,
            "x_random": recall / share,
            "by_kind": kinds,
        }
        by_kind = ", ".join(f"{k} {kinds[k]}/{figures['by_kind'][k]}" for k in KINDS)
        print(f"{f'top {share:.0%}':>12} {recall:>14.1%} {share:>8.0%} {recall / share:>9.1f}   {by_kind}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
