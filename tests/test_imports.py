"""``autolabel import`` from every source: exactly the edited frames change; identity; hostile input; kills.

One small dataset per product is labeled with planted boxes and exported in every format;
each test edits a copy of an export as a reviewer would in that tool and imports it into a
copy of the dataset. The hostile cases live in tests/test_imports_hostile.py.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.datasets import formats
from autolabel.datasets.derive import DERIVED
from autolabel.datasets.formats.yolo import yolo_line
from autolabel.datasets.journal import read_journal
from autolabel.datasets.records import Box
from tests.conftest import FakeLabeler, make_product, read_state, run_config
from tests.crashpoint import crash_cli, dataset_files

runner = CliRunner()
W, H = 96, 64  # make_video's frames
CLASSES = ["mug", "hand"]
FIVE = ["label-studio", "cvat", "coco", "yolo", "voc"]
EXPORTS = [*FIVE, "ultralytics"]


def moved(box: Box, dx: float) -> Box:
    return dataclasses.replace(box, x1=box.x1 + dx, x2=box.x2 + dx)


# What the reviewer does, frame by frame (each frame has the planted mug box, then the hand box).
EDITS = {
    "clip_000002": lambda b: [moved(b[0], 5), b[1]],  # a box moved
    "clip_000004": lambda b: b[:1],  # a box deleted
    "clip_000006": lambda b: [dataclasses.replace(b[0], class_id=1), b[1]],  # a class changed
    "clip_000008": lambda b: [*b, Box(1, 20.0, 40.0, 30.0, 60.0)],  # a box added
}
ABSENT = "clip_000012"  # left out of the source: not reviewed, untouched
NUDGED = "clip_000010"  # VOC: a box moved by less than a pixel, which counts as unchanged


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_base(tmp_path_factory.mktemp("imports"))


def build_base(root: Path) -> Path:
    """Products mug and cup (the same video file name, so the same frame names), their merge, every export."""
    from autolabel.export import export_dataset
    from autolabel.merge import merge_datasets
    from autolabel.pipeline import run

    make_product(root / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {"clip.mp4": 16})
    make_product(root / "videos", "cup", {"cup": "mug", "hand": "hand"}, {"clip.mp4": 16})  # the same classes
    run(run_config(root, **{"dataset.formats": "yolo,voc,coco"}), FakeLabeler)
    merge_datasets([root / "dataset" / "mug", root / "dataset" / "cup"], root / "dataset" / "merged")
    for name in ("mug", "cup", "merged"):
        for to in EXPORTS:
            export_dataset(root / "dataset" / name, to, root / "exports" / name / to)
    return root


def copy_dataset(base: Path, tmp_path: Path, name: str = "mug") -> Path:
    return Path(shutil.copytree(base / "dataset" / name, tmp_path / "dataset" / name))


def copy_export(base: Path, tmp_path: Path, to: str, name: str = "mug") -> Path:
    return Path(shutil.copytree(base / "exports" / name / to, tmp_path / "exports" / name / to))


def journal(root: Path) -> dict:
    return {r.name: r for r in read_journal(root)}


def one_error(result, code: int = 1) -> str:
    """The single stderr line of a refused command."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("autolabel: error: "), result.stderr
    return lines[0]


def import_cli(source: Path, dataset: Path, *args: str):
    return runner.invoke(app, ["import", str(source), "--dataset", str(dataset), *args])


# --- a review in each tool -----------------------------------------------------------------


def review_label_studio(export: Path, variant: str, reviews: dict, absent: set) -> tuple[Path, set]:
    """Label Studio's JSON export: every task, the reviewed ones annotated (accepted or redrawn)."""
    tasks = json.loads((export / "label_studio_tasks.json").read_text())
    present = set()
    for t in tasks:
        frame = t["data"]["frame"]
        t["annotations"] = []
        if frame in absent:
            continue
        present.add(frame)
        result = t["predictions"][0]["result"]
        if frame in reviews:
            result = [ls_region(b, k) for k, b in enumerate(reviews[frame])]
        t["annotations"] = [{"id": t["id"], "result": result, "was_cancelled": False, "ground_truth": False}]
    path = export / "project-1-at-2025-06-01-10-00-6d1f3b.json"
    path.write_text(json.dumps(tasks, indent=1))
    return path, present


def ls_region(b: Box, k: int) -> dict:
    value = {"x": 100 * b.x1 / W, "y": 100 * b.y1 / H, "width": 100 * (b.x2 - b.x1) / W}
    value |= {"height": 100 * (b.y2 - b.y1) / H, "rotation": 0, "rectanglelabels": [CLASSES[b.class_id]]}
    common = {"original_width": W, "original_height": H, "image_rotation": 0, "origin": "manual"}
    return {"id": f"r{k}", "type": "rectanglelabels", "from_name": "label", "to_name": "image", "value": value} | common


def cvat_box(b: Box) -> dict[str, str]:
    corners = {"xtl": b.x1, "ytl": b.y1, "xbr": b.x2, "ybr": b.y2}
    return {"label": CLASSES[b.class_id], "source": "manual", "occluded": "0", "z_order": "0"} | {
        k: f"{v:.2f}" for k, v in corners.items()
    }


def review_cvat(export: Path, variant: str, reviews: dict, absent: set) -> tuple[Path, set]:
    """CVAT for images 1.1 as CVAT exports it again: the task's zip (or the XML in it)."""
    with zipfile.ZipFile(export / "annotations.zip") as zf:
        root = ET.fromstring(zf.read("annotations.xml"))
    present = set()
    for image in root.findall("image"):
        frame = Path(image.get("name")).stem
        if frame in absent:
            root.remove(image)
            continue
        present.add(frame)
        if frame in reviews:
            for shape in list(image):
                image.remove(shape)
            for b in reviews[frame]:
                ET.SubElement(image, "box", cvat_box(b))
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    if variant == "xml":
        path = export / "annotations.xml"
        path.write_bytes(data)
    else:
        path = export / "task_mug-2025_06_01_10_00_00-cvat for images 1.1.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("annotations.xml", data)
    return path, present


def review_coco(export: Path, variant: str, reviews: dict, absent: set) -> tuple[Path, set]:
    """COCO as CVAT or FiftyOne write it back: images removed, annotations redrawn with new ids."""
    present = set()
    for path in sorted((export / "annotations").glob("instances_*.json")):
        body = json.loads(path.read_text())
        names = {img["id"]: Path(img["file_name"]).stem for img in body["images"]}
        gone = {i for i, n in names.items() if n in absent}
        edited = {i for i, n in names.items() if n in reviews}
        body["images"] = [img for img in body["images"] if img["id"] not in gone]
        anns = [a for a in body["annotations"] if a["image_id"] not in gone | edited]
        next_id = 1 + max((a["id"] for a in body["annotations"]), default=0)
        for i in sorted(edited):
            for b in reviews[names[i]]:
                w, h = b.x2 - b.x1, b.y2 - b.y1
                bbox = {"bbox": [b.x1, b.y1, w, h], "area": w * h, "iscrowd": 0, "segmentation": []}
                anns.append({"id": next_id, "image_id": i, "category_id": b.class_id + 1} | bbox)
                next_id += 1
        body["annotations"] = anns
        path.write_text(json.dumps(body))
        if variant == "folder" or path.name == "instances_train.json":
            present |= {n for i, n in names.items() if i not in gone}
    return (export if variant == "folder" else export / "annotations" / "instances_train.json"), present


def review_yolo(export: Path, variant: str, reviews: dict, absent: set) -> tuple[Path, set]:
    """labelImg's YOLO mode: a label file rewritten per reviewed frame (deleted: not reviewed)."""
    present = set()
    for path in sorted((export / "labels").glob("*.txt")):
        if path.stem in absent:
            path.unlink()
            continue
        present.add(path.stem)
        if path.stem in reviews:
            path.write_text("".join(f"{yolo_line(b, W, H)}\n" for b in reviews[path.stem]))
    return (export if variant == "folder" else export / "labels"), present


def voc_object(root: ET.Element, b: Box) -> None:
    obj = ET.SubElement(root, "object")
    for tag, text in (("name", CLASSES[b.class_id]), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
        ET.SubElement(obj, tag).text = text
    box = ET.SubElement(obj, "bndbox")
    corners = (("xmin", round(b.x1) + 1), ("ymin", round(b.y1) + 1), ("xmax", round(b.x2)), ("ymax", round(b.y2)))
    for tag, value in corners:
        ET.SubElement(box, tag).text = str(value)


def review_voc(export: Path, variant: str, reviews: dict, absent: set) -> tuple[Path, set]:
    """labelImg's VOC mode: an XML file rewritten per reviewed frame, one box nudged by 0.4 px."""
    present = set()
    for path in sorted((export / "Annotations").glob("*.xml")):
        if path.stem in absent:
            path.unlink()
            continue
        present.add(path.stem)
        root = ET.parse(path).getroot()
        if path.stem in reviews:
            for obj in root.findall("object"):
                root.remove(obj)
            for b in reviews[path.stem]:
                voc_object(root, b)
        elif path.stem == NUDGED:
            for tag in ("xmin", "xmax"):
                node = root.find(f"object/bndbox/{tag}")
                node.text = f"{float(node.text) + 0.4:.1f}"
        else:
            continue
        path.write_bytes(ET.tostring(root, encoding="utf-8"))
    return (export if variant == "folder" else export / "Annotations"), present


REVIEW = {
    "label-studio": review_label_studio,
    "cvat": review_cvat,
    "coco": review_coco,
    "yolo": review_yolo,
    "voc": review_voc,
}
VARIANTS = [
    ("label-studio", "tasks"),
    ("cvat", "zip"),
    ("cvat", "xml"),
    ("coco", "folder"),
    ("coco", "file"),
    ("yolo", "folder"),
    ("yolo", "labels"),
    ("voc", "folder"),
    ("voc", "annotations"),
]


def expected_reviews(records: dict) -> dict[str, list[Box]]:
    plain = {n: [dataclasses.replace(b, confidence=None) for b in records[n].boxes] for n in EDITS}
    return {n: edit(plain[n]) for n, edit in EDITS.items()}


def close(got: list[Box], want: list[Box], tol: float) -> bool:
    return len(got) == len(want) and all(
        g.class_id == w.class_id
        and g.confidence is None
        and all(abs(p - q) <= tol for p, q in zip((g.x1, g.y1, g.x2, g.y2), (w.x1, w.y1, w.x2, w.y2), strict=True))
        for g, w in zip(got, want, strict=True)
    )


def assert_exactly(dataset: Path, before: dict, before_files: dict, reviews: dict, present: set, tol: float) -> None:
    """The edited frames present in the source changed (model boxes kept), the others only got ``reviewed``."""
    changed = set(reviews) & present
    after = journal(dataset)
    assert set(after) == set(before)
    for name, rec in after.items():
        old = before[name]
        assert rec.reviewed == (name in present or old.reviewed), name
        if name in changed:
            assert close(rec.boxes, reviews[name], tol), (name, rec.boxes, reviews[name])
            assert rec.model_boxes == old.boxes, name  # the model's boxes, confidences and all
        else:
            assert (rec.boxes, rec.model_boxes) == (old.boxes, old.model_boxes), name
    files = dataset_files(dataset)
    differ = {k for k in files.keys() | before_files.keys() if files.get(k) != before_files.get(k)}
    frame_files = {f"labels/{n}.txt" for n in changed} | {f"annotations/{n}.xml" for n in changed}
    assert frame_files <= differ
    # (and the digests of the COCO files it wrote, so a later hand edit of them is told from its own)
    assert differ - frame_files <= {"detections.jsonl", "coco_train.json", "coco_val.json", DERIVED}, differ
    for split in ("train", "val"):  # COCO: the frames not reviewed keep their annotations, ids and scores
        old, new = (json.loads(f[f"coco_{split}.json"]) for f in (before_files, files))
        images = {i["id"]: Path(i["file_name"]).stem for i in new["images"]}
        untouched = [[a for a in body["annotations"] if images[a["image_id"]] not in present] for body in (old, new)]
        assert untouched[0] == untouched[1]


@pytest.mark.parametrize("named", [True, False], ids=["from", "detected"])
@pytest.mark.parametrize(("fmt", "variant"), VARIANTS, ids=[f"{f}-{v}" for f, v in VARIANTS])
def test_an_import_changes_exactly_the_edited_frames(base, tmp_path, fmt, variant, named):
    dataset = copy_dataset(base, tmp_path)
    before, before_files = journal(dataset), dataset_files(dataset)
    reviews = expected_reviews(before)
    source, present = REVIEW[fmt](copy_export(base, tmp_path, fmt), variant, reviews, {ABSENT})
    assert ABSENT not in present and set(reviews) & present
    args = ("--from", fmt) if named else ()
    result = import_cli(source, dataset, *args)
    assert result.exit_code == 0, result.stderr
    changed = set(reviews) & present
    assert f"imported {len(present)} reviewed frames" in result.stdout and f"({fmt}): {len(changed)} changed" in (
        result.stdout
    )
    assert "matched by file name" not in result.stdout  # our exports carry the dataset's id
    assert_exactly(dataset, before, before_files, reviews, present, formats.get(fmt).tolerance(W, H) + 1e-9)
    if fmt == "voc":
        assert NUDGED in present and journal(dataset)[NUDGED].boxes == before[NUDGED].boxes
    done = dataset_files(dataset)
    again = import_cli(source, dataset, *args)  # the same review again: nothing to do
    assert again.exit_code == 0 and "0 changed" in again.stdout, again.stderr
    assert dataset_files(dataset) == done


def write_labels(folder: Path, reviews: dict, ids: dict[int, int] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, boxes in reviews.items():
        boxes = [dataclasses.replace(b, class_id=(ids or {}).get(b.class_id, b.class_id)) for b in boxes]
        (folder / f"{name}.txt").write_text("".join(f"{yolo_line(b, W, H)}\n" for b in boxes))


@pytest.mark.parametrize(("fmt", "folder"), [("yolo", "labels"), ("voc", "annotations")])
def test_hand_edits_a_run_set_aside_are_imported_by_the_command_it_prints(base, tmp_path, monkeypatch, fmt, folder):
    import autolabel.labelers

    monkeypatch.setattr(autolabel.labelers, "create_labeler", lambda *args, **kwargs: FakeLabeler())
    dataset = copy_dataset(base, tmp_path)
    before, before_files = journal(dataset), dataset_files(dataset)
    reviews = expected_reviews(before)
    if fmt == "yolo":  # edited by hand in the dataset itself
        write_labels(dataset / "labels", reviews)
    for name, boxes in reviews.items() if fmt == "voc" else ():
        root = ET.parse(dataset / "annotations" / f"{name}.xml").getroot()
        for obj in root.findall("object"):
            root.remove(obj)
        for b in boxes:
            voc_object(root, b)
        (dataset / "annotations" / f"{name}.xml").write_bytes(ET.tostring(root, encoding="utf-8"))
    flags = ["-i", str(base / "videos"), "-o", str(tmp_path / "dataset"), "--product", "mug", "--frame-rate", "2"]
    ran = runner.invoke(app, ["run", *flags, "--format", "yolo,voc,coco", "--no-report"])
    assert ran.exit_code == 0, ran.stderr
    edited = dataset / ".autolabel" / "edited" / folder
    hint = [line.strip() for line in ran.stdout.splitlines() if line.strip().startswith("autolabel import")]
    assert hint == [f"autolabel import {edited} --dataset {dataset} --from {fmt}"]
    assert sorted(p.stem for p in edited.iterdir()) == sorted(reviews)
    set_aside = dataset_files(dataset)  # the run wrote the frames' files again from the journal
    assert [k for k, v in before_files.items() if set_aside[k] != v] == ["run.yaml"]  # the run's settings, again
    result = runner.invoke(app, shlex.split(hint[0])[1:])
    assert result.exit_code == 0, result.stderr
    assert f"({fmt}): {len(reviews)} changed" in result.stdout and "matched by file name" in result.stdout
    assert_exactly(dataset, before, set_aside, reviews, set(reviews), formats.get(fmt).tolerance(W, H) + 1e-9)


def test_a_labelimg_folder_without_an_id_is_matched_by_file_name(base, tmp_path):
    dataset = copy_dataset(base, tmp_path)
    before, before_files = journal(dataset), dataset_files(dataset)
    reviews = expected_reviews(before)
    accepted = {"clip_000000": [dataclasses.replace(b, confidence=None) for b in before["clip_000000"].boxes]}
    folder = tmp_path / "labelimg"
    (folder.mkdir(), (folder / "classes.txt").write_text("hand\nmug\n"))  # labelImg's own class order
    write_labels(folder, reviews | accepted, ids={0: 1, 1: 0})
    result = import_cli(folder, dataset)
    assert result.exit_code == 0, result.stderr
    assert "matched by file name: 5 frames (the source carries no dataset id)" in result.stdout
    assert_exactly(dataset, before, before_files, reviews, set(reviews) | set(accepted), 1e-4)
    assert journal(dataset)["clip_000000"].boxes == before["clip_000000"].boxes  # accepted: confidences kept


def test_a_coco_file_another_tool_wrote_is_matched_by_file_name(base, tmp_path):
    dataset = copy_dataset(base, tmp_path)
    before, before_files = journal(dataset), dataset_files(dataset)
    reviews = expected_reviews(before)
    source, present = review_coco(copy_export(base, tmp_path, "coco"), "file", reviews, set())
    body = json.loads(source.read_text())
    body["info"] = {"description": "exported by CVAT"}
    moved_out = tmp_path / "elsewhere" / "instances_default.json"  # away from the export's marker
    moved_out.parent.mkdir()
    moved_out.write_text(json.dumps(body))
    result = import_cli(moved_out, dataset)
    assert result.exit_code == 0, result.stderr
    assert "matched by file name" in result.stdout
    assert_exactly(dataset, before, before_files, reviews, present, 1e-6)


# --- identity ------------------------------------------------------------------------------

SOURCE_IN_EXPORT = {
    "label-studio": "label_studio_tasks.json",
    "cvat": "annotations.zip",
    "coco": "annotations/instances_train.json",
    "yolo": ".",
    "voc": "Annotations",
}


def annotated(tasks_file: Path) -> Path:
    """Every task of an export accepted as predicted (a Label Studio review that changes nothing)."""
    tasks = json.loads(tasks_file.read_text())
    for t in tasks:
        t["annotations"] = [{"id": t["id"], "result": t["predictions"][0]["result"]}]
    tasks_file.write_text(json.dumps(tasks))
    return tasks_file


@pytest.mark.parametrize("other", ["cup", "merged"])
@pytest.mark.parametrize("fmt", FIVE)
def test_an_export_of_another_dataset_is_refused_and_nothing_is_written(base, tmp_path, fmt, other):
    dataset = copy_dataset(base, tmp_path)
    source = copy_export(base, tmp_path, fmt, other) / SOURCE_IN_EXPORT[fmt]
    if fmt == "label-studio":
        annotated(source)
    before = dataset_files(dataset)
    line = one_error(import_cli(source, dataset, *(("--from", fmt) if other == "cup" else ())))
    mine, theirs = read_state(dataset)["id"], read_state(base / "dataset" / other)["id"]
    assert f"holds frames of another dataset (id {theirs}; {dataset} is {mine})" in line
    assert "Nothing was written" in line
    assert dataset_files(dataset) == before


def test_an_import_into_a_merged_dataset_goes_to_its_products_and_merges_again(base, tmp_path):
    shutil.copytree(base / "dataset", tmp_path / "dataset")
    root = tmp_path / "dataset"
    merged = journal(root / "merged")
    edits = {"mug__clip_000002": EDITS["clip_000002"], "cup__clip_000004": EDITS["clip_000004"]}
    plain = {n: [dataclasses.replace(b, confidence=None) for b in merged[n].boxes] for n in edits}
    reviews = {n: edit(plain[n]) for n, edit in edits.items()}
    source, present = review_coco(copy_export(base, tmp_path, "coco", "merged"), "folder", reviews, set())
    result = import_cli(source, root / "merged")
    assert result.exit_code == 0, result.stderr
    assert "(products cup, mug, merged again)" in result.stdout and "2 changed" in result.stdout
    for product, frame in (("mug", "clip_000002"), ("cup", "clip_000004")):
        records = journal(root / product)
        assert {n for n, r in records.items() if r.reviewed} == {
            n.split("__")[1] for n in present if n.startswith(f"{product}__")
        }
        assert len(records[frame].boxes) == len(reviews[f"{product}__{frame}"])
        assert records[frame].model_boxes == journal(base / "dataset" / product)[frame].boxes
    again = journal(root / "merged")
    assert {n for n, r in again.items() if r.reviewed} == present
    assert close(again["mug__clip_000002"].boxes, reviews["mug__clip_000002"], 1e-6)


# --- a kill in the middle ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_an_import_killed_anywhere_ends_byte_identical_after_a_rerun(base, tmp_path, fmt):
    source, _ = REVIEW[fmt](
        copy_export(base, tmp_path, fmt), "folder", expected_reviews(journal(base / "dataset" / "mug")), {ABSENT}
    )
    clean = copy_dataset(base, tmp_path / "clean")
    done = crash_cli(tmp_path, "import", str(source), "--dataset", str(clean), "-q", count=tmp_path / "points")
    assert done.returncode == 0, done.stderr
    expected, points = dataset_files(clean), int((tmp_path / "points").read_text())
    assert points >= 6
    for crash_at in sorted({1, points // 3, 2 * points // 3, points}):
        work = copy_dataset(base, tmp_path / f"killed-{crash_at}")
        died = crash_cli(tmp_path, "import", str(source), "--dataset", str(work), "-q", crash_at=crash_at)
        assert died.returncode == 137, died.stderr
        again = import_cli(source, work, "-q")
        assert again.exit_code == 0, again.stderr
        assert dataset_files(work) == expected, crash_at
