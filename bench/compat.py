"""Byte comparison of datasets and exports across two versions of autolabel.

Makes the same datasets and exports with the code under ``--code`` (a checkout; default this
one) into OUT, with real models only (YOLO11n from ../shared when present, a tiny random
Grounding DINO, tiny random discovery models): the bundled videos in every format with
``--merge``, ``--dedup``, ``--engine ray`` (when Ray is installed), discover, a Label Studio
review imported, and every ``export --to`` target of a product and of the merged dataset.
Then ``compare`` lists every file that differs between two such folders.

    git worktree add /tmp/before <old commit>
    python bench/compat.py make /tmp/compat/work --code /tmp/before && mv /tmp/compat/work /tmp/compat/before
    python bench/compat.py make /tmp/compat/work && mv /tmp/compat/work /tmp/compat/after
    python bench/compat.py compare /tmp/compat/before /tmp/compat/after

Both must be made at the same path (export marks hold the dataset's absolute path).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
YOLO11N = ROOT.parent / "shared" / "data" / "weights" / "yolo11n.pt"
TARGETS = ("ultralytics", "coco", "voc", "cvat", "label-studio")
# Never compared: lock files, and the report (its thumbnails are named by the image's mtime).
SKIP_NAMES = ("autolabel-lock", "report.html")
SKIP_FOLDERS = ("report",)


def cli(code: Path, cwd: Path, *args: str) -> None:
    env = os.environ | {"PYTHONPATH": str(code), "AUTOLABEL_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env["AUTOLABEL_CACHE"] = str(cwd / "cache")
    env["YOLO_CONFIG_DIR"] = str(cwd / "cache" / "ultralytics")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "autolabel", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )
    took = time.perf_counter() - start
    print(f"  {took:6.1f} s  autolabel {' '.join(args)}", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"autolabel {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def models(out: Path, code: Path) -> dict[str, Path]:
    """Tiny random models, written by this process with a fixed seed (the same bytes for both versions)."""
    sys.path.insert(0, str(code))
    import timm
    import torch
    from safetensors.torch import save_file

    from autolabel.labelers.gdino_random import write_random_grounding_dino

    gd = write_random_grounding_dino(out / "gdino", seed=0)
    torch.manual_seed(0)
    backbone = timm.create_model("test_vit", pretrained=False, num_classes=0)
    save_file(backbone.state_dict(), str(out / "backbone.safetensors"))
    classifier = timm.create_model("test_convnext", pretrained=False, num_classes=21841)
    torch.save(classifier.state_dict(), out / "classifier.pth")
    return {
        "weights": gd.weights,
        "model_config": gd.model_config,
        "text_encoder": gd.text_encoder,
        "backbone": out / "backbone.safetensors",
        "classifier": out / "classifier.pth",
    }


def make(out: Path, code: Path) -> None:
    out.mkdir(parents=True)
    m = models(out / "models", code)
    videos = out / "videos"
    shutil.copytree(ROOT / "videos", videos)
    # COCO names, for the closed-set YOLO11n: the bundled products, each with a second class.
    (videos / "box" / "ontology.json").write_text(json.dumps({"book": "box", "person": "hand"}))
    (videos / "cup" / "ontology.json").write_text(json.dumps({"cup": "cup", "person": "hand"}))
    gdino = ["--weights", str(m["weights"]), "--model-config", str(m["model_config"])]
    gdino += ["--text-encoder", str(m["text_encoder"]), "--image-size", "160", "-q"]
    gd_videos = out / "gd-videos"
    shutil.copytree(ROOT / "videos", gd_videos)
    every = "yolo,voc,coco"

    cli(code, out, "run", "-i", "gd-videos", "-o", "gd", "--frame-rate", "60", "--format", every, "--merge", *gdino)
    cli(code, out, "run", "-i", "gd-videos", "-o", "gd-dedup", "--frame-rate", "20", "--dedup", "0.9", *gdino)
    cli(code, out, "run", "-i", "gd-videos", "-o", "gd-max", "--frame-rate", "10", "--max-frames", "5", *gdino)
    if YOLO11N.is_file():
        yolo = ["--base-model", "ultralytics", "--base-weights", str(YOLO11N), "-q"]
        cli(code, out, "run", "-i", "videos", "-o", "yolo", "--frame-rate", "10", "--format", every, "--merge", *yolo)
        if importlib.util.find_spec("ray") is not None:
            cli(code, out, "run", "-i", "videos", "-o", "yolo-ray", "--frame-rate", "10", "--format", every,
                "--engine", "ray", "--no-report", *yolo)  # fmt: skip
    discover = ["--base-model", "discover", "--discover-backbone", "test_vit", "--backbone-weights", str(m["backbone"])]
    discover += ["--discover-classifier", "test_convnext", "--classifier-weights", str(m["classifier"])]
    (out / "dv").mkdir()
    shutil.copytree(ROOT / "videos" / "cup", out / "dv" / "cup", ignore=shutil.ignore_patterns("ontology.json"))
    cli(code, out, "run", "-i", "dv", "-o", "discover", "--frame-rate", "40", "--format", every, "--merge",
        "--image-size", "64", "-q", *discover)  # fmt: skip

    base = "yolo" if (out / "yolo").is_dir() else "gd"
    # A review: every other frame of the box product gets its first box moved and the others deleted.
    product = out / base / "box"
    cli(code, out, "report", str(product.relative_to(out)), "--export", "label-studio", "-q")
    tasks = json.loads((product / "label_studio_tasks.json").read_text())
    reviewed = []
    for i, task in enumerate(tasks):
        if i % 2 == 0:
            result = task["predictions"][0]["result"][:1]
            for r in result:
                r["value"]["x"] = round(r["value"]["x"] + 1.0, 3)
            task["annotations"] = [{"id": i, "result": result}]
            reviewed.append(task)
    (out / "review.json").write_text(json.dumps(reviewed))
    cli(code, out, "import", "review.json", "--dataset", str(product.relative_to(out)), "-q")
    cli(code, out, "merge", "--root", base, "-q")
    for dataset in (f"{base}/box", f"{base}/merged"):
        for target in TARGETS:
            name = f"export-{dataset.replace('/', '-')}-{target}"
            cli(code, out, "export", dataset, "--to", target, "-o", name, "-q")
    shutil.rmtree(out / "cache", ignore_errors=True)


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not any(s in p.name for s in SKIP_NAMES)
        and not set(p.relative_to(root).parts[:-1]) & set(SKIP_FOLDERS)
        and "models" not in p.relative_to(root).parts[:1]
    }


def compare(a: Path, b: Path) -> int:
    da, db = digests(a), digests(b)
    only_a = sorted(set(da) - set(db))
    only_b = sorted(set(db) - set(da))
    differ = sorted(k for k in set(da) & set(db) if da[k] != db[k])
    same = len(set(da) & set(db)) - len(differ)
    print(f"{len(da)} files in {a}, {len(db)} in {b}: {same} identical, {len(differ)} differ, "
          f"{len(only_a)} only in the first, {len(only_b)} only in the second")  # fmt: skip
    for title, names in (("differ", differ), (f"only in {a}", only_a), (f"only in {b}", only_b)):
        for name in names:
            print(f"  {title}: {name}")
    return 1 if differ or only_a or only_b else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make", help="make the datasets and exports into OUT (must not exist)")
    mk.add_argument("out", type=Path)
    mk.add_argument("--code", type=Path, default=ROOT, help="the autolabel checkout to run (default: this one)")
    cmp = sub.add_parser("compare", help="list the files that differ between two OUT folders")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "make":
        make(args.out.resolve(), args.code.resolve())
    else:
        raise SystemExit(compare(args.a, args.b))


if __name__ == "__main__":
    main()
