"""What ``--track`` does to a dataset's labels, what it costs, and its memory on long videos.

    python bench/tracking.py quality           # a synthetic clip, errors planted: P/R/F1, flicker, with and without
    python bench/tracking.py yolo              # the bundled videos, YOLO11n (../shared): boxes, class changes, time
    python bench/tracking.py memory --minutes 1 10   # peak memory, 1080p, every frame tracked (stride 1)

``quality``: three coloured squares move across a 320x240 clip (300 frames, every one kept);
a labeler finds them by where they are and plants errors at set rates: a miss (the box
scored under the threshold), a blip (a box for one frame where nothing is) and a class flip.
Against the true boxes it prints precision, recall and F1 (IoU >= 0.5, same class) and
flicker (class changes along one true object), with and without ``--track``.

``yolo``: the bundled box and cup videos, YOLO11n (``../shared/data/weights/yolo11n.pt``,
COCO classes book/person/cup), every 10th frame kept, ``--track`` at its default stride 5:
boxes and class changes per 100 kept frames with and without, and the tracking time as a
share of the labeling time.

``memory``: a synthetic 1080p video of N minutes at 30 fps, ``--track --track-stride 1``
(every frame labeled by a planted-box labeler, every 30th kept), each in a fresh process:
peak RSS and the time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from clips import read_stamp, stamp, write_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
YOLO11N = ROOT.parent / "shared" / "data" / "weights" / "yolo11n.pt"
W, H, SIDE, FRAMES = 320, 240, 36, 300
CELL = 6
RATES = {"miss": 0.08, "blip": 0.04, "flip": 0.04}


def truth(i: int) -> list[tuple[int, list[float]]]:
    """The true (class, box) of frame ``i``: three squares on their own paths."""
    out = []
    for k, (x0, y0, vx, vy) in enumerate([(10, 20, 0.9, 0.3), (250, 60, -0.6, 0.4), (40, 170, 0.7, -0.2)]):
        x = (x0 + vx * i) % (W - SIDE)
        y = (y0 + vy * i) % (H - SIDE)
        out.append((k % 2, [x, y, x + SIDE, y + SIDE]))
    return out


def make_clip(path: Path, frames: int) -> None:
    def frame(i: int) -> np.ndarray:
        img = np.full((H, W, 3), 120, np.uint8)
        stamp(img, i, CELL)
        for cls, (x1, y1, x2, y2) in truth(i):
            img[int(y1) : int(y2), int(x1) : int(x2)] = (0, 0, 220) if cls == 0 else (220, 0, 0)
        return img

    write_clip(path, frames, (W, H), frame)


def frame_index(image: np.ndarray) -> int:
    return read_stamp(image, CELL)


class Planting:
    """The true boxes, with errors planted at set rates (the same ones whichever run asks)."""

    batch_size = 8

    def prepare(self, ontology) -> None:
        pass

    def describe(self) -> dict:
        return {"base_model": "planting", "precision": "fp32"}

    def label(self, images, ontology):
        import supervision as sv

        out = []
        for image in images:
            i = frame_index(image)
            rng = np.random.default_rng(1000 + i)
            boxes, classes, scores = [], [], []
            for cls, box in truth(i):
                score = rng.uniform(0.6, 0.95)
                if rng.random() < RATES["miss"]:
                    score = rng.uniform(0.12, 0.3)
                if rng.random() < RATES["flip"]:
                    cls = 1 - cls
                boxes.append(box)
                classes.append(cls)
                scores.append(score)
            if rng.random() < RATES["blip"]:
                x, y = rng.uniform(0, W - SIDE), rng.uniform(0, H - SIDE)
                boxes.append([x, y, x + SIDE, y + SIDE])
                classes.append(int(rng.integers(0, 2)))
                scores.append(rng.uniform(0.5, 0.8))
            out.append(
                sv.Detections(
                    xyxy=np.array(boxes, np.float32),
                    class_id=np.array(classes),
                    confidence=np.array(scores, np.float32),
                )
            )
        return out


def score(root: Path) -> dict:
    """P/R/F1 against the true boxes, and flicker: class changes along each true object."""
    from autolabel.datasets.journal import read_journal
    from autolabel.datasets.records import Box
    from autolabel.postprocess import iou

    tp = fp = fn = flicker = 0
    last: dict[int, int] = {}
    for r in sorted((r for r in read_journal(root) if r.dropped is None), key=lambda r: r.index):
        true = [Box(c, *b) for c, b in truth(r.index)]
        left = list(range(len(r.boxes)))
        for k, t in enumerate(true):
            best = max(left, key=lambda j: iou(r.boxes[j], t), default=None)
            if best is None or iou(r.boxes[best], t) < 0.5:
                fn += 1
                continue
            left.remove(best)
            got = r.boxes[best].class_id
            if k in last and last[k] != got:
                flicker += 1
            last[k] = got
            if got == t.class_id:
                tp += 1
            else:
                fp += 1
                fn += 1
        fp += len(left)
    p, rc = tp / (tp + fp), tp / (tp + fn)
    return {"precision": p, "recall": rc, "f1": 2 * p * rc / (p + rc), "flicker": flicker}


def quality() -> None:
    from autolabel import progress
    from autolabel.config import load_config
    from autolabel.pipeline import run

    progress.configure(False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "videos" / "squares").mkdir(parents=True)
        make_clip(root / "videos" / "squares" / "clip.mp4", FRAMES)
        (root / "videos" / "squares" / "ontology.json").write_text(json.dumps({"red": "red", "blue": "blue"}))
        rows = {}
        for name, track in (("without --track", False), ("with --track", True)):
            settings = {"input": str(root / "videos"), "output": str(root / name), "sampling.frame_rate": 1}
            settings |= {"report": False, "tracking.enabled": track, "tracking.stride": 1}
            (result,) = run(load_config(None, settings), Planting)
            rows[name] = score(root / name / "squares") | {"tracking_s": result.tracking_seconds}
    rates = ", ".join(f"{k} {v:.0%}" for k, v in RATES.items())
    print(f"{FRAMES} frames, 3 objects; planted: {rates} (per object and frame)")
    print(f"{'':18} {'precision':>9} {'recall':>7} {'f1':>6} {'flicker':>8}")
    for name, r in rows.items():
        print(f"{name:18} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['f1']:>6.3f} {r['flicker']:>8}")
    before, after = rows["without --track"], rows["with --track"]
    if before["flicker"]:
        print(
            f"flicker down {1 - after['flicker'] / before['flicker']:.0%}; F1 {before['f1']:.3f} -> {after['f1']:.3f}"
        )


def class_changes(root: Path) -> tuple[int, int, int]:
    """Kept frames, boxes, and class changes between consecutive kept frames of a video (box matched by IoU)."""
    from autolabel.datasets.journal import read_journal
    from autolabel.postprocess import iou

    frames = sorted((r for r in read_journal(root) if r.dropped is None), key=lambda r: (r.source, r.index))
    changes = 0
    for a, b in zip(frames, frames[1:], strict=False):
        if a.source != b.source:
            continue
        for box in b.boxes:
            near = [o for o in a.boxes if iou(o, box) >= 0.5]
            if near and all(o.class_id != box.class_id for o in near):
                changes += 1
    return len(frames), sum(len(r.boxes) for r in frames), changes


def yolo() -> None:
    import shutil

    if not YOLO11N.is_file():
        raise SystemExit(f"{YOLO11N}: not here (the real YOLO11n weights, ../shared/data/weights)")
    from autolabel import labelers, progress
    from autolabel.config import load_config
    from autolabel.pipeline import run

    progress.configure(False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for product in ("box", "cup"):
            shutil.copytree(ROOT / "videos" / product, root / "videos" / product)
            (root / "videos" / product / "ontology.json").write_text(
                json.dumps({"book": "box", "person": "hand", "cup": "cup"})
            )
        print(f"{'':18} {'frames':>6} {'boxes/100':>9} {'changes/100':>11} {'labeling s':>10} {'tracking s':>10}")
        for name, track in (("without --track", False), ("with --track", True)):
            settings = {"input": str(root / "videos"), "output": str(root / name), "sampling.frame_rate": 10}
            settings |= {"report": False, "tracking.enabled": track, "model.base_model": "ultralytics"}
            settings |= {"model.base_weights": str(YOLO11N), "model.device": "cpu"}
            cfg = load_config(None, settings)
            results = run(cfg, lambda cfg=cfg: labelers.create_labeler(cfg.model, None, False))
            frames = boxes = changes = 0
            seconds = tracking = 0.0
            for r in results:
                f, b, c = class_changes(r.output)
                frames, boxes, changes = frames + f, boxes + b, changes + c
                seconds, tracking = seconds + r.seconds, tracking + r.tracking_seconds
            label_s = seconds - tracking
            print(f"{name:18} {frames:>6} {100 * boxes / frames:>9.1f} {100 * changes / frames:>11.1f} "
                  f"{label_s:>10.1f} {tracking:>10.2f}")  # fmt: skip
        print(f"tracking: {tracking / label_s:.1%} of the labeling time (CPU, YOLO11n)")


def memory(minutes: list[float]) -> None:
    for m in minutes:
        with tempfile.TemporaryDirectory() as tmp:
            video = Path(tmp) / "videos" / "long" / "clip.mp4"
            video.parent.mkdir(parents=True)
            start = time.perf_counter()
            make_long(video, int(m * 60 * 30))
            made = time.perf_counter() - start
            (video.parent / "ontology.json").write_text(json.dumps({"thing": "thing"}))
            proc = subprocess.run(
                [sys.executable, __file__, "memory-child", str(video.parent.parent), str(Path(tmp) / "ds")],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            frames = f"{row['labeled']} frames labeled, {row['kept']} kept"
            took = f"{row['seconds']:.0f} s (video: {made:.0f} s)"
            print(f"{m:>5g} min ({frames}): peak RSS {row['peak_mb']:.0f} MB, {took}")


def make_long(path: Path, frames: int) -> None:
    """A 1080p H.264 video: a square moving over a gradient."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "30"}
        base = np.tile(np.linspace(40, 200, 1920, dtype=np.uint8)[None, :, None], (1080, 1, 3))
        for i in range(frames):
            img = base.copy()
            x = (i * 4) % 1700
            img[400:600, x : x + 200] = (0, 0, 230)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def memory_child(videos: Path, out: Path) -> None:
    import supervision as sv

    from autolabel import progress
    from autolabel.config import load_config
    from autolabel.pipeline import run

    class Square:
        batch_size = 8

        def prepare(self, ontology) -> None:
            pass

        def describe(self) -> dict:
            return {"base_model": "square", "precision": "fp32"}

        def label(self, images, ontology):
            dets = []
            for image in images:
                cols = np.where(image[500, :, 2] > 200)[0]
                x = float(cols[0]) if len(cols) else 0.0
                xyxy = np.array([[x, 400, x + 200, 600]], np.float32)
                dets.append(sv.Detections(xyxy=xyxy, class_id=np.array([0]), confidence=np.array([0.9], np.float32)))
            return dets

    progress.configure(False)
    settings = {"input": str(videos), "output": str(out), "sampling.frame_rate": 30, "report": False}
    settings |= {"tracking.enabled": True, "tracking.stride": 1}
    start = time.perf_counter()
    (result,) = run(load_config(None, settings), Square)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"labeled": result.new_frames + result.new_probes, "kept": result.frames, "seconds": seconds,
                      "peak_mb": peak}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("quality")
    sub.add_parser("yolo")
    mem = sub.add_parser("memory")
    mem.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    child = sub.add_parser("memory-child")
    child.add_argument("videos", type=Path)
    child.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.what == "quality":
        quality()
    elif args.what == "yolo":
        yolo()
    elif args.what == "memory":
        memory(args.minutes)
    else:
        memory_child(args.videos, args.out)


if __name__ == "__main__":
    main()
