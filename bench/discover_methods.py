"""Discovery methods compared: seed 002's (``method: seeds``) and autolabel's LOST (``method: lost``).

1. Planted keys: scenes of a 14x19 patch grid (a 4:3 frame at ViT-S/16, 224 px) with 1-3
   objects of random sizes, each its own key direction, anti-correlated with the background,
   plus noise; optionally a background of two textures. Recall: planted objects matched by a
   box with IoU >= 0.5; precision: boxes matching an object; frames with no box.
2. A real clip (``videos/cup/cup.mp4``) through the default backbone's architecture with random
   weights (DINO's weights cannot be downloaded here): boxes per frame and frames with none.

``python bench/discover_methods.py [--scenes 300] [--video videos/cup/cup.mp4]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from autolabel.labelers import lost

GRID = (14, 19)


def scene(
    rng: np.random.Generator, textured: bool, shared: float = 0.0
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Keys of one planted scene and its objects' boxes (patch units, end exclusive)."""
    rows, cols = GRID
    dim = 16
    background = np.zeros(dim)
    background[0] = 1.0
    keys = np.tile(background, (rows, cols, 1))
    if textured:  # a second background texture (a wall above a table), correlated with the first
        other = np.zeros(dim)
        other[0], other[1] = 0.8, 0.6
        keys[: rows // 2] = other
    boxes, taken = [], np.zeros(GRID, dtype=bool)
    for k in range(int(rng.integers(1, 4))):
        for _ in range(50):
            h, w = int(rng.integers(2, 6)), int(rng.integers(2, 7))
            y, x = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
            if not taken[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1].any():
                break
        else:
            continue
        vector = np.zeros(dim)
        vector[0] = -0.5
        vector[2 + k] = 1.0
        keys[y : y + h, x : x + w] = vector
        taken[y : y + h, x : x + w] = True
        boxes.append((x, y, x + w, y + h))
    keys = keys + rng.normal(0, 0.15, keys.shape)
    keys[..., -1] += shared  # a component every patch shares: every product positive, every degree N - 1
    return keys.reshape(rows * cols, dim).astype(np.float32), boxes


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def methods(keys: np.ndarray, affinity: np.ndarray, correlation: float) -> dict[str, list]:
    return {
        "seeds (seed 002)": lost.discover_seeds(affinity, GRID, 10, correlation),
        "lost (autolabel's)": lost.discover(keys, affinity, GRID, 3, 0.5, 100),
    }


def planted(n: int, textured: bool, shared: float = 0.0) -> None:
    rng = np.random.default_rng(0)
    stats: dict[str, list[int]] = {}
    for _ in range(n):
        keys, truth = scene(rng, textured, shared)
        affinity = keys @ keys.T
        for name, found in methods(keys, affinity, correlation=0.5 + shared**2).items():
            got = [(d.x0, d.y0, d.x1, d.y1) for d in found]
            s = stats.setdefault(name, [0, 0, 0, 0, 0])
            s[0] += len(truth)
            s[1] += sum(any(iou(t, g) >= 0.5 for g in got) for t in truth)
            s[2] += len(got)
            s[3] += sum(any(iou(t, g) >= 0.5 for t in truth) for g in got)
            s[4] += not got
    kind = "two-texture background" if textured else "plain background"
    kind += f", a shared component of {shared:g} (every product positive)" if shared else ""
    print(f"planted keys, {n} scenes, {kind}:")
    for name, (objects, hit, boxes, right, empty) in stats.items():
        print(
            f"  {name:<20} recall {hit / objects:.2f} ({hit}/{objects})  precision {right / max(1, boxes):.2f} "
            f"({right}/{boxes})  frames with no box {empty}"
        )


def video(path: Path, every: int) -> None:
    import timm
    import torch

    from autolabel.sampling import iter_frames
    from autolabel.sources import Source

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0, dynamic_img_size=True)
    vit.eval()
    captured = {}
    vit.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: captured.__setitem__("qkv", o))
    per: dict[str, list[int]] = {}
    frames = 0
    for frame in iter_frames(Source(path, path.stem, True), every, None):
        h, w = frame.image.shape[:2]
        rows, cols = 224 // 16, round(224 * w / h / 16)
        x = torch.from_numpy(frame.image[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        x = torch.nn.functional.interpolate(x, size=(rows * 16, cols * 16), mode="bilinear", antialias=True)
        x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1
        )
        with torch.inference_mode():
            vit.forward_features(x)
        qkv = captured["qkv"]
        keys = qkv.reshape(1, qkv.shape[1], 3, -1)[0, 1:, 1].numpy()
        affinity = keys @ keys.T
        correlation = lost.SEED_CORRELATION * keys.shape[1] / lost.SEED_KEY_DIM
        found = {
            "seeds (seed 002)": lost.discover_seeds(affinity, (rows, cols), 10, correlation),
            "lost (autolabel's)": lost.discover(keys, affinity, (rows, cols), 3, 0.5, 100),
        }
        for name, boxes in found.items():
            per.setdefault(name, []).append(len(boxes))
        frames += 1
    print(f"{path} every {every}th frame ({frames} frames), ViT-S/16 architecture with random weights:")
    for name, counts in per.items():
        c = np.array(counts)
        none = int((c == 0).sum())
        print(f"  {name:<20} boxes per frame {c.mean():.2f} (min {c.min()}, max {c.max()}), frames with none {none}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--video", type=Path, default=Path("videos/cup/cup.mp4"))
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    planted(args.scenes, textured=False)
    planted(args.scenes, textured=True)
    planted(args.scenes, textured=False, shared=1.0)
    if args.video.is_file():
        video(args.video, args.every)


if __name__ == "__main__":
    main()
