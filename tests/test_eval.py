"""``autolabel eval``: exact counts on a dataset with known edits; thresholds fitted and applied without the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import yaml
from typer.testing import CliRunner

from autolabel.calibrate import choose, fit_thresholds
from autolabel.cli import app
from autolabel.datasets.formats.yolo import yolo_line
from autolabel.datasets.journal import read_journal
from autolabel.datasets.records import Box, FrameRecord
from autolabel.evaluate import evaluate, evaluate_dataset, match
from autolabel.pipeline import run
from autolabel.postprocess import Thresholds
from tests.conftest import make_product, run_config

W, H = 96, 64
A = (5.0, 5.0, 35.0, 35.0)  # class 0, score 0.9
B = (50.0, 5.0, 90.0, 40.0)  # class 1, score 0.8
C = (10.0, 40.0, 40.0, 62.0)  # class 0, score 0.2: below the 0.35 threshold, kept in the journal


class ThreeBoxes:
    """The same three boxes on every frame."""

    batch_size = 4

    def prepare(self, ontology) -> None:
        pass

    def label(self, images, ontology) -> list[sv.Detections]:
        xyxy = np.array([A, B, C], np.float32)
        det = sv.Detections(xyxy=xyxy, class_id=np.array([0, 1, 0]), confidence=np.array([0.9, 0.8, 0.2], np.float32))
        return [det for _ in images]

    def describe(self) -> dict:
        return {"base_model": "three", "precision": "fp32"}


def write_review(folder: Path, name: str, boxes: list[tuple[int, tuple[float, ...]]]) -> None:
    folder.mkdir(exist_ok=True)
    lines = [yolo_line(Box(c, *xyxy), W, H) for c, xyxy in boxes]
    (folder / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture
def reviewed(tmp_path):
    """A dataset of 10 frames, 5 of them reviewed with one known kind of edit each."""
    from autolabel.imports import import_annotations

    make_product(tmp_path / "videos", "mug", {"mug": "mug", "hand": "hand"}, {"a.mp4": 20})
    (r,) = run(run_config(tmp_path), ThreeBoxes)
    names = [rec.name for rec in read_journal(r.output)]
    edits = tmp_path / "review"
    moved = (A[0] + 14, A[1] + 14, A[2] + 14, A[3] + 14)  # IoU with A about 0.13
    write_review(edits, names[0], [(0, A), (1, B)])  # accepted
    write_review(edits, names[1], [(0, A)])  # B was spurious
    write_review(edits, names[2], [(0, A), (1, B), (0, C)])  # C missed (scored under the threshold)
    write_review(edits, names[3], [(0, A), (0, B)])  # B is a mug: wrong class
    write_review(edits, names[4], [(0, moved), (1, B)])  # A misplaced
    result = import_annotations(r.output, edits, "yolo")
    assert result.frames_reviewed == 5 and result.frames_changed == 4
    return r.output


def test_eval_gives_exact_counts_on_known_edits(reviewed):
    ev = evaluate_dataset(reviewed)
    mug, hand = ev.classes["mug"], ev.classes["hand"]
    assert ev.frames == 5
    assert (mug.tp, mug.fp, mug.fn) == (4, 1, 3)
    assert (hand.tp, hand.fp, hand.fn) == (3, 2, 0)
    assert (mug.missed, mug.wrong_class, mug.misplaced, mug.spurious) == (1, 1, 1, 0)
    assert (hand.missed, hand.wrong_class, hand.misplaced, hand.spurious) == (0, 0, 0, 1)
    assert (ev.overall.tp, ev.overall.fp, ev.overall.fn) == (7, 3, 3)
    assert mug.precision == pytest.approx(4 / 5) and mug.recall == pytest.approx(4 / 7)
    assert mug.boxes == 7 and mug.frames == 5 and hand.boxes == 3
    # AP over every kept box: C (0.2) found the missed mug, so AP50 beats the thresholded recall.
    assert 0 < mug.ap50 <= 1 and 0 < hand.ap50 <= 1
    assert any("too few to trust" in w for w in ev.warnings)
    body = json.loads((reviewed / "eval.json").read_text())
    for part in [body["overall"], *body["classes"].values()]:
        assert {"tp", "fp", "fn", "precision", "recall", "f1", "ap50", "ap50_95"} <= set(part)
    assert set(body["classes"]) == {"mug", "hand"}


def test_eval_through_the_cli_prints_a_table_and_works_on_a_merged_dataset(reviewed, tmp_path):
    result = CliRunner().invoke(app, ["eval", str(reviewed)])
    assert result.exit_code == 0, result.stderr
    assert "mug" in result.stdout and "all" in result.stdout and "too few to trust" in result.stdout
    merged = CliRunner().invoke(app, ["merge", "--root", str(reviewed.parent), "-q"])
    assert merged.exit_code == 0, merged.stderr
    ev = evaluate_dataset(reviewed.parent / "merged")
    assert (ev.overall.tp, ev.overall.fp, ev.overall.fn) == (7, 3, 3)


def test_a_dataset_without_reviews_says_so(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug", "hand": "hand"}, {"a.mp4": 6})
    (r,) = run(run_config(tmp_path), ThreeBoxes)
    ev = evaluate_dataset(r.output)
    assert ev.frames == 0 and ev.warnings[0].startswith("no reviewed frames")


def test_matching_is_one_to_one_by_score_and_class():
    truth = [Box(0, 0, 0, 10, 10), Box(1, 20, 20, 30, 30)]
    preds = [Box(0, 0, 0, 10, 10, 0.5), Box(0, 1, 1, 10, 10, 0.9), Box(0, 20, 20, 30, 30, 0.99)]
    assert match(preds, truth, 0.5) == [(1, 0)]  # the best-scored box takes the match; the class-1 box is no match


def frames_with_noise(n: int, seed: int = 0) -> list[FrameRecord]:
    """Reviewed frames: one true mug (scored 0.5-0.95) and one false one (scored 0.15-0.45) each."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        true = Box(0, 10, 10, 40, 40, round(float(rng.uniform(0.5, 0.95)), 4))
        false = Box(0, 60, 10, 90, 40, round(float(rng.uniform(0.15, 0.45)), 4))
        r = FrameRecord(f"f_{i:06d}", "f", i, i, W, H, [Box(0, 10, 10, 40, 40)], reviewed=True)
        r.model_boxes = [true, false]
        out.append(r)
    return out


def test_fitting_separates_true_from_false_boxes_and_cross_validates():
    fits = fit_thresholds(frames_with_noise(40), ["mug", "hand"], {0: 0.35, 1: 0.35}, 0.1)
    mug, hand = fits
    assert mug.fitted and 0.45 <= mug.threshold < 0.5 and mug.f1 == 1.0 and mug.cv_f1 > 0.95
    assert not hand.fitted and hand.threshold == 0.35 and "kept the run's threshold" in hand.note
    target = fit_thresholds(frames_with_noise(40), ["mug"], {0: 0.35}, 0.1, target=0.9)[0]
    assert target.precision >= 0.9 and target.threshold < mug.threshold  # the lowest reaching 0.9


def test_choose_keeps_above_the_floor():
    scored = [(0.9, True), (0.5, True), (0.3, False), (0.12, True)]
    assert choose(scored, 3, 0.2, None) >= 0.2


def test_fitted_thresholds_apply_without_the_model_as_a_fresh_run(reviewed, tmp_path):
    result = CliRunner().invoke(app, ["eval", str(reviewed), "--fit-thresholds"])
    assert result.exit_code == 0, result.stderr
    thresholds = yaml.safe_load((reviewed / "thresholds.yaml").read_text())
    assert set(thresholds) == {"mug", "hand"}  # every class, fitted or kept
    (tmp_path / "hand.yaml").write_text("mug: 0.1\nhand: 0.85\n")
    args = ["run", "-i", str(tmp_path / "videos"), "--frame-rate", "2", "--no-report", "-q"]
    args += ["--class-thresholds", str(tmp_path / "hand.yaml")]
    again = CliRunner().invoke(app, [*args, "-o", str(reviewed.parent), "--weights", str(tmp_path / "gone.pth")])
    assert again.exit_code == 0, again.stderr  # no model, no weights file: derived from the journal
    journal = {r.name: r for r in read_journal(reviewed)}
    plain = [r for r in journal.values() if not r.reviewed]
    assert plain and all([b.class_id for b in r.boxes] == [0, 0] for r in plain)  # A and C; B (0.8) under 0.85
    assert sum(r.reviewed for r in journal.values()) == 5  # reviews untouched
    ev = evaluate(list(journal.values()), ["mug", "hand"], {None: (Thresholds(0.35, {0: 0.1, 1: 0.85}), None)})
    assert ev.classes["hand"].tp == 0


def test_f1_is_zero_when_nothing_matched_and_none_only_when_there_was_nothing():
    from autolabel.evaluate import Score, prf

    assert prf(0, 3, 2) == (0.0, 0.0, 0.0)
    assert prf(0, 0, 2) == (None, 0.0, 0.0)  # nothing found: precision undefined, F1 still 0
    assert prf(0, 2, 0) == (0.0, None, 0.0)
    assert prf(0, 0, 0) == (None, None, None)
    assert prf(3, 1, 2) == (0.75, 0.6, 6 / 9)
    score = Score(tp=0, fp=0, fn=4).finish()
    assert (score.precision, score.recall, score.f1) == (None, 0.0, 0.0)


def test_the_threshold_sweep_chooses_as_counting_at_every_candidate_does():
    """One pass over the sorted scores picks the threshold that recounting every box at each candidate picks."""
    import random

    from autolabel.calibrate import STEP, _midway, choose
    from autolabel.evaluate import prf

    def slow(scored, truth, floor, target):
        best, best_key = None, None
        for t in sorted({round(s - STEP, 6) for s, _ in scored if s - STEP >= floor} | {floor}, reverse=True):
            tp = sum(1 for s, m in scored if s > t and m)
            p, _, f1 = prf(tp, sum(1 for s, m in scored if s > t and not m), truth - tp)
            if target is not None:
                best = t if p is not None and p >= target else best
                continue
            if best_key is None or (f1 if f1 is not None else -1.0) > best_key:
                best, best_key = t, f1 if f1 is not None else -1.0
        return None if best is None else _midway(scored, best, floor)

    rng = random.Random(5)
    for _ in range(300):
        n = rng.randrange(0, 40)
        scored = sorted(((round(rng.random(), 2), rng.random() < 0.6) for _ in range(n)), key=lambda s: -s[0])
        truth = sum(m for _, m in scored) + rng.randrange(0, 5)
        for target in (None, 0.8):
            assert choose(scored, truth, 0.1, target) == slow(scored, truth, 0.1, target), (scored, truth, target)
