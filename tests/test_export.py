"""autolabel export: each layout read back by the tools it is meant for, checked against the journal.

The datasets come from the real pipeline with a labeler that plants 0-3 boxes a frame at
fractional pixels (some on the image border), classes 0 and 1 of an ontology of three.
The journal (``detections.jsonl``) is the truth; the split is the one in train.txt/val.txt.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import supervision as sv
from typer.testing import CliRunner

from autolabel import export as export_module
from autolabel.cli import app
from autolabel.datasets.journal import read_journal
from autolabel.datasets.layout import read_splits
from autolabel.datasets.records import FrameRecord
from autolabel.export import MARK, export_dataset
from autolabel.fileio import TMP_MARK
from autolabel.merge import merge_datasets
from autolabel.pipeline import run
from tests.conftest import make_product, make_video, run_config
from tests.test_review import reviewed, write_export

runner = CliRunner()

ONTOLOGY = {"red mug": "mug", "cardboard box": "box", "blue cap": "cap"}
CLASSES = ["mug", "box", "cap"]
TARGETS = ["ultralytics", "coco", "voc", "cvat", "label-studio"]
IMAGE_TARGETS = ["ultralytics", "coco", "voc", "cvat"]
DATASETS = ["shop_a", "shop_b", "merged"]


class Killed(BaseException):
    """Stands for the process being killed (nothing catches it)."""


class PlantedLabeler:
    """0-3 boxes a frame (in turn) at fractional pixels, seeded by a frame counter; classes 0 and 1 only.

    The first box of a frame ends on the right border (x2 == width), the second starts on
    the top one (y1 == 0). A counter, not the decoded pixels, so that any decoder gives
    the same boxes.
    """

    batch_size = 4

    def __init__(self) -> None:
        self.frames = 0

    def prepare(self, ontology) -> None:
        pass

    def describe(self) -> dict:
        return {"base_model": "planted"}

    def label(self, images, ontology) -> list[sv.Detections]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            rng = np.random.default_rng(self.frames)
            n = self.frames % 4
            self.frames += 1
            if n == 0:
                out.append(sv.Detections.empty())
                continue
            xyxy = []
            for k in range(n):
                x1, y1 = rng.uniform(0, 0.6 * w), rng.uniform(0, 0.6 * h)
                x2, y2 = rng.uniform(x1 + 4, w), rng.uniform(y1 + 4, h)
                if k == 0:
                    x2 = float(w)
                if k == 1:
                    y1 = 0.0
                xyxy.append([x1, y1, x2, y2])
            out.append(
                sv.Detections(
                    xyxy=np.array(xyxy, np.float32),
                    class_id=np.arange(n) % 2,
                    confidence=rng.uniform(0.3, 0.99, n).astype(np.float32),
                )
            )
        return out


def truth(dataset: Path) -> dict[str, FrameRecord]:
    """The dataset's kept frames by name, each with its split from train.txt/val.txt."""
    splits = read_splits(dataset)
    records = {r.name: r for r in read_journal(dataset, len(CLASSES)) if r.dropped is None}
    assert set(splits) == set(records)
    for r in records.values():
        r.split = splits[r.name]
    return records


def in_split(records: dict[str, FrameRecord], split: str) -> dict[str, FrameRecord]:
    return {n: r for n, r in records.items() if r.split == split}


def xyxy(record: FrameRecord) -> np.ndarray:
    return np.array([[b.x1, b.y1, b.x2, b.y2] for b in record.boxes], float).reshape(-1, 4)


def class_ids(record: FrameRecord) -> list[int]:
    return [b.class_id for b in record.boxes]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(f"*{TMP_MARK}*")]


def as_results(anns: list[dict]) -> list[dict]:
    """Annotations as detection results (what ``COCO.loadRes`` takes)."""
    return [{k: a[k] for k in ("image_id", "category_id", "bbox", "score")} for a in anns]


def export_cli(dataset: Path, to: str, output: Path, *extra: str):
    return runner.invoke(app, ["export", str(dataset), "--to", to, "--output", str(output), *extra])


def refused(result, code: int = 1) -> str:
    """The one stderr line of a refused command."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("autolabel: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    """Products shop_a (96x64), shop_b (96x64 and 128x80 clips), colon (a class named 'mug:red'), their merge."""
    tmp = tmp_path_factory.mktemp("export")
    videos = tmp / "videos"
    make_product(videos, "shop_a", ONTOLOGY, {"clip.mp4": 24})
    make_product(videos, "shop_b", ONTOLOGY, {"clip.mp4": 8})
    make_video(videos / "shop_b" / "wide.mp4", frames=12, size=(128, 80))
    make_product(videos, "colon", {"red mug": "mug:red", "cardboard box": "box"}, {"clip.mp4": 6})
    cfg = run_config(tmp, **{"dataset.formats": "yolo,voc,coco", "dataset.val_fraction": 0.3})
    results = run(cfg, PlantedLabeler)
    assert all(r.ok for r in results), [r.errors for r in results]
    root = tmp / "dataset"
    merged = merge_datasets([root / "shop_a", root / "shop_b"], tmp / "merged").output
    paths = {"shop_a": root / "shop_a", "shop_b": root / "shop_b", "merged": merged, "colon": root / "colon"}
    # The planted boxes are as varied as promised, in every dataset.
    for name in DATASETS:
        records = list(truth(paths[name]).values())
        assert {r.split for r in records} == {"train", "val"}
        boxes = [(r, b) for r in records for b in r.boxes]
        assert {b.class_id for _, b in boxes} == {0, 1}
        assert any(b.x2 == r.width for r, b in boxes) and any(b.y1 == 0 for _, b in boxes)
        assert any(b.x1 != int(b.x1) for _, b in boxes)
        assert {len(r.boxes) for r in records} == {0, 1, 2, 3}
    assert {(r.width, r.height) for r in truth(root / "shop_b").values()} == {(96, 64), (128, 80)}
    outputs: dict[tuple[str, str], Path] = {}

    def exported(name: str, to: str) -> Path:
        """The CLI's export of a dataset (made once; tests must not change it)."""
        if (name, to) not in outputs:
            out = tmp / "exports" / f"{name}-{to}"
            result = export_cli(paths[name], to, out, "-q")
            assert result.exit_code == 0, result.stderr
            records = truth(paths[name])
            n_train, n_val = (len(in_split(records, s)) for s in ("train", "val"))
            boxes = sum(len(r.boxes) for r in records.values())
            assert f"exported {len(records)} frames (train {n_train} / val {n_val}), {boxes} boxes" in result.stdout
            outputs[name, to] = out
        return outputs[name, to]

    return SimpleNamespace(tmp=tmp, paths=paths, exported=exported)


# --- ultralytics ---------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_ultralytics_reads_the_export(data, name):
    from ultralytics.data.utils import check_det_dataset

    dataset, out = data.paths[name], data.exported(name, "ultralytics")
    records = truth(dataset)
    checked = check_det_dataset(str(out / "data.yaml"))
    assert checked["names"] == dict(enumerate(CLASSES)) and checked["nc"] == 3
    for split in ("train", "val"):
        assert Path(checked[split]) == (out / "images" / split).resolve() and Path(checked[split]).is_dir()
        want = in_split(records, split)
        assert sorted(p.stem for p in (out / "images" / split).iterdir()) == sorted(want)
        assert sorted(p.stem for p in (out / "labels" / split).iterdir()) == sorted(want)
        for n in want:  # the same label bytes as the dataset's own YOLO files
            assert (out / "labels" / split / f"{n}.txt").read_bytes() == (dataset / "labels" / f"{n}.txt").read_bytes()
        ds = sv.DetectionDataset.from_yolo(
            images_directory_path=str(out / "images" / split),
            annotations_directory_path=str(out / "labels" / split),
            data_yaml_path=str(out / "data.yaml"),
        )
        assert ds.classes == CLASSES and len(ds) == len(want)
        seen = 0
        for path, _, det in ds:
            record = want[Path(path).stem]
            np.testing.assert_allclose(det.xyxy, xyxy(record), atol=1.0)
            assert list(det.class_id) == class_ids(record)
            seen += len(det)
        assert seen == sum(len(r.boxes) for r in want.values())
        print(f"{name} ultralytics {split}: supervision {len(ds)} images, {seen} boxes")


def test_one_epoch_of_yolo_train_on_the_export(data, tmp_path):
    from ultralytics.data.utils import load_dataset_cache_file

    out = tmp_path / "yolo"  # its own export: training writes label caches into it
    assert export_cli(data.paths["merged"], "ultralytics", out, "-q").exit_code == 0
    records = truth(data.paths["merged"])
    (tmp_path / "train.yaml").write_text(f"project: {tmp_path / 'runs'}\nworkers: 0\nplots: false\n")
    args = ["train", "--data", str(out / "data.yaml"), "--model", "yolo11n.yaml", "--epochs", "1", "--imgsz", "64"]
    args += ["--batch", "4", "--device", "cpu", "--name", "t", "--config", str(tmp_path / "train.yaml"), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    best = tmp_path / "runs" / "t" / "weights" / "best.pt"
    assert best.is_file() and f"best weights: {best}" in result.stdout
    for split in ("train", "val"):  # what Ultralytics found: every frame, its label file, none corrupt
        cache = load_dataset_cache_file(out / "labels" / f"{split}.cache")
        found, missing, empty, corrupt, total = cache["results"]
        want = in_split(records, split)
        assert (found, missing, corrupt, total) == (len(want), 0, 0, len(want))
        assert empty == sum(1 for r in want.values() if not r.boxes)
        assert sum(len(label["bboxes"]) for label in cache["labels"]) == sum(len(r.boxes) for r in want.values())
        print(f"ultralytics train, {split}: {found} images found, {empty} backgrounds")


# --- COCO ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_coco_export_reads_in_pycocotools_and_supervision(data, name):
    from pycocotools.coco import COCO

    dataset, out = data.paths[name], data.exported(name, "coco")
    records = truth(dataset)
    assert sorted(p.name for p in (out / "annotations").iterdir()) == ["instances_train.json", "instances_val.json"]
    for split in ("train", "val"):
        want = in_split(records, split)
        path = out / "annotations" / f"instances_{split}.json"
        coco = COCO(str(path))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES
        assert coco.getCatIds() == [1, 2, 3]
        images = coco.loadImgs(coco.getImgIds())
        assert len(images) == len(want)
        assert sorted(p.stem for p in (out / "images" / split).iterdir()) == sorted(want)
        native = json.loads((dataset / f"coco_{split}.json").read_text())
        native = {img["file_name"]: img["id"] for img in native["images"]}
        for img in images:
            assert "/" not in img["file_name"] and (out / "images" / split / img["file_name"]).is_file()
            assert native[f"images/{img['file_name']}"] == img["id"]  # the dataset's own image ids
            record = want[Path(img["file_name"]).stem]
            assert (img["width"], img["height"]) == (record.width, record.height)
            anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])), key=lambda a: a["id"])
            got = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
            np.testing.assert_allclose(got, xyxy(record), atol=0.01)
            assert [a["category_id"] - 1 for a in anns] == class_ids(record)
            assert [a["score"] for a in anns] == [b.confidence for b in record.boxes]
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) == sum(len(r.boxes) for r in want.values())
        results = coco.loadRes(as_results(anns))
        assert len(results.getAnnIds()) == len(anns)
        ds = sv.DetectionDataset.from_coco(
            images_directory_path=str(out / "images" / split), annotations_path=str(path)
        )
        assert ds.classes == CLASSES and len(ds) == len(want)
        boxes = 0
        for image_path, _, det in ds:
            record = want[Path(image_path).stem]
            np.testing.assert_allclose(det.xyxy, xyxy(record), atol=1.0)
            assert list(det.class_id) == class_ids(record)
            boxes += len(det)
        assert boxes == len(anns)
        print(f"{name} coco {split}: pycocotools {len(images)} images, {len(anns)} boxes; sv {len(ds)}, {boxes}")


# --- Pascal VOC ----------------------------------------------------------------------


def parse_rec(filename: str) -> list[dict]:
    """The VOC devkit's reader, as in py-faster-rcnn's and detectron2's voc_eval."""
    tree = ET.parse(filename)
    objects = []
    for obj in tree.findall("object"):
        obj_struct = {}
        obj_struct["name"] = obj.find("name").text
        obj_struct["pose"] = obj.find("pose").text
        obj_struct["truncated"] = int(obj.find("truncated").text)
        obj_struct["difficult"] = int(obj.find("difficult").text)
        bbox = obj.find("bndbox")
        obj_struct["bbox"] = [
            int(bbox.find("xmin").text),
            int(bbox.find("ymin").text),
            int(bbox.find("xmax").text),
            int(bbox.find("ymax").text),
        ]
        objects.append(obj_struct)
    return objects


@pytest.mark.parametrize("name", DATASETS)
def test_voc_export_reads_in_the_devkit_and_supervision(data, name):
    dataset, out = data.paths[name], data.exported(name, "voc")
    records = truth(dataset)
    main = out / "ImageSets" / "Main"
    assert sorted(p.name for p in main.iterdir()) == ["train.txt", "val.txt"]
    for split in ("train", "val"):
        assert (main / f"{split}.txt").read_text().splitlines() == sorted(in_split(records, split))
    assert (out / "labelmap.txt").read_text().splitlines() == [
        "# label:color_rgb:parts:actions",
        "background:0,0,0::",
        "mug:128,0,0::",
        "box:0,128,0::",
        "cap:128,128,0::",
    ]
    assert sorted(p.stem for p in (out / "JPEGImages").iterdir()) == sorted(records)
    assert sorted(p.stem for p in (out / "Annotations").iterdir()) == sorted(records)
    total = 0
    for n, record in records.items():
        objects = parse_rec(str(out / "Annotations" / f"{n}.xml"))
        assert [o["name"] for o in objects] == [CLASSES[c] for c in class_ids(record)]
        assert all(o["pose"] == "Unspecified" and o["difficult"] == 0 for o in objects)
        w, h = record.width, record.height
        for o, b in zip(objects, record.boxes, strict=True):
            xmin, ymin, xmax, ymax = o["bbox"]
            assert 1 <= xmin <= xmax <= w and 1 <= ymin <= ymax <= h, (n, o["bbox"])
            on_border = b.x1 <= 0.5 or b.y1 <= 0.5 or b.x2 >= w - 0.5 or b.y2 >= h - 0.5
            assert o["truncated"] == int(on_border)
        got = np.array([[x1 - 1, y1 - 1, x2, y2] for x1, y1, x2, y2 in (o["bbox"] for o in objects)]).reshape(-1, 4)
        np.testing.assert_allclose(got, xyxy(record), atol=1.0)
        total += len(objects)
    assert total == sum(len(r.boxes) for r in records.values())
    assert any(o["truncated"] for n in records for o in parse_rec(str(out / "Annotations" / f"{n}.xml")))
    ds = sv.DetectionDataset.from_pascal_voc(str(out / "JPEGImages"), str(out / "Annotations"))
    assert len(ds) == len(records)
    boxes = 0
    for image_path, _, det in ds:
        record = records[Path(image_path).stem]
        assert list(det.data["class_name"]) == [CLASSES[c] for c in class_ids(record)]
        np.testing.assert_allclose(det.xyxy, xyxy(record), atol=1.0)
        boxes += len(det)
    assert boxes == total
    print(f"{name} voc: parse_rec {len(records)} files, {total} objects; supervision {len(ds)} images, {boxes} boxes")


# --- CVAT ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_cvat_export_is_cvat_for_images(data, name):
    dataset, out = data.paths[name], data.exported(name, "cvat")
    records = truth(dataset)
    with zipfile.ZipFile(out / "annotations.zip") as zf:
        assert zf.namelist() == ["annotations.xml"]
        root = ET.fromstring(zf.read("annotations.xml"))
    assert root.find("version").text == "1.1"
    task = root.find("meta/task")
    assert [label.find("name").text for label in task.find("labels")] == CLASSES
    assert all(label.find("type").text == "rectangle" for label in task.find("labels"))
    assert int(task.find("size").text) == len(records)
    images = root.findall("image")
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == sorted(f"{n}.jpg" for n in records)
    assert [img.get("name") for img in images] == names
    assert [int(img.get("id")) for img in images] == list(range(len(records)))
    boxes = 0
    for img in images:
        assert "subset" not in img.attrib
        record = records[Path(img.get("name")).stem]
        assert (int(img.get("width")), int(img.get("height"))) == (record.width, record.height)
        got = [[float(b.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")] for b in img.findall("box")]
        np.testing.assert_allclose(np.array(got).reshape(-1, 4), xyxy(record), atol=0.01 + 1e-9)
        assert [b.get("label") for b in img.findall("box")] == [CLASSES[c] for c in class_ids(record)]
        boxes += len(got)
    assert boxes == sum(len(r.boxes) for r in records.values())
    print(f"{name} cvat: {len(images)} images, {boxes} boxes")


# --- Label Studio --------------------------------------------------------------------


def test_label_studio_tasks_equal_the_report_export_and_import_back(data, tmp_path):
    dataset = Path(shutil.copytree(data.paths["shop_a"], tmp_path / "ds" / "shop_a"))
    out = tmp_path / "ls"
    result = runner.invoke(app, ["report", str(dataset), "--export", "label-studio", "-q"])
    assert result.exit_code == 0, result.stderr
    assert export_cli(dataset, "label-studio", out, "-q").exit_code == 0
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    assert tasks == json.loads((dataset / "label_studio_tasks.json").read_text())
    assert (out / "label_studio_config.xml").read_text() == (dataset / "label_studio_config.xml").read_text()
    assert sorted(files(out)) == [MARK, "label_studio_config.xml", "label_studio_tasks.json"]
    records = truth(dataset)
    assert len(tasks) == len(records)
    assert all(t["data"]["image"] == f"/data/local-files/?d=shop_a/images/{t['data']['frame']}.jpg" for t in tasks)
    # A review: one frame emptied, one accepted as it was.
    with_boxes = [n for n, r in sorted(records.items()) if r.boxes]
    emptied, accepted = with_boxes[0], with_boxes[1]
    export = write_export(tmp_path / "review.json", reviewed(tasks, {emptied: lambda r: [], accepted: list}))
    result = runner.invoke(app, ["import", str(export), "--dataset", str(dataset)])
    assert result.exit_code == 0, result.stderr
    assert "1 changed" in result.stdout and f"2 of {len(records)} frames now reviewed" in result.stdout
    after = truth(dataset)
    assert after[emptied].boxes == [] and after[emptied].reviewed
    assert after[accepted].boxes == records[accepted].boxes and after[accepted].reviewed
    # The next export (into the same folder) shows the review.
    assert export_cli(dataset, "label-studio", out, "-q").exit_code == 0
    again = {t["data"]["frame"]: t for t in json.loads((out / "label_studio_tasks.json").read_text())}
    assert again[emptied]["predictions"][0]["result"] == []


@pytest.mark.parametrize("prefix", ["http://files.example/shop_a/", ""])
def test_label_studio_image_url_prefix_as_the_report_has_it(data, tmp_path, prefix):
    dataset = Path(shutil.copytree(data.paths["shop_a"], tmp_path / "shop_a"))
    result = runner.invoke(app, ["report", str(dataset), "--export", "label-studio", "--image-url-prefix", prefix])
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "ls"
    assert export_cli(dataset, "label-studio", out, "--image-url-prefix", prefix, "-q").exit_code == 0
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    assert tasks == json.loads((dataset / "label_studio_tasks.json").read_text())
    assert all(t["data"]["image"] == f"{prefix}images/{t['data']['frame']}.jpg" for t in tasks)


def test_image_url_prefix_is_for_label_studio_only(data, tmp_path):
    result = export_cli(data.paths["shop_a"], "coco", tmp_path / "out", "--image-url-prefix", "http://x/")
    assert "--image-url-prefix applies to --to label-studio only" in refused(result, code=2)
    assert not (tmp_path / "out").exists()


# --- safety and the command line -----------------------------------------------------


@pytest.mark.parametrize("to", IMAGE_TARGETS)
def test_images_are_hard_links_of_the_dataset(data, to):
    dataset, out = data.paths["merged"], data.exported("merged", to)
    images = [p for p in out.rglob("*.jpg")]
    assert sorted(p.stem for p in images) == sorted(truth(dataset))
    for p in images:
        assert p.stat().st_ino == (dataset / "images" / p.name).stat().st_ino


def test_export_again_gives_the_same_bytes(data, tmp_path):
    for to in TARGETS:
        out = tmp_path / to
        first = export_cli(data.paths["shop_b"], to, out)
        assert first.exit_code == 0, first.stderr
        if to != "label-studio":
            assert "0 copied" in first.stdout and "hard-linked" in first.stdout
        before = files(out)
        again = export_cli(data.paths["shop_b"], to, out)
        assert again.exit_code == 0, again.stderr
        assert again.stdout == first.stdout
        assert files(out) == before
        mark = json.loads(before[MARK])
        own = mark.pop("files")  # the export's own files: what a later export may replace
        assert own == sorted(own) and MARK not in own
        assert mark == {"dataset": str(data.paths["shop_b"].resolve()), "to": to, "dataset_id": mark["dataset_id"]}
        assert len(mark["dataset_id"]) == 16  # what an import of it checks
    assert leftovers(tmp_path) == []


def test_a_foreign_output_is_refused_and_left_as_it_was(data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    line = refused(export_cli(data.paths["shop_a"], "coco", out))
    assert f"{out}: exists and is not an earlier export of {data.paths['shop_a']}" in line
    assert files(out) == {"notes.txt": b"keep"}
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "exists and is a file" in refused(export_cli(data.paths["shop_a"], "coco", a_file))
    assert a_file.read_text() == "x"


def test_an_export_of_another_dataset_is_refused(data, tmp_path):
    out = tmp_path / "out"
    assert export_cli(data.paths["shop_b"], "voc", out, "-q").exit_code == 0
    before = files(out)
    line = refused(export_cli(data.paths["shop_a"], "voc", out))
    assert "is not an earlier export of" in line
    assert files(out) == before


@pytest.mark.parametrize("where", ["equal", "inside", "deeper", "parent"])
def test_an_output_that_is_in_or_holds_the_dataset_is_refused(data, where):
    dataset = data.paths["shop_a"]
    out = {
        "equal": dataset,
        "inside": dataset / "export",
        "deeper": dataset / "images" / "x",
        "parent": dataset.parent,
    }[where]
    before = files(dataset)
    line = refused(export_cli(dataset, "ultralytics", out))
    assert f"{out}: is the dataset {dataset}, inside it, or holds it; export to a folder beside it" in line
    assert files(dataset) == before
    assert not (dataset / "export").exists() and not (dataset / "images" / "x").exists()


def test_an_unknown_target_is_one_config_error(data, tmp_path):
    line = refused(export_cli(data.paths["shop_a"], "nonsense", tmp_path / "out"), code=2)
    assert "--to 'nonsense': choose one of yolo, voc, coco, cvat, label-studio, ultralytics" in line
    assert not (tmp_path / "out").exists()


def test_an_unfinished_or_missing_dataset_is_refused(data, tmp_path):
    dataset = Path(shutil.copytree(data.paths["shop_a"], tmp_path / "shop_a"))
    state_path = dataset / ".autolabel" / "state.json"
    state = json.loads(state_path.read_text())
    state["complete"] = False
    state_path.write_text(json.dumps(state))
    assert "unfinished run" in refused(export_cli(dataset, "coco", tmp_path / "out"))
    assert "not an autolabel dataset" in refused(export_cli(tmp_path / "nothing", "coco", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("crash", ["writer", "swap", "killed"])
def test_a_crash_keeps_the_earlier_export_and_leaves_no_staging(data, tmp_path, monkeypatch, crash):
    dataset, out = data.paths["shop_a"], tmp_path / "out"
    export_dataset(dataset, "ultralytics", out)
    before = files(out)
    if crash == "writer":  # dies half way through the label files
        calls = []

        def yolo_lines(record, masks=False):
            calls.append(record)
            if len(calls) == 5:
                raise Killed
            return real_yolo_lines(record, masks)

        from autolabel.datasets.formats import ultralytics as ultralytics_format

        real_yolo_lines = ultralytics_format.yolo_lines
        monkeypatch.setattr(ultralytics_format, "yolo_lines", yolo_lines)
    else:  # dies when the export is about to be swapped in

        def replace_dir(staging, target):
            raise Killed

        monkeypatch.setattr(export_module, "replace_dir", replace_dir)
        if crash == "killed":  # no clean-up at all, as with SIGKILL
            monkeypatch.setattr(export_module, "shutil", SimpleNamespace(rmtree=lambda *a, **k: None))
    with pytest.raises(Killed):
        export_dataset(dataset, "ultralytics", out)
    assert files(out) == before
    assert bool(leftovers(tmp_path)) == (crash == "killed")
    monkeypatch.undo()
    export_dataset(dataset, "ultralytics", out)
    assert files(out) == before
    assert leftovers(tmp_path) == []


def test_a_class_name_with_a_colon_fails_voc_only(data, tmp_path):
    dataset = data.paths["colon"]
    line = refused(export_cli(dataset, "voc", tmp_path / "voc"))
    assert "class 'mug:red' cannot be written in labelmap.txt" in line
    assert not (tmp_path / "voc").exists() and leftovers(tmp_path) == []
    for to in ("ultralytics", "coco", "cvat", "label-studio"):
        result = export_cli(dataset, to, tmp_path / to, "-q")
        assert result.exit_code == 0, result.stderr
    assert "mug:red" in (tmp_path / "ultralytics" / "data.yaml").read_text()


# --- COCO ids across an import -------------------------------------------------------


def by_frame(body: dict) -> dict[str, list[dict]]:
    """A COCO file's annotations by frame name."""
    name_of = {img["id"]: Path(img["file_name"]).stem for img in body["images"]}
    out: dict[str, list[dict]] = {}
    for a in body["annotations"]:
        out.setdefault(name_of[a["image_id"]], []).append(a)
    return out


def test_native_coco_ids_survive_an_import(data, tmp_path):
    from pycocotools.coco import COCO

    dataset = Path(shutil.copytree(data.paths["shop_a"], tmp_path / "shop_a"))
    before = {s: json.loads((dataset / f"coco_{s}.json").read_text()) for s in ("train", "val")}
    records = truth(dataset)
    # One frame of each split with two boxes or more loses its last box; another is accepted as it was.
    changed = {
        split: next(n for n, r in sorted(in_split(records, split).items()) if len(r.boxes) >= 2)
        for split in ("train", "val")
    }
    accepted = next(n for n, r in sorted(records.items()) if r.boxes and n not in changed.values())
    assert export_cli(dataset, "label-studio", tmp_path / "ls", "-q").exit_code == 0
    tasks = json.loads((tmp_path / "ls" / "label_studio_tasks.json").read_text())
    edits = {n: (lambda r: r[:-1]) for n in changed.values()} | {accepted: list}
    export = write_export(tmp_path / "review.json", reviewed(tasks, edits))
    result = runner.invoke(app, ["import", str(export), "--dataset", str(dataset)])
    assert result.exit_code == 0, result.stderr
    assert "2 changed" in result.stdout
    after_records = truth(dataset)
    assert {n for n, r in after_records.items() if r.reviewed} == set(edits)
    assert export_cli(dataset, "coco", tmp_path / "coco", "-q").exit_code == 0
    for split in ("train", "val"):
        path = dataset / f"coco_{split}.json"
        after = json.loads(path.read_text())
        assert after["images"] == before[split]["images"]
        old, new = by_frame(before[split]), by_frame(after)
        for n in in_split(records, split):
            if n == changed[split]:
                assert len(new[n]) == len(old[n]) - 1
                assert [a["id"] for a in new[n]] == [a["id"] for a in old[n][:-1]]
                assert all(a["score"] == 1.0 and a["reviewed"] is True for a in new[n])
            elif n == accepted:
                assert [(a["id"], a["bbox"]) for a in new[n]] == [(a["id"], a["bbox"]) for a in old[n]]
                assert all(a["score"] == 1.0 and a["reviewed"] is True for a in new[n])
                assert all(b.confidence is not None and b.confidence < 1 for b in after_records[n].boxes)
            else:
                assert new.get(n) == old.get(n)
                assert [a["score"] for a in new.get(n, [])] == [b.confidence for b in records[n].boxes]
                assert all(a["reviewed"] is False for a in new.get(n, []))
        assert "info" in after
        coco = COCO(str(path))
        results = coco.loadRes(as_results(after["annotations"]))
        assert len(results.getAnnIds()) == len(after["annotations"])
        # The export says the same, ids and all.
        exported = json.loads((tmp_path / "coco" / "annotations" / f"instances_{split}.json").read_text())
        assert exported["annotations"] == after["annotations"]
        assert [(i["id"], f"images/{i['file_name']}") for i in exported["images"]] == [
            (i["id"], i["file_name"]) for i in after["images"]
        ]


def test_an_import_that_only_accepts_frames_marks_them_in_native_coco(data, tmp_path):
    dataset = Path(shutil.copytree(data.paths["shop_a"], tmp_path / "shop_a"))
    accepted = next(n for n, r in sorted(truth(dataset).items()) if r.boxes)
    assert export_cli(dataset, "label-studio", tmp_path / "ls", "-q").exit_code == 0
    tasks = json.loads((tmp_path / "ls" / "label_studio_tasks.json").read_text())
    export = write_export(tmp_path / "review.json", reviewed(tasks, {accepted: list}))
    result = runner.invoke(app, ["import", str(export), "--dataset", str(dataset)])
    assert result.exit_code == 0, result.stderr
    assert "0 changed" in result.stdout and truth(dataset)[accepted].reviewed
    split = truth(dataset)[accepted].split
    anns = by_frame(json.loads((dataset / f"coco_{split}.json").read_text()))[accepted]
    assert all(a["score"] == 1.0 and a["reviewed"] is True for a in anns)


@pytest.mark.parametrize("spelling", [".", "..", "../../out"])
def test_an_output_spelled_relative_to_the_export_itself(data, tmp_path, monkeypatch, spelling):
    dataset, out = data.paths["shop_b"], tmp_path / "out"
    assert export_cli(dataset, "coco", out, "-q").exit_code == 0
    before = files(out)
    monkeypatch.chdir(out if spelling == "." else out / "images")
    result = export_cli(dataset, "coco", Path(spelling), "-q")
    assert result.exit_code == 0, result.stderr
    assert files(out) == before and leftovers(tmp_path) == []


def test_an_output_that_is_a_symlink_stays_one(data, tmp_path):
    dataset, real, link = data.paths["shop_b"], tmp_path / "real", tmp_path / "link"
    assert export_cli(dataset, "voc", real, "-q").exit_code == 0
    link.symlink_to(real, target_is_directory=True)
    result = export_cli(dataset, "cvat", link, "-q")
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and (real / "annotations.zip").is_file() and not (real / "JPEGImages").exists()
    assert leftovers(tmp_path) == []
