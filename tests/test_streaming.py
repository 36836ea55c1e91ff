"""A segmentation dataset's outlines are never all in memory (issue 24, item 4): the journal is read and
rewritten as a stream, COCO is written one frame at a time, and the masks a killed mask step had made
are folded into the journal by the next command that opens the dataset.
"""

from __future__ import annotations

import json
import math
import random
import tracemalloc
from pathlib import Path

from autolabel.datasets.dataset import Dataset
from autolabel.datasets.derive import sync_frame_files
from autolabel.datasets.finalize import write_dataset
from autolabel.datasets.formats import written
from autolabel.datasets.formats.coco import coco_files, dumps, write_coco
from autolabel.datasets.journal import append_masks, read_journal, write_journal
from autolabel.datasets.layout import JOURNAL, MASKS_MADE
from autolabel.datasets.records import Box, FrameRecord
from autolabel.datasets.state import PRODUCT, State, write_state
from autolabel.masks import step as mask_step

W, H = 320, 240
CLASSES = ["mug", "hånd <&>"]


def ring(cx: float, cy: float, r: float, points: int, rng: random.Random) -> list[float]:
    """A ragged closed outline of ``points`` points around (cx, cy), as a noisy model's mask traces."""
    out = []
    for k in range(points):
        a = 2 * math.pi * k / points
        radius = r * (0.8 + 0.2 * rng.random())
        out += [round(cx + radius * math.cos(a), 2), round(cy + radius * math.sin(a), 2)]
    return out


def frames(n: int, points: int, seed: int = 0) -> list[FrameRecord]:
    """``n`` frames of two masked boxes (one with a hole, so COCO writes it as RLE), some reviewed, some tracked."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = Box(0, 20.0, 20.0, 120.0, 120.0, 0.9, [ring(70, 70, 48, points, rng)], track_id=1)
        b = Box(1, 150.0, 60.0, 300.0, 220.0, 0.5, [ring(225, 140, 70, points, rng), ring(225, 140, 20, 12, rng)])
        empty = Box(0, 10.0, 200.0, 40.0, 230.0, 0.3, [])
        boxes = [a, b, empty] if i % 3 else [a, b]
        split = "val" if i % 5 == 0 else "train"
        out.append(FrameRecord(f"clip_{i:06d}", "clip", i, i / 10, W, H, boxes, split=split, reviewed=i % 7 == 0))
    return out


def segmented_dataset(root: Path, records: list[FrameRecord]) -> Dataset:
    """A product dataset with masks whose journal holds ``records`` (no images: nothing here reads them)."""
    root.mkdir(parents=True)
    state = State(kind=PRODUCT, classes=list(CLASSES), formats=["yolo", "voc", "coco"], complete=True, id="0f" * 8)
    state.product = "mug"
    state.fingerprint = {"masks": {"model": "sam2", "source": "nowhere", "tolerance": 1.0}}
    write_state(root, state)
    write_journal(root, [FrameRecord(**{**r.__dict__, "split": None}) for r in records])
    return Dataset(root, state)


def test_streamed_coco_is_byte_for_byte_the_whole_file(tmp_path):
    records = frames(12, 40)
    for masks in (False, True):
        whole = coco_files(records, CLASSES, lambda r: r.image, "ab" * 8, masks)
        for split in ("train", "val"):
            path = tmp_path / f"{split}-{masks}.json"
            with path.open("wb") as fh:
                write_coco(fh, records, split, CLASSES, lambda r: r.image, "ab" * 8, masks)
            assert path.read_bytes() == dumps(whole[split])
            assert json.loads(path.read_bytes())["images"]  # both splits hold frames
    empty = tmp_path / "empty.json"
    with empty.open("wb") as fh:
        write_coco(fh, [], "val", CLASSES, lambda r: r.image)
    assert empty.read_bytes() == dumps(coco_files([], CLASSES, lambda r: r.image)["val"])


def finalize_files(root: Path, records: list[FrameRecord]) -> tuple[Dataset, int, list, mask_step.MaskCounts]:
    """What a finalize does to a segmentation dataset's files, under tracemalloc; returns its peak bytes too."""
    ds = segmented_dataset(root, records)
    splits = {r.name: r.split for r in records}
    lean = ds.kept(masks=False)
    for r in lean:
        r.split = splits[r.name]
    assert all(b.mask is None for r in lean for b in r.boxes)
    ctx = ds.context()
    tracemalloc.start()
    try:
        lean[1].boxes[0].x2 -= 5  # one box moved: its mask goes, the other boxes keep theirs
        ds.rewrite_journal(lean, changed={lean[1].name})
        files = sync_frame_files(ds.root, (r for r in ds.records() if r.dropped is None), ctx, written(ds.formats))
        write_dataset(ds.root, ds.kept_frames(lean), ctx, ds.formats)
        counts = mask_step.count(ds.records())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return ds, peak, files, counts


def test_a_segmentation_datasets_files_are_written_without_holding_its_masks(tmp_path):
    """Eight times the frames (and journal), the same peak memory: at most a frame's outlines are held at once."""
    finalize_files(tmp_path / "warm", frames(2, 10))  # what is imported or cached on first use
    few, small, _, _ = finalize_files(tmp_path / "small", frames(25, 500))
    records = frames(200, 500)
    ds, peak, files, counts = finalize_files(tmp_path / "large", records)
    added = (ds.root / JOURNAL).stat().st_size - (few.root / JOURNAL).stat().st_size
    assert added > 2_000_000
    # Holding the records grows the peak by more than the journal grows (a float is 8 bytes of text, 32 held).
    shown = f"peak {small / 1e6:.2f} MB -> {peak / 1e6:.2f} MB for {added / 1e6:.2f} MB more journal"
    assert peak < small + added / 8, shown

    records[1].boxes[0].x2 -= 5
    records[1].boxes[0].mask = None
    assert list(read_journal(ds.root)) == [FrameRecord(**{**r.__dict__, "split": None}) for r in records]
    assert counts.boxes == sum(len(r.boxes) for r in records)
    assert (counts.missing, counts.empty) == (1, sum(1 for r in records if len(r.boxes) == 3))
    assert files and all(not existed for _, existed in files)
    ctx = ds.context()
    for r in records:  # each frame's files as the whole record writes them: YOLO-seg lines, VOC XML and PNGs
        for fmt in written(ds.formats):
            for rel, data in fmt.frame_files(r, ctx).items():
                assert (ds.root / rel).read_bytes() == data, rel
    whole = coco_files(records, CLASSES, lambda r: r.image, ds.state.id, masks=True)
    for split in ("train", "val"):
        assert (ds.root / f"coco_{split}.json").read_bytes() == dumps(whole[split])
    assert (ds.root / "labels" / "clip_000002.txt").read_text().count("\n") == 3


def test_masks_a_killed_step_made_are_folded_into_the_journal_when_the_dataset_is_opened(tmp_path):
    records = frames(9, 30)
    bare = [FrameRecord(**{**r.__dict__, "boxes": [b.bare() for b in r.boxes]}) for r in records]
    ds = segmented_dataset(tmp_path / "ds", bare)
    append_masks(ds.root, records[:4])  # two windows reached the disk, the third was cut short by the kill
    append_masks(ds.root, records[4:6])
    with (ds.root / MASKS_MADE).open("ab") as fh:
        fh.write(json.dumps([[records[6].name, [b.to_list() for b in records[6].boxes]]]).encode()[:50])
    with Dataset.open(ds.root, "run") as opened:
        folded = list(opened.records())
    assert not (ds.root / MASKS_MADE).exists()
    want = [FrameRecord(**{**r.__dict__, "split": None}) for r in records[:6]]
    rest = [FrameRecord(**{**r.__dict__, "split": None, "boxes": [b.bare() for b in r.boxes]}) for r in records[6:]]
    assert folded == want + rest


def test_a_mask_is_folded_only_onto_its_own_box(tmp_path):
    """A box that moved since the masks were made gets none of them (it gets its own next run)."""
    records = frames(3, 30)
    bare = [FrameRecord(**{**r.__dict__, "split": None, "boxes": [b.bare() for b in r.boxes]}) for r in records]
    bare[1].boxes[1].y2 -= 3
    ds = segmented_dataset(tmp_path / "ds", bare)
    append_masks(ds.root, records)
    assert ds.fold_masks() == 3
    out = list(ds.records())
    assert out[1].boxes[1].mask is None and out[1].boxes[0].mask == records[1].boxes[0].mask
    assert out[0].boxes == records[0].boxes


def test_yolo_seg_lines_write_each_coordinate_as_the_per_point_formula():
    """The vectorized line is byte for byte ``f"{min(max(v / side, 0.0), 1.0):.6f}"`` per coordinate (-0.0 too)."""
    from autolabel.datasets.formats.yolo import seg_line

    rng = random.Random(3)
    for k in range(300):
        n = rng.randrange(3, 60)
        ring_ = [round(rng.uniform(-3, W + 3) if i % 2 == 0 else rng.uniform(-3, H + 3), 2) for i in range(2 * n)]
        if k % 3 == 0:
            ring_[0:2] = [-0.0, -0.0]
        box = Box(1, 0.0, 0.0, float(W), float(H), 0.5, [ring_])
        want = " ".join(f"{min(max(v / side, 0.0), 1.0):.6f}" for v, side in zip(ring_, [W, H] * n, strict=True))
        assert seg_line(box, W, H) == f"1 {want}"
