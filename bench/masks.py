"""The mask step's cost: seconds per frame, peak memory, and its share of a run, with a random SAM 2.

Each size runs ``autolabel run --masks sam2 --mask-model <folder>`` in a fresh process on a
synthetic 640x480 video (every frame kept) with a labeler that plants two boxes per frame, so the
numbers are the pipeline's and the mask step's own: frames read back from ``images/``, the image
encoder (batched), each frame's boxes decoded, every mask upsampled to the frame, traced into rings
and simplified, each window's masks kept on disk and folded into the journal once, every format's
files written (YOLO-seg, VOC PNGs, COCO). The same run without ``--masks`` gives the rest of the
run's cost. The model is a tiny random SAM 2 (Hiera, 128 px input) on the CPU; ``--full`` builds
SAM 2.1 Hiera-L's architecture (217M parameters, 1024 px input) with random weights, for the GPU
(weights do not change speed).
Peak memory must not grow with the frame count. Prints a table and writes JSON.

    python bench/masks.py                        # 50 and 400 frames, tiny SAM 2 on the CPU
    python bench/masks.py --sizes 50 400 1600    # the README's figures: peak memory flat from 400 frames
    python bench/masks.py --full --device cuda   # SAM 2.1-L architecture on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clips import rolling_noise_clip

ROOT = Path(__file__).resolve().parents[1]


def child(video_dir: Path, out: Path, model: str | None, device: str, batch: int | None) -> None:
    """Runs the pipeline once (with masks when ``model`` is a folder) and prints its timings and peak RSS as JSON."""

    sys.path.insert(0, str(ROOT))
    from clips import TwoBoxes

    from autolabel import progress
    from autolabel.config import load_config
    from autolabel.pipeline import run

    progress.configure(False)
    settings = {
        "input": str(video_dir),
        "output": str(out),
        "sampling.frame_rate": 1,
        "report": False,
        "dataset.formats": "yolo,voc,coco",
        "model.device": device,
    }
    if model is not None:
        settings |= {"masks.model": "sam2", "masks.mask_model": model, "masks.batch_size": batch}
    cfg = load_config(None, settings)
    start = time.perf_counter()
    (result,) = run(cfg, TwoBoxes)
    seconds = time.perf_counter() - start
    peak_gpu = None
    if device.startswith("cuda"):
        import torch

        peak_gpu = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    m = result.masks
    print(
        json.dumps(
            {
                "frames": result.frames,
                "boxes": m.boxes if m else 2 * result.frames,
                "seconds": round(seconds, 2),
                "mask_seconds": round(m.seconds, 2) if m else 0.0,
                "masks_made": m.made if m else 0,
                "empty_masks": m.empty if m else 0,
                "mask_model": m.model if m else None,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "peak_gpu_mb": peak_gpu,
                "journal_mb": round((out / "synthetic" / "detections.jsonl").stat().st_size / 2**20, 2),
            }
        )
    )


def one(tmp: Path, n: int, model: str | None, device: str, batch: int | None) -> dict:
    product = tmp / "videos" / "synthetic"
    if not product.is_dir():
        product.mkdir(parents=True)
        rolling_noise_clip(product / "clip.mp4", n)
        (product / "ontology.json").write_text('{"red box": "box", "a hand": "hand"}')
    out = tmp / ("masked" if model else "plain")
    command = [sys.executable, __file__, "--child", str(product.parent), str(out), model or "-", device]
    command += [str(batch or 0)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 400])
    ap.add_argument("--full", action="store_true", help="SAM 2.1 Hiera-L's architecture (random weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="frames per image-encoder batch (default: automatic)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "masks.json")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        video, out, model, device, batch = args.child
        child(Path(video), Path(out), None if model == "-" else model, device, int(batch) or None)
        return
    sys.path.insert(0, str(ROOT))
    from autolabel.masks.random_models import write_full_sam2, write_tiny

    rows = []
    with tempfile.TemporaryDirectory() as models:
        start = time.perf_counter()
        if args.full:
            folder = write_full_sam2(Path(models) / "sam2.1-hiera-large-random")
        else:
            folder = write_tiny("sam2", Path(models) / "tiny-sam2")
        print(f"model: {folder.name} written in {time.perf_counter() - start:.1f} s; device {args.device}")
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                plain = one(Path(tmp), n, None, args.device, args.batch)
                masked = one(Path(tmp), n, str(folder), args.device, args.batch)
            share = masked["mask_seconds"] / masked["seconds"] if masked["seconds"] else 0.0
            row = {
                "frames": n,
                "boxes": masked["boxes"],
                "run_seconds_without_masks": plain["seconds"],
                "run_seconds_with_masks": masked["seconds"],
                "mask_step_seconds": masked["mask_seconds"],
                "mask_seconds_per_frame": round(masked["mask_seconds"] / n, 4),
                "mask_step_share": round(share, 3),
                "peak_rss_mb_without_masks": plain["peak_rss_mb"],
                "peak_rss_mb_with_masks": masked["peak_rss_mb"],
                "peak_gpu_mb": masked["peak_gpu_mb"],
                "journal_mb": masked["journal_mb"],
                "journal_mb_without_masks": plain["journal_mb"],
                "mask_model": masked["mask_model"],
            }
            rows.append(row)
            print(
                f"{n:>6} frames ({row['boxes']} boxes): run {plain['seconds']:.1f} s -> {masked['seconds']:.1f} s with "
                f"masks; mask step {masked['mask_seconds']:.1f} s = {row['mask_seconds_per_frame'] * 1000:.0f} ms/frame"
                f" ({100 * share:.0f}% of the run); peak RSS {plain['peak_rss_mb']:.0f} -> {masked['peak_rss_mb']:.0f}"
                f" MB"
                + (f", GPU {masked['peak_gpu_mb']:.0f} MB" if masked["peak_gpu_mb"] else "")
                + f"; journal {plain['journal_mb']:.2f} -> {masked['journal_mb']:.2f} MB"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "model": "SAM 2.1 Hiera-L architecture, random" if args.full else "tiny random SAM 2 (Hiera, 128 px)",
        "runs": rows,
    }
    args.out.write_text(json.dumps(body, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
