"""Box thresholds changed after labeling: the dataset derived again from its journal, without the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from autolabel.datasets.journal import read_journal
from autolabel.datasets.layout import STATE
from autolabel.pipeline import run
from tests.conftest import make_product, run_config

SCORES = (0.15, 0.3, 0.45, 0.6, 0.85)


class SpreadLabeler:
    """Five boxes per frame, apart, scored 0.15 to 0.85 (shifted by the frame's brightness), classes 0 and 1."""

    batch_size = 4

    def __init__(self) -> None:
        self.frames = 0

    def prepare(self, ontology) -> None:
        pass

    def label(self, images, ontology) -> list[sv.Detections]:
        self.frames += len(images)
        out = []
        for image in images:
            h, w = image.shape[:2]
            shift = float(image[40:, :, 1].mean() % 4) / 100  # frames differ a little
            xyxy = np.array([[w * k / 5, 0, w * (k + 0.8) / 5, h * 0.5] for k in range(5)], np.float32)
            scores = np.array([s + shift for s in SCORES], np.float32)
            out.append(sv.Detections(xyxy=xyxy, class_id=np.array([0, 1, 0, 1, 0]), confidence=scores))
        return out

    def describe(self) -> dict:
        return {"base_model": "spread", "precision": "fp32"}


class NoModel:
    """Stands for a model that must not be needed (its weights file deleted, say)."""

    def __call__(self):
        raise AssertionError("the model was loaded")


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file a user or a later command reads (report and state aside)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".autolabel" not in p.parts and p.name != "run.yaml"
    }


@pytest.fixture
def videos(tmp_path):
    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "a hand": "hand"}, {"a.mp4": 12, "b.mp4": 8})
    return tmp_path


def test_the_journal_keeps_every_box_down_to_keep_threshold_and_the_files_the_thresholded_ones(videos):
    (r,) = run(run_config(videos, **{"model.box_threshold": 0.5}), SpreadLabeler)
    records = list(read_journal(r.output))
    assert records and all(len(rec.model_boxes) == 5 for rec in records)  # 0.15 and up, above keep 0.1
    assert all(all(b.confidence > 0.5 for b in rec.boxes) for rec in records)
    assert all(len(rec.boxes) == 2 for rec in records)  # 0.6+ and 0.85+ (the shift stays under 0.07)
    labels = (r.output / "labels" / f"{records[0].name}.txt").read_text().splitlines()
    assert len(labels) == 2


@pytest.mark.parametrize(
    "change",
    [{"model.box_threshold": 0.55}, {"model.box_threshold": 0.2}, {"model.class_thresholds": {"hand": 0.5}}],
    ids=["raised", "lowered", "per-class"],
)
def test_new_thresholds_rederive_the_dataset_without_the_model_as_a_fresh_run_writes_it(videos, change):
    settings = {"dataset.formats": "yolo,voc,coco"}
    (first,) = run(run_config(videos, **settings), SpreadLabeler)
    assert first.ok
    (again,) = run(run_config(videos, **settings, **change), NoModel())
    assert again.ok and again.new_frames == 0 and not again.repaired, (again.errors, again.repaired)
    assert any("derived again from the journal" in n for n in again.notes)
    (fresh,) = run(run_config(videos, output=str(videos / "fresh"), **settings, **change), SpreadLabeler)
    assert dataset_files(again.output) == dataset_files(fresh.output)
    assert not (again.output / ".autolabel" / "edited").exists()
    state = json.loads((again.output / STATE).read_text())
    assert state["fingerprint"]["model"]["box_threshold"] == change.get("model.box_threshold", 0.35)
    (same,) = run(run_config(videos, **settings, **change), NoModel())  # and it resumes as it is
    assert same.ok and not same.notes


def test_a_threshold_below_what_the_journal_kept_needs_the_model_and_says_so(videos):
    run(run_config(videos), SpreadLabeler)
    (r,) = run(run_config(videos, **{"model.box_threshold": 0.05}), NoModel())
    assert r.output is None and "the journal holds boxes down to 0.1" in r.errors[0]
    assert "the model must label again" in r.errors[0] and "--overwrite" in r.errors[0]
    labeler = SpreadLabeler()
    (r,) = run(run_config(videos, **{"model.box_threshold": 0.05}), lambda: labeler, overwrite=True)
    assert r.ok and labeler.frames == r.frames


def test_reviewed_frames_keep_the_reviewers_boxes_when_thresholds_change(videos):
    from autolabel.imports import import_annotations

    (r,) = run(run_config(videos), SpreadLabeler)
    name = next(read_journal(r.output)).name
    (videos / "edit").mkdir()
    (videos / "edit" / f"{name}.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    import_annotations(r.output, videos / "edit", "yolo")
    (again,) = run(run_config(videos, **{"model.box_threshold": 0.7}), NoModel())
    assert again.ok
    reviewed = {rec.name: rec for rec in read_journal(r.output)}[name]
    assert reviewed.reviewed and [b.class_id for b in reviewed.boxes] == [1]
    assert len(reviewed.model_boxes) == 5  # the model's own, kept beside the review


def test_a_frame_a_filter_left_out_and_the_new_threshold_lets_in_is_labeled_again(videos):
    settings = {"filters.drop_empty": True, "model.box_threshold": 0.95}
    (r,) = run(run_config(videos, **settings), SpreadLabeler)
    assert r.frames == 0 and r.dropped_frames == 10  # every frame empty at 0.95: dropped, no image written
    labeler = SpreadLabeler()
    (again,) = run(run_config(videos, **settings | {"model.box_threshold": 0.5}), lambda: labeler)
    assert again.ok and again.frames == 10 and labeler.frames == 10
    (fresh,) = run(run_config(videos, output=str(videos / "fresh"), **settings | {"model.box_threshold": 0.5}),
                   SpreadLabeler)  # fmt: skip
    assert dataset_files(again.output) == dataset_files(fresh.output)


def test_hand_edits_are_kept_before_new_thresholds_write_the_files_again(videos):
    """Label files edited by hand, in frames the new threshold changes and in frames it leaves: all kept, named."""
    (first,) = run(run_config(videos, **{"model.box_threshold": 0.5}), SpreadLabeler)
    before = {r.name: r.boxes for r in read_journal(first.output)}
    edits = {name: f"0 0.5 0.5 0.1 0.{k % 9 + 1}\n" for k, name in enumerate(before)}
    for name, text in edits.items():
        (first.output / "labels" / f"{name}.txt").write_text(text)
    (again,) = run(run_config(videos, **{"model.box_threshold": 0.618}), NoModel())
    assert again.ok, again.errors
    after = {r.name: r.boxes for r in read_journal(first.output)}
    changed = {name for name in before if before[name] != after[name]}
    assert 0 < len(changed) < len(before)  # 0.6 + a frame's shift: above 0.618 in some frames only
    assert {p for p, differed in again.repaired if differed} == {f"labels/{name}.txt" for name in edits}
    edited = first.output / ".autolabel" / "edited" / "labels"
    assert {p.name: p.read_text() for p in edited.iterdir()} == {f"{n}.txt": t for n, t in edits.items()}
    assert not json.loads((first.output / STATE).read_text()).get("pending")
    (same,) = run(run_config(videos, **{"model.box_threshold": 0.618}), NoModel())
    assert same.ok and not same.repaired
    (fresh,) = run(run_config(videos, output=str(videos / "fresh"), **{"model.box_threshold": 0.618}), SpreadLabeler)
    assert dataset_files(first.output) == dataset_files(fresh.output)
