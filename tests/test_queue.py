"""The review queue's signals, the report's queue and warnings, and the warnings users need."""

from __future__ import annotations

from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.datasets.records import Box, FrameRecord, dataset_warnings
from autolabel.postprocess import Thresholds
from autolabel.queue import SIGNALS, build
from tests.conftest import FakeLabeler, make_product

W, H = 100, 100
T = {None: Thresholds(0.35)}


def frame(i: int, *boxes: Box, source: str = "a", reviewed: bool = False, model: list[Box] | None = None):
    r = FrameRecord(f"{source}_{i:06d}", source, i, i / 30, W, H, list(boxes), reviewed=reviewed)
    r.model_boxes = model
    return r


def mug(x: float = 10, score: float = 0.9) -> Box:
    return Box(0, x, 10, x + 30, 40, score)


def hand(x: float = 60, score: float = 0.9) -> Box:
    return Box(1, x, 10, x + 30, 40, score)


def ranked(records, classes=("mug", "hand"), thresholds=T) -> list[str]:
    return [e.name for e in build(records, list(classes), thresholds) if e.priority > 0]


def test_each_signal_puts_its_frame_first():
    calm = [frame(i, mug(), hand()) for i in range(10)]
    cases = {
        "near_threshold": frame(
            4, mug(score=0.37), hand(), model=[mug(score=0.37), hand(), Box(0, 50, 50, 60, 60, 0.3)]
        ),
        "flicker": frame(4, mug()),
        "jitter": frame(4, mug(x=55), hand()),
        "class_overlap": frame(4, mug(), hand(), Box(1, 11, 11, 41, 41, 0.9)),
    }
    for signal, odd in cases.items():
        records = [odd if r.index == 4 else r for r in calm]
        queue = build(records, ["mug", "hand"], T)
        assert queue[0].name == "a_000004" and signal in queue[0].signals, (signal, queue[0])
        assert queue[0].priority > 0 and signal in SIGNALS


def test_reviewed_frames_get_no_place_and_ties_go_by_name():
    records = [frame(i, mug(), hand(), reviewed=i % 2 == 0) for i in range(6)]
    queue = build(records, ["mug", "hand"], T)
    assert [e.name for e in queue] == ["a_000001", "a_000003", "a_000005"]  # no signal: name order


def test_a_class_with_no_box_points_at_its_best_candidates():
    records = [frame(i, mug(), model=[mug(), hand(score=0.1 + i / 100)]) for i in range(10)]
    top = build(records, ["mug", "hand"], T)[:3]
    assert {e.name for e in top} == {"a_000009", "a_000008", "a_000007"}
    assert all("missing_class" in e.signals for e in top)


def test_rare_classes_and_box_jumps():
    records = [frame(i, mug(), mug(x=50)) for i in range(30)]
    records[10] = frame(10, mug(), mug(x=50), hand(x=20))  # a rare class, and a box more than its neighbours
    (e,) = [q for q in build(records, ["mug", "hand"], T) if q.priority > 0][:1]
    assert e.name == "a_000010" and {"rare_class", "box_jump"} <= set(e.signals)


def test_dataset_warnings_name_empty_classes_and_a_missing_validation_split():
    warnings = dataset_warnings({"mug": 3, "lid": 0}, {"train": 4, "val": 0})
    assert "class 'lid' got no box" in warnings[0] and "no validation frames" in warnings[1]
    assert dataset_warnings({"mug": 3}, {"train": 3, "val": 1}) == []


def test_warnings_reach_the_run_the_merge_and_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr("autolabel.labelers.create_labeler", lambda *a, **k: FakeLabeler())
    make_product(tmp_path / "videos", "mug", {"mug": "mug", "lid": "lid", "rim": "rim"}, {"a.mp4": 4})
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--frame-rate", "2", "--merge"]
    result = CliRunner().invoke(app, [*args, "--val-fraction", "0"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "warning: class 'rim' got no box" in out  # FakeLabeler gives classes 0 and 1 only
    assert out.count("warning: class 'rim' got no box") >= 3  # run summary, merge summary, reports
    assert out.count("no validation frames") >= 2
    page = (tmp_path / "ds" / "mug" / "report.html").read_text()
    assert "class &#x27;rim&#x27; got no box" in page and 'id="queue"' in page


def test_where_tracking_changed_what_the_model_said_is_a_reason_to_review():
    said = [mug(), hand()]
    tracked = [Box(0, 10, 10, 40, 40, 0.9, track_id=1), Box(0, 60, 10, 90, 40, 0.9, track_id=2)]  # hand re-classed
    records = [frame(i, *[Box(b.class_id, b.x1, b.y1, b.x2, b.y2, 0.9, track_id=k + 1) for k, b in enumerate(said)])
               for i in range(6)]  # fmt: skip
    records[3] = frame(3, *tracked, model=said)
    top = build(records, ["mug", "hand"], T)[0]
    assert top.name == "a_000003" and top.signals["track_disagreement"] == 2.0  # the hand dropped, a mug added
