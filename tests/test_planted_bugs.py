"""Guards against named, plausible bugs that, planted one at a time, passed the other test files.

Each test names the bug it guards against and was checked both ways: with the bug planted
in the product code it fails, on the unmodified code it passes. The bugs, one per section:

1. No fsync of a staged file before its rename, or of its folder after it (including
   ``DatasetWriter.commit``, which must flush the frame folders before the journal line).
2. YOLO coordinates not clamped to the image: a box past the edge must be clipped.
3. The train/val split ignoring its seed when there is a single source.
4. A label-changing setting (``model.nms_iou`` and the others) left out of the resume
   fingerprint, so a re-run with another value resumes instead of being refused.
5. The overlap filter's ``<=`` turned into ``<`` (an IoU exactly at the threshold is kept).
6. ``--dedup`` comparing a frame with the previous frame instead of the last kept one.
7. NMS skipped when a labeler batch holds more than one frame.

The product functions each test leans on are imported in one block per module below,
so a move of one of them to another module is a one-line change here.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from autolabel.config import FilterConfig
from autolabel.datasets import formats
from autolabel.datasets.derive import format_writers, sync_dataset_files
from autolabel.datasets.formats import Context
from autolabel.datasets.formats.yolo import yolo_line, yolo_lines
from autolabel.datasets.journal import read_journal
from autolabel.datasets.layout import ANNOTATIONS, IMAGES, JOURNAL, LABELS
from autolabel.datasets.records import Box, FrameRecord
from autolabel.datasets.split import assign_splits
from autolabel.datasets.writer import DatasetWriter
from autolabel.fileio import atomic_write_bytes, atomic_write_text, link_or_copy, publish, stage_bytes
from autolabel.pipeline import run
from autolabel.postprocess import FilterStats, apply_filters
from autolabel.selection import Deduper, thumbnail
from tests.conftest import FakeLabeler, make_product, run_config

W, H = 96, 64  # the frame size of conftest's make_video

# --- helpers ------------------------------------------------------------------------------

Key = tuple[int, int]  # (st_dev, st_ino): a file or folder, whatever its name at the moment


def key(path: Path) -> Key:
    st = os.stat(path)
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class SyncEvent:
    op: str  # "fsync" (recorded once it returned) or "replace" (recorded as it starts)
    key: Key  # the fsynced file or folder; the renamed file (its inode, which the target then has)
    journal_lines: int  # complete journal lines on disk when it happened (0 without a journal)


class SyncLog:
    """Records every ``os.fsync`` and ``os.replace``, in order, each naming its file by inode."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, journal: Path | None = None) -> None:
        self.events: list[SyncEvent] = []
        self.journal = journal
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd) -> None:
            fd = fd if isinstance(fd, int) else fd.fileno()
            st = os.fstat(fd)
            real_fsync(fd)
            self.events.append(SyncEvent("fsync", (st.st_dev, st.st_ino), self._lines()))

        def replace(src, dst, **kwargs) -> None:
            self.events.append(SyncEvent("replace", key(Path(src)), self._lines()))
            real_replace(src, dst, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def _lines(self) -> int:
        try:
            return self.journal.read_bytes().count(b"\n") if self.journal is not None else 0
        except FileNotFoundError:
            return 0

    def ops(self, **names: Path) -> list[tuple[str, str]]:
        """The events in order, each file or folder shown by the name given it here (``?`` for others)."""
        label = {key(path): name for name, path in names.items()}
        return [(e.op, label.get(e.key, "?")) for e in self.events]

    def index(self, op: str, k: Key, start: int = 0, stop: int | None = None, last: bool = False) -> int | None:
        """The first (or last) index in ``[start, stop)`` of ``op`` on ``k``; None when there is none."""
        found = [i for i, e in enumerate(self.events[start:stop], start) if e.op == op and e.key == k]
        return (found[-1] if last else found[0]) if found else None


def assert_files_durable_before_their_journal_lines(log: SyncLog, root: Path, voc: bool) -> int:
    """For each journaled frame: each file fsynced before its rename, its folder fsynced after it, both before
    the journal line is written and fsynced. Returns how many frames were checked."""
    journal = key(root / JOURNAL)
    records = [r for r in read_journal(root) if r.dropped is None]
    assert records
    for line, record in enumerate(read_journal(root), start=1):
        if record.dropped is not None:
            continue
        flushed = next(
            (i for i, e in enumerate(log.events) if e.op == "fsync" and e.key == journal and e.journal_lines >= line),
            None,
        )
        assert flushed is not None, f"journal line {line} ({record.name}) never fsynced"
        files = [
            (root / IMAGES / f"{record.name}.jpg", root / IMAGES),
            (root / LABELS / f"{record.name}.txt", root / LABELS),
        ]
        if voc:
            files.append((root / ANNOTATIONS / f"{record.name}.xml", root / ANNOTATIONS))
        for path, folder in files:
            renamed = log.index("replace", key(path), stop=flushed, last=True)
            assert renamed is not None, f"{path.name}: not renamed into place before its journal line was fsynced"
            assert log.index("fsync", key(path), stop=renamed) is not None, f"{path.name}: renamed before its fsync"
            synced = [
                e
                for e in log.events[renamed + 1 : flushed]
                if e.op == "fsync" and e.key == key(folder) and e.journal_lines < line
            ]
            assert synced, f"{folder.name}/ not fsynced after {path.name} landed and before its journal line"
    return len(records)


class BoxLabeler:
    """A labeler returning the same boxes (``[x1, y1, x2, y2, class_id, confidence]``) on every frame."""

    def __init__(self, boxes: Callable[[int, int], list[tuple[float, float, float, float, int, float]]]) -> None:
        self.boxes = boxes
        self.batch_size = 4
        self.batches: list[int] = []  # frames per call

    def prepare(self, ontology) -> None:
        pass

    def label(self, images: Sequence[np.ndarray], ontology) -> list[sv.Detections]:
        self.batches.append(len(images))
        out = []
        for image in images:
            h, w = image.shape[:2]
            rows = np.array(self.boxes(w, h), np.float64).reshape(-1, 6)
            out.append(
                sv.Detections(
                    xyxy=rows[:, :4].astype(np.float32),
                    class_id=rows[:, 4].astype(int),
                    confidence=rows[:, 5].astype(np.float32),
                )
            )
        return out

    def describe(self) -> dict:
        return {"base_model": "fake"}


def two_class_product(tmp_path: Path, frames: int) -> Path:
    """Product ``mug`` (classes mug, hand) with one 96x64 clip of ``frames`` frames; returns its dataset folder."""
    make_product(tmp_path / "videos", "mug", {"mug": "mug", "hand": "hand"}, {"clip.mp4": frames})
    return tmp_path / "dataset" / "mug"


# --- 1. fsync before the rename, folder fsync after it ------------------------------------------


@pytest.mark.parametrize("write", [atomic_write_bytes, atomic_write_text], ids=["bytes", "text"])
def test_atomic_write_fsyncs_the_file_before_its_rename_and_the_folder_after(tmp_path, monkeypatch, write) -> None:
    """Bug 1: no fsync of the temp file before ``os.replace``, or of the folder after (atomic_write_*)."""
    target = tmp_path / "out" / "file.txt"
    target.parent.mkdir()
    log = SyncLog(monkeypatch)
    write(target, b"payload" if write is atomic_write_bytes else "payload")
    assert target.read_bytes() == b"payload"
    assert log.ops(file=target, folder=target.parent) == [("fsync", "file"), ("replace", "file"), ("fsync", "folder")]


def test_stage_then_publish_fsyncs_the_staged_file_before_the_rename(tmp_path, monkeypatch) -> None:
    """Bug 1: ``stage_bytes`` hands back a file not flushed to disk, which ``publish`` then renames."""
    target = tmp_path / "label.txt"
    log = SyncLog(monkeypatch)
    staged = stage_bytes(target, b"0 0.5 0.5 0.1 0.1\n")
    assert log.ops(staged=staged) == [("fsync", "staged")]  # flushed while staged, before anyone may publish it
    publish(staged, target)
    assert target.read_bytes() == b"0 0.5 0.5 0.1 0.1\n"
    assert log.ops(file=target) == [("fsync", "file"), ("replace", "file")]


def test_link_or_copy_fsyncs_a_copy_before_its_rename_and_the_folder_after(tmp_path, monkeypatch) -> None:
    """Bug 1: the copy branch of ``link_or_copy`` (across file systems) renames an unflushed copy."""
    src = tmp_path / "src.jpg"
    src.write_bytes(b"jpeg bytes")
    dst = tmp_path / "dataset" / "images" / "frame.jpg"

    def no_link(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    log = SyncLog(monkeypatch)
    assert link_or_copy(src, dst) is False
    assert dst.read_bytes() == b"jpeg bytes" and key(dst) != key(src)
    assert log.ops(copy=dst, folder=dst.parent) == [("fsync", "copy"), ("replace", "copy"), ("fsync", "folder")]


def test_link_or_copy_fsyncs_the_folder_after_linking(tmp_path, monkeypatch) -> None:
    """Bug 1: the hard-link branch of ``link_or_copy`` leaves the new name unflushed."""
    src = tmp_path / "src.jpg"
    src.write_bytes(b"jpeg bytes")
    dst = tmp_path / "dataset" / "images" / "frame.jpg"
    log = SyncLog(monkeypatch)
    assert link_or_copy(src, dst) is True
    assert log.ops(link=dst, folder=dst.parent) == [("replace", "link"), ("fsync", "folder")]


def test_dataset_files_fsync_before_the_rename_and_the_folder_after(tmp_path, monkeypatch) -> None:
    """Bug 1: a format's dataset files (COCO's) renamed unflushed, or the folder left unflushed after."""
    log = SyncLog(monkeypatch)
    records = [
        FrameRecord("clip_000000", "clip", 0, 0.0, W, H, [Box(0, 1, 2, 30, 40, 0.9)], split="train"),
        FrameRecord("clip_000002", "clip", 2, 0.2, W, H, [], split="val"),
    ]
    sync_dataset_files(tmp_path, format_writers(records, Context(["mug"]), [formats.get("coco")]))
    ops = log.ops(train=tmp_path / "coco_train.json", val=tmp_path / "coco_val.json", folder=tmp_path)
    assert [op for op in ops if op[1] != "?"] == [  # "?": the digests' note in .autolabel/derived.json
        ("fsync", "train"),
        ("fsync", "val"),
        ("replace", "train"),
        ("replace", "val"),
        ("fsync", "folder"),
    ]


def test_writer_commit_flushes_the_frame_folders_before_the_journal_line(tmp_path, monkeypatch) -> None:
    """Bug 1: ``DatasetWriter.commit`` writes the journal line before (or without) fsyncing the frame folders."""
    root = tmp_path / "dataset"
    writer = DatasetWriter(root, ["mug"], ["yolo", "voc"], jpeg_quality=90)
    log = SyncLog(monkeypatch, journal=root / JOURNAL)
    for i in range(2):
        record = FrameRecord(f"clip_{i:06d}", "clip", i, i / 10, W, H, [Box(0, 5, 5, 40, 30, 0.8)])
        writer.add(record, image=np.full((H, W, 3), 40 * i, np.uint8))
    writer.commit()
    writer.close()
    assert [r.name for r in read_journal(root)] == ["clip_000000", "clip_000001"]
    assert assert_files_durable_before_their_journal_lines(log, root, voc=True) == 2


def test_a_pipeline_run_journals_no_frame_before_its_files_and_folders_are_flushed(tmp_path, monkeypatch) -> None:
    """Bug 1, through ``pipeline.run``: every journal line is fsynced after its frame's files and folders are."""
    out = two_class_product(tmp_path, frames=12)
    log = SyncLog(monkeypatch, journal=out / JOURNAL)
    (r,) = run(run_config(tmp_path, **{"sampling.frame_rate": 1}), FakeLabeler)
    assert r.ok and r.frames == 12
    assert assert_files_durable_before_their_journal_lines(log, out, voc=True) == 12


# --- 2. YOLO coordinates clipped to the image ---------------------------------------------------

# The box [0, 5, 96, 40] on a 96x64 image: x spans the whole width; y's size is made even on the 1e-6 grid.
CLIPPED_LINE = "0 0.500000 0.351562 1.000000 0.546874"


def yolo_edges(line: str) -> list[float]:
    _, cx, cy, w, h = (float(v) for v in line.split())
    return [cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2]


def test_yolo_line_clips_a_box_past_the_image_edge() -> None:
    """Bug 2: a box reaching outside the image is written reaching outside (or dropped) instead of clipped."""
    past = Box(0, -10, 5, W + 7, 40, 0.9)
    assert yolo_line(Box(0, 0, 5, W, 40), W, H) == CLIPPED_LINE
    assert yolo_line(past, W, H) == CLIPPED_LINE
    record = FrameRecord("clip_000000", "clip", 0, 0.0, W, H, [past, Box(1, 20, -3, 50, H + 6, 0.5)])
    lines = yolo_lines(record).splitlines()
    assert lines == [CLIPPED_LINE, yolo_line(Box(1, 20, 0, 50, H), W, H)]
    assert lines[1] == "1 0.364583 0.500000 0.312500 1.000000"
    assert all(0.0 <= edge <= 1.0 for line in lines for edge in yolo_edges(line))


def test_a_pipeline_run_writes_a_box_past_the_edge_clipped_to_the_image(tmp_path) -> None:
    """Bug 2, through ``pipeline.run``: the model's box [-10, 5, W+7, 40] lands clipped in the YOLO label."""
    out = two_class_product(tmp_path, frames=4)
    labeler = BoxLabeler(lambda w, h: [(-10, 5, w + 7, 40, 0, 0.9)])
    (r,) = run(run_config(tmp_path, **{"sampling.frame_rate": 2}), lambda: labeler)
    assert r.ok and r.frames == 2 and r.boxes_per_class == {"mug": 2, "hand": 0}
    for record in read_journal(out):
        text = (out / LABELS / f"{record.name}.txt").read_text()
        assert text == CLIPPED_LINE + "\n"
        assert all(0.0 <= edge <= 1.0 for edge in yolo_edges(text))


# --- 3. the split's seed with a single source ---------------------------------------------------


def one_source(n: int) -> list[FrameRecord]:
    return [FrameRecord(f"clip_{3 * k:06d}", "clip", 3 * k, k / 10, W, H) for k in range(n)]


def val_run(split: dict[str, str]) -> list[str]:
    return sorted(name for name, s in split.items() if s == "val")


def test_split_of_a_single_source_follows_its_seed() -> None:
    """Bug 3: with one source, every seed gives the same validation run."""
    records = one_source(50)
    runs = {seed: val_run(assign_splits(records, 0.2, seed)) for seed in range(8)}
    assert all(len(v) == 10 for v in runs.values())
    for seed, names in runs.items():
        assert val_run(assign_splits(list(reversed(records)), 0.2, seed)) == names  # same seed, same run
        indices = sorted(int(n.split("_")[1]) for n in names)
        assert indices == list(range(indices[0], indices[0] + 30, 3))  # one contiguous run of 10 frames
    starts = {seed: names[0] for seed, names in runs.items()}
    assert len(set(starts.values())) >= 4, f"the val run starts at the same frames whatever the seed: {starts}"


# --- 4. every label-changing setting in the resume fingerprint -----------------------------------

CHANGED_SETTINGS = [
    ("model.text_threshold", 0.3),
    ("model.nms_iou", 0.7),
    ("model.image_size", 640),
    ("model.max_size", 1000),
    ("model.precision", "fp32"),
    ("filters.min_box_size", 0.01),
    ("filters.max_box_size", 0.9),
    ("filters.overlap_iou", 0.8),
    ("filters.drop_empty", True),
    ("filters.drop_multi", True),
    ("dataset.jpeg_quality", 80),  # named "jpeg_quality" in the fingerprint
    ("sampling.frame_rate", 3),
    ("sampling.fps", 5.0),
    ("sampling.dedup", 0.98),
    ("sampling.max_frames", 3),
]


@pytest.mark.parametrize(("setting", "value"), CHANGED_SETTINGS, ids=[s for s, _ in CHANGED_SETTINGS])
def test_a_rerun_with_another_label_setting_is_refused(tmp_path, setting: str, value: object) -> None:
    """Bug 4: a setting that changes labels (e.g. ``model.nms_iou``) missing from the resume fingerprint."""
    out = two_class_product(tmp_path, frames=4)
    (first,) = run(run_config(tmp_path), FakeLabeler)
    assert first.ok and first.frames == 2
    journal = (out / JOURNAL).read_bytes()
    (same,) = run(run_config(tmp_path), FakeLabeler)  # control: the same settings resume
    assert same.ok and same.new_frames == 0
    labeler = FakeLabeler()
    (r,) = run(run_config(tmp_path, **{setting: value}), lambda: labeler)
    assert r.output is None and len(r.errors) == 1, f"a re-run with {setting}={value!r} was not refused: {r.errors}"
    named = setting.removeprefix("dataset.")  # the fingerprint keeps jpeg_quality at its top level
    assert f"{named}: " in r.errors[0] and "--overwrite" in r.errors[0], r.errors[0]
    assert labeler.frames == 0 and (out / JOURNAL).read_bytes() == journal


# --- 5. the overlap filter at exactly its threshold -------------------------------------------

# IoU exactly 0.5 (200 / 400), and 0.51 (204 / 400): the threshold keeps the first pair, not the second.
AT_THRESHOLD = (Box(0, 10, 10, 30, 30, 0.9), Box(1, 10, 10, 30, 20, 0.8))
ABOVE_THRESHOLD = (Box(0, 50, 20, 70, 40, 0.9), Box(1, 50, 20, 70, 30.2, 0.8))


def test_overlap_filter_keeps_boxes_at_exactly_the_threshold() -> None:
    """Bug 5: ``iou <= overlap_iou`` turned into ``<`` (a pair at exactly the threshold loses a box)."""
    record = FrameRecord("clip_000000", "clip", 0, 0.0, W, H, list(AT_THRESHOLD))
    filters = FilterConfig(overlap_iou=0.5)
    stats = FilterStats()
    assert apply_filters(record, filters, stats) is None
    assert record.boxes == list(AT_THRESHOLD) and stats.as_dict() == {}
    above = FrameRecord("clip_000000", "clip", 0, 0.0, W, H, list(ABOVE_THRESHOLD))
    assert apply_filters(above, filters, stats) is None
    assert above.boxes == [ABOVE_THRESHOLD[0]] and stats.as_dict() == {"boxes_overlapping": 1}


def test_a_pipeline_run_with_overlap_iou_keeps_a_pair_at_exactly_the_threshold(tmp_path) -> None:
    """Bug 5, through ``pipeline.run`` with ``filters.overlap_iou`` 0.5."""
    out = two_class_product(tmp_path, frames=4)
    pairs = [*AT_THRESHOLD, *ABOVE_THRESHOLD]
    labeler = BoxLabeler(lambda w, h: [(b.x1, b.y1, b.x2, b.y2, b.class_id, b.confidence) for b in pairs])
    (r,) = run(run_config(tmp_path, **{"filters.overlap_iou": 0.5}), lambda: labeler)
    assert r.ok and r.frames == 2 and r.filtered == {"boxes_overlapping": 2}
    for record in read_journal(out):
        assert record.boxes == [*AT_THRESHOLD, ABOVE_THRESHOLD[0]]
        lines = [yolo_line(b, W, H) for b in record.boxes]
        assert (out / LABELS / f"{record.name}.txt").read_text().splitlines() == lines


# --- 6. --dedup compares with the last kept frame --------------------------------------------

DRIFT_THRESHOLD = 0.93
DRIFT_FRAMES = 16
# One frame in three is kept: each frame is ~0.99 like the one before it, ~0.95 like the one two back and ~0.90
# like the one three back (decoded from mp4v too: every decision clears 0.93 by at least 0.018).
DRIFT_KEPT = [0, 3, 6, 9, 12, 15]


def drifting_frames(n: int) -> list[np.ndarray]:
    """320x240 frames of a blurred block texture panning by one pixel a frame."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(30, 225, (240 // 20, (320 + n) // 20 + 1), dtype=np.uint8)
    wide = cv2.resize(blocks, (blocks.shape[1] * 20, 240), interpolation=cv2.INTER_LINEAR)
    return [cv2.cvtColor(np.ascontiguousarray(wide[:, k : k + 320]), cv2.COLOR_GRAY2BGR) for k in range(n)]


def test_deduper_keeps_a_frame_once_a_slow_drift_leaves_the_last_kept_one() -> None:
    """Bug 6: the Deduper's reference follows every frame checked instead of only the kept ones."""
    d = Deduper(DRIFT_THRESHOLD)
    kept = [i for i, frame in enumerate(drifting_frames(DRIFT_FRAMES)) if d.check(i, thumbnail(frame)) is None]
    assert kept == DRIFT_KEPT
    assert d.reference is not None and d.reference[0] == DRIFT_KEPT[-1]


def test_a_pipeline_run_with_dedup_keeps_frames_along_a_slow_drift(tmp_path) -> None:
    """Bug 6, through ``pipeline.run`` with ``--dedup``: a slow pan keeps one frame every few, not only the first."""
    path = tmp_path / "videos" / "box" / "clip.mp4"
    path.parent.mkdir(parents=True)
    (path.parent / "ontology.json").write_text('{"box": "box"}')
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for frame in drifting_frames(DRIFT_FRAMES):
        writer.write(frame)
    writer.release()
    settings = {"sampling.frame_rate": 1, "sampling.dedup": DRIFT_THRESHOLD}
    (r,) = run(run_config(tmp_path, **settings), FakeLabeler)
    journal = list(read_journal(tmp_path / "dataset" / "box"))
    assert [rec.index for rec in journal if rec.dropped is None] == DRIFT_KEPT
    assert r.ok and r.frames == len(DRIFT_KEPT) and r.duplicate_frames == DRIFT_FRAMES - len(DRIFT_KEPT)


# --- 7. NMS on every frame of a batch ----------------------------------------------------------

# Two mug boxes of IoU 0.82 (NMS at 0.5 keeps the more confident) and a hand box over both (another class: kept).
OVERLAPPING = [(10, 10, 50, 50, 0, 0.9), (12, 12, 52, 52, 0, 0.8), (20, 20, 60, 60, 1, 0.7)]
AFTER_NMS = [Box(0, 10, 10, 50, 50, 0.9), Box(1, 20, 20, 60, 60, 0.7)]


def test_a_pipeline_run_applies_nms_to_every_frame_of_a_batch(tmp_path) -> None:
    """Bug 7: NMS skipped when a labeler batch holds more than one frame."""
    out = two_class_product(tmp_path, frames=10)
    labeler = BoxLabeler(lambda w, h: OVERLAPPING)
    (r,) = run(run_config(tmp_path, **{"sampling.frame_rate": 1}), lambda: labeler)
    assert r.ok and r.frames == 10 and max(labeler.batches) > 1, labeler.batches
    records = list(read_journal(out))
    assert len(records) == 10
    expected = "".join(f"{yolo_line(b, W, H)}\n" for b in AFTER_NMS)
    for record in records:
        assert record.boxes == AFTER_NMS, record.name
        assert (out / LABELS / f"{record.name}.txt").read_text() == expected, record.name
    assert r.boxes_per_class == {"mug": 10, "hand": 10}
