"""The format contract: every registered format (the example plug-in's included) writes records and reads them back.

Seeded random records: empty frames, boxes on the image border (0 and the width or height
exactly), whole-frame boxes, sub-pixel boxes (0.05-0.9 px a side), and class names that
XML, YAML and CSV must escape. Each format's files in a dataset (a dataset format) and its
export (``autolabel.export.export_dataset`` on a real dataset folder) are read back with the
format's own reader: the same frames, the same classes, corners within
:meth:`Format.tolerance`. In a segmentation dataset (random masks with parts and holes, boxes
without one, empty ones) an import of what was read back changes nothing.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from autolabel.datasets import finalize, formats
from autolabel.datasets.formats import Annotations, Context, Format, ReadContext
from autolabel.datasets.records import Box, FrameRecord
from autolabel.datasets.state import PRODUCT, State, write_state
from autolabel.datasets.writer import DatasetWriter
from autolabel.errors import InputError
from autolabel.export import export_dataset
from tests.conftest import PLUGIN_FORMATS

# Formats of other plug-ins installed where the tests run, to put them through the contract too (docs/PLUGINS.md).
OTHERS = [n.strip() for n in os.environ.get("AUTOLABEL_CONTRACT_FORMATS", "").split(",") if n.strip()]
NAMES = [*formats.BUILTIN, *PLUGIN_FORMATS, *OTHERS]
# Names an XML, YAML or CSV writer must quote or escape; ':' and a leading '#' are what labelmap.txt cannot hold.
CLASSES = ["mug", 'a <b> & "c"', "- x", "yes", "null", "#tag", "Ünïcode ✓", "a,b", "a:b"]
SIZES = [(96, 64), (50, 30), (1920, 1080), (300, 24)]
SEEDS = range(3)


# The example plug-in registered for the whole module (tests/conftest.py: ``plugin``).
pytestmark = pytest.mark.usefixtures("plugin")


def the_format(name: str, plugin: bool) -> Format:
    if name in PLUGIN_FORMATS and not plugin:
        pytest.skip("the example plug-in could not be installed")
    return formats.get(name)


def random_box(rng: random.Random, cls: int, width: int, height: int) -> Box:
    """A box of one of the kinds formats get wrong: anywhere, on the border, the whole frame, or under a pixel."""
    kind = rng.choice(["any", "border", "whole", "sub-pixel", "sub-pixel border"])
    corners = []
    for side in (width, height):
        if kind == "whole":
            lo, hi = 0.0, float(side)
        elif kind == "sub-pixel":
            size = rng.uniform(0.05, 0.9)
            lo = rng.uniform(0, side - size)
            hi = lo + size
        elif kind == "sub-pixel border":
            size = rng.uniform(0.05, 0.9)
            lo, hi = rng.choice([(0.0, size), (side - size, float(side))])
        else:
            lo = rng.uniform(0, side - 1)
            hi = rng.uniform(lo + 1, side)
            if kind == "border":
                lo, hi = (0.0, hi) if rng.random() < 0.5 else (lo, float(side))
        corners.append((lo, hi))
    (x1, x2), (y1, y2) = corners
    return Box(cls, x1, y1, x2, y2, rng.choice([None, round(rng.random(), 4)]))


def random_records(seed: int, classes: list[str], n: int = 14) -> list[FrameRecord]:
    """``n`` frames of the sizes above (the first two empty), 0-6 boxes each, both splits."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        count = 0 if i < 2 else rng.randint(0, 6)
        boxes = [random_box(rng, rng.randrange(len(classes)), width, height) for _ in range(count)]
        for k, b in enumerate(boxes):  # --track's ids (COCO and MOT carry them)
            b.track_id = 100001 + k
        records.append(FrameRecord(f"clip_{i:06d}", "clip", i, i / 10, width, height, boxes))
    for i, r in enumerate(records):
        r.split = "val" if i % 3 == 1 else "train"
    return records


def random_mask(rng: random.Random, width: int, height: int) -> list[list[float]] | None:
    """Rings of a random blob somewhere in the frame (several parts, holes), as the mask step stores them; or none."""
    import cv2

    from autolabel.masks import geometry

    kind = rng.choice(["blob", "blob", "none", "empty"])
    if kind != "blob":
        return None if kind == "none" else []
    gen = np.random.default_rng(rng.randrange(1 << 30))
    small = (max(2, height // 8), max(2, width // 8))
    noise = cv2.resize(cv2.GaussianBlur(gen.random(small), (0, 0), 1.0), (width, height), cv2.INTER_LINEAR)
    return geometry.round_rings(geometry.mask_to_rings((noise > np.quantile(noise, 0.7)).astype(np.uint8), 1.0))


def with_masks(records: list[FrameRecord], seed: int) -> list[FrameRecord]:
    """The records with a random mask (or none, or an empty one) on every box."""
    rng = random.Random(seed)
    for r in records:
        for b in r.boxes:
            b.mask = random_mask(rng, r.width, r.height)
    return records


def make_dataset(
    root: Path, records: list[FrameRecord], classes: list[str], names: list[str], masks: bool = False
) -> Path:
    """A finished product dataset in ``names`` (and yolo), as a run writes it: images, journal, split, files."""
    splits = {r.name: r.split for r in records}
    with DatasetWriter(root, classes, names, masks=masks) as writer:
        for r in records:
            r.split = None  # as the pipeline journals frames: the split comes at finalize
            writer.add(r, image=np.full((r.height, r.width, 3), 90 + r.index, np.uint8))
    for r in records:
        r.split = splits[r.name]
    finalize.write_dataset(root, records, Context(classes, "contract", "0123456789abcdef", masks), names)
    state = State(PRODUCT, classes=classes, formats=names, complete=True, id="0123456789abcdef", product="contract")
    if masks:
        state.fingerprint = {"masks": {"model": "sam2", "files": {}, "tolerance": 1.0, "min_area": 0}}
    write_state(root, state)
    return root


def read_context(records: list[FrameRecord], classes: list[str]) -> ReadContext:
    return ReadContext(classes, {r.name: (r.width, r.height) for r in records})


def assert_same(read: Annotations, records: list[FrameRecord], fmt: Format) -> None:
    """The same frames; each box's class, and its corners within the format's tolerance, in order."""
    expected = {r.name: r for r in records if r.boxes or fmt.empty_frames}
    assert sorted(read.frames) == sorted(expected)
    for name, boxes in read.frames.items():
        r = expected[name]
        assert [b.class_id for b in boxes] == [b.class_id for b in r.boxes], name
        got = np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], float).reshape(-1, 4)
        want = np.array([[b.x1, b.y1, b.x2, b.y2] for b in r.boxes], float).reshape(-1, 4)
        tolerance = fmt.tolerance(r.width, r.height)
        if fmt.name == "mot":  # the format of tracks: each box keeps its track id
            assert [b.track_id for b in boxes] == [b.track_id for b in r.boxes], name
        error = np.abs(got - want).max(initial=0.0)
        assert error <= tolerance, f"{fmt.name} {name} ({r.width}x{r.height}): off by {error:g} px > {tolerance:g}"
        assert np.isfinite(got).all() and (got[:, 0] <= got[:, 2]).all() and (got[:, 1] <= got[:, 3]).all()
        assert (got >= 0).all() and (got[:, [0, 2]] <= r.width).all() and (got[:, [1, 3]] <= r.height).all()


def accepted(tasks_file: Path, out: Path) -> Path:
    """A Label Studio export in which a reviewer accepted every task as predicted."""
    tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
    for task in tasks:
        (prediction,) = task.pop("predictions")
        task["annotations"] = [{"id": 1, "result": prediction["result"], "was_cancelled": False}]
    out.write_text(json.dumps(tasks), encoding="utf-8")
    return out


def exportable(fmt: Format) -> list[str]:
    """The classes whose files the format can write (those its notes name no problem with)."""
    return [c for c in CLASSES if not fmt.notes(Context([c]))]


def test_the_records_hold_every_case_the_contract_names():
    records = [r for seed in SEEDS for r in random_records(seed, CLASSES)]
    boxes = [(r, b) for r in records for b in r.boxes]
    assert any(not r.boxes for r in records) and {r.split for r in records} == {"train", "val"}
    assert {b.class_id for _, b in boxes} == set(range(len(CLASSES)))
    assert any(b.x1 == 0 for _, b in boxes) and any(b.y1 == 0 for _, b in boxes)
    assert any(b.x2 == r.width for r, b in boxes) and any(b.y2 == r.height for r, b in boxes)
    assert any(b.x2 - b.x1 < 0.9 and b.x2 == r.width for r, b in boxes)  # a sub-pixel box on the border
    assert any(0.05 <= b.x2 - b.x1 < 0.9 and 0.05 <= b.y2 - b.y1 < 0.9 for _, b in boxes)
    assert any(b.confidence is None for _, b in boxes) and any(b.confidence is not None for _, b in boxes)


def test_the_registry_holds_exactly_the_formats_tested(plugin):
    if not plugin:
        pytest.skip("the example plug-in could not be installed")
    untested = sorted(set(formats.names()) - set(NAMES))
    assert not untested, f"formats outside the contract: {untested} (add them to NAMES or AUTOLABEL_CONTRACT_FORMATS)"
    assert sorted(formats.names()) == sorted(NAMES)
    assert all(formats.get(name).readable() for name in NAMES), "every format is read back here"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", NAMES)
def test_dataset_files_read_back(tmp_path, plugin, name, seed):
    fmt = the_format(name, plugin)
    if not fmt.dataset_format:
        pytest.skip(f"{name} is an export only")
    records = random_records(seed, CLASSES)
    root = make_dataset(tmp_path / "ds", records, CLASSES, [name])
    assert fmt.detect(root)
    assert_same(fmt.read(root, read_context(records, CLASSES)), records, fmt)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", NAMES)
def test_export_reads_back(tmp_path, plugin, name, seed):
    fmt = the_format(name, plugin)
    classes = exportable(fmt)
    records = random_records(seed, classes)
    root = make_dataset(tmp_path / "ds", records, classes, ["yolo"])
    out = tmp_path / "export"
    result = export_dataset(root, name, out)
    assert result.frames == len(records) and result.boxes == sum(len(r.boxes) for r in records)
    source = accepted(out / "label_studio_tasks.json", tmp_path / "reviewed.json") if name == "label-studio" else out
    assert fmt.detect(source)
    assert_same(fmt.read(source, read_context(records, classes)), records, fmt)


def assert_same_masks(read: Annotations, records: list[FrameRecord], fmt: Format) -> None:
    """What an import of ``read`` would do to the records: nothing (boxes within tolerance, outlines within a pixel)."""
    from autolabel.masks.review import merge

    for r in records:
        if r.name not in read.frames and not fmt.empty_frames and not r.boxes:
            continue  # MOT lists boxes, not frames
        new = read.frames[r.name]
        tolerance = max(0.01, fmt.tolerance(r.width, r.height))
        assert merge(r.boxes, new, fmt, r.width, r.height, tolerance, 1.0) is None, f"{fmt.name} {r.name}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", NAMES)
def test_masks_read_back_from_dataset_files_and_exports(tmp_path, plugin, name, seed):
    """A segmentation dataset's files and export, read back: every mask (parts, holes, none, empty) as it was."""
    fmt = the_format(name, plugin)
    classes = exportable(fmt)
    records = with_masks(random_records(seed, classes), seed)
    if fmt.dataset_format:
        root = make_dataset(tmp_path / "ds", records, classes, [name], masks=True)
        assert_same_masks(fmt.read(root, read_context(records, classes)), records, fmt)
    root = make_dataset(tmp_path / "ds2", records, classes, ["yolo"], masks=True)
    out = tmp_path / "export"
    export_dataset(root, name, out)
    source = accepted(out / "label_studio_tasks.json", tmp_path / "reviewed.json") if name == "label-studio" else out
    assert_same_masks(fmt.read(source, read_context(records, classes)), records, fmt)


@pytest.mark.parametrize("name", ["mug:red", "#tag"])
def test_a_class_labelmap_cannot_hold_fails_the_voc_export_in_one_line(tmp_path, name):
    records = random_records(0, ["mug", name])
    root = make_dataset(tmp_path / "ds", records, ["mug", name], ["yolo"])
    with pytest.raises(InputError) as refused:
        export_dataset(root, "voc", tmp_path / "voc")
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and f"class {name!r} cannot be written in labelmap.txt" in message
    assert not (tmp_path / "voc").exists()
    export_dataset(root, "coco", tmp_path / "coco")  # the other formats hold it


def test_a_voc_box_under_a_pixel_becomes_the_pixel_around_its_center(tmp_path):
    """Rounded as supervision rounds them, [10.5, 10.55] became pixel 12, read back as [11, 12]: 1.45 px off."""
    from autolabel.datasets.formats.voc import voc_span

    assert voc_span(10.5, 10.55, 96) == (11, 11)  # the pixel [10, 11] holds it
    assert voc_span(10.6, 11.4, 96) == (12, 12)  # its center, 11.0, is in the pixel [11, 12]
    assert voc_span(95.6, 96.0, 96) == (96, 96)  # at the far edge: the last pixel
    assert voc_span(0.0, 0.05, 96) == (1, 1)
    assert voc_span(10.2, 50.6, 96) == (11, 51)  # a box of pixels: supervision's rounding
    record = FrameRecord("clip_000000", "clip", 0, 0.0, 96, 64, [Box(0, 10.5, 3.5, 10.55, 3.9)], split="train")
    root = make_dataset(tmp_path / "ds", [record], ["mug"], ["voc"])
    (box,) = formats.get("voc").read(root, read_context([record], ["mug"])).frames[record.name]
    assert [box.x1, box.y1, box.x2, box.y2] == [10.0, 3.0, 11.0, 4.0]


# --- the example plug-in through the CLI -----------------------------------------------------------------------


def plugin_cli(plugin: bool):
    """A CLI built now (the cached ``autolabel.cli.app`` may predate the plug-in), and a runner for it."""
    from typer.testing import CliRunner

    from autolabel.cli import build_app

    if not plugin:
        pytest.skip("the example plug-in could not be installed")
    return build_app(), CliRunner()


def red_squares_video(path: Path, frames: int = 10) -> list[tuple[int, int, int, int]]:
    """An mp4 of two red squares on gray, one moving 4 px a frame; returns frame 0's squares as x0, y0, x1, y1."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 96))
    for i in range(frames):
        image = np.full((96, 128, 3), 110, np.uint8)
        image[16:32, 8 + 4 * i : 24 + 4 * i] = (0, 0, 255)
        image[56:80, 88:112] = (20, 20, 220)
        writer.write(image)
    writer.release()
    return [(8, 16, 24, 32), (88, 56, 112, 80)]


def test_the_cli_offers_the_plugins(plugin):
    app, runner = plugin_cli(plugin)
    for command, names in (("run", ["example-color", "example-csv"]), ("export", ["example-csv"])):
        shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"}, terminal_width=400)
        assert shown.exit_code == 0, shown.output
        assert all(name in shown.output for name in names), shown.output


def test_the_example_plugin_labels_writes_and_exports(tmp_path, plugin):
    """run --base-model example-color --format yolo,example-csv, then export --to example-csv, then import it back."""
    import csv

    app, runner = plugin_cli(plugin)
    squares = red_squares_video(tmp_path / "videos" / "redbox" / "clip.mp4")
    (tmp_path / "videos" / "redbox" / "ontology.json").write_text('{"red square": "square", "crimson": "square"}')
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "out"), "--base-model", "example-color"]
    done = runner.invoke(app, [*args, "--format", "yolo,example-csv", "--frame-rate", "5", "--no-report", "-q"])
    assert done.exit_code == 0, done.output
    dataset = tmp_path / "out" / "redbox"
    with (dataset / "boxes.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == ["images/clip_000000.jpg"] * 2 + ["images/clip_000005.jpg"] * 2
    assert {r["class"] for r in rows} == {"square"} and {r["score"] for r in rows} == {"1.0000"}
    first = sorted(tuple(round(float(r[k])) for k in ("x0", "y0", "x1", "y1")) for r in rows[:2])
    np.testing.assert_allclose(first, squares, atol=2)  # the video codec blurs the edges a little
    exported = runner.invoke(app, ["export", str(dataset), "--to", "example-csv", "-o", str(tmp_path / "csv"), "-q"])
    assert exported.exit_code == 0, exported.output
    assert sorted(p.name for p in (tmp_path / "csv" / "images").iterdir()) == ["clip_000000.jpg", "clip_000005.jpg"]
    assert (tmp_path / "csv" / "boxes.csv").read_bytes() == (dataset / "boxes.csv").read_bytes()
    imported = runner.invoke(app, ["import", str(tmp_path / "csv" / "boxes.csv"), "-d", str(dataset), "-q"])
    assert imported.exit_code == 0, imported.output  # found by detect(), nothing changed
    assert "example-csv" in imported.output and "0 changed" in imported.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "images/clip_000000.jpg,circle,1,1,5,5,0.5",
            "boxes.csv:2: class 'circle' is not one of the dataset's classes",
        ),
        ("images/other.jpg,mug,1,1,5,5,", "boxes.csv:2: no frame 'other' in the dataset"),
        ("images/clip_000000.jpg,mug,1,1,five,5,", "boxes.csv:2: x1 must be a number, got 'five'"),
        ("images/clip_000000.jpg,mug,1,1,500,5,", "boxes.csv:2: box [1, 1, 500, 5] lies outside the 96x64 image"),
        ("images/clip_000000.jpg,mug,5,1,1,5,", "boxes.csv:2: box [5, 1, 1, 5] has its corners reversed"),
        ("images/clip_000000.jpg,mug,1,1,5,5,1.5", "boxes.csv:2: score must be between 0 and 1"),
        ("images/clip_000000.jpg,mug,1,1,5", "boxes.csv:2: expected 7 fields"),
        ('images/clip_000000.jpg,"mug', "boxes.csv:2: not CSV"),
    ],
)
def test_example_csv_errors_are_one_line_naming_file_and_line(tmp_path, plugin, line, message):
    fmt = the_format("example-csv", plugin)
    path = tmp_path / "boxes.csv"
    path.write_text(f"image,class,x0,y0,x1,y1,score\n{line}\n", encoding="utf-8")
    ctx = ReadContext(["mug"], {"clip_000000": (96, 64)})
    with pytest.raises(InputError) as refused:
        fmt.read(tmp_path, ctx)
    assert len(str(refused.value).splitlines()) == 1 and message in str(refused.value), str(refused.value)
    path.write_text("image,label,x0,y0,x1,y1,score\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"boxes.csv:1: expected the header image,class,x0,y0,x1,y1,score"):
        fmt.read(path, ctx)
