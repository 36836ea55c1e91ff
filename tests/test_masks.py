"""Segmentation masks (issue 24): rings from bitmaps and back, ``run --masks`` with tiny random SAM-family models,
every format's masks read back and imported, a ``-seg`` model trained on the dataset, kills resumed byte-identical.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from autolabel.datasets.records import Box, FrameRecord
from autolabel.masks import geometry
from tests.conftest import FakeLabeler, make_product, read_state

runner = CliRunner()


# --- rings ---------------------------------------------------------------------------------------------------


def donut_and_parts(width: int = 160, height: int = 120) -> np.ndarray:
    """A ring with an island in its hole, a square with a hole touching the border, a bar, a lone pixel."""
    m = np.zeros((height, width), np.uint8)
    cv2.circle(m, (50, 55), 40, 1, -1)
    cv2.circle(m, (50, 55), 22, 0, -1)
    cv2.circle(m, (50, 55), 8, 1, -1)
    m[0:40, 110:160] = 1
    m[10:25, 125:145] = 0
    m[80:84, 100:150] = 1
    m[110, 120] = 1
    return m


def blobs(seed: int, width: int = 120, height: int = 90) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((height, width)), (0, 0), 4)
    return (noise > np.quantile(noise, 0.6)).astype(np.uint8)


def test_rings_draw_the_mask_back_exactly_with_holes_islands_and_every_part():
    m = donut_and_parts()
    rings = geometry.mask_to_rings(m, tolerance=0)
    assert (geometry.rings_to_mask(rings, 160, 120) == m).all()
    assert geometry.nested(rings)  # holes: polygons alone cannot hold them
    for seed in range(40):
        b = blobs(seed)
        assert (geometry.rings_to_mask(geometry.mask_to_rings(b, 0), 120, 90) == b).all(), seed


@pytest.mark.parametrize("tolerance", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_simplification_never_costs_more_than_one_percent_of_iou(tolerance):
    masks = [donut_and_parts(), *(blobs(seed) for seed in range(20))]
    for m in masks:
        exact = geometry.mask_to_rings(m, 0)
        simple = geometry.mask_to_rings(m, tolerance)
        h, w = m.shape
        assert geometry.iou(geometry.rings_to_mask(simple, w, h), m) >= 0.99
        assert sum(len(r) for r in simple) <= sum(len(r) for r in exact)
    big = np.zeros((400, 400), np.uint8)
    cv2.circle(big, (200, 200), 150, 1, -1)
    points = sum(len(r) for r in geometry.mask_to_rings(big, tolerance)) // 2
    assert points < sum(len(r) for r in geometry.mask_to_rings(big, 0)) // 2  # it does simplify


def test_round_trip_through_every_shape_files_use_keeps_iou_095():
    """mask -> polygon(s) -> mask, as COCO readers (pycocotools), Ultralytics (one joined polygon) and VOC draw it."""
    from pycocotools import mask as coco_mask

    from autolabel.datasets.formats.coco import segmentation
    from autolabel.datasets.formats.voc import segmentation_pngs
    from autolabel.datasets.formats.yolo import seg_polygon

    for m in [donut_and_parts(), *(blobs(seed, 160, 120) for seed in range(5))]:
        rings = geometry.round_rings(geometry.mask_to_rings(m, 1.0))
        box = Box(0, 0.0, 0.0, 160.0, 120.0, 0.9, rings)
        seg, area = segmentation(box, 160, 120)
        rle = coco_mask.frPyObjects(seg, 120, 160)
        drawn = coco_mask.decode(coco_mask.merge(rle) if isinstance(rle, list) else rle)
        assert geometry.iou(drawn, m) >= 0.95
        assert area == pytest.approx(float(geometry.rings_to_mask(rings, 160, 120).sum()))
        joined = np.zeros_like(m)  # Ultralytics draws a YOLO-seg line with cv2.fillPoly, one polygon
        cv2.fillPoly(joined, [np.asarray(seg_polygon(box, 160, 120)).reshape(-1, 1, 2).astype(np.int32)], 1)
        assert geometry.iou(joined, m) >= 0.95
        record = FrameRecord("f", "s", 0, 0.0, 160, 120, [box])
        _, by_object = segmentation_pngs(record, ["a"])
        from io import BytesIO

        from PIL import Image

        assert geometry.iou(np.asarray(Image.open(BytesIO(by_object))) == 1, m) >= 0.99


def test_a_journal_without_masks_is_byte_identical_and_a_mask_round_trips():
    plain = FrameRecord("f", "s", 0, 0.0, 96, 64, [Box(0, 1.0, 2.0, 3.0, 4.0, 0.5)])
    line = plain.to_json()
    assert line == FrameRecord.from_json(line).to_json() and '"mask"' not in line and "[0,1.0,2.0,3.0,4.0,0.5]" in line
    masked = FrameRecord("f", "s", 0, 0.0, 96, 64, [Box(0, 1.0, 2.0, 3.0, 4.0, 0.5, [[1.5, 2.5, 2.5, 2.5, 2.5, 3.5]])])
    assert FrameRecord.from_json(masked.to_json()) == masked
    empty = FrameRecord("f", "s", 0, 0.0, 96, 64, [Box(0, 1.0, 2.0, 3.0, 4.0, 0.5, [])])
    assert FrameRecord.from_json(empty.to_json()).boxes[0].mask == []
    with pytest.raises(ValueError):
        Box.from_list([0, 1, 2, 3, 4, 0.5, {"mask": [[1, 2, 3]]}])


# --- run --masks ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory) -> Path:
    from autolabel.masks.random_models import write_tiny

    return write_tiny("sam2", tmp_path_factory.mktemp("masks") / "tiny-sam2")


class CountingLabeler(FakeLabeler):
    made: list = []

    def __init__(self) -> None:
        super().__init__()
        CountingLabeler.made.append(self)


def cli(monkeypatch, *args: str):
    import autolabel.labelers
    from autolabel.cli import app

    monkeypatch.setattr(autolabel.labelers, "create_labeler", lambda *a, **k: CountingLabeler())
    return runner.invoke(app, list(args))


def run_args(root: Path, *extra: str) -> list[str]:
    return ["run", "-i", str(root / "videos"), "-o", str(root / "dataset"), "--frame-rate", "3", "-q", *extra]


def masked_dataset(root: Path, tiny: Path, monkeypatch, *extra: str) -> Path:
    make_product(root / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {"a.mp4": 9})
    args = run_args(root, "--format", "yolo,voc,coco", "--masks", "sam2", "--mask-model", str(tiny), *extra)
    done = cli(monkeypatch, *args)
    assert done.exit_code == 0, done.output
    return root / "dataset" / "mug"


def journal(ds: Path) -> list[FrameRecord]:
    from autolabel.datasets.journal import read_journal

    return list(read_journal(ds))


def test_run_masks_sam2_writes_one_polygon_per_box_in_yolo_seg_coco_and_voc(tmp_path, tiny_sam2, monkeypatch):
    ds = masked_dataset(tmp_path, tiny_sam2, monkeypatch, "--report")
    records = journal(ds)
    assert records and all(b.mask is not None for r in records for b in r.boxes)
    for r in records:
        lines = (ds / "labels" / f"{r.name}.txt").read_text().splitlines()
        assert len(lines) == len(r.boxes)  # one line per box, every part joined into it
        for line, box in zip(lines, r.boxes, strict=True):
            fields = line.split()
            assert int(fields[0]) == box.class_id and len(fields) >= 7 and len(fields) % 2 == 1
            assert all(0.0 <= float(v) <= 1.0 for v in fields[1:])
    coco = [json.loads((ds / f"coco_{s}.json").read_text()) for s in ("train", "val")]
    annotations = [a for c in coco for a in c["annotations"]]
    assert len(annotations) == sum(len(r.boxes) for r in records)
    assert all(a["segmentation"] and a["iscrowd"] == 0 for a in annotations)
    from pycocotools.coco import COCO

    for c in coco:
        api = COCO()
        api.dataset = c
        api.createIndex()
        for ann in c["annotations"]:
            assert api.annToMask(ann).shape == (64, 96)
    from PIL import Image

    for folder in ("SegmentationClass", "SegmentationObject"):
        png = Image.open(ds / folder / f"{records[0].name}.png")
        assert png.mode == "P" and png.size == (96, 64) and png.getpalette()[3:6] == [128, 0, 0]
    state = read_state(ds)
    assert state["fingerprint"]["masks"]["model"] == "sam2" and len(state["fingerprint"]["masks"]["files"]) == 1
    assert yaml.safe_load((ds / "run.yaml").read_text())["masks"]["source"] == str(tiny_sam2)
    assert "box polygon" in (ds / "report.html").read_text()
    from ultralytics.data.utils import check_det_dataset

    assert check_det_dataset(str(ds / "data.yaml"))["nc"] == 2


def test_masks_are_added_to_an_existing_dataset_without_labeling_again_and_taken_away(tmp_path, tiny_sam2, monkeypatch):
    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {"a.mp4": 9})
    assert cli(monkeypatch, *run_args(tmp_path, "--format", "yolo,voc")).exit_code == 0
    ds = tmp_path / "dataset" / "mug"
    box_lines = {p.name: p.read_text() for p in (ds / "labels").iterdir()}
    CountingLabeler.made.clear()
    done = cli(monkeypatch, *run_args(tmp_path, "--masks", "sam2", "--mask-model", str(tiny_sam2)))
    assert done.exit_code == 0, done.output
    assert not CountingLabeler.made or CountingLabeler.made[0].frames == 0  # no frame labeled again
    assert "masks added" in done.output and "masks: 6 of 6 boxes" in done.output
    assert not (ds / ".autolabel" / "edited").exists()  # the box lines were ours, not hand edits
    assert all(len(p.read_text().splitlines()[0].split()) > 5 for p in (ds / "labels").iterdir())
    assert (ds / "SegmentationObject").is_dir()
    again = cli(monkeypatch, *run_args(tmp_path))  # without --masks: the dataset keeps its masks
    assert again.exit_code == 0 and "masks: 6 of 6 boxes" in again.output and "note" not in again.output
    gone = cli(monkeypatch, *run_args(tmp_path, "--masks", "none"))
    assert gone.exit_code == 0 and "masks are taken away" in gone.output
    assert {p.name: p.read_text() for p in (ds / "labels").iterdir()} == box_lines
    assert not (ds / "SegmentationObject").exists() and "masks" not in read_state(ds)["fingerprint"]


def test_new_thresholds_keep_the_masks_of_boxes_that_stay(tmp_path, tiny_sam2, monkeypatch):
    ds = masked_dataset(tmp_path, tiny_sam2, monkeypatch)
    before = {r.name: r.boxes[0].mask for r in journal(ds)}  # the 0.9 box of each frame
    done = cli(monkeypatch, *run_args(tmp_path, "--box-threshold", "0.7"))
    assert done.exit_code == 0, done.output
    after = journal(ds)
    assert all(len(r.boxes) == 1 and r.boxes[0].mask == before[r.name] for r in after)
    assert all(r.model_boxes and all(b.mask is None for b in r.model_boxes) for r in after)


def test_new_thresholds_and_new_mask_settings_in_one_run_take_no_file_for_a_hand_edit(tmp_path, tiny_sam2, monkeypatch):
    ds = masked_dataset(tmp_path, tiny_sam2, monkeypatch)
    masks = ("--masks", "sam2", "--mask-model", str(tiny_sam2))
    for extra in (("--masks", "none", "--box-threshold", "0.7"), (*masks, "--box-threshold", "0.8")):
        done = cli(monkeypatch, *run_args(tmp_path, *extra))
        assert done.exit_code == 0, done.output
        assert "differed from the journal" not in done.output and not (ds / ".autolabel" / "edited").exists()
    assert all(len(r.boxes) == 1 and r.boxes[0].mask for r in journal(ds))
    fresh = tmp_path / "fresh"
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(fresh), "--frame-rate", "3", "-q"]
    assert cli(monkeypatch, *args, *masks, "--box-threshold", "0.8", "--format", "yolo,voc,coco").exit_code == 0
    for rel in ("labels", "SegmentationObject", "SegmentationClass", "coco_train.json"):
        assert sorted((ds / rel).rglob("*")) or (ds / rel).is_file()
        same = [(p.relative_to(ds), p.read_bytes()) for p in sorted([ds / rel, *(ds / rel).rglob("*")]) if p.is_file()]
        assert same == [
            (p.relative_to(fresh / "mug"), p.read_bytes())
            for p in sorted([fresh / "mug" / rel, *(fresh / "mug" / rel).rglob("*")])
            if p.is_file()
        ]


def test_other_mask_settings_make_the_masks_again_and_a_bad_mask_flag_is_one_line(tmp_path, tiny_sam2, monkeypatch):
    ds = masked_dataset(tmp_path, tiny_sam2, monkeypatch)
    first = [b.mask for r in journal(ds) for b in r.boxes]
    done = cli(
        monkeypatch, *run_args(tmp_path, "--masks", "sam2", "--mask-model", str(tiny_sam2), "--mask-tolerance", "0")
    )
    assert done.exit_code == 0 and "masks of unreviewed frames are made again" in done.output
    lossless = [b.mask for r in journal(ds) for b in r.boxes]
    assert lossless != first and sum(map(len, map(str, lossless))) >= sum(map(len, map(str, first)))
    for args, message in [
        (("--mask-model", str(tiny_sam2)), "--mask-model needs a mask model: --masks"),
        (("--masks", "sam3"), "masks.model (--masks) must be one of sam2, sam, sam-hq, edgetam, ultralytics, none"),
        (("--masks", "sam2", "--mask-model", str(tmp_path / "nowhere")), "does not exist (given by --mask-model)"),
        (("--masks", "sam", "--mask-model", str(tiny_sam2)), "a 'sam2' model, not 'sam'"),
        (("--masks", "sam2", "--mask-model", "org/na me"), "--mask-model 'org/na me': no such folder, and not a hub"),
    ]:
        bad = cli(monkeypatch, *run_args(tmp_path, *args))
        assert bad.exit_code != 0 and message in bad.output, bad.output


# --- every format carries masks -------------------------------------------------------------------------------


def accepted_tasks(tasks_file: Path, out: Path, edit=None) -> Path:
    tasks = json.loads(tasks_file.read_text())
    for task in tasks:
        (prediction,) = task.pop("predictions")
        result = prediction["result"]
        if edit is not None:
            edit(task, result)
        task["annotations"] = [{"id": 1, "result": result}]
    out.write_text(json.dumps(tasks))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_sam2):
    monkeypatch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("exports")
    try:
        ds = masked_dataset(root, tiny_sam2, monkeypatch)
        for fmt in ("label-studio", "cvat", "coco", "voc", "yolo", "ultralytics"):
            done = cli(monkeypatch, "export", str(ds), "--to", fmt, "-o", str(root / fmt), "-q")
            assert done.exit_code == 0, done.output
    finally:
        monkeypatch.undo()
    return root, ds


def test_a_review_queue_export_carries_the_masks_of_its_frames_in_queue_order(exported, tmp_path, monkeypatch):
    root, ds = exported
    done = cli(monkeypatch, "export", str(ds), "--to", "label-studio", "--review", "2", "-o", str(tmp_path / "q"), "-q")
    assert done.exit_code == 0, done.output
    queued = json.loads((tmp_path / "q" / "label_studio_tasks.json").read_text())
    whole = json.loads((root / "label-studio" / "label_studio_tasks.json").read_text())
    whole = {Path(t["data"]["image"]).stem: t for t in whole}
    assert len(queued) == 2
    for task in queued:  # the same outlines as the whole export's (the queue read them back from the journal)
        name = Path(task["data"]["image"]).stem
        assert task["predictions"] == whole[name]["predictions"]
        assert any(res["type"] == "polygonlabels" for res in task["predictions"][0]["result"])


@pytest.mark.parametrize("fmt", ["label-studio", "cvat", "coco", "voc", "yolo", "ultralytics"])
def test_every_export_carries_the_masks_and_imports_back_unchanged(exported, tmp_path, fmt):
    from autolabel.imports import import_annotations

    root, ds = exported
    copy = shutil.copytree(ds, tmp_path / "mug")
    source = root / fmt
    if fmt == "label-studio":
        tasks = json.loads((source / "label_studio_tasks.json").read_text())
        assert any(r["type"] == "polygonlabels" for t in tasks for r in t["predictions"][0]["result"])
        assert "PolygonLabels" in (source / "label_studio_config.xml").read_text()
        source = accepted_tasks(source / "label_studio_tasks.json", tmp_path / "reviewed.json")
    before = (copy / "detections.jsonl").read_text()
    result = import_annotations(copy, source, fmt)
    assert result.frames_changed == 0 and result.frames_reviewed == len(journal(ds))
    after = journal(copy)
    assert [[b.mask for b in r.boxes] for r in after] == [[b.mask for b in r.boxes] for r in journal(ds)]
    assert before != (copy / "detections.jsonl").read_text()  # only "reviewed" was added
    assert result.masks.masked == result.masks.boxes


def test_a_reviewed_outline_comes_back_and_a_moved_box_gets_its_mask_from_the_model_at_hand(exported, tmp_path):
    from autolabel.imports import import_annotations

    root, ds = exported
    copy = shutil.copytree(ds, tmp_path / "mug")
    first = journal(ds)[0]

    def edit(task, result):
        if task["data"]["frame"] != first.name:
            return
        polygon = next(r for r in result if r["id"] == f"{first.name}_0_r0")
        polygon["value"]["points"] = [[10, 10], [40, 10], [40, 40], [10, 40]]  # the reviewer's outline: a square
        rect = next(r for r in result if r["id"] == f"{first.name}_1")
        rect["value"]["x"] += 5  # the second box moved, its outline deleted
        result[:] = [
            r for r in result if r is polygon or not r["id"].startswith((f"{first.name}_0_r", f"{first.name}_1_r"))
        ]

    source = accepted_tasks(root / "label-studio" / "label_studio_tasks.json", tmp_path / "r.json", edit)
    result = import_annotations(copy, source, "label-studio")
    assert result.frames_changed == 1 and result.masks.made == 1 and result.masks.missing == 0
    record = next(r for r in journal(copy) if r.name == first.name)
    square = geometry.rings_to_mask(record.boxes[0].mask, 96, 64)
    assert square[8:24, 11:37].all() and square.sum() <= 31 * 21  # 10-40% of 96 x 64, its outline included
    assert record.boxes[1].mask and record.boxes[1].confidence is None


def test_without_the_mask_model_a_moved_box_keeps_its_box_polygon_and_the_report_says_so(exported, tmp_path):
    from autolabel.imports import import_annotations
    from autolabel.report import write_report

    root, ds = exported
    copy = shutil.copytree(ds, tmp_path / "mug")
    state = json.loads((copy / ".autolabel" / "state.json").read_text())
    state["fingerprint"]["masks"]["source"] = str(tmp_path / "moved-away")
    (copy / ".autolabel" / "state.json").write_text(json.dumps(state))
    first = journal(ds)[0]

    def edit(task, result):
        if task["data"]["frame"] == first.name:
            result[:] = [r for r in result if r["type"] == "rectanglelabels"]
            result[0]["value"]["y"] += 3

    source = accepted_tasks(root / "label-studio" / "label_studio_tasks.json", tmp_path / "r.json", edit)
    result = import_annotations(copy, source, "label-studio")
    assert result.masks.missing == 1 and result.masks.made == 0
    record = next(r for r in journal(copy) if r.name == first.name)
    assert record.boxes[0].mask is None and record.boxes[1].mask
    line = (copy / "labels" / f"{first.name}.txt").read_text().splitlines()[0].split()
    assert len(line) == 9  # the box as a 4-point polygon
    report = write_report(copy)
    assert report.facts["box_polygon"] == 1
    assert 'id="n-no-masks">1<' in report.path.read_text()


# --- training -------------------------------------------------------------------------------------------------


def test_autolabel_train_detects_the_masks_and_trains_a_seg_model_one_epoch(tmp_path, tiny_sam2, monkeypatch):
    ds = masked_dataset(tmp_path, tiny_sam2, monkeypatch)
    (tmp_path / "train.yaml").write_text(f"project: {tmp_path / 'runs'}\nworkers: 0\nplots: false\n")
    args = ["train", "--data", str(ds / "data.yaml"), "--model", "yolo11n.yaml", "--epochs", "1", "--imgsz", "64"]
    args += ["--batch", "2", "--device", "cpu", "--name", "seg", "--config", str(tmp_path / "train.yaml"), "-q"]
    done = cli(monkeypatch, *args)
    assert done.exit_code == 0, done.output
    assert "(segment)" in done.output and "masks mAP50" in done.output
    from ultralytics import YOLO

    assert YOLO(str(tmp_path / "runs" / "seg" / "weights" / "best.pt")).task == "segment"
    from autolabel.train import dataset_task, model_for_task

    assert dataset_task(ds / "data.yaml") == "segment"
    assert model_for_task("yolo11n.pt", "segment") == "yolo11n-seg.pt"
    assert model_for_task("yolo11n-seg.yaml", "detect") == "yolo11n.yaml"


# --- the SAM family -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sam", "sam-hq", "edgetam", "ultralytics"])
def test_every_mask_model_outlines_each_box_at_the_frame_size(tmp_path, kind):
    import os

    from autolabel import masks
    from autolabel.config import MaskConfig
    from autolabel.masks.random_models import fake_hub_config, write_tiny, write_ultralytics_sam

    if kind == "ultralytics":
        source = write_ultralytics_sam(tmp_path, "mobile_sam.pt")
    else:
        source = write_tiny(kind, tmp_path / kind)
    if kind == "edgetam":  # its config reads its backbone's from the hub cache, also offline
        fake_hub_config(Path(os.environ["HF_HOME"]), "timm/repvit_m1.dist_in1k", {"architecture": "repvit_m1"})
    mc = MaskConfig(model=kind, mask_model=str(source))
    masker = masks.create(mc, masks.fetch_files(mc, None, False), "cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 96, 3), np.uint8), rng.integers(0, 255, (90, 120, 3), np.uint8)]
    boxes = [[(10.0, 10.0, 50.0, 40.0), (20.0, 5.0, 90.0, 60.0)], [(0.0, 0.0, 30.0, 30.0)]]
    out = list(masker.masks(images, boxes))
    assert [(i, j) for i, j, _ in out] == [(0, 0), (0, 1), (1, 0)]
    assert [m.shape for _, _, m in out] == [(64, 96), (64, 96), (90, 120)]
    alone = list(masker.masks(images[1:], boxes[1:]))  # a frame's masks never depend on its batch-mates
    assert (alone[0][2] == out[2][2]).all()
    assert masker.describe()["precision"] == "fp32"


# --- kills ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crash_clean(tmp_path_factory, tiny_sam2):
    from tests.crashpoint import crash_cli, dataset_files

    root = tmp_path_factory.mktemp("mask-crash")
    make_product(root / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {"a.mp4": 12})
    make_product(root / "videos", "cup", {"cup": "cup"}, {"b.mp4": 6})
    work = root / "clean"
    work.mkdir()
    plain = (
        "run",
        "-i",
        "../videos",
        "-o",
        "dataset",
        "--frame-rate",
        "2",
        "--no-report",
        "-q",
        "--format",
        "yolo,voc",
    )
    assert crash_cli(work, *plain).returncode == 0
    masked = (*plain, "--masks", "sam2", "--mask-model", str(tiny_sam2))
    done = crash_cli(work, *masked, count=root / "points")
    assert done.returncode == 0, done.stderr
    return root, plain, masked, dataset_files(work / "dataset"), int((root / "points").read_text())


@pytest.mark.parametrize("fraction", [0.1, 0.4, 0.7, 0.95])
def test_a_killed_mask_run_resumes_byte_identical(crash_clean, fraction):
    """--masks added to a labeled dataset, killed at its Nth rename or fsync, re-run: the same files, byte for byte."""
    from tests.crashpoint import crash_cli, dataset_files

    root, plain, masked, expected, points = crash_clean
    work = root / f"trial-{fraction}"
    work.mkdir()
    assert crash_cli(work, *plain).returncode == 0
    died = crash_cli(work, *masked, crash_at=max(1, round(points * fraction)))
    assert died.returncode == 137 or fraction > 0.9, died.stderr
    again = crash_cli(work, *masked)
    assert again.returncode == 0, again.stderr
    assert dataset_files(work / "dataset") == expected


def test_tracked_boxes_keep_their_masks_and_a_second_run_makes_none(tmp_path, tiny_sam2, monkeypatch):
    track = ("--track", "--track-stride", "1")
    ds = masked_dataset(tmp_path, tiny_sam2, monkeypatch, *track)
    kept = [r for r in journal(ds) if r.dropped is None]
    boxes = [b for r in kept for b in r.boxes]
    assert boxes and all(b.mask and b.track_id is not None for b in boxes)
    assert all(b.mask is None for r in journal(ds) for b in r.model_boxes or [])
    files = {p.name: p.read_bytes() for p in (ds / "labels").iterdir()}
    lines = (ds / "detections.jsonl").read_bytes()
    again = cli(monkeypatch, *run_args(tmp_path, *track))  # tracks settle again at finalize: the masks stay
    assert again.exit_code == 0, again.output
    assert f"masks: {len(boxes)} of {len(boxes)} boxes" in again.output and " made on " not in again.output
    assert (ds / "detections.jsonl").read_bytes() == lines
    assert {p.name: p.read_bytes() for p in (ds / "labels").iterdir()} == files


def test_a_hand_edit_found_when_masks_are_added_is_kept_and_named_in_the_summary(tmp_path, tiny_sam2, monkeypatch):
    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {"a.mp4": 9})
    assert cli(monkeypatch, *run_args(tmp_path, "--format", "yolo")).exit_code == 0
    ds = tmp_path / "dataset" / "mug"
    edited = sorted((ds / "labels").iterdir())[0]
    edited.write_text("0 0.5 0.5 0.2 0.2\n")  # a reviewer's box, by hand
    done = cli(monkeypatch, *run_args(tmp_path, "--masks", "sam2", "--mask-model", str(tiny_sam2)))
    assert done.exit_code == 0, done.output
    assert (ds / ".autolabel" / "edited" / "labels" / edited.name).read_text() == "0 0.5 0.5 0.2 0.2\n"
    assert "rewrote 1 files that differed from the journal" in done.output and "autolabel import" in done.output


def test_the_mask_counts_a_run_reports_are_the_journals(tmp_path, tiny_sam2):
    """Counted from the step's own windows (no pass over the journal after it): the same as counting the journal."""
    from autolabel.datasets.journal import read_journal
    from autolabel.masks.step import count
    from autolabel.pipeline import run
    from tests.conftest import run_config

    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {"a.mp4": 9, "b.mp4": 5})
    settings = {"masks.model": "sam2", "masks.mask_model": str(tiny_sam2), "masks.min_area": 400}
    (r,) = run(run_config(tmp_path, **settings), FakeLabeler)
    assert r.ok and r.masks.made == r.masks.boxes and r.masks.frames == r.frames
    assert (r.masks.boxes, r.masks.masked, r.masks.empty, r.masks.missing) == (
        (c := count(read_journal(r.output))).boxes,
        c.masked,
        c.empty,
        c.missing,
    )
    assert r.masks.empty  # min_area drops some of this random model's small masks: both kinds counted
