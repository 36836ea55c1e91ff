"""The Ultralytics base model: real COCO weights on the bundled videos, and its errors."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.datasets.journal import read_journal
from tests.conftest import YOLO11N, make_image, make_product, random_yolo11n

ROOT = Path(__file__).resolve().parents[1]
needs_weights = pytest.mark.skipif(not YOLO11N.is_file(), reason="../shared/data/weights/yolo11n.pt not present")
runner = CliRunner()


def yolo_run(videos: Path, out: Path) -> list[str]:
    """``autolabel run`` arguments for the real yolo11n.pt."""
    return [
        "run",
        "-i",
        str(videos),
        "-o",
        str(out),
        "--base-model",
        "ultralytics",
        "--base-weights",
        str(YOLO11N),
        "--no-report",
        "-q",
    ]


def frame_at(video: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    for _ in range(index):
        cap.grab()
    ok, image = cap.read()
    cap.release()
    assert ok
    return image


@needs_weights
def test_boxes_equal_ultralytics_own_prediction(tmp_path):
    from ultralytics import YOLO

    videos = tmp_path / "videos"
    for product in ("box", "cup"):
        (videos / product).mkdir(parents=True)
        shutil.copy(ROOT / "videos" / product / f"{product}.mp4", videos / product)
        (videos / product / "ontology.json").write_text('{"person": "hand", "cup": "cup", "book": "box"}')
    args = [*yolo_run(videos, tmp_path / "ds"), "--frame-rate", "40", "--batch-size", "4", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    reference = YOLO(str(YOLO11N))
    coco_to_ours = {0: 0, 41: 1, 73: 2}  # person -> hand, cup -> cup, book -> box
    compared = boxes = 0
    for product in ("box", "cup"):
        for record in read_journal(tmp_path / "ds" / product):
            image = frame_at(videos / product / f"{product}.mp4", record.index)
            pred = reference.predict(image, conf=0.35, iou=0.5, imgsz=640, classes=list(coco_to_ours), verbose=False)[0]
            ref = sv.Detections.from_ultralytics(pred)
            ours = sorted(record.boxes, key=lambda b: -b.confidence)
            order = np.argsort(-ref.confidence)
            assert len(ours) == len(ref), record.name
            for b, i in zip(ours, order, strict=True):
                assert b.class_id == coco_to_ours[int(ref.class_id[i])]
                iou = sv.box_iou_batch(np.array([[b.x1, b.y1, b.x2, b.y2]]), ref.xyxy[i : i + 1])[0, 0]
                assert iou > 0.99, (record.name, iou)
                assert b.confidence == pytest.approx(float(ref.confidence[i]), abs=1e-3)
                boxes += 1
            compared += 1
    assert compared == 12 + 6 and boxes > 10


@needs_weights
def test_caption_that_names_no_class(tmp_path):
    make_product(tmp_path / "videos", "box", {"cardboard box": "box"}, {"a.mp4": 2})
    make_product(tmp_path / "videos", "ok", {"Person": "hand"}, {"a.mp4": 2})
    result = runner.invoke(app, yolo_run(tmp_path / "videos", tmp_path / "ds"))
    assert result.exit_code == 1
    assert "caption 'cardboard box' names none of yolo11n.pt's 80 classes (its classes: person, bicycle," in (
        result.stderr
    )
    assert "surfboard, tennis racket" in result.stderr and "closest" not in result.stderr  # no letter-alike guesses
    assert "Traceback" not in result.stderr
    assert (tmp_path / "ds" / "ok" / "data.yaml").is_file() and not (tmp_path / "ds" / "box").exists()


def test_missing_and_bad_weights(tmp_path):
    make_product(tmp_path / "videos", "box", {"person": "hand"}, {"a.mp4": 2})
    base = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--base-model", "ultralytics", "-q"]
    missing = runner.invoke(app, [*base, "--base-weights", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "nope.pt does not exist (given by --base-weights)" in missing.stderr
    offline = runner.invoke(app, [*base, "--base-weights", "yolo11x.pt"])
    assert offline.exit_code == 2 and "missing Ultralytics checkpoint yolo11x.pt (AUTOLABEL_OFFLINE=1): download " in (
        offline.stderr
    )
    assert "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11x.pt and put it at " in offline.stderr
    assert "or pass --base-weights FILE" in offline.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04not a checkpoint")
    bad = runner.invoke(app, [*base, "--base-weights", str(junk)])
    assert bad.exit_code == 1 and "junk.pt: not an Ultralytics checkpoint" in bad.stderr
    image = make_image(tmp_path / "frame.jpg")
    jpg = runner.invoke(app, [*base, "--base-weights", str(image)])
    assert jpg.exit_code == 1, jpg.stderr
    assert f"{image}: not an Ultralytics checkpoint (a PyTorch .pt file; given by --base-weights)" in jpg.stderr
    for r in (missing, offline, bad, jpg):
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@needs_weights
def test_a_bare_checkpoint_name_is_fetched_into_the_cache_with_its_hash_checked(tmp_path, served, online, monkeypatch):
    """``--base-weights yolo11n.pt`` with no such file: downloaded from the assets release, then used from the cache."""
    import hashlib

    from autolabel import yolo

    data = YOLO11N.read_bytes()
    served.files["yolo11n.pt"] = data
    served.files["yolo11s.pt"] = data  # not yolo11s's published hash: refused
    monkeypatch.setitem(yolo.ASSET_SHA256, "yolo11s.pt", "0" * 64)
    monkeypatch.setattr(yolo, "ULTRALYTICS_ASSETS", served.base)
    monkeypatch.chdir(tmp_path)  # no yolo11n.pt in the working folder
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUTOLABEL_CACHE", str(cache))
    make_product(tmp_path / "videos", "box", {"person": "hand"}, {"a.mp4": 2})

    def run(weights: str, *more: str, out: str = "ds"):
        args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / out), "--base-model", "ultralytics"]
        return runner.invoke(app, [*args, "--base-weights", weights, "--device", "cpu", "--no-report", "-q", *more])

    result = run("yolo11n.pt")
    assert result.exit_code == 0, result.stderr
    assert hashlib.sha256((cache / "yolo11n.pt").read_bytes()).hexdigest() == yolo.ASSET_SHA256["yolo11n.pt"]
    assert served.requests == ["yolo11n.pt"]
    state = json.loads((tmp_path / "ds" / "box" / ".autolabel" / "state.json").read_text())
    assert state["fingerprint"]["model"]["files"] == {"base_weights": yolo.ASSET_SHA256["yolo11n.pt"]}
    again = run("yolo11n.pt", "--overwrite")
    assert again.exit_code == 0 and served.requests == ["yolo11n.pt"]  # from the cache now
    bad = run("yolo11s.pt", out="other")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert f"{served.base}/yolo11s.pt gave a file with hash " in bad.stderr and "expected 0000" in bad.stderr
    assert not (cache / "yolo11s.pt").exists()


def test_open_vocabulary_checkpoint_without_its_text_encoder(tmp_path):
    from autolabel.yolo import ultralytics_env

    ultralytics_env()
    from ultralytics import YOLO

    world = tmp_path / "random-world.pt"
    YOLO("yolov8s-worldv2.yaml").save(str(world))
    make_product(tmp_path / "videos", "box", {"a cardboard box": "box"}, {"a.mp4": 2})
    result = runner.invoke(
        app,
        [
            "run",
            "-i",
            str(tmp_path / "videos"),
            "-o",
            str(tmp_path / "ds"),
            "--base-model",
            "ultralytics",
            "--base-weights",
            str(world),
            "--no-report",
            "-q",
        ],
    )
    try:
        import clip  # noqa: F401
    except ImportError:
        assert result.exit_code == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("autolabel: error:")]
        assert len(errors) == 1
        assert "random-world.pt: open-vocabulary model, but its text encoder could not be loaded" in errors[0]
    else:  # with CLIP installed the captions become the model's classes
        assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def tiny_yolo():
    """conftest's random YOLO11n, its head's weights spread so that boxes follow the picture."""
    from autolabel.labelers.ultralytics import UltralyticsLabeler

    model = random_yolo11n()
    return UltralyticsLabeler(model, "yolo11n.yaml", image_size=160, box_threshold=0.3)


ANY_CLASS = {str(i): "thing" for i in range(80)}  # a random model's names are "0" ... "79"


def _assert_same(a: sv.Detections, b: sv.Detections) -> None:
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    assert a.class_id.tolist() == b.class_id.tolist()


def test_a_frames_labels_do_not_depend_on_the_sizes_of_its_batch_mates(tiny_yolo):
    """Ultralytics letterboxes a mixed batch to a square: a frame got other boxes than alone."""
    from autolabel.ontology import Ontology

    ont = Ontology.from_mapping(ANY_CLASS)
    rng = np.random.default_rng(0)
    wide, tall, wide2 = (rng.integers(0, 255, s, dtype=np.uint8) for s in [(64, 96, 3), (80, 60, 3), (64, 96, 3)])
    alone = [tiny_yolo.label([f], ont)[0] for f in (wide, tall)]
    assert all(len(d) for d in alone)
    for a, b in zip(tiny_yolo.label([wide, tall], ont), alone, strict=True):
        _assert_same(a, b)
    pair = tiny_yolo.label([wide, wide2], ont)
    for a, b in zip(tiny_yolo.label([wide, tall, wide2], ont), [pair[0], alone[1], pair[1]], strict=True):
        _assert_same(a, b)


@pytest.mark.parametrize("shape", [(1, 4000), (4000, 1)])
def test_sliver_images_are_labeled(tiny_yolo, shape):
    from autolabel.ontology import Ontology

    h, w = shape
    image = np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)
    dets = tiny_yolo.label([image, image], Ontology.from_mapping(ANY_CLASS))
    assert len(dets) == 2
    for det in dets:
        assert (det.xyxy >= 0).all() and (det.xyxy[:, [0, 2]] <= w).all() and (det.xyxy[:, [1, 3]] <= h).all()
