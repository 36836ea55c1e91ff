"""``--track``: a hidden object's frames filled, a one-frame blip dropped, one class and one track id per object."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.config import TrackingConfig
from autolabel.datasets.journal import read_journal
from autolabel.datasets.records import INTERPOLATED, PROBE, Box, FrameRecord
from autolabel.export import export_dataset
from autolabel.merge import merge_datasets
from autolabel.pipeline import run
from autolabel.postprocess import Thresholds
from autolabel.tracking import track_source
from tests.conftest import run_config
from tests.crashpoint import crash_cli, dataset_files

W, H, FRAMES = 96, 64, 30
HIDDEN, BLIP, FLIP = 10, 15, 20


def make_clip(path: Path) -> None:
    """A red square moving right; hidden in frame 10, orange in frame 20, and a red speck beside it in frame 15."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    for i in range(FRAMES):
        img = np.full((H, W, 3), 200, np.uint8)
        x = 4 + 2 * i
        if i != HIDDEN:
            img[20:40, x : x + 20] = (0, 140, 255) if i == FLIP else (0, 0, 255)
        if i == BLIP:
            img[50:60, 80:90] = (0, 0, 255)
        writer.write(img)
    writer.release()


class Blobs:
    """Red blobs are mugs, orange ones hands (by colour), scored 0.9."""

    batch_size = 4

    def prepare(self, ontology) -> None:
        pass

    def describe(self) -> dict:
        return {"base_model": "blobs", "precision": "fp32"}

    def label(self, images, ontology) -> list[sv.Detections]:
        import cv2

        out = []
        for image in images:
            b, g, r = (image[..., k].astype(int) for k in range(3))
            boxes, classes = [], []
            for cls, mask in ((0, (r > 150) & (g < 80) & (b < 80)), (1, (r > 150) & (g >= 80) & (g < 200) & (b < 80))):
                n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
                for k in range(1, n):
                    x, y, w, h, area = stats[k]
                    if area >= 30:
                        boxes.append([x, y, x + w, y + h])
                        classes.append(cls)
            det = sv.Detections(
                xyxy=np.array(boxes, np.float32).reshape(-1, 4),
                class_id=np.array(classes, int),
                confidence=np.full(len(boxes), 0.9, np.float32),
            )
            out.append(det)
        return out


@pytest.fixture
def clip(tmp_path) -> Path:
    make_clip(tmp_path / "videos" / "mug" / "clip.mp4")
    (tmp_path / "videos" / "mug" / "ontology.json").write_text(json.dumps({"red mug": "mug", "hand": "hand"}))
    return tmp_path


def kept(root: Path) -> dict[int, FrameRecord]:
    return {r.index: r for r in read_journal(root) if r.dropped is None}


def test_without_tracking_the_frame_by_frame_errors_stay(clip):
    (r,) = run(run_config(clip, **{"sampling.frame_rate": 1}), Blobs)
    frames = kept(r.output)
    assert frames[HIDDEN].boxes == [] and len(frames[BLIP].boxes) == 2 and frames[FLIP].boxes[0].class_id == 1


@pytest.mark.parametrize("stride", [1, 3])
def test_track_fills_the_hidden_frame_drops_the_blip_and_keeps_one_class_and_id(clip, stride):
    settings = {"sampling.frame_rate": 1, "tracking.enabled": True, "tracking.stride": stride}
    (r,) = run(run_config(clip, **settings, **{"dataset.formats": "yolo,coco"}), Blobs)
    assert r.ok and r.frames == FRAMES
    frames = kept(r.output)
    (filled,) = frames[HIDDEN].boxes
    assert filled.origin == INTERPOLATED and filled.class_id == 0
    before, after = frames[HIDDEN - 1].boxes[0], frames[HIDDEN + 1].boxes[0]
    assert filled.x1 == pytest.approx((before.x1 + after.x1) / 2, abs=1.0)
    assert len(frames[BLIP].boxes) == 1  # the speck's track had one box: dropped
    assert [b.class_id for b in frames[FLIP].boxes] == [0]  # the vote: a mug, as in the 28 frames around it
    ids = {b.track_id for f in frames.values() for b in f.boxes}
    assert len(ids) == 1 and next(iter(ids)) > 0
    coco = json.loads((r.output / "coco_train.json").read_text())
    assert {a["attributes"]["track_id"] for a in coco["annotations"]} == ids
    out = export_dataset(r.output, "mot", clip / "mot").output
    rows = (out / "clip" / "gt" / "gt.txt").read_text().splitlines()
    assert len(rows) == FRAMES and {row.split(",")[1] for row in rows} == {str(next(iter(ids)))}
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, FRAMES + 1))  # video frame index + 1
    assert "seqLength = 30" in (out / "clip" / "seqinfo.ini").read_text()


def test_only_kept_frames_are_written_and_probes_are_journaled(clip):
    settings = {"sampling.frame_rate": 10, "tracking.enabled": True, "tracking.stride": 2}
    (r,) = run(run_config(clip, **settings), Blobs)
    journal = list(read_journal(r.output))
    assert sorted(x.index for x in journal if x.dropped is None) == [0, 10, 20]
    assert sorted(x.index for x in journal if x.dropped == PROBE) == [i for i in range(0, FRAMES, 2) if i % 10]
    assert sorted(p.name for p in (r.output / "images").iterdir()) == ["clip_000000.jpg", "clip_000010.jpg",
                                                                          "clip_000020.jpg"]  # fmt: skip
    (filled,) = kept(r.output)[HIDDEN].boxes  # a kept frame filled from the probes around it
    assert filled.origin == INTERPOLATED


def test_tracking_settings_are_part_of_the_fingerprint(clip):
    settings = {"sampling.frame_rate": 5, "tracking.enabled": True}
    run(run_config(clip, **settings), Blobs)
    (r,) = run(run_config(clip, **settings, **{"tracking.max_gap": 3}), Blobs)
    assert r.output is None and "tracking.max_gap: 10 -> 3" in r.errors[0]
    (r,) = run(run_config(clip, **{"sampling.frame_rate": 5}), Blobs)
    assert r.output is None and "tracking" in r.errors[0]


def test_a_reviewed_frame_keeps_its_boxes_when_tracks_change(clip):
    from autolabel.imports import import_annotations

    settings = {"sampling.frame_rate": 1, "tracking.enabled": True}
    (r,) = run(run_config(clip, **settings), Blobs)
    (clip / "edit").mkdir()
    (clip / "edit" / f"clip_{HIDDEN:06d}.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    import_annotations(r.output, clip / "edit", "yolo")
    (again,) = run(run_config(clip, **settings | {"model.box_threshold": 0.5}), Blobs)  # re-tracked
    assert again.ok
    frame = kept(r.output)[HIDDEN]
    assert frame.reviewed and [b.class_id for b in frame.boxes] == [1]


def test_merge_keeps_track_ids_unique(clip):
    make_clip(clip / "videos" / "cup" / "clip.mp4")
    (clip / "videos" / "cup" / "ontology.json").write_text(json.dumps({"red cup": "cup", "hand": "hand"}))
    settings = {"sampling.frame_rate": 5, "tracking.enabled": True}
    results = run(run_config(clip, **settings), Blobs)
    per_product = [{b.track_id for f in kept(r.output).values() for b in f.boxes} for r in results]
    assert per_product[0] == per_product[1]  # each product numbers its own
    merged = merge_datasets([r.output for r in results], clip / "merged").output
    ids = {b.track_id for f in read_journal(merged) for b in f.boxes}
    assert len(ids) == 2


def test_track_source_on_records():
    def frame(i, *boxes, probe=False):
        r = FrameRecord(f"a_{i:06d}", "a", i, i / 30, W, H, list(boxes))
        r.dropped = PROBE if probe else None
        return r

    def box(i, cls=0, score=0.9):
        return Box(cls, 2.0 * i, 10, 2.0 * i + 20, 30, score)

    frames = [frame(i, box(i, 1 if i == 6 else 0)) if i not in (4, 5) else frame(i) for i in range(12)]
    frames[8].boxes.append(Box(0, 70, 40, 80, 50, 0.95))  # a blip
    tracked = track_source(frames, TrackingConfig(True, 1, 10, 3), Thresholds(0.35), block=7)
    assert [len(tracked[f.name]) for f in frames] == [1] * 12
    assert tracked["a_000004"][0].origin == INTERPOLATED and tracked["a_000006"][0].class_id == 0
    assert {b.track_id for boxes in tracked.values() for b in boxes} == {700001}
    weak = [frame(i, box(i, score=0.2)) for i in range(12)]  # never above the threshold: background
    assert all(not boxes for boxes in track_source(weak, TrackingConfig(True, 1, 10, 3), Thresholds(0.35), 1).values())


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.85, 0.92, 0.97, 0.995])
def test_a_killed_tracked_run_resumes_byte_identical(tmp_path, fraction):
    from tests.conftest import make_product

    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {"a.mp4": 40, "b.mp4": 25})
    args = ("run", "-i", "../videos", "-o", "dataset", "--frame-rate", "4", "--track", "--track-stride", "2")
    args += ("--format", "yolo,voc,coco", "--no-report", "-q")
    (tmp_path / "clean").mkdir()
    done = crash_cli(tmp_path / "clean", *args, count=tmp_path / "points")
    assert done.returncode == 0, done.stderr
    expected = dataset_files(tmp_path / "clean" / "dataset")
    points = int((tmp_path / "points").read_text())
    work = tmp_path / "trial"
    work.mkdir()
    crash_cli(work, *args, crash_at=max(1, round(points * fraction)))
    again = crash_cli(work, *args)
    assert again.returncode == 0, again.stderr
    assert dataset_files(work / "dataset") == expected


def test_track_flags_need_track():
    result = CliRunner().invoke(app, ["run", "--track-stride", "2"])
    assert result.exit_code == 2 and "--track-stride applies with --track only" in result.stderr


def test_the_report_shows_track_ids_and_a_tracks_frames(clip):
    from autolabel.report import write_report

    (r,) = run(run_config(clip, **{"sampling.frame_rate": 5, "tracking.enabled": True}), Blobs)
    page = write_report(r.output).path.read_text()
    track = next(b.track_id for f in kept(r.output).values() for b in f.boxes)
    assert f",{track}]" in page  # each box of the page's data carries its track id
    assert 'id="track"' in page  # the input that shows one track's frames


@pytest.mark.parametrize(
    "selection", [{"sampling.dedup": 0.99}, {"sampling.max_frames": 4}], ids=["dedup", "max-frames"]
)
def test_tracking_with_frames_chosen_by_comparing_them(clip, selection):
    settings = {"sampling.frame_rate": 2, "tracking.enabled": True, "tracking.stride": 3, **selection}
    labeler = Blobs()
    (r,) = run(run_config(clip, **settings), lambda: labeler)
    assert r.ok and r.new_probes > 0
    journal = list(read_journal(r.output))
    kept_frames = [x for x in journal if x.dropped is None]
    if "sampling.max_frames" in selection:
        assert len(kept_frames) == 4
    assert all(x.index % 2 == 0 for x in kept_frames)  # kept frames come from the sampling, probes from the grid
    assert {x.index for x in journal if x.dropped == PROBE} <= set(range(0, FRAMES, 3))
    (again,) = run(run_config(clip, **settings), lambda: labeler)
    assert again.ok and again.new_frames == 0 and again.new_probes == 0 and not again.repaired


def test_a_still_image_keeps_its_boxes_under_track(clip):
    from tests.conftest import make_image

    make_image(clip / "videos" / "mug" / "still.jpg", size=(96, 64))
    (r,) = run(run_config(clip, **{"sampling.frame_rate": 5, "tracking.enabled": True}), Blobs)
    still = next(x for x in read_journal(r.output) if x.source == "still")
    assert [b.class_id for b in still.boxes] == [0] and still.boxes[0].track_id is None


def test_a_killed_re_derivation_is_finished_not_taken_for_hand_edits_when_tracks_change(clip):
    """A re-derivation killed after its journal (state ``pending``) leaves files behind the journal: a
    tracked run finishes them from the journal, even when re-tracking changes frames of its own."""
    import dataclasses

    from autolabel.datasets.journal import write_journal
    from tests.conftest import read_state, write_state

    settings = {"sampling.frame_rate": 5, "tracking.enabled": True}
    (r,) = run(run_config(clip, **settings), Blobs)
    expected = {p.name: p.read_bytes() for p in (r.output / "labels").iterdir()}
    journal = list(read_journal(r.output))
    first = next(x for x in journal if x.dropped is None and x.boxes)
    first.boxes = [dataclasses.replace(b, track_id=None) for b in first.boxes]  # re-tracking gives it back
    write_journal(r.output, journal)
    other = next(x for x in journal if x.dropped is None and x.boxes and x is not first)
    stale = r.output / "labels" / f"{other.name}.txt"
    stale.write_text("")  # the file the killed re-derivation had not written yet
    write_state(r.output, read_state(r.output) | {"pending": True})
    (again,) = run(run_config(clip, **settings), Blobs)
    assert again.ok and again.tracked == 1 and again.repaired == []
    assert not (r.output / ".autolabel" / "edited").exists()
    assert {p.name: p.read_bytes() for p in (r.output / "labels").iterdir()} == expected
    assert read_state(r.output)["pending"] is False
