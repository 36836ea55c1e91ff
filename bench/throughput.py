"""Throughput: the seed's labeling loop against autolabel's, on the same frames, in one process.

Seed way (what autodistill does): for every frame and every caption, one Grounding DINO
forward at batch 1 in fp32, the frame resized on the CPU by the package's own transforms
(``groundingdino.util.inference.predict``). Our way: ``GroundingDinoLabeler`` (all captions
in one prompt, frames batched, resize and normalisation on the device, autocast on CUDA),
and the whole ``autolabel run`` path (decode on a prefetch thread, write on another).

Speed does not depend on weight values: without ``--weights`` the full-size Swin-T
architecture is built with random weights (the real BERT vocabulary from
../shared/data/bert-base-uncased when present). Prints a table and writes JSON.

    python bench/throughput.py                     # CUDA if available, else a small CPU run
    python bench/throughput.py --frames 256 --image-size 800 --device cuda
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.config import load_config  # noqa: E402
from autolabel.labelers.grounding_dino import GroundingDinoLabeler, load_model  # noqa: E402
from autolabel.ontology import Ontology  # noqa: E402
from autolabel.sampling import iter_frames  # noqa: E402
from autolabel.sources import Source  # noqa: E402

VOCAB = ROOT.parent / "shared" / "data" / "bert-base-uncased" / "vocab.txt"
CAPTIONS_1 = {"cardboard box": "box"}
CAPTIONS_3 = {"cardboard box": "box", "a hand": "hand", "a table": "table"}


def peak_host_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_files(args) -> tuple[Path, Path, Path]:
    """The real files when given, else a cached random-weight model (built once)."""
    if args.weights:
        from autolabel.weights import bundled_text_encoder

        text_encoder = Path(args.text_encoder) if args.text_encoder else bundled_text_encoder()
        return Path(args.weights), Path(args.model_config), text_encoder
    from autolabel.labelers.gdino_random import write_random_grounding_dino

    cache = ROOT / "bench" / "results" / (".random-tiny" if args.tiny else ".random-swint")
    done = cache / "complete"
    if not done.is_file():
        shutil.rmtree(cache, ignore_errors=True)
        files = write_random_grounding_dino(cache, tiny=args.tiny, vocab_file=VOCAB if VOCAB.is_file() else None)
        done.write_text(json.dumps({"config": files.model_config.name}))
    config = cache / json.loads(done.read_text())["config"]
    return cache / "groundingdino_random.pth", config, cache / "bert"


def read_frames(video: Path, n: int, stride: int) -> list[np.ndarray]:
    frames = [f.image for f in iter_frames(Source(video, video.stem, True), frame_rate=stride)]
    while len(frames) < n:  # short clips: repeat them
        frames += frames
    return frames[:n]


def seed_way(model, frames, captions, args, device) -> tuple[float, int]:
    """One fp32 batch-1 forward per caption per frame, CPU resize (the package's predict)."""
    import groundingdino.datasets.transforms as T  # noqa: N812
    from groundingdino.util.inference import predict
    from PIL import Image

    transform = T.Compose(
        [
            T.RandomResize([args.image_size], max_size=args.max_size),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    boxes = 0

    def one(frame):
        nonlocal boxes
        image, _ = transform(Image.fromarray(frame[:, :, ::-1]), None)
        for caption in captions:
            b, _, _ = predict(model, image, caption, args.box_threshold, args.text_threshold, device=device)
            boxes += len(b)

    one(frames[0])  # warm-up
    sync(device)
    start = time.perf_counter()
    for frame in frames:
        one(frame)
    sync(device)
    return time.perf_counter() - start, boxes


def our_way(labeler, frames, ontology, device) -> tuple[float, list]:
    labeler.label(frames[: labeler.batch_size], ontology)  # warm-up
    sync(device)
    start = time.perf_counter()
    out = []
    for i in range(0, len(frames), labeler.batch_size):
        out += labeler.label(frames[i : i + labeler.batch_size], ontology)
    sync(device)
    return time.perf_counter() - start, out


def f1(pred, ref, iou: float = 0.5) -> float:
    import supervision as sv

    tp = fp = fn = 0
    for p, r in zip(pred, ref, strict=True):
        used: set[int] = set()
        if len(p) and len(r):
            m = sv.box_iou_batch(p.xyxy, r.xyxy)
            for i in np.argsort(-p.confidence):
                cands = [
                    j for j in np.argsort(-m[i]) if m[i, j] >= iou and j not in used and r.class_id[j] == p.class_id[i]
                ]
                if cands:
                    used.add(cands[0])
                    tp += 1
                else:
                    fp += 1
        else:
            fp += len(p)
        fn += len(r) - len(used)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def video_to_dataset(labeler, video: Path, stride: int, tmp: Path) -> tuple[float, int]:
    from autolabel.pipeline import run

    product = tmp / "in" / "bench"
    product.mkdir(parents=True)
    (product / video.name).symlink_to(video.resolve())
    (product / "ontology.json").write_text(json.dumps(CAPTIONS_3))
    cfg = load_config(
        None, {"input": str(tmp / "in"), "output": str(tmp / "out"), "sampling.frame_rate": stride, "report": False}
    )
    start = time.perf_counter()
    (result,) = run(cfg, lambda: labeler)
    return time.perf_counter() - start, result.new_frames


def phone_like_video(path: Path, seconds: int = 120) -> Path:
    """A 720p, 30 fps H.264 clip with B-frames and a keyframe every second, as phones record (made once)."""
    import av
    import cv2

    if path.is_file():
        return path
    cap = cv2.VideoCapture(str(ROOT / "videos" / "box" / "box.mp4"))
    clip = []
    while (frame := cap.read()[1]) is not None:
        clip.append(cv2.resize(frame, (1280, 720)))
    cap.release()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "veryfast", "bf": "2", "g": "30", "keyint_min": "30", "sc_threshold": "0"}
        for i in range(seconds * 30):
            loop, k = divmod(i, len(clip))
            image = clip[k if loop % 2 == 0 else len(clip) - 1 - k]  # play back and forth
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


def sampling_speed(video: Path, stride: int) -> dict:
    """Our sampler against reading every frame (the seed) and grabbing every frame (decode, convert kept only)."""
    import cv2

    from autolabel.sampling import DecodeStats

    stats = DecodeStats()
    start = time.perf_counter()
    kept = sum(1 for _ in iter_frames(Source(video, video.stem, True), frame_rate=stride, stats=stats))
    ours = time.perf_counter() - start

    def opencv(retrieve_all: bool) -> tuple[float, int]:
        start = time.perf_counter()
        cap = cv2.VideoCapture(str(video))
        n = 0
        while cap.grab():
            if retrieve_all or n % stride == 0:
                cap.retrieve()
            n += 1
        cap.release()
        return time.perf_counter() - start, n

    every, frames = opencv(retrieve_all=True)
    grab, _ = opencv(retrieve_all=False)
    return {
        "video": video.name,
        "stride": stride,
        "video_frames": frames,
        "kept_frames": kept,
        "decoded_frames": stats.decoded,
        "seeks": stats.seeks,
        "ours_s": round(ours, 3),
        "grab_every_frame_s": round(grab, 3),
        "read_every_frame_s": round(every, 3),
        "speedup_vs_read": round(every / ours, 2),
        "speedup_vs_grab": round(grab / ours, 2),
        "video_frames_per_s": round(frames / ours, 1),
    }


def main() -> None:
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # the OpenCV baselines' decoder warnings
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=ROOT / "videos" / "box" / "box.mp4")
    ap.add_argument("--frames", type=int, default=None, help="frames per measurement (default 256 CUDA, 6 CPU)")
    ap.add_argument("--image-size", type=int, default=None, help="short side (default 800 CUDA, 320 CPU)")
    ap.add_argument("--max-size", type=int, default=1333)
    ap.add_argument("--batch-size", type=int, default=None, help="default: automatic")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--weights"), ap.add_argument("--model-config"), ap.add_argument("--text-encoder")
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead of full-size Swin-T")
    ap.add_argument("--box-threshold", type=float, default=0.35)
    ap.add_argument("--text-threshold", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cuda = device.startswith("cuda")
    args.frames = args.frames or (256 if cuda else 6)
    args.image_size = args.image_size or (800 if cuda else 320)
    torch.manual_seed(0)

    weights, config, text_encoder = model_files(args)
    model = load_model(config, weights, text_encoder).to(device)
    # The seed loop gets its own, untouched model: ours caches the prompt's text features.
    seed_model = load_model(config, weights, text_encoder).to(device)
    frames = read_frames(args.video, args.frames, stride=max(1, 450 // args.frames))
    h, w = frames[0].shape[:2]
    ont1, ont3 = Ontology.from_mapping(CAPTIONS_1), Ontology.from_mapping(CAPTIONS_3)

    def labeler(precision: str, batch: int | None) -> GroundingDinoLabeler:
        return GroundingDinoLabeler(
            model,
            device=device,
            precision=precision,
            image_size=args.image_size,
            max_size=args.max_size,
            box_threshold=args.box_threshold,
            text_threshold=args.text_threshold,
            batch_size=batch,
        )

    fast = labeler("auto", args.batch_size)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rows = {}
    for name, ont in (("1 caption", ont1), ("3 captions", ont3)):
        seed_s, _ = seed_way(seed_model, frames, ont.captions, args, device)
        ours_s, ours = our_way(fast, frames, ont, device)
        rows[name] = {
            "seed_fps": round(len(frames) / seed_s, 3),
            "ours_fps": round(len(frames) / ours_s, 3),
            "speedup": round(seed_s / ours_s, 2),
        }
        if name == "3 captions":
            _, reference = our_way(labeler("fp32", 1), frames, ont, device)
            rows[name]["f1_vs_fp32_batch1"] = round(f1(ours, reference), 4)
            if not cuda:
                # The CPU run is fp32; bf16 autocast on the CPU stands in for the GPU's mixed precision.
                bf16 = labeler("fp32", args.batch_size)
                bf16.dtype = torch.bfloat16
                bf16_s, mixed = our_way(bf16, frames, ont, device)
                rows[name]["f1_cpu_bf16_vs_fp32_batch1"] = round(f1(mixed, reference), 4)
                rows[name]["ours_cpu_bf16_fps"] = round(len(frames) / bf16_s, 3)
                rows[name]["boxes_per_frame"] = round(sum(len(d) for d in reference) / len(reference), 1)
    with tempfile.TemporaryDirectory() as tmp:
        stride = max(1, 450 // args.frames)
        e2e_s, e2e_frames = video_to_dataset(fast, args.video, stride, Path(tmp))
    result = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "weights": "real checkpoint" if args.weights else ("tiny random" if args.tiny else "random (full-size Swin-T)"),
        "image_size": args.image_size,
        "frame_size": f"{w}x{h}",
        "frames": len(frames),
        "batch_size": fast.batch_size,
        "precision": str(fast.dtype).replace("torch.", "") if fast.dtype else "fp32",
        "model_loop": rows,
        "video_to_dataset": {"frames": e2e_frames, "seconds": round(e2e_s, 2), "fps": round(e2e_frames / e2e_s, 3)},
        "sampling": [
            sampling_speed(args.video, 350),
            sampling_speed(phone_like_video(ROOT / "bench" / "results" / ".phone-720p-gop30.mp4"), 350),
        ],
        "peak_host_mb": round(peak_host_mb(), 1),
        "peak_device_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "command": " ".join(["python", *sys.argv]),
    }
    out = args.out or ROOT / "bench" / "results" / f"throughput-{'cuda' if cuda else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"device {result['device']}, {result['weights']}, image short side {args.image_size}, "
        f"{len(frames)} frames {w}x{h}, batch {fast.batch_size}, {result['precision']}"
    )
    print(f"{'':12} {'seed frames/s':>14} {'ours frames/s':>14} {'speedup':>8}")
    for name, r in rows.items():
        print(f"{name:12} {r['seed_fps']:>14.3f} {r['ours_fps']:>14.3f} {r['speedup']:>7.2f}x")
    three = rows["3 captions"]
    print(f"F1 (IoU 0.5) of ours vs fp32 batch-1 reference, 3 captions: {three['f1_vs_fp32_batch1']}")
    if "f1_cpu_bf16_vs_fp32_batch1" in three:
        print(
            f"F1 of bf16 autocast on the CPU vs the same reference: {three['f1_cpu_bf16_vs_fp32_batch1']} "
            f"({three['boxes_per_frame']} reference boxes per frame; {three['ours_cpu_bf16_fps']} frames/s)"
        )
    v = result["video_to_dataset"]
    print(f"video in -> dataset out: {v['frames']} frames in {v['seconds']} s = {v['fps']} frames/s")
    for s in result["sampling"]:
        print(
            f"sampling {s['video']} ({s['video_frames']} frames) at stride {s['stride']}: {s['kept_frames']} kept, "
            f"{s['decoded_frames']} decoded, {s['seeks']} seeks, {s['ours_s']} s ({s['video_frames_per_s']} video "
            f"frames/s); reading every frame {s['read_every_frame_s']} s ({s['speedup_vs_read']}x), grabbing every "
            f"frame {s['grab_every_frame_s']} s ({s['speedup_vs_grab']}x)"
        )
    print(f"peak host memory {result['peak_host_mb']} MB, peak device memory {result['peak_device_mb']} MB")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
