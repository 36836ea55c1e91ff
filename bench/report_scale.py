"""Time and size of ``autolabel report`` on a large synthetic dataset (default 20,000 frames).

Frames are 640x480 JPEGs (distinct, with 0-6 boxes each and random confidences), written
through the dataset writer; the report is then built twice: from scratch, and again with
up-to-date thumbnails (the re-run case). Prints the numbers and writes JSON.

    python bench/report_scale.py --frames 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(root: Path, n: int) -> None:
    import cv2
    import numpy as np

    from autolabel.datasets import finalize
    from autolabel.datasets.dataset import Dataset
    from autolabel.datasets.formats import Context
    from autolabel.datasets.records import Box, FrameRecord
    from autolabel.datasets.split import assign_splits
    from autolabel.datasets.state import State
    from autolabel.datasets.writer import DatasetWriter

    rng = np.random.default_rng(0)
    classes = ["box", "cup", "hand"]
    base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    jpegs = [cv2.imencode(".jpg", np.roll(base, 37 * k, axis=1))[1].tobytes() for k in range(16)]
    records = []
    with DatasetWriter(root, classes, ["yolo"]) as writer:
        for i in range(n):
            boxes = []
            for _ in range(int(rng.integers(0, 7))):
                x, y = rng.uniform(0, 560), rng.uniform(0, 400)
                w, h = rng.uniform(10, 640 - x), rng.uniform(10, 480 - y)
                boxes.append(
                    Box(
                        int(rng.integers(0, 3)),
                        round(x, 2),
                        round(y, 2),
                        round(x + w, 2),
                        round(y + h, 2),
                        round(float(rng.uniform(0.35, 1.0)), 4),
                    )
                )
            record = FrameRecord(f"clip_{i:06d}", "clip", i, i / 30, 640, 480, boxes)
            writer.add(record, staged=writer.stage(record, jpegs[i % len(jpegs)]))
            records.append(record)
    split = assign_splits(records, 0.2, 0)
    for r in records:
        r.split = split[r.name]
    finalize.write_dataset(root, records, Context(classes, "scale"), ["yolo"])
    state = State("product", classes=classes, formats=["yolo"], complete=True, product="scale")
    Dataset(root, state).save()


def main() -> None:
    from autolabel.report import write_report

    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "report_scale.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        start = time.perf_counter()
        build(root, args.frames)
        built = time.perf_counter() - start
        first = write_report(root)
        again = write_report(root)
        thumbs = sum(p.stat().st_size for p in (root / "report" / "thumbs").iterdir())
        images = sum(p.stat().st_size for p in (root / "images").iterdir())
    result = {
        "command": " ".join(["python", *sys.argv]),
        "frames": args.frames,
        "dataset_build_s": round(built, 1),
        "report_first_s": round(first.seconds, 1),
        "report_rerun_s": round(again.seconds, 1),
        "html_mb": round(first.bytes / 2**20, 2),
        "thumbnails_mb": round(thumbs / 2**20, 1),
        "images_mb": round(images / 2**20, 1),
        "thumbnails_made": first.thumbnails_made,
        "flagged": first.flagged,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
