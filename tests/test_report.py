"""The review report and the Label Studio round trip, on a dataset with planted labels."""

import errno
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from autolabel import report
from autolabel.cli import app
from autolabel.datasets import finalize
from autolabel.datasets.formats import Context
from autolabel.datasets.journal import read_journal
from autolabel.datasets.layout import JOURNAL
from autolabel.datasets.records import Box, FrameRecord
from autolabel.datasets.state import STATE_VERSION
from autolabel.datasets.writer import DatasetWriter
from autolabel.fileio import FolderLock
from autolabel.imports import import_label_studio
from autolabel.report import write_report
from autolabel.review import export_label_studio
from tests.conftest import write_state

CLASSES = ["<script>alert(1)</script>", "cup & saucer"]
W, H = 200, 100


def planted() -> list[FrameRecord]:
    def r(i, *boxes):
        return FrameRecord(f"clip_{i:06d}", "clip", i, i / 10, W, H, list(boxes))

    normal = [r(i, Box(0, 50, 30, 80, 60, 0.9), Box(1, 100, 20, 140, 70, 0.8)) for i in range(10, 16)]
    return [
        r(0),  # no boxes
        r(1, Box(0, 50, 30, 80, 60, 0.36)),  # low confidence
        r(2, *[Box(1, 10 + 20 * k, 20, 25 + 20 * k, 40, 0.9) for k in range(6)]),  # many boxes
        r(3, Box(0, 0, 30, 30, 60, 0.9)),  # at the left border
        r(4, Box(0, 10, 5, 190, 95, 0.95)),  # class 0 far above its usual size (30x30)
        *normal,
    ]


def make_dataset(root: Path, coco: bool = False, formats: tuple[str, ...] = ("yolo", "voc")) -> Path:
    records = planted()
    formats = [*formats, "coco"] if coco else list(formats)
    with DatasetWriter(root, CLASSES, formats) as writer:
        for rec in records:
            image = np.full((H, W, 3), 60 + rec.index * 10 % 190, np.uint8)
            writer.add(rec, image=image)
    for rec in records:
        rec.split = "val" if rec.index in (13, 14) else "train"
    finalize.write_dataset(root, records, Context(CLASSES), formats)
    state = {"kind": "product", "version": STATE_VERSION, "product": "planted <b>", "classes": CLASSES}
    write_state(root, state | {"complete": True, "formats": formats})
    return root


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.flags, self.rows, self.data = {}, [], None
        self._flag = None
        self._in_data = False
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "details" and a.get("id", "").startswith("flag-"):
            self._flag = a["id"][5:]
            self.flags[self._flag] = []
        if tag == "a" and "data-frame" in a and self._flag:
            self.flags[self._flag].append(a["data-frame"])
        if tag == "script" and a.get("id") == "data":
            self._in_data = True
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "details":
            self._flag = None
        if tag == "script":
            self._in_data = False
        if tag == "td":
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._in_data:
            self.data = json.loads(data)
        if self._cell is not None:
            self._cell.append(data)


def test_report_counts_and_flags_match_the_planted_labels(tmp_path):
    root = make_dataset(tmp_path / "ds")
    result = write_report(root)
    page = Page()
    page.feed(result.path.read_text())
    assert page.flags == {
        "no_boxes": ["clip_000000"],
        "low_confidence": ["clip_000001"],
        "many_boxes": ["clip_000002"],
        "at_border": ["clip_000003"],
        "odd_size": ["clip_000004"],
        "flicker": ["clip_000002"],  # class 1 between two frames of class 0
        "missing_image": [],
    }
    class_rows = [row for row in page.rows if len(row) == 2]
    assert class_rows == [["<script>alert(1)</script>", "9"], ["cup & saucer", "12"]]
    assert page.data["classes"] == CLASSES and len(page.data["frames"]) == 11
    assert result.thumbnails_made == 11 and len(list((root / "report" / "thumbs").iterdir())) == 11
    html = result.path.read_text()
    assert "<script>alert(1)</script>" not in html and "planted &lt;b&gt;" in html
    assert "planted <b>" not in html  # the product name is escaped in the title and the header alike
    # Up-to-date thumbnails are reused.
    assert write_report(root).thumbnails_made == 0


def test_report_cli_and_run_integration(tmp_path):
    root = make_dataset(tmp_path / "ds")
    result = CliRunner().invoke(app, ["report", str(root), "-q"])
    assert result.exit_code == 0, result.stderr
    assert "facts: no_boxes 1, low_confidence 1, many_boxes 1, at_border 1, odd_size 1" in result.stdout
    assert "first in the review queue: clip_000002 (flicker 1; box jump 1)" in result.stdout
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert bad.exit_code == 1 and "not an autolabel dataset" in bad.stderr


def test_label_studio_round_trip(tmp_path):
    root = make_dataset(tmp_path / "ds")
    result = CliRunner().invoke(app, ["report", str(root), "--export", "label-studio", "-q"])
    assert result.exit_code == 0, result.stderr
    tasks = json.loads((root / "label_studio_tasks.json").read_text())
    config = (root / "label_studio_config.xml").read_text()
    assert '<Label value="&lt;script&gt;alert(1)&lt;/script&gt;"/>' in config
    assert '<Label value="cup &amp; saucer"/>' in config
    assert len(tasks) == 11 and tasks[1]["data"] == {
        "image": "/data/local-files/?d=ds/images/clip_000001.jpg",
        "frame": "clip_000001",
    }
    # A reviewer: deletes the low-confidence box, relabels frame 3's box, accepts frame 10 as is.
    export = []
    for t in tasks:
        result_items = json.loads(json.dumps(t["predictions"][0]["result"]))
        if t["data"]["frame"] == "clip_000001":
            result_items = []
        elif t["data"]["frame"] == "clip_000003":
            result_items[0]["value"]["rectanglelabels"] = ["cup & saucer"]
        elif t["data"]["frame"] != "clip_000010":
            continue
        export.append({**t, "annotations": [{"result": result_items, "was_cancelled": False}]})
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    result = CliRunner().invoke(app, ["import", str(path), "--dataset", str(root)])
    assert result.exit_code == 0, result.stderr
    assert "imported 3 reviewed frames" in result.stdout and "2 changed, boxes 4 -> 3" in result.stdout
    assert (root / "labels" / "clip_000001.txt").read_text() == ""
    assert (root / "labels" / "clip_000003.txt").read_text().startswith("1 0.075000 0.450000 0.150000 0.300000")
    journal = {r.name: r for r in read_journal(root)}
    assert journal["clip_000003"].boxes[0].class_id == 1 and journal["clip_000003"].boxes[0].confidence is None
    assert journal["clip_000010"].boxes[0].confidence == 0.9  # unchanged frames keep their confidences

    export[0]["annotations"][0]["result"] = [
        {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": ["dog"]}}
    ]
    path.write_text(json.dumps(export))
    result = CliRunner().invoke(app, ["import", str(path), "--dataset", str(root)])
    assert result.exit_code == 1 and "label ['dog'] is not one of the dataset's classes" in result.stderr


def thumbs(root: Path) -> set[str]:
    return {p.name for p in (root / "report" / "thumbs").iterdir()}


def page_of(root: Path) -> Page:
    page = Page()
    page.feed((root / "report.html").read_text())
    return page


def test_an_import_redraws_exactly_the_thumbnails_whose_boxes_changed(tmp_path):
    root = make_dataset(tmp_path / "ds")
    write_report(root)
    before = thumbs(root)
    export_label_studio(root)
    tasks = {t["data"]["frame"]: t for t in json.loads((root / "label_studio_tasks.json").read_text())}
    result_3 = tasks["clip_000003"]["predictions"][0]["result"]
    result_3[0]["value"]["rectanglelabels"] = [CLASSES[1]]
    reviews = {
        "clip_000001": [],
        "clip_000003": result_3,
        "clip_000010": tasks["clip_000010"]["predictions"][0]["result"],
    }
    export = [{**tasks[n], "annotations": [{"result": r}]} for n, r in reviews.items()]
    (tmp_path / "export.json").write_text(json.dumps(export))
    assert import_label_studio(root, tmp_path / "export.json").frames_changed == 2

    after = thumbs(root)  # the import wrote the report again
    assert write_report(root).thumbnails_made == 0
    assert len(after) == 11
    assert sorted(n.split(".")[0] for n in before - after) == ["clip_000001", "clip_000003"]
    assert sorted(n.split(".")[0] for n in after - before) == ["clip_000001", "clip_000003"]
    assert {f[5] for f in page_of(root).data["frames"]} == after  # the page shows the new ones


def test_thumbnails_of_frames_gone_from_the_journal_are_removed(tmp_path):
    root = make_dataset(tmp_path / "ds")
    write_report(root)
    lines = (root / JOURNAL).read_text().splitlines(keepends=True)
    (root / JOURNAL).write_text("".join(line for line in lines if "clip_000015" not in line))
    assert write_report(root).thumbnails_made == 0
    assert len(thumbs(root)) == 10 and not [n for n in thumbs(root) if n.startswith("clip_000015")]


def test_thumbnails_of_one_pixel_thin_frames(tmp_path):
    root = tmp_path / "thin"
    records = [
        FrameRecord("wide", "wide", 0, 0.0, 4000, 1, [Box(0, 100, 0, 3000, 1, 0.9)]),
        FrameRecord("tall", "tall", 0, 0.0, 1, 4000, [Box(1, 0, 100, 1, 3000, None)]),
    ]
    with DatasetWriter(root, CLASSES, ["yolo"]) as writer:
        for r in records:
            writer.add(r, image=np.full((r.height, r.width, 3), 120, np.uint8))
    write_state(root, {"kind": "product", "version": STATE_VERSION, "classes": CLASSES, "complete": True})
    assert write_report(root).thumbnails_made == 2
    shapes = {n.split(".")[0]: cv2.imread(str(root / "report" / "thumbs" / n)).shape[:2] for n in thumbs(root)}
    assert shapes == {"wide": (1, 256), "tall": (256, 1)}


def test_frames_whose_image_is_missing_or_unreadable_are_listed(tmp_path):
    root = make_dataset(tmp_path / "ds")
    (root / "images" / "clip_000011.jpg").unlink()
    (root / "images" / "clip_000012.jpg").write_bytes(b"not a jpeg")
    result = CliRunner().invoke(app, ["report", str(root), "-q"])
    assert result.exit_code == 0, result.stderr
    assert "missing_image 2" in result.stdout
    page = page_of(root)
    assert page.flags["missing_image"] == ["clip_000011", "clip_000012"]
    missing = [f[0] for f in page.data["frames"] if f[5] is None]
    assert missing == ["clip_000011", "clip_000012"] and len(thumbs(root)) == 9


def test_report_refuses_a_dataset_in_use(tmp_path):
    root = make_dataset(tmp_path / "ds")
    with FolderLock(root, "import"):
        result = CliRunner().invoke(app, ["report", str(root), "-q"])
    assert result.exit_code == 1 and "in use by autolabel import" in result.stderr
    assert not (root / "report.html").exists()


def test_a_full_disk_during_report_is_one_error_line(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(report, "atomic_write_bytes", full)
    result = CliRunner().invoke(app, ["report", str(root), "-q"])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"autolabel: error: {root / 'report' / 'thumbs'}")
    assert "cannot write: No space left on device" in lines[0]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not _chromium(), reason="no Chromium (Debian package chromium) installed")
def test_report_renders_in_headless_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    root = make_dataset(tmp_path / "ds")
    write_report(root)
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((root / "report.html").as_uri())
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        assert page.locator("#grid img.thumb").count() == 11
        assert page.evaluate("Array.from(document.querySelectorAll('#grid img')).every(i => i.naturalWidth > 0)")
        page.select_option("#filter", "at_border")
        assert page.locator("#grid img.thumb").count() == 1
        page.locator("#grid figure").first.click()
        assert page.locator("#modal.open #boxes rect").count() == 1
        assert "<script>alert(1)</script> 0.90" in page.locator("#caption").text_content()
        page.screenshot(path=str(tmp_path / "report.png"))
        browser.close()
    assert errors == []
