"""Frame selection: --dedup, --max-frames, flicker flags and the flagged-only review queue."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from autolabel import report
from autolabel.cli import app
from autolabel.datasets.journal import read_journal
from autolabel.datasets.layout import JOURNAL
from autolabel.datasets.records import Box, FrameRecord
from autolabel.imports import import_label_studio
from autolabel.pipeline import run
from autolabel.review import TASKS_FILE, export_label_studio
from autolabel.selection import DUPLICATE, Deduper, embedding, farthest_point, similarity, thumbnail
from tests.conftest import FakeLabeler, run_config
from tests.test_pipeline import tree
from tests.test_report import make_dataset

FROZEN = [0.0] * 15
TURNING = [5.0 * (k + 1) for k in range(15)]  # 5 degrees a frame


def _scene(size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A grey gradient and a printed box (random 8-pixel blocks, an orange rim) a third of the frame wide."""
    rng = np.random.default_rng(seed)
    w, h = size
    background = np.zeros((h, w, 3), np.uint8)
    background[:] = np.linspace(150, 200, w, dtype=np.uint8)[None, :, None]
    pw, ph = w // 3, h // 3
    blocks = rng.integers(0, 255, (ph // 8, pw // 8, 3), dtype=np.uint8)
    box = cv2.resize(blocks, (pw, ph), interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(box, (0, 0), (pw - 1, ph - 1), (0, 200, 255), 3)
    return background, box


def _render(
    background: np.ndarray, box: np.ndarray, angle: float, rng, noise: float = 2.0, shift: float = 0.0
) -> np.ndarray:
    """The box turned by ``angle`` degrees in the middle of the frame, moved by ``shift`` px, with sensor noise."""
    h, w = background.shape[:2]
    ph, pw = box.shape[:2]
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
    m[:, 2] += ((w - pw) / 2 + shift, (h - ph) / 2 + shift)
    alpha = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), m, (w, h)).astype(np.float32)[..., None] / 255
    image = background * (1 - alpha) + cv2.warpAffine(box, m, (w, h)) * alpha + rng.normal(0, noise, background.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_turning_clip(path: Path, angles: list[float], size: tuple[int, int] = (320, 240)) -> Path:
    """An mp4v clip of a printed box, frame i turned by ``angles[i]`` degrees: equal angles are a frozen stretch."""
    rng = np.random.default_rng(0)
    background, box = _scene(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    for angle in angles:
        writer.write(_render(background, box, angle, rng))
    writer.release()
    return path


def make_turning_product(root: Path, videos: dict[str, list[float]]) -> Path:
    folder = root / "videos" / "box"
    for name, angles in videos.items():
        make_turning_clip(folder / name, angles)
    (folder / "ontology.json").write_text(json.dumps({"box": "box", "hand": "hand"}))
    return folder


def kept_indices(out: Path) -> list[int]:
    return [r.index for r in read_journal(out) if r.dropped is None]


# --- the signal -------------------------------------------------------------------------


def test_similarity_catches_a_still_product_and_not_a_turn_of_a_few_degrees():
    rng = np.random.default_rng(1)
    background, box = _scene((640, 480))

    def jpeg(image):
        return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_COLOR)

    still = thumbnail(jpeg(_render(background, box, 0.0, rng, noise=3.0)))
    noisy = [thumbnail(jpeg(_render(background, box, 0.0, rng, noise=3.0, shift=0.25))) for _ in range(3)]
    assert all(similarity(still, t) >= 0.98 for t in noisy)
    assert similarity(still, still) == 1.0
    for angle in (2.0, 3.0, 5.0):
        assert similarity(still, thumbnail(jpeg(_render(background, box, angle, rng, noise=3.0)))) < 0.95
    assert similarity(still, np.zeros((64, 48), np.float32)) == 0.0  # another shape: not alike


def test_deduper_compares_with_the_last_kept_frame_not_the_previous_one():
    d = Deduper(0.98)
    a, b = np.zeros((48, 64), np.float32), np.full((48, 64), 200, np.float32)
    assert d.check(0, a) is None and d.check(1, a) == 1.0 and d.check(2, b) is None
    assert d.reference[0] == 2


def test_farthest_point_is_deterministic_starts_at_the_first_and_spreads():
    # Three clusters of ten near-identical embeddings: three picks take one of each.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 48, 64)).astype(np.float32) * 50
    thumbs = [centres[i // 10] + rng.normal(size=(48, 64)).astype(np.float32) for i in range(30)]
    embeddings = np.stack([embedding(t) for t in thumbs])
    picked = farthest_point(embeddings, 3)
    assert picked[0] == 0 and sorted({i // 10 for i in picked}) == [0, 1, 2]
    assert farthest_point(embeddings, 3) == picked
    assert farthest_point(embeddings, 50) == list(range(30))
    assert len(farthest_point(embeddings, 17)) == 17


# --- --dedup ----------------------------------------------------------------------------


def test_dedup_keeps_one_frame_of_a_frozen_stretch_and_the_moving_part(tmp_path):
    make_turning_product(tmp_path, {"clip.mp4": FROZEN + TURNING})
    labeler = FakeLabeler()
    (r,) = run(run_config(tmp_path, **{"sampling.frame_rate": 1, "sampling.dedup": 0.98}), lambda: labeler)
    out = tmp_path / "dataset" / "box"
    kept = kept_indices(out)
    assert sum(1 for i in kept if i < 15) == 1 and kept[0] == 0
    assert sum(1 for i in kept if i >= 15) >= 14  # most of the moving part
    assert r.ok and r.frames == len(kept) and r.duplicate_frames == 30 - len(kept) and r.dropped_frames == 0
    assert labeler.frames == len(kept)  # duplicates are never labeled
    dropped = [rec for rec in read_journal(out) if rec.dropped is not None]
    assert {rec.dropped for rec in dropped} == {DUPLICATE} and not any((out / rec.image).exists() for rec in dropped)
    run_yaml = yaml.safe_load((out / "run.yaml").read_text())
    assert run_yaml["frames"] == {"kept": len(kept), "dropped_as_duplicates": 30 - len(kept), "dropped_by_filters": 0}
    assert run_yaml["config"]["sampling"]["dedup"] == 0.98
    # Without --dedup every frame is kept.
    (plain,) = run(run_config(tmp_path, output=str(tmp_path / "plain"), **{"sampling.frame_rate": 1}), FakeLabeler)
    assert plain.frames == 30 and plain.duplicate_frames == 0


def test_dedup_resumed_after_a_kill_ends_byte_identical(tmp_path):
    make_turning_product(tmp_path, {"a.mp4": TURNING[:6] + [30.0] * 12 + TURNING[6:], "b.mp4": FROZEN[:8]})
    settings = {"sampling.frame_rate": 1, "sampling.dedup": 0.98}
    (full,) = run(run_config(tmp_path, output=str(tmp_path / "full"), **settings), FakeLabeler)
    assert full.ok and full.duplicate_frames >= 11 + 7
    for batches in (1, 2, 3):
        out = tmp_path / f"part{batches}"
        with pytest.raises(KeyboardInterrupt):
            run(run_config(tmp_path, output=str(out), **settings), lambda n=batches: FakeLabeler(fail_after_batches=n))
        done = list(read_journal(out / "box"))
        assert 0 < len(done) < 35
        second = FakeLabeler()
        (r,) = run(run_config(tmp_path, output=str(out), **settings), lambda labeler=second: labeler)
        assert r.ok and second.frames == full.frames - sum(1 for rec in done if rec.dropped is None)
        assert r.duplicate_frames == full.duplicate_frames
        assert tree(out / "box") == tree(tmp_path / "full" / "box")


def test_a_frame_relabeled_for_a_lost_image_keeps_its_decision(tmp_path):
    make_turning_product(tmp_path, {"a.mp4": TURNING[:4] + [20.0] * 8 + TURNING[4:8]})
    settings = {"sampling.frame_rate": 1, "sampling.dedup": 0.98}
    run(run_config(tmp_path, output=str(tmp_path / "full"), **settings), FakeLabeler)
    run(run_config(tmp_path, **settings), FakeLabeler)
    out = tmp_path / "dataset" / "box"
    (out / "images" / "a_000003.jpg").unlink()  # the still stretch's first frame: its reference
    (r,) = run(run_config(tmp_path, **settings), FakeLabeler)
    assert r.ok and r.new_frames == 1
    # The relabeled frame's journal line comes last; every decision and file is the uninterrupted run's.
    relabeled, full = tree(out), tree(tmp_path / "full" / "box")
    lines = [sorted(t.pop(JOURNAL).splitlines()) for t in (relabeled, full)]
    assert lines[0] == lines[1] and relabeled == full


# --- --max-frames -----------------------------------------------------------------------


def test_max_frames_returns_n_frames_spread_over_the_video_the_same_on_two_runs(tmp_path):
    angles = FROZEN + TURNING + [75.0] * 10 + [75.0 + 5.0 * (k + 1) for k in range(10)]
    make_turning_product(tmp_path, {"clip.mp4": angles, "still.mp4": FROZEN[:3]})
    settings = {"sampling.frame_rate": 1, "sampling.max_frames": 6}
    (r,) = run(run_config(tmp_path, **settings), FakeLabeler)
    (again,) = run(run_config(tmp_path, output=str(tmp_path / "again"), **settings), FakeLabeler)
    out = tmp_path / "dataset" / "box"
    names = sorted(p.stem for p in (out / "images").iterdir())
    clip = [int(n.rsplit("_", 1)[1]) for n in names if n.startswith("clip_")]
    assert len(clip) == 6 and len([n for n in names if n.startswith("still_")]) == 3
    assert names == sorted(p.stem for p in (tmp_path / "again" / "box" / "images").iterdir())
    assert tree(out) == tree(tmp_path / "again" / "box")
    # Spread: the first frame, one frame of the frozen start, frames from the turn and from the turn on.
    assert clip[0] == 0 and sum(1 for i in clip if i < 15) == 1
    assert any(15 <= i < 30 for i in clip) and any(i >= 40 for i in clip)
    assert r.frames == 9 and r.duplicate_frames == 0


def test_max_frames_with_dedup_and_fps_and_resume(tmp_path):
    make_turning_product(tmp_path, {"clip.mp4": FROZEN + TURNING})
    settings = {"sampling.fps": 10.0, "sampling.max_frames": 8, "sampling.dedup": 0.98}
    (full,) = run(run_config(tmp_path, output=str(tmp_path / "full"), **settings), FakeLabeler)
    assert full.frames == 8 and full.duplicate_frames == 14
    with pytest.raises(KeyboardInterrupt):
        run(run_config(tmp_path, **settings), lambda: FakeLabeler(fail_after_batches=1))
    (r,) = run(run_config(tmp_path, **settings), FakeLabeler)
    assert r.ok and r.frames == 8
    assert tree(tmp_path / "dataset" / "box") == tree(tmp_path / "full" / "box")


def test_changed_dedup_or_max_frames_is_refused_then_relabeled(tmp_path):
    make_turning_product(tmp_path, {"clip.mp4": FROZEN[:4] + TURNING[:4]})
    run(run_config(tmp_path, **{"sampling.dedup": 0.98}), FakeLabeler)
    (r,) = run(run_config(tmp_path, **{"sampling.dedup": 0.9}), FakeLabeler)
    assert r.output is None and "sampling.dedup: 0.98 -> 0.9" in r.errors[0] and "--overwrite" in r.errors[0]
    (r,) = run(run_config(tmp_path, **{"sampling.dedup": 0.98, "sampling.max_frames": 2}), FakeLabeler)
    assert "sampling.max_frames: None -> 2" in r.errors[0]
    (r,) = run(run_config(tmp_path, **{"sampling.max_frames": 2}), FakeLabeler, overwrite=True)
    assert r.ok and r.frames == 2


def test_datasets_made_before_frame_selection_resume_as_they_are(tmp_path):
    make_turning_product(tmp_path, {"clip.mp4": FROZEN[:4]})
    run(run_config(tmp_path), FakeLabeler)
    labeler = FakeLabeler()
    (r,) = run(run_config(tmp_path, **{"sampling.dedup": 0}), lambda: labeler)  # 0: off, as null
    assert r.ok and labeler.frames == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dedup", "1.5"], "sampling.dedup (--dedup) must be between 0 (off) and 1, got 1.5"),
        (["--max-frames", "0"], "sampling.max_frames (--max-frames) must be >= 1"),
    ],
)
def test_bad_selection_flags_are_one_error_line(tmp_path, flags, message):
    result = CliRunner().invoke(app, ["run", "-i", str(tmp_path), "-o", str(tmp_path / "out"), *flags])
    assert result.exit_code != 0 and result.stderr.count("\n") == 1 and message in result.stderr


def test_run_summary_counts_the_duplicates(tmp_path, monkeypatch):
    make_turning_product(tmp_path, {"clip.mp4": FROZEN[:6]})
    monkeypatch.setattr("autolabel.labelers.create_labeler", lambda *a, **k: FakeLabeler())
    out = tmp_path / "dataset"
    result = CliRunner().invoke(
        app, ["run", "-i", str(tmp_path / "videos"), "-o", str(out), "--frame-rate", "1", "--dedup", "0.98", "-q"]
    )
    assert result.exit_code == 0, result.stderr
    assert "near-duplicates dropped (--dedup, not labeled): 5" in result.stdout
    page = (out / "box" / "report.html").read_text()
    assert '<b id="n-duplicates">5</b>' in page


# --- flicker ----------------------------------------------------------------------------


def _rec(source: str, i: int, t: float, classes: list[int]) -> FrameRecord:
    boxes = [Box(c, 10 + 30 * c, 10, 30 + 30 * c, 40, 0.9) for c in classes]
    return FrameRecord(f"{source}_{i:06d}", source, i, t, 200, 100, boxes)


def test_flicker_flags_a_class_seen_or_missing_in_one_frame_only():
    records = [
        _rec("a", 0, 0.0, [0]),
        _rec("a", 3, 0.1, [0, 1]),  # class 1 in this frame only
        _rec("a", 6, 0.2, [0]),
        _rec("a", 9, 0.3, []),  # class 0 missing from this frame only
        _rec("a", 12, 0.4, [0]),
        _rec("a", 15, 0.5, [1]),  # changes and stays changed: not flicker
        _rec("a", 18, 0.6, [1]),
        _rec("a", 21, 5.0, [0]),  # neighbours seconds away: not compared
        _rec("a", 24, 9.0, [1]),
        _rec("b", 0, 0.0, [1]),  # another source is never a neighbour
        _rec("b", 1, 0.1, [0]),
    ]
    assert report.flicker(list(reversed(records)), gap=1.0) == ["a_000003", "a_000009"]
    flags = report.analyse(records, ["box", "hand"], report.ReportOptions()).flags
    assert flags["flicker"] == ["a_000003", "a_000009"]


# --- the review queue: --review N ---------------------------------------------------------


def accept(tasks: list[dict]) -> list[dict]:
    """A Label Studio export in which every task was accepted as it was."""
    return [{**t, "annotations": [{"id": 1, "result": t["predictions"][0]["result"]}]} for t in tasks]


def test_review_n_gives_the_queue_first_then_others_once_imported(tmp_path):
    root = make_dataset(tmp_path / "ds")
    result = CliRunner().invoke(app, ["report", str(root), "--export", "label-studio", "--review", "3", "-q"])
    assert result.exit_code == 0, result.stderr
    assert "3 frames, the review queue's first" in result.stdout
    first = json.loads((root / TASKS_FILE).read_text())
    assert len(first) == 3 and [t["id"] for t in first] == [1, 2, 3]  # in the queue's order
    export = tmp_path / "export.json"
    export.write_text(json.dumps(accept(first)))
    assert import_label_studio(root, export).frames_reviewed == 3

    out = tmp_path / "queue"
    result = CliRunner().invoke(app, ["export", str(root), "--to", "label-studio", "-o", str(out), "--review", "3"])
    assert result.exit_code == 0, result.stderr
    assert (
        "exported 3 frames" in result.stdout and "first 3 of 8 unreviewed frames (11 in the dataset)" in result.stdout
    )
    second = json.loads((out / TASKS_FILE).read_text())
    assert not {t["data"]["frame"] for t in first} & {t["data"]["frame"] for t in second}  # others
    from autolabel.datasets.dataset import Dataset
    from autolabel.queue import for_dataset

    with Dataset.open(root, "test") as ds:
        order = [e.name for e in for_dataset(ds, ds.kept()) if e.name in {t["data"]["frame"] for t in second}]
    assert [t["data"]["frame"] for t in second] == order and [t["id"] for t in second] == [1, 2, 3]  # queue order

    export.write_text(json.dumps(accept(json.loads((root / TASKS_FILE).read_text()))))
    import_label_studio(root, export)
    every = json.loads(Path(export_label_studio(root)[0]).read_text())
    export.write_text(json.dumps(accept(every)))
    import_label_studio(root, export)
    with pytest.raises(Exception, match="every frame is reviewed already"):
        export_label_studio(root, review=2)


def test_review_elsewhere_and_only_flagged_are_one_error_line(tmp_path):
    root = make_dataset(tmp_path / "ds")
    result = CliRunner().invoke(app, ["export", str(root), "--to", "coco", "-o", str(tmp_path / "x"), "--review", "2"])
    assert result.exit_code == 2 and "--review applies to --to label-studio only" in result.stderr
    result = CliRunner().invoke(app, ["report", str(root), "--review", "2"])
    assert result.exit_code == 2 and "--review applies to --export label-studio" in result.stderr
    for args in (["report", str(root), "--export", "label-studio"], ["export", str(root), "--to", "label-studio"]):
        extra = ["-o", str(tmp_path / "y")] if args[0] == "export" else []
        result = CliRunner().invoke(app, [*args, *extra, "--only-flagged"])
        assert result.exit_code == 2 and "--only-flagged is retired: use --review N" in result.stderr


# --- with the real base models ----------------------------------------------------------


@pytest.mark.parametrize("base_model", ["ultralytics", "grounding-dino"])
def test_selection_is_the_same_with_every_base_model(tmp_path, base_model, request):
    from tests.conftest import YOLO11N

    if base_model == "ultralytics" and not YOLO11N.is_file():
        pytest.skip("../shared/data/weights/yolo11n.pt not present")
    make_turning_product(tmp_path, {"clip.mp4": FROZEN[:6] + TURNING[:6]})
    (tmp_path / "videos" / "box" / "ontology.json").write_text(json.dumps({"cup": "cup"}))
    settings = {"sampling.frame_rate": 1, "sampling.dedup": 0.98, "sampling.max_frames": 4}
    (expected,) = run(run_config(tmp_path, output=str(tmp_path / "fake"), **settings), FakeLabeler)
    if base_model == "ultralytics":
        flags = ["--base-model", "ultralytics", "--base-weights", str(YOLO11N), "--no-report", "-q"]
    else:
        flags = request.getfixturevalue("tiny_flags")
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "real"), "--frame-rate", "1"]
    result = CliRunner().invoke(app, [*args, "--dedup", "0.98", "--max-frames", "4", *flags])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "real" / "box" / "images").iterdir()) == sorted(
        p.name for p in (tmp_path / "fake" / "box" / "images").iterdir()
    )
    assert len(kept_indices(tmp_path / "real" / "box")) == expected.frames == 4


def test_a_label_studio_export_of_a_queue_keeps_the_queue_order(tmp_path):
    from autolabel.datasets.dataset import Dataset
    from autolabel.datasets.formats import ExportFolder, get

    root = make_dataset(tmp_path / "ds")
    with Dataset.open(root, "test") as ds:
        queue = list(reversed(ds.with_splits()))  # any order but the names'
        out = tmp_path / "out"
        out.mkdir()
        get("label-studio").export(ExportFolder(out, root, out, queue, ds.context(), queued=True))
    tasks = json.loads((out / TASKS_FILE).read_text())
    assert [t["data"]["frame"] for t in tasks] == [r.name for r in queue]
    assert [t["id"] for t in tasks] == list(range(1, len(queue) + 1))
