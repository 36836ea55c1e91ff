"""The Label Studio import: checked before anything is written, journal first, crash-safe."""

import copy
import errno
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.datasets import derive, journal
from autolabel.datasets.journal import read_journal
from autolabel.datasets.layout import JOURNAL
from autolabel.fileio import FolderLock
from autolabel.imports import import_label_studio
from autolabel.review import TASKS_FILE, export_label_studio, repair_derived
from tests.test_report import CLASSES, make_dataset


class Killed(BaseException):
    """Stands for the process being killed (nothing catches it)."""


def tasks_of(root: Path) -> list[dict]:
    export_label_studio(root)
    return json.loads((root / TASKS_FILE).read_text())


def reviewed(tasks: list[dict], edits: dict) -> list[dict]:
    """An export in which each frame named in ``edits`` was reviewed: edit(result) -> result."""
    out = []
    for t in tasks:
        edit = edits.get(t["data"]["frame"])
        if edit is not None:
            result = edit(copy.deepcopy(t["predictions"][0]["result"]))
            out.append({**t, "annotations": [{"id": 1, "result": result, "was_cancelled": False}]})
    return out


def shift(result: list[dict]) -> list[dict]:
    for item in result:
        item["value"]["x"] += 1
    return result


# Eight frames change: six moved, one emptied, one relabeled.
EIGHT = {
    **{f"clip_{i:06d}": shift for i in range(10, 16)},
    "clip_000001": lambda result: [],
    "clip_000003": lambda result: [{**result[0], "value": {**result[0]["value"], "rectanglelabels": [CLASSES[1]]}}],
}


def derived_bytes(root: Path) -> dict[str, bytes]:
    """Journal, labels, VOC and COCO: every file an import may touch."""
    files = [root / JOURNAL, *root.glob("coco_*.json"), *(root / "labels").iterdir(), *(root / "annotations").iterdir()]
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(files)}


def write_export(path: Path, export) -> Path:
    path.write_text(json.dumps(export))
    return path


@pytest.mark.parametrize("rerun", ["same export", "empty export"])
def test_import_killed_after_the_journal_is_finished_by_the_next_import(tmp_path, monkeypatch, rerun):
    root = make_dataset(tmp_path / "a" / "ds", coco=True)
    clean = Path(shutil.copytree(root, tmp_path / "b" / "ds"))
    export = write_export(tmp_path / "export.json", reviewed(tasks_of(root), EIGHT))
    assert import_label_studio(clean, export).frames_changed == 8
    expected = derived_bytes(clean)

    real, written = derive.sync_file, set()

    def dies_after_five(root, rel, data, keep_edits):
        frame = Path(rel).stem
        if frame in EIGHT and frame not in written and len(written) == 5:
            raise Killed
        done = real(root, rel, data, keep_edits)
        if done and frame in EIGHT:
            written.add(frame)
        return done

    monkeypatch.setattr(derive, "sync_file", dies_after_five)
    with pytest.raises(Killed):
        import_label_studio(root, export)
    monkeypatch.setattr(derive, "sync_file", real)
    killed = derived_bytes(root)
    assert killed["detections.jsonl"] == expected["detections.jsonl"]  # the journal went first
    stale = sorted(k for k in expected if killed[k] != expected[k])
    assert len(stale) == 2 * 3 + 2  # labels and VOC of the 3 frames not reached, and both COCO files

    again = export if rerun == "same export" else write_export(tmp_path / "empty.json", [])
    result = import_label_studio(root, again)
    assert result.frames_changed == 0
    assert derived_bytes(root) == expected


def test_repair_derived_rewrites_what_disagrees_with_the_journal(tmp_path):
    root = make_dataset(tmp_path / "ds", coco=True)
    assert repair_derived(root) == 0  # a fresh dataset agrees with its journal
    before = derived_bytes(root)
    (root / "labels" / "clip_000004.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "annotations" / "clip_000002.xml").unlink()
    (root / "coco_val.json").write_text("{}")
    assert repair_derived(root) == 3
    assert derived_bytes(root) == before
    assert repair_derived(root) == 0


def test_repair_derived_leaves_formats_the_dataset_does_not_have(tmp_path):
    root = make_dataset(tmp_path / "ds", formats=("yolo",))
    assert not (root / "annotations").exists()
    (root / "labels" / "clip_000004.txt").unlink()
    assert repair_derived(root) == 1
    assert not (root / "annotations").exists() and not list(root.glob("coco_*.json"))


def test_reviewed_frames_stay_marked_and_are_counted(tmp_path):
    root = make_dataset(tmp_path / "ds")
    tasks = tasks_of(root)
    export = write_export(tmp_path / "export.json", reviewed(tasks, {"clip_000001": lambda r: [], "clip_000010": list}))
    result = CliRunner().invoke(app, ["import", str(export), "--dataset", str(root)])
    assert result.exit_code == 0, result.stderr
    assert "1 changed" in result.stdout and "2 of 11 frames now reviewed" in result.stdout
    journal = {r.name: r for r in read_journal(root)}
    assert {n for n, r in journal.items() if r.reviewed} == {"clip_000001", "clip_000010"}
    assert journal["clip_000010"].boxes[0].confidence == 0.9  # accepted as is: boxes and confidences kept

    export = write_export(tmp_path / "export2.json", reviewed(tasks, {"clip_000011": shift}))
    r = import_label_studio(root, export)
    assert (r.frames_reviewed, r.frames_changed, r.reviewed_total, r.frames_total) == (1, 1, 3, 11)
    assert {r.name for r in read_journal(root) if r.reviewed} == {"clip_000001", "clip_000010", "clip_000011"}


def test_boxes_a_hair_outside_the_image_are_clamped(tmp_path):
    root = make_dataset(tmp_path / "ds")

    def edge(result):
        result[0]["value"].update(x=-0.2, y=-0.4, width=100.4, height=100.8)  # -0.4 px .. 200.4 px
        return result

    import_label_studio(root, write_export(tmp_path / "e.json", reviewed(tasks_of(root), {"clip_000001": edge})))
    box = {r.name: r for r in read_journal(root)}["clip_000001"].boxes[0]
    assert (box.x1, box.y1, box.x2, box.y2, box.confidence) == (0.0, 0.0, 200.0, 100.0, None)


def _value(**changes):
    def edit(export):
        export[0]["annotations"][0]["result"][0]["value"].update(changes)

    return edit


def _set(path, value):
    """Sets export[0][path...] (a tuple of keys and indexes) to value."""

    def edit(export):
        target = export[0]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _result(*items):
    return _set(("annotations", 0, "result"), list(items))


def _without(*path):
    def edit(export):
        target = export[0]
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


POLYGON = {"type": "polygonlabels", "value": {"points": [[1, 1], [9, 1], [5, 9]], "polygonlabels": [CLASSES[0]]}}
KEYPOINT = {"type": "keypointlabels", "value": {"x": 5, "y": 5, "width": 1, "keypointlabels": [CLASSES[0]]}}
BRUSH = {"type": "brushlabels", "value": {"format": "rle", "rle": [0, 1], "brushlabels": [CLASSES[0]]}}

BAD = {
    "task not an object": (lambda e: e.__setitem__(0, 5), "task #1: expected a task object, got 5"),
    "data not an object": (_set(("data",), "clip_000010"), 'data: expected an object, got "clip_000010"'),
    "data.frame not a name": (_set(("data", "frame"), 3), "data.frame: expected a frame name, got 3"),
    "unknown frame": (_set(("data", "frame"), "clip_999999"), "frame 'clip_999999' is not in the dataset"),
    "annotations not a list": (_set(("annotations",), {"result": []}), "annotations: expected a list"),
    "annotation not an object": (_set(("annotations", 0), "done"), 'annotations[0]: expected an object, got "done"'),
    "was_cancelled not a boolean": (_set(("annotations", 0, "was_cancelled"), "no"), "was_cancelled: expected true"),
    "result not a list": (_set(("annotations", 0, "result"), {"a": 1}), "result: expected a list of regions"),
    "result missing": (_without("annotations", 0, "result"), "result: expected a list of regions, got null"),
    "region not an object": (_result(3), "result[0]: expected an object, got 3"),
    "type not a string": (_set(("annotations", 0, "result", 0, "type"), 3), "result[0].type: expected a region type"),
    "value not an object": (_set(("annotations", 0, "result", 0, "value"), [1, 2]), "value: expected an object"),
    "value missing": (_without("annotations", 0, "result", 0, "value"), "value: expected an object, got null"),
    "labels an object": (_value(rectanglelabels={CLASSES[1]: 1}), "rectanglelabels: expected a list of class names"),
    "labels not strings": (_value(rectanglelabels=[1]), "rectanglelabels: expected a list of class names, got [1]"),
    "two labels": (_value(rectanglelabels=CLASSES), "is not one of the dataset's classes"),
    "unknown label": (_value(rectanglelabels=["dog"]), "label ['dog'] is not one of the dataset's classes"),
    "x a string": (_value(x="10"), 'value.x: expected a finite number, got "10"'),
    "x a boolean": (_value(x=True), "value.x: expected a finite number, got true"),
    "x null": (_value(x=None), "value.x: expected a finite number, got null"),
    "x missing": (_without("annotations", 0, "result", 0, "value", "x"), "value.x: expected a finite number, got noth"),
    "x NaN": (_value(x=float("nan")), "value.x: expected a finite number, got NaN"),
    "width Infinity": (_value(width=float("inf")), "value.width: expected a finite number, got Infinity"),
    "y -Infinity": (_value(y=float("-inf")), "value.y: expected a finite number, got -Infinity"),
    "height 1e999": (_value(height="HUGE"), "value.height: expected a finite number, got Infinity"),
    "rotation a string": (_value(rotation="5"), 'value.rotation: expected a finite number, got "5"'),
    "rotated": (_value(rotation=30), "rotated boxes are not supported (rotation 30)"),
    "zero width": (_value(width=0), "box of width 0% and height 30%: both must be above 0"),
    "inverted": (_value(height=-10), "box of width 15% and height -10%: both must be above 0"),
    "right of the image": (_value(x=90, width=20), "px lies outside the 200x100 image"),
    "above the image": (_value(y=-1), "box [52.0, -1.0, 82.0, 29.0] px lies outside the 200x100 image"),
    "polygon outside the image": (
        _result({**POLYGON, "value": {**POLYGON["value"], "points": [[1, 1], [200, 1], [5, 9]]}}),
        "value.points: point [200%, 1%] lies outside the image",
    ),
    "keypoints beside a box": (lambda e: e[0]["annotations"][0]["result"].append(KEYPOINT), "holds keypointlabels"),
    "brush": (_result(BRUSH), "holds brushlabels regions"),
    "conflicting tasks": (lambda e: e.append({**copy.deepcopy(e[0]), "id": 99}) or _result()(e), "also reviewed in"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_export_is_one_error_line_naming_the_task_and_changes_nothing(tmp_path, case):
    root = make_dataset(tmp_path / "ds", coco=True)
    tasks = tasks_of(root)
    # A good, changing review first: nothing of it may be written when a later task is bad.
    export = reviewed(tasks, {"clip_000001": lambda r: [], "clip_000010": shift})
    export.reverse()  # the frame the case edits (clip_000010) first, the good change after it
    edit, message = BAD[case]
    edit(export)
    text = json.dumps(export).replace('"HUGE"', "1e999")
    path = tmp_path / "export.json"
    path.write_text(text)
    before = derived_bytes(root)
    result = CliRunner().invoke(app, ["import", str(path), "--dataset", str(root)])
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"autolabel: error: {path}: task "), result.stderr
    assert message in lines[0]
    assert derived_bytes(root) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe[]", "not UTF-8 text"),
        (b'[{"id": 1,', "invalid JSON"),
        (b'{"tasks": []}', "expected Label Studio's JSON export (a list of tasks)"),
        (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    ],
)
def test_an_unreadable_export_is_one_error_line(tmp_path, content, message):
    root = make_dataset(tmp_path / "ds")
    path = tmp_path / "export.json"
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["import", str(path), "--dataset", str(root)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"autolabel: error: {path}") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_import_waits_for_no_one_while_the_dataset_is_in_use(tmp_path):
    root = make_dataset(tmp_path / "ds")
    export = write_export(tmp_path / "e.json", reviewed(tasks_of(root), {"clip_000001": lambda r: []}))
    before = derived_bytes(root)
    with FolderLock(root, "run"):
        result = CliRunner().invoke(app, ["import", str(export), "--dataset", str(root)])
    assert result.exit_code == 1 and "in use by autolabel run" in result.stderr
    assert derived_bytes(root) == before
    assert CliRunner().invoke(app, ["import", str(export), "--dataset", str(root)]).exit_code == 0


def test_a_full_disk_during_import_is_one_error_line(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")
    export = write_export(tmp_path / "e.json", reviewed(tasks_of(root), {"clip_000001": lambda r: []}))

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(journal, "atomic_write_stream", full)
    result = CliRunner().invoke(app, ["import", str(export), "--dataset", str(root)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"autolabel: error: {root / JOURNAL}: cannot write: No space left on device; "
        "free some space and re-run the same command: finished frames are kept"
    ]
