"""Peak memory of ``autolabel run`` against the number of sampled frames.

Each size runs in a fresh process on a synthetic 640x480 video (every frame kept), with
a labeler that plants two boxes per frame, so the numbers are the pipeline's own:
decoding, batching, writing, journal, split, data.yaml, COCO. Streaming means the peak
must not grow with the frame count. Prints a table and writes JSON.

    python bench/memory.py                 # 200 and 2000 frames
    python bench/memory.py --sizes 200 2000 20000
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

from clips import rolling_noise_clip

ROOT = Path(__file__).resolve().parents[1]


def child(video_dir: Path, out: Path) -> None:
    """Runs the pipeline once and prints its result and peak RSS as JSON."""

    sys.path.insert(0, str(ROOT))
    from clips import TwoBoxes

    from autolabel import progress
    from autolabel.config import load_config
    from autolabel.pipeline import run

    progress.configure(False)
    cfg = load_config(
        None,
        {
            "input": str(video_dir),
            "output": str(out),
            "sampling.frame_rate": 1,
            "report": False,
            "dataset.formats": "yolo,voc,coco",
        },
    )
    start = time.perf_counter()
    (result,) = run(cfg, TwoBoxes)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "frames": result.frames,
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            product = Path(tmp) / "videos" / "synthetic"
            product.mkdir(parents=True)
            rolling_noise_clip(product / "clip.mp4", n)
            (product / "ontology.json").write_text('{"red box": "box", "a hand": "hand"}')
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(product.parent), str(Path(tmp) / "ds")],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{row['frames']:>7} frames: peak RSS {row['peak_rss_mb']:>7.1f} MB, {row['seconds']:>6.1f} s "
                f"({row['frames'] / row['seconds']:.0f} frames/s)"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "runs": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
