"""Hostile sources for every reader of ``autolabel import``.

Each case spoils one file of an export of the ``mug`` dataset (both made by
tests/test_imports.py's ``build_base``) and must give exit code 1 and exactly one line on
stderr, ``autolabel: error:``, the source and the place in it, with the dataset byte-identical.
A UTF-8 BOM is accepted by every reader.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.datasets.journal import read_journal
from tests.crashpoint import dataset_files
from tests.test_imports import build_base, copy_dataset, copy_export, one_error

runner = CliRunner()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_base(tmp_path_factory.mktemp("hostile"))


F = "clip_000002"  # the frame the cases spoil
HUGE = "1" * 5000  # past Python's 4300-digit limit for int()
GIB = 1 << 30
LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'.encode() for i in range(1, 10))
    + b"]>\n<annotations>&lol9;</annotations>\n"
)


def sparse(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space (a reader must refuse it by its size)."""
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def huge(rel: str, size: int, folder: bool = False):
    """A file of the export replaced by a sparse one of ``size`` bytes; the source is the file (or the export)."""

    def make(export: Path) -> Path:
        path = sparse(export / rel, size)
        return export if folder else path

    return make


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --- Label Studio: every task accepted as predicted, then spoiled -------------------------


def ls(edit=None, text=None):
    def make(export: Path) -> Path:
        tasks = json.loads((export / "label_studio_tasks.json").read_text())
        for t in tasks:
            t["annotations"] = [{"id": t["id"], "result": t["predictions"][0]["result"]}]
        if edit:
            edit(tasks)
        data = json.dumps(tasks, indent=1).replace('"HUGE"', HUGE)
        return write(export / "export.json", text(data) if text else data)

    return make


def ls_value(**changes):
    return ls(lambda tasks: tasks[1]["annotations"][0]["result"][0]["value"].update(changes))


def twice(tasks):
    tasks.append({**json.loads(json.dumps(tasks[1])), "id": 99})
    tasks[-1]["annotations"][0]["result"] = []


def newline_id(tasks):
    tasks[1]["id"] = "2\nsecond line"
    tasks[1]["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["dog"]


LABEL_STUDIO = {
    "invalid JSON": (ls(text=lambda s: s[: len(s) // 2]), "export.json:"),
    "an object, not a list": (ls(text=lambda s: '{"tasks": []}'), "expected Label Studio's JSON export"),
    "UTF-16": (ls(text=lambda s: s.encode("utf-16")), "export.json: not UTF-8 text"),
    "5000-digit integer": (ls_value(x="HUGE"), "export.json:126:13: a number of 5000 digits is too long to read"),
    "NaN": (ls_value(x=float("nan")), "task 2: annotations[0].result[0].value.x: expected a finite number, got NaN"),
    "Infinity": (ls_value(width=float("inf")), "task 2: annotations[0].result[0].value.width: expected a finite"),
    "outside the image": (ls_value(x=95), "task 2: annotations[0].result[0].value: box [91.2, "),
    "zero width": (ls_value(width=0), "task 2: annotations[0].result[0].value: box of width 0% and height"),
    "unknown class": (ls_value(rectanglelabels=["dog"]), "task 2: annotations[0].result[0].value: label ['dog']"),
    "frame listed twice": (ls(twice), "task 99: frame 'clip_000002' was also reviewed in task 2"),
    "frame not in the dataset": (ls(lambda t: t[1]["data"].update(frame="clip_999999")), "task 2: frame 'clip_9999"),
    "task id with a newline": (ls(newline_id), 'task "2\\nsecond line": annotations[0]'),
    "huge file": (huge("export.json", GIB + 1), "export.json: 1073741825 bytes"),
}


# --- CVAT for images 1.1: the annotations.xml in the zip -----------------------------------


def cvat(edit=None, raw=None, box: dict | None = None):
    def make(export: Path) -> Path:
        with zipfile.ZipFile(export / "annotations.zip") as zf:
            data = zf.read("annotations.xml")
        root = ET.fromstring(data)
        if box is not None:
            root.findall("image")[1].find("box").attrib.update(box)
        if edit:
            edit(root)
        data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return zipped(export / "annotations.zip", raw(data) if raw else data)

    return make


def zipped(path: Path, data: bytes, entry: str = "annotations.xml") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(entry, data)
    return path


def truncated(export: Path) -> Path:
    data = (export / "annotations.zip").read_bytes()
    return write(export / "annotations.zip", data[: len(data) // 2])


def polyline(root):
    ET.SubElement(root.findall("image")[1], "polyline", {"label": "mug", "points": "1,1;9,1;5,9"})


def polygon_outside(root):
    ET.SubElement(root.findall("image")[1], "polygon", {"label": "mug", "points": "1,1;900,1;5,9"})


def newline_name(root):
    image = root.findall("image")[1]
    image.set("name", "clip_000002\nsecond line.jpg")


ZIP = "annotations.zip:annotations.xml"
CVAT = {
    "invalid XML": (cvat(raw=lambda d: d[: len(d) // 2]), f"{ZIP}: not a CVAT annotations file (XML: "),
    "truncated zip": (truncated, "annotations.zip: not a valid zip file"),
    "no annotations.xml in the zip": (lambda e: zipped(e / "annotations.zip", b"<a/>", "x.xml"), "no annotations.xml"),
    "wrong root element": (
        cvat(raw=lambda d: b"<foo/>"),
        f"{ZIP}: not a CVAT for images 1.1 file (root element <foo>)",
    ),
    "5000-digit coordinate": (cvat(box={"xtl": HUGE}), f"{ZIP}: image 'clip_000002.jpg', box 1: xtl must be a number"),
    "NaN": (cvat(box={"xtl": "nan"}), "image 'clip_000002.jpg', box 1: xtl must be finite"),
    "Infinity": (cvat(box={"xbr": "inf"}), "image 'clip_000002.jpg', box 1: xbr must be finite"),
    "rotation not a number": (cvat(box={"rotation": "abc"}), "box 1: rotation must be a number, got 'abc'"),
    "rotation NaN": (cvat(box={"rotation": "nan"}), "box 1: rotation must be finite"),
    "rotated": (cvat(box={"rotation": "30"}), "image 'clip_000002.jpg', box 1: rotated boxes are not supported"),
    "outside the image": (cvat(box={"xbr": "200"}), "image 'clip_000002.jpg', box 1: box [9.6, 12.8, 200, 38.4]"),
    "zero width": (cvat(box={"xbr": "9.60"}), "image 'clip_000002.jpg', box 1: box [9.6, 12.8, 9.6, 38.4] has no"),
    "unknown class": (cvat(box={"label": "dog"}), "image 'clip_000002.jpg', box 1: class 'dog' is not one of"),
    "frame listed twice": (cvat(lambda r: r.append(r.findall("image")[1])), "image 'clip_000002.jpg': listed twice"),
    "frame not in the dataset": (cvat(lambda r: r.findall("image")[1].set("name", "clip_999999.jpg")), "no frame"),
    "image name with a newline": (cvat(newline_name), "image 'clip_000002\\nsecond line.jpg': no frame"),
    "polyline": (cvat(polyline), "image 'clip_000002.jpg', polyline 3: polyline shapes cannot be imported"),
    "polygon outside": (cvat(polygon_outside), "image 'clip_000002.jpg', polygon 3: polygon lies outside the image"),
    "billion laughs": (cvat(raw=lambda d: LAUGHS), f"{ZIP}: not a CVAT annotations file (XML: entity declarations"),
    "huge file": (huge("annotations.xml", GIB + 1), "annotations.xml: 1073741825 bytes"),
}


# --- COCO: the train file of the export ----------------------------------------------------


def coco(edit=None, text=None):
    def make(export: Path) -> Path:
        path = export / "annotations" / "instances_train.json"
        body = json.loads(path.read_text())
        if edit:
            edit(body)
        data = json.dumps(body).replace('"HUGE"', HUGE)
        return write(path, text(data) if text else data)

    return make


def bbox(*values):
    return coco(lambda body: body["annotations"][0].__setitem__("bbox", list(values)))


def image(**changes):
    return coco(lambda body: body["images"][0].update(changes))


def same_frame(body):
    body["images"].append({**body["images"][0], "id": 999})


def same_id(body):
    body["images"][1]["id"] = body["images"][0]["id"]


def same_category(body):
    body["categories"][1]["id"] = body["categories"][0]["id"]


IMAGE_0 = "instances_train.json: images[0]"
ANN_0 = "instances_train.json: annotations[0]"
COCO = {
    "invalid JSON": (coco(text=lambda s: s[:-20]), "instances_train.json:1:"),
    "a list, not an object": (coco(text=lambda s: "[]"), "instances_train.json: expected an object, got []"),
    "images not a list": (coco(lambda b: b.update(images={})), "instances_train.json: 'images' must be a list"),
    "UTF-16": (coco(text=lambda s: s.encode("utf-16")), "instances_train.json: not UTF-8 text"),
    "5000-digit integer": (bbox("HUGE", 1, 2, 3), "a number of 5000 digits is too long to read"),
    "NaN": (bbox(float("nan"), 1, 2, 3), f"{ANN_0}.bbox: expected a finite number, got NaN"),
    "Infinity": (bbox(1, 1, float("inf"), 3), f"{ANN_0}.bbox: expected a finite number, got Infinity"),
    "bbox not four numbers": (bbox(1, 2, 3), f"{ANN_0}: bbox: expected [x, y, width, height], got [1, 2, 3]"),
    "image id a float": (image(id=1.5), f"{IMAGE_0}: expected an id, got 1.5"),
    "image id a boolean": (image(id=True), f"{IMAGE_0}: expected an id, got true"),
    "category id a float": (coco(lambda b: b["categories"][0].update(id=1.0)), "categories[0]: expected an id, got"),
    "outside the image": (bbox(60, 10, 40, 10), f"{ANN_0}: box [60, 10, 40, 10] lies outside the 96x64 image"),
    "zero width": (bbox(10, 10, 0, 10), f"{ANN_0}: box of width 0 and height 10: both must be above 0"),
    "unknown class": (coco(lambda b: b["categories"][0].update(name="dog")), f'{ANN_0}: class "dog" is not one of'),
    "unknown category id": (coco(lambda b: b["annotations"][0].update(category_id=7)), f"{ANN_0}: category_id 7"),
    "unknown image id": (coco(lambda b: b["annotations"][0].update(image_id=9999)), f"{ANN_0}: image_id 9999"),
    "frame listed twice": (coco(same_frame), "images[6]: frame 'clip_000000' is listed twice (also "),
    "image id listed twice": (coco(same_id), "images[1]: id 1 is also the id of images[0]"),
    "category id listed twice": (coco(same_category), "categories[1]: id 1 is also the id of categories[0]"),
    "frame not in the dataset": (image(file_name="clip_999999.jpg"), f"{IMAGE_0}: no frame 'clip_999999'"),
    "huge file": (huge("annotations/instances_train.json", GIB + 1), "instances_train.json: 1073741825 bytes"),
}


# --- YOLO: a flat export folder, one label file spoiled -----------------------------------


def yolo(text: str | bytes, name: str = F, where: str = "labels"):
    def make(export: Path) -> Path:
        write(export / where / f"{name}.txt", text)
        return export

    return make


def ultralytics_twice(export: Path) -> Path:
    train, val = (export / "labels" / s for s in ("train", "val"))
    shutil.copy(next(train.glob("*.txt")), val)
    return export


def odd_names(export: Path) -> Path:
    write(export / "data.yaml", "train: images/train\nval: images/val\nnames: {a: mug, 1: hand}\n")
    return export


LINE = f"labels/{F}.txt:1: "
YOLO = {
    "not UTF-8": (yolo(b"0 0.5 0.5 0.2 0.2 \xff\n"), f"labels/{F}.txt: not UTF-8 text"),
    "four fields": (yolo("0 0.5 0.5 0.2\n"), f"{LINE}expected 'class cx cy w h' or a polygon"),
    "class a superscript digit": (yolo("\u00b2 0.5 0.5 0.2 0.2\n"), f"{LINE}class '\u00b2' is not a class id"),
    "class negative": (yolo("-1 0.5 0.5 0.2 0.2\n"), f"{LINE}class '-1' is not a class id"),
    "class 5000 digits": (yolo(f"{HUGE} 0.5 0.5 0.2 0.2\n"), f"{LINE}class '11111111111111111111' is not a class"),
    "class unknown": (yolo("7 0.5 0.5 0.2 0.2\n"), f"{LINE}class id 7 is not one of the dataset's 2 classes"),
    "5000-digit coordinate": (yolo(f"0 {HUGE} 0.5 0.2 0.2\n"), f"{LINE}coordinates must be numbers"),
    "NaN": (yolo("0 nan 0.5 0.2 0.2\n"), f"{LINE}coordinates must be numbers, got 'nan'"),
    "Infinity": (yolo("0 0.5 0.5 inf 0.2\n"), f"{LINE}coordinates must be numbers, got 'inf'"),
    "outside the image": (yolo("0 0.9 0.5 0.4 0.4\n"), f"{LINE}box [67.2, 19.2, 105.6, 44.8] px lies outside"),
    "zero width": (yolo("0 0.5 0.5 0 0.2\n"), f"{LINE}box of width 0 and height 0.2: both must be above 0"),
    "classes.txt names an unknown class": (
        yolo("dog\nhand\n", "classes", "."),
        "labels/clip_000000.txt:1: class id 0 is 'dog', which is not one",
    ),
    "classes.txt not UTF-8": (yolo(b"mug\n\xff\n", "classes", "."), "classes.txt: not UTF-8 text"),
    "frame not in the dataset": (yolo("0 0.5 0.5 0.2 0.2\n", "clip_999999"), "clip_999999.txt: no frame"),
    "huge file": (huge(f"labels/{F}.txt", 16 << 20 | 1, folder=True), f"{F}.txt: 16777217 bytes"),
}
ULTRALYTICS = {
    "frame in train and val": (ultralytics_twice, ".txt: frame 'clip_000000' is also in"),
    "data.yaml names of odd keys": (odd_names, "data.yaml: names: expected a list of class names"),
}


# --- VOC: a devkit folder, one annotation spoiled -----------------------------------------


def voc(edit=None, raw=None, name: str = F):
    def make(export: Path) -> Path:
        path = export / "Annotations" / f"{F}.xml"
        root = ET.parse(path).getroot()
        if edit:
            edit(root)
        data = ET.tostring(root, encoding="utf-8")
        write(export / "Annotations" / f"{name}.xml", raw(data) if raw else data)
        return export

    return make


def corner(**values):
    def edit(root):
        for tag, value in values.items():
            root.find(f"object/bndbox/{tag}").text = value

    return voc(edit)


def without(path: str):
    def edit(root):
        parent, _, tag = path.rpartition("/")
        node = root.find(parent) if parent else root
        node.remove(node.find(tag))

    return voc(edit)


OBJ = f"Annotations/{F}.xml: object 1: "
VOC = {
    "invalid XML": (voc(raw=lambda d: d[:-30]), f"Annotations/{F}.xml: not a VOC annotation (XML: "),
    "wrong root element": (voc(raw=lambda d: b"<foo/>"), "not a VOC annotation (root element <foo>)"),
    "no <name>": (without("object/name"), f"{OBJ}no <name>"),
    "unknown class": (voc(lambda r: setattr(r.find("object/name"), "text", "dog")), f"{OBJ}class 'dog' is not"),
    "no <bndbox>": (without("object/bndbox"), f"{OBJ}no <bndbox>"),
    "5000-digit coordinate": (corner(xmin=HUGE), f"{OBJ}<xmin> must be a number, got '11111111111111111111'"),
    "NaN": (corner(xmin="nan"), f"{OBJ}<xmin> must be finite, got 'nan'"),
    "Infinity": (corner(xmax="inf"), f"{OBJ}<xmax> must be finite, got 'inf'"),
    "outside the image": (corner(xmax="200"), f"{OBJ}box [11, 14, 200, 38] lies outside the image"),
    "zero width": (corner(xmin="11", xmax="10"), f"{OBJ}box [11, 14, 10, 38] has no area"),
    "corners reversed": (corner(xmin="40", xmax="10"), f"{OBJ}box [40, 14, 10, 38] has no area"),
    "frame listed twice": (voc(name="copy"), "copy.xml: frame 'clip_000002' is also annotated in"),
    "frame not in the dataset": (voc(lambda r: setattr(r.find("filename"), "text", "clip_9.jpg")), "no frame 'clip_9'"),
    "billion laughs": (voc(raw=lambda d: LAUGHS.replace(b"annotations", b"annotation")), "entity declarations"),
    "huge file": (huge(f"Annotations/{F}.xml", 16 << 20 | 1, folder=True), f"{F}.xml: 16777217 bytes"),
}

CASES = [
    (fmt, name, make, message)
    for fmt, table in (
        ("label-studio", LABEL_STUDIO),
        ("cvat", CVAT),
        ("coco", COCO),
        ("yolo", YOLO),
        ("ultralytics", ULTRALYTICS),
        ("voc", VOC),
    )
    for name, (make, message) in table.items()
]


@pytest.mark.parametrize(
    ("fmt", "make", "message"), [(f, m, e) for f, _, m, e in CASES], ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_a_hostile_source_is_one_error_line_and_changes_nothing(base, tmp_path, fmt, make, message):
    dataset = copy_dataset(base, tmp_path)
    source = make(copy_export(base, tmp_path, fmt))
    before = dataset_files(dataset)
    result = runner.invoke(app, ["import", str(source), "--dataset", str(dataset), "--from", fmt])
    line = one_error(result)
    assert line.startswith(f"autolabel: error: {source}"), line
    assert message in line, line
    assert dataset_files(dataset) == before


def test_a_huge_entry_in_a_cvat_zip_is_refused_by_its_size(base, tmp_path, monkeypatch):
    from autolabel.datasets.formats import cvat as cvat_format

    monkeypatch.setattr(cvat_format, "MAX_XML_BYTES", 1000)
    dataset = copy_dataset(base, tmp_path)
    source = copy_export(base, tmp_path, "cvat") / "annotations.zip"
    line = one_error(runner.invoke(app, ["import", str(source), "--dataset", str(dataset)]))
    assert f"{source}: annotations.xml is " in line and "bytes unpacked; too large" in line


BOM = b"\xef\xbb\xbf"


def with_bom(fmt: str, export: Path) -> Path:
    """The export, accepted as it is, its files with a UTF-8 BOM (as Windows tools write them)."""
    if fmt == "label-studio":
        path = ls()(export)
        return write(path, BOM + path.read_bytes())
    if fmt == "cvat":
        return cvat(raw=lambda d: BOM + d)(export)
    files = {
        "coco": (export / "annotations").glob("*.json"),
        "yolo": [*(export / "labels").glob("*.txt"), export / "classes.txt"],
        "voc": (export / "Annotations").glob("*.xml"),
    }[fmt]
    for path in list(files):
        write(path, BOM + path.read_bytes())
    return export


@pytest.mark.parametrize("fmt", ["label-studio", "cvat", "coco", "yolo", "voc"])
def test_a_utf8_bom_is_accepted_by_every_reader(base, tmp_path, fmt):
    dataset = copy_dataset(base, tmp_path)
    source = with_bom(fmt, copy_export(base, tmp_path, fmt))
    result = runner.invoke(app, ["import", str(source), "--dataset", str(dataset)])
    assert result.exit_code == 0, result.stderr
    assert f"({fmt}): 0 changed" in result.stdout
    assert all(r.reviewed for r in read_journal(dataset))


def test_huge_ids_that_python_reads_are_ids_like_any_other(base, tmp_path):
    dataset = copy_dataset(base, tmp_path)
    path = copy_export(base, tmp_path, "coco") / "annotations" / "instances_train.json"
    body = json.loads(path.read_text())
    huge = int("9" * 4000)
    first = body["images"][0]["id"]
    body["images"][0]["id"] = huge
    for a in body["annotations"]:
        a["image_id"] = huge if a["image_id"] == first else a["image_id"]
    path.write_text(json.dumps(body))
    result = runner.invoke(app, ["import", str(path), "--dataset", str(dataset)])
    assert result.exit_code == 0, result.stderr
    assert "0 changed" in result.stdout


def test_an_unknown_source_format_is_a_usage_error(base, tmp_path):
    dataset = copy_dataset(base, tmp_path)
    before = dataset_files(dataset)
    source = write(tmp_path / "notes.md", "# nothing to import\n")
    assert "looks like no format; name it with --from" in one_error(
        runner.invoke(app, ["import", str(source), "--dataset", str(dataset)]), code=2
    )
    line = one_error(runner.invoke(app, ["import", str(source), "--dataset", str(dataset), "--from", "pdf"]), 2)
    assert "format 'pdf': choose one of" in line
    assert dataset_files(dataset) == before
