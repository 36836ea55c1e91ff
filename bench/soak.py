"""Random-kill soak: kill -9 at random moments across ``run --merge`` and ``import``, re-run, compare bytes.

A 3-product input with mixed frame sizes (videos of two sizes and a photo) is labeled
once without interruption (planted-box labeler, so the numbers are the pipeline's own),
then reviewed through a Label Studio export/import. Each trial repeats the same two
commands in a fresh folder, sending SIGKILL to the process at a random moment (uniform
over 30-98% of the measured duration of the command it hits: the first 30% is mostly
Python starting), then re-runs the commands until
they finish, and compares every output file with the uninterrupted result.

    python bench/soak.py                 # 20 trials
    python bench/soak.py --trials 50 --seed 3
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ["run", "-i", "../videos", "-o", "dataset", "--frame-rate", "1", "--merge", "--no-report", "-q"]
IMPORT = ["import", "../review.json", "--dataset", "dataset/mug", "-q"]


def cli(cwd: Path, args: list[str], kill_after: float | None = None) -> tuple[int, float]:
    """Runs one command (planted-box labeler); SIGKILLs it after ``kill_after`` seconds when given."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "AUTOLABEL_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crashpoint", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _, err = proc.communicate()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return proc.returncode, time.perf_counter() - start


def make_input(root: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import make_image, make_product, make_video

    make_product(root / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {"a.mp4": 60})
    make_video(root / "videos" / "mug" / "b.mp4", frames=40, size=(64, 48))
    make_product(root / "videos", "cup", {"cup": "cup"}, {"clip one.mp4": 50})
    make_image(root / "videos" / "cup" / "still.jpg", size=(120, 90))
    make_product(root / "videos", "盒子", {"box": "box", "Hand": "hand"}, {"正面.mp4": 40})


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.crashpoint import dataset_files, review_export

    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_input(root)
        clean = root / "clean"
        clean.mkdir()
        _, t_run = cli(clean, RUN)
        review_export(clean / "dataset" / "mug", root / "review.json")
        _, t_import = cli(clean, IMPORT)
        expected = dataset_files(clean / "dataset")
        print(f"uninterrupted: run --merge {t_run:.1f} s, import {t_import:.1f} s, {len(expected)} files")
        identical = 0
        for trial in range(args.trials):
            work = root / f"trial{trial}"
            work.mkdir()
            # Kill in the run (most of the time) or in the import, at a uniform random moment of it.
            in_import = rng.random() < 0.3
            if in_import:
                cli(work, RUN)
                moment = rng.uniform(0.3, 0.98) * t_import
                code, _ = cli(work, IMPORT, kill_after=moment)
            else:
                moment = rng.uniform(0.3, 0.98) * t_run
                code, _ = cli(work, RUN, kill_after=moment)
            killed = code == -signal.SIGKILL
            if not in_import:
                cli(work, RUN)
            cli(work, IMPORT)
            got = dataset_files(work / "dataset")
            same = got == expected
            identical += same
            where = "import" if in_import else "run --merge"
            diff = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
            verdict = "identical" if same else "DIFFERENT: " + ", ".join(diff[:5])
            state = "killed" if killed else "had finished"
            print(f"trial {trial + 1:>2}: kill -9 in {where:<11} at {moment:5.2f} s ({state}): {verdict}")
        print(f"{identical} of {args.trials} trials byte-identical to the uninterrupted run")
        if identical != args.trials:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
