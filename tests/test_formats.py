"""The native dataset's formats as their readers see them: YOLO inside the image, complete VOC, labelmap, upgrade."""

import io
import json
import random
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.datasets.formats.coco import id_block
from autolabel.datasets.formats.voc import labelmap_text, voc_xml
from autolabel.datasets.formats.yolo import yolo_line, yolo_lines
from autolabel.datasets.journal import read_journal
from autolabel.datasets.layout import STATE
from autolabel.datasets.records import Box, FrameRecord
from autolabel.datasets.state import STATE_VERSION
from autolabel.merge import merge_datasets
from autolabel.pipeline import run
from tests.conftest import FakeLabeler, make_product, run_config


@pytest.mark.parametrize("seed", range(5))
def test_yolo_boxes_never_reach_past_the_image_and_stay_within_a_hundredth_of_a_pixel(seed):
    rng = random.Random(seed)
    for _ in range(2000):
        w, h = rng.randint(1, 4000), rng.randint(1, 4000)
        x1, x2 = sorted(rng.choice([0.0, float(w), rng.uniform(0, w)]) for _ in range(2))
        y1, y2 = sorted(rng.choice([0.0, float(h), rng.uniform(0, h)]) for _ in range(2))
        line = yolo_line(Box(3, x1, y1, x2, y2), w, h)
        cls, *values = line.split()
        assert cls == "3" and all(len(v.split(".")[1]) == 6 for v in values)
        for dtype in (np.float64, np.float32):
            cx, cy, bw, bh = (dtype(v) for v in values)
            half = dtype(2)
            assert cx - bw / half >= 0 and cx + bw / half <= 1, line
            assert cy - bh / half >= 0 and cy + bh / half <= 1, line
        cx, cy, bw, bh = map(float, values)
        corners = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
        assert all(abs(a - b) <= 0.01 for a, b in zip(corners, (x1, y1, x2, y2), strict=True)), (line, w, h)


def test_a_box_to_the_far_edge_ends_exactly_at_one():
    record = FrameRecord("f", "s", 0, 0.0, 1280, 720, [Box(0, 640.0, 360.0, 1280.0, 720.0)])
    assert yolo_lines(record) == "0 0.750000 0.750000 0.500000 0.500000\n"


def parse_rec(path):
    """The VOC devkit's reader, as detectron2 and YOLOX copy it: every field read with .text."""
    objects = []
    for obj in ET.parse(path).findall("object"):
        bbox = obj.find("bndbox")
        objects.append(
            {
                "name": obj.find("name").text,
                "pose": obj.find("pose").text,
                "truncated": int(obj.find("truncated").text),
                "difficult": int(obj.find("difficult").text),
                "bbox": [int(bbox.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")],
            }
        )
    return objects


def test_voc_objects_carry_what_the_devkit_reads_and_our_database():
    classes = ["mug", "a <b> & c"]
    record = FrameRecord("f", "s", 0, 0.0, 200, 100, [Box(0, 0.0, 10.2, 50.6, 60.0), Box(1, 20.0, 20.0, 40.0, 40.0)])
    text = voc_xml(record, classes)
    root = ET.fromstring(text)
    assert root.find("source/database").text == "autolabel" and "roboflow" not in text
    assert [o.tag for o in root.find("object")] == ["name", "pose", "truncated", "difficult", "bndbox"]
    objects = parse_rec(io.StringIO(text))
    assert objects == [
        {"name": "mug", "pose": "Unspecified", "truncated": 1, "difficult": 0, "bbox": [1, 11, 51, 60]},
        {"name": "a <b> & c", "pose": "Unspecified", "truncated": 0, "difficult": 0, "bbox": [21, 21, 40, 40]},
    ]


def test_the_labelmap_lists_every_class_in_order_with_background_first():
    lines = labelmap_text(["mug", "hand", "lid"]).splitlines()
    assert lines[0].startswith("#")
    assert [line.split(":")[0] for line in lines[1:]] == ["background", "mug", "hand", "lid"]
    assert all(len(line.split(":")) == 4 for line in lines[1:])
    assert len({line.split(":")[1] for line in lines[1:]}) == 4  # distinct colors


def test_annotation_id_blocks_grow_past_a_thousand_boxes():
    def frame(n):
        return FrameRecord("f", "s", 0, 0.0, 10, 10, [Box(0, 0, 0, 1, 1)] * n)

    assert id_block([frame(0), frame(999)]) == 1000
    assert id_block([frame(1000)]) == 10000


def test_native_dataset_has_labelmap_and_complete_coco(tmp_path):
    from pycocotools.coco import COCO

    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "a hand": "hand", "a lid": "lid"}, {"a.mp4": 10})
    (r,) = run(run_config(tmp_path, **{"dataset.formats": "yolo,voc,coco", "dataset.val_fraction": 0.4}), FakeLabeler)
    out = r.output
    assert [line.split(":")[0] for line in (out / "labelmap.txt").read_text().splitlines()[1:]] == [
        "background",
        "mug",
        "hand",
        "lid",
    ]
    for split in ("train", "val"):
        path = out / f"coco_{split}.json"
        body = json.loads(path.read_text())
        assert body["info"]["contributor"] == "autolabel" and body["licenses"] == []
        assert all(a["score"] in (0.9, 0.6) and a["reviewed"] is False for a in body["annotations"])
        coco = COCO(str(path))
        results = coco.loadRes(body["annotations"])  # the file reads as results too
        assert len(results.getAnnIds()) == len(body["annotations"]) > 0


def test_classes_a_labelmap_cannot_hold_are_noted_and_the_rest_is_written(tmp_path):
    make_product(tmp_path / "videos", "mug", {"red mug": "type: A", "a hand": "hand"}, {"a.mp4": 4})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert r.ok and not (r.output / "labelmap.txt").exists()
    assert any("labelmap.txt" in note and "'type: A'" in note for note in r.notes)
    assert len(list((r.output / "annotations").iterdir())) == r.frames


def _downgrade(root):
    """What autolabel 0.1.0 (dataset state version 2) left: 5-decimal YOLO, supervision's VOC, no labelmap."""
    import supervision as sv
    from supervision.dataset.formats.pascal_voc import detections_to_pascal_voc
    from supervision.dataset.formats.yolo import object_to_yolo

    state = json.loads((root / STATE).read_text())
    for r in read_journal(root):
        lines = [object_to_yolo(np.array([b.x1, b.y1, b.x2, b.y2]), b.class_id, (r.height, r.width)) for b in r.boxes]
        (root / "labels" / f"{r.name}.txt").write_text("".join(f"{line}\n" for line in lines))
        dets = sv.Detections(
            xyxy=np.array([[b.x1, b.y1, b.x2, b.y2] for b in r.boxes], np.float32).reshape(-1, 4),
            class_id=np.array([b.class_id for b in r.boxes], int),
        )
        xml = detections_to_pascal_voc(dets, state["classes"], f"{r.name}.jpg", (r.height, r.width, 3))
        (root / "annotations" / f"{r.name}.xml").write_text(xml)
    (root / "labelmap.txt").unlink()
    (root / STATE).write_text(json.dumps(state | {"version": 2}))


def test_a_dataset_from_the_previous_version_is_upgraded_by_the_next_run_without_edited_copies(tmp_path):
    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "a hand": "hand"}, {"a.mp4": 8})
    fresh = tmp_path / "fresh"
    run(run_config(tmp_path, output=str(fresh)), FakeLabeler)
    (r,) = run(run_config(tmp_path), FakeLabeler)
    _downgrade(r.output)

    with pytest.raises(Exception, match="older autolabel .* re-run `autolabel run`"):
        merge_datasets([r.output], tmp_path / "dataset" / "merged")
    (again,) = run(run_config(tmp_path), FakeLabeler)
    assert again.ok and again.new_frames == 0 and not again.repaired
    assert any("this version's format" in note for note in again.notes), again.notes
    assert not (r.output / ".autolabel" / "edited").exists()
    assert json.loads((r.output / STATE).read_text())["version"] == STATE_VERSION
    assert (r.output / STATE).read_bytes() == (fresh / "mug" / STATE).read_bytes()  # the id too
    for sub in ("labels", "annotations"):
        for path in (fresh / "mug" / sub).iterdir():
            assert (r.output / sub / path.name).read_bytes() == path.read_bytes()
    assert (r.output / "labelmap.txt").read_bytes() == (fresh / "mug" / "labelmap.txt").read_bytes()
    merge_datasets([r.output], tmp_path / "dataset" / "merged")


def test_merge_keeps_every_format_all_inputs_have_without_being_asked(tmp_path):
    for name in ("a", "b"):
        make_product(tmp_path / "videos", name, {"red mug": "mug"}, {"a.mp4": 4})
    run(run_config(tmp_path, **{"dataset.formats": "yolo,voc,coco"}), FakeLabeler)
    result = CliRunner().invoke(app, ["merge", "--root", str(tmp_path / "dataset"), "-q"])
    assert result.exit_code == 0, result.output
    merged = tmp_path / "dataset" / "merged"
    assert (merged / "coco_train.json").is_file() and (merged / "labelmap.txt").is_file()
    assert len(list((merged / "annotations").iterdir())) == 4  # 2 frames from each product


def test_a_sliver_at_the_far_edge_keeps_its_voc_corners_inside_the_image():
    record = FrameRecord("f", "s", 0, 0.0, 96, 64, [Box(0, 95.6, 63.7, 96.0, 64.0)])
    (obj,) = parse_rec(io.StringIO(voc_xml(record, ["mug"])))
    assert obj["bbox"] == [96, 64, 96, 64]


def test_a_version_3_dataset_is_upgraded_byte_identical_to_a_fresh_run(tmp_path):
    """Version 3 had no dataset id and listed a merge's inputs as 'sources': both read, then written anew."""
    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "a hand": "hand"}, {"a.mp4": 8})
    fresh = tmp_path / "fresh"
    run(run_config(tmp_path, output=str(fresh), **{"dataset.formats": "yolo,voc,coco"}), FakeLabeler)
    (r,) = run(run_config(tmp_path, **{"dataset.formats": "yolo,voc,coco"}), FakeLabeler)
    state = json.loads((r.output / STATE).read_text())
    assert state["version"] == STATE_VERSION and len(state["id"]) == 16
    for key in ("id", "floor", "pending"):  # what version 4 added
        del state[key]
    (r.output / STATE).write_text(json.dumps(state | {"version": 3}))
    (again,) = run(run_config(tmp_path, **{"dataset.formats": "yolo,voc,coco"}), FakeLabeler)
    assert again.ok and again.new_frames == 0 and not again.repaired
    files = sorted(p.relative_to(fresh / "mug") for p in (fresh / "mug").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(r.output) for p in r.output.rglob("*") if p.is_file())
    for rel in files:  # run.yaml names its output folder; the state says how far down the journal holds boxes
        expected = (fresh / "mug" / rel).read_bytes().replace(str(fresh).encode(), str(r.output.parent).encode())
        if rel.as_posix() == STATE:
            old, new = json.loads(expected), json.loads((r.output / rel).read_bytes())
            assert (old.pop("floor"), new.pop("floor")) == (0.1, 0.35)  # version 3 kept boxes above 0.35 only
            assert old == new
            continue
        assert (r.output / rel).read_bytes() == expected, rel
