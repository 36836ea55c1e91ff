"""Scale-out: ``autolabel run --engine ray`` with 1, 2, 4 and 8 labeler actors on a local Ray instance.

The labeler costs a fixed time per batch without holding the GIL (``time.sleep``, as a GPU
forward does while the host waits) and returns no boxes, so what is measured is the
engine: decoding in tasks, batches to actors, results streamed back in order and written
by the driver. Printed per run: frames/s over the whole run, and over the labeling stretch
(from the first frame written to the last: actor start-up left out). Also the ceiling set
by the driver's writing (an instant labeler), and ``--engine ray`` with one actor against
``--engine local`` on the same input (the overhead of the engine).

    python bench/scale.py                          # 4 videos x 240 frames, 0.1 s per batch of 8
    python bench/scale.py --videos 8 --frames 480 --batch-seconds 0.05 --cpus 16

Writes JSON under bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel import progress  # noqa: E402
from autolabel.config import load_config  # noqa: E402
from autolabel.pipeline import run  # noqa: E402


class SleepLabeler:
    """A labeler whose batch costs ``seconds`` of waiting (the GIL released), and finds nothing."""

    def __init__(self, batch_size: int, seconds: float) -> None:
        self.batch_size = batch_size
        self.seconds = seconds

    def prepare(self, ontology) -> None:
        pass

    def label(self, images, ontology):
        import supervision as sv

        if self.seconds:
            time.sleep(self.seconds)
        return [sv.Detections.empty() for _ in images]

    def describe(self) -> dict:
        return {"base_model": "sleep", "seconds_per_batch": self.seconds}


def make_videos(root: Path, videos: int, frames: int, size: tuple[int, int]) -> None:
    """H.264 clips (a keyframe every 30 frames, as phones write) of a moving square, one product."""
    import av

    folder = root / "videos" / "bench"
    folder.mkdir(parents=True)
    (folder / "ontology.json").write_text(json.dumps({"box": "box"}))
    w, h = size
    for v in range(videos):
        with av.open(str(folder / f"clip{v}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"preset": "ultrafast", "g": "30", "keyint_min": "30", "sc_threshold": "0"}
            for i in range(frames):
                img = np.full((h, w, 3), 60 + v * 20, np.uint8)
                x = (i * 4) % (w - 40)
                img[40:80, x : x + 40] = 230
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def one_run(root: Path, engine: str, actors: int, batch: int, seconds: float, cpus: float) -> dict:
    out = root / "dataset"
    shutil.rmtree(out, ignore_errors=True)
    config = load_config(
        None,
        {
            "input": str(root / "videos"),
            "output": str(out),
            "report": False,
            "sampling.frame_rate": 1,
            "engine.name": engine,
            "engine.actors": actors,
            "engine.actor_cpus": cpus,
        },
    )
    start = time.perf_counter()
    (result,) = run(config, lambda: SleepLabeler(batch, seconds))
    wall = time.perf_counter() - start
    assert result.ok, result.errors
    images = sorted((out / "bench" / "images").iterdir(), key=lambda p: p.stat().st_mtime)
    stretch = images[-1].stat().st_mtime - images[0].stat().st_mtime
    n = result.new_frames
    return {
        "engine": engine,
        "actors": actors if engine == "ray" else 1,
        "seconds_per_batch": seconds,
        "frames": n,
        "wall_s": round(wall, 2),
        "fps_wall": round(n / wall, 1),
        "fps_labeling": round((n - 1) / stretch, 1) if stretch > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=240, help="frames per video (all kept: stride 1)")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--batch", type=int, default=8, help="frames per labeler batch")
    parser.add_argument("--batch-seconds", type=float, default=0.1, help="cost of one batch")
    parser.add_argument("--actors", default="1,2,4,8")
    parser.add_argument("--cpus", type=int, default=0, help="CPUs for the local Ray instance (0: this machine's)")
    args = parser.parse_args()
    import ray

    progress.configure(False)
    cpus = args.cpus or os.cpu_count() or 1
    counts = [int(a) for a in args.actors.split(",")]
    # The sleeping actors hold no CPU: a small reservation each, so that all of them fit beside the decode tasks.
    actor_cpus = 0.1
    ray.init(
        num_cpus=cpus + math.ceil(actor_cpus * max(counts)),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    w, h = (int(x) for x in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="autolabel-scale-") as tmp:
        root = Path(tmp)
        make_videos(root, args.videos, args.frames, (w, h))
        print(
            f"{args.videos} videos x {args.frames} frames {args.size}, batch {args.batch}, "
            f"{args.batch_seconds} s per batch ({args.batch / args.batch_seconds:.0f} frames/s per actor at most), "
            f"{cpus} CPUs"
        )
        print(f"{'run':<34} {'frames/s':>9} {'labeling':>9} {'speed-up':>9} {'wall s':>7}")

        def show(name: str, row: dict, base: float | None = None) -> None:
            rows.append(row | {"run": name})
            fps = row["fps_labeling"] or row["fps_wall"]
            speed = f"{fps / base:.2f}x" if base else ""
            print(f"{name:<34} {row['fps_wall']:>9.1f} {fps:>9.1f} {speed:>9} {row['wall_s']:>7.1f}", flush=True)

        local = one_run(root, "local", 1, args.batch, args.batch_seconds, actor_cpus)
        show("local engine", local)
        base = None
        for n in counts:
            row = one_run(root, "ray", n, args.batch, args.batch_seconds, actor_cpus)
            base = base or row["fps_labeling"] or row["fps_wall"]
            show(f"ray, {n} actor{'s' if n > 1 else ''}", row, base)
        show("ceiling: local, instant labeler", one_run(root, "local", 1, args.batch, 0.0, actor_cpus))
        show(
            f"ceiling: ray {max(counts)} actors, instant",
            one_run(root, "ray", max(counts), args.batch, 0.0, actor_cpus),
        )
        one = rows[1]
        print(
            f"overhead of --engine ray (1 actor) against local: whole run "
            f"{local['fps_wall'] / one['fps_wall'] - 1:+.1%} time, labeling stretch "
            f"{(local['fps_labeling'] or 0) / (one['fps_labeling'] or 1) - 1:+.1%}"
        )
    ray.shutdown()
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "args": vars(args), "ray": ray.__version__}
    (results / f"scale-{stamp}.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
