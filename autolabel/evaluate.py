"""``autolabel eval``: how good the model's labels are, scored against a reviewer's over the reviewed frames.

A reviewed frame keeps the model's own boxes (every box at or above ``model.keep_threshold``)
beside the reviewer's. Per class and overall:

- tp, fp, fn, precision, recall and F1 of the boxes the dataset was written with (the
  model's, at the dataset's box thresholds and filters), matched one to one, same class,
  IoU at least ``iou`` (0.5), in descending score; a box of the wrong class is a false
  positive of its class and a false negative of the right one;
- AP50 and AP50:95 over every kept box, by pycocotools' ``COCOeval`` (the reference COCO
  evaluator; faster-coco-eval gives the same numbers faster, which a few thousand reviewed
  frames do not need);
- the errors by kind: missed (a reviewer's box no model box found), spurious (a model box
  with no reviewer's box), wrong class (the right place, another class), misplaced (the
  right class, IoU between 0.1 and ``iou``);
- how many reviewed frames and boxes each figure rests on, with a warning where too few.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from autolabel.datasets.records import Box, FrameRecord
from autolabel.postprocess import FilterConfig, Thresholds, iou, settle

# Fewer reviewed boxes of a class than this: its figures are shown, with a warning.
MIN_BOXES = 10
MIN_FRAMES = 5
# Below this IoU a box of the right class is no attempt at the reviewer's box (spurious, not misplaced).
MISPLACED_IOU = 0.1
KEYS = ("tp", "fp", "fn", "precision", "recall", "f1", "ap50", "ap50_95")
ERRORS = ("missed", "spurious", "wrong_class", "misplaced")


def prf(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    """Precision, recall and F1 of match counts; each None where undefined.

    F1 is ``2 tp / (2 tp + fp + fn)``: 0 when nothing matched but something was found or missed
    (precision or recall may then be undefined), None only when there was nothing at all.
    """
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return p, r, f1


@dataclass
class Score:
    """One class's figures (or all classes')."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    ap50: float | None = None
    ap50_95: float | None = None
    missed: int = 0
    spurious: int = 0
    wrong_class: int = 0
    misplaced: int = 0
    frames: int = 0  # reviewed frames holding a reviewer's box of the class (any box, overall)
    boxes: int = 0  # the reviewer's boxes of the class
    predicted: int = 0  # the model's boxes at the dataset's thresholds

    def finish(self) -> Score:
        """Precision, recall and F1 from the counts (None where undefined: :func:`prf`)."""
        self.precision, self.recall, self.f1 = prf(self.tp, self.fp, self.fn)
        return self


@dataclass
class Evaluation:
    """Scores of one dataset."""

    overall: Score
    classes: dict[str, Score]
    frames: int
    iou: float
    warnings: list[str] = field(default_factory=list)
    unscored: int = 0  # reviewed frames whose model boxes were not kept (reviewed before version 4)

    def to_dict(self) -> dict:
        """What ``eval.json`` holds."""

        def clean(score: Score) -> dict:
            return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(score).items()}

        return {
            "iou": self.iou,
            "frames": self.frames,
            "unscored_frames": self.unscored,
            "overall": clean(self.overall),
            "classes": {name: clean(s) for name, s in self.classes.items()},
            "warnings": list(self.warnings),
        }


def match(preds: list[Box], truth: list[Box], min_iou: float) -> list[tuple[int, int]]:
    """One-to-one matches (pred index, truth index): same class, IoU >= ``min_iou``, highest score first.

    Each prediction takes the unmatched reviewer's box it overlaps most.
    """
    order = sorted(range(len(preds)), key=lambda i: -(preds[i].confidence if preds[i].confidence is not None else 1))
    taken: set[int] = set()
    pairs = []
    for i in order:
        best, best_iou = None, min_iou
        for j, t in enumerate(truth):
            if j in taken or t.class_id != preds[i].class_id:
                continue
            overlap = iou(preds[i], t)
            if overlap >= best_iou:
                best, best_iou = j, overlap
        if best is not None:
            taken.add(best)
            pairs.append((i, best))
    return pairs


def _pair_left(
    preds: list[Box], truth: list[Box], p_left: list[int], t_left: list[int], same_class: bool, min_iou: float
) -> list[int]:
    """Pairs left-over predictions (highest score first) with the left-over reviewer's box each overlaps most,
    of the same class or of another (``same_class``), at IoU ``min_iou`` or more; removes both from the lists
    and returns the reviewer's boxes paired."""
    paired = []
    for i in sorted(p_left, key=lambda i: -(preds[i].confidence or 1)):
        found = [(iou(preds[i], truth[j]), j) for j in t_left if (truth[j].class_id == preds[i].class_id) == same_class]
        found = [(o, j) for o, j in found if o >= min_iou]
        if found:
            _, j = max(found)
            t_left.remove(j)
            p_left.remove(i)
            paired.append(j)
    return paired


def score_frame(preds: list[Box], truth: list[Box], classes: dict[int, Score], min_iou: float) -> None:
    """Adds one reviewed frame's counts to each class's score."""
    pairs = match(preds, truth, min_iou)
    for p in preds:
        classes[p.class_id].predicted += 1
    for _, j in pairs:
        classes[truth[j].class_id].tp += 1
    matched_p, matched_t = {i for i, _ in pairs}, {j for _, j in pairs}
    for i, p in enumerate(preds):
        if i not in matched_p:
            classes[p.class_id].fp += 1
    for j, t in enumerate(truth):
        if j not in matched_t:
            classes[t.class_id].fn += 1
    p_left = [i for i in range(len(preds)) if i not in matched_p]
    t_left = [j for j in range(len(truth)) if j not in matched_t]
    # The right place, another class; then the right class, the wrong place: under the reviewer's class.
    for j in _pair_left(preds, truth, p_left, t_left, same_class=False, min_iou=min_iou):
        classes[truth[j].class_id].wrong_class += 1
    for j in _pair_left(preds, truth, p_left, t_left, same_class=True, min_iou=MISPLACED_IOU):
        classes[truth[j].class_id].misplaced += 1
    for i in p_left:
        classes[preds[i].class_id].spurious += 1
    for j in t_left:
        classes[truth[j].class_id].missed += 1


def average_precision(frames: list[tuple[list[Box], list[Box]]], n_classes: int) -> tuple[list, list, float, float]:
    """Per-class AP50 and AP50:95 (None for a class without reviewer's boxes) and their means, by COCOeval.

    Args:
        frames: Each reviewed frame's (model boxes, reviewer's boxes).
        n_classes: Classes by id.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, truth, dets = [], [], []
    for k, (model, reviewed) in enumerate(frames, start=1):
        images.append({"id": k, "width": 1, "height": 1})
        for b in reviewed:
            w, h = b.x2 - b.x1, b.y2 - b.y1
            truth.append({"id": len(truth) + 1, "image_id": k, "category_id": b.class_id + 1,
                          "bbox": [b.x1, b.y1, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
        for b in model:
            score = 1.0 if b.confidence is None else b.confidence
            dets.append({"image_id": k, "category_id": b.class_id + 1, "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1],
                         "score": score})  # fmt: skip
    has_truth = {t["category_id"] - 1 for t in truth}
    if not truth:
        return [None] * n_classes, [None] * n_classes, math.nan, math.nan
    if not dets:  # nothing predicted: every class with reviewer's boxes scores 0
        zero = [0.0 if c in has_truth else None for c in range(n_classes)]
        return zero, list(zero), 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"info": {}, "images": images, "annotations": truth,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)]}  # fmt: skip
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        most = max(len(m) for m, _ in frames)
        ev.params.maxDets = [1, 10, max(100, most)]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # [iou thresholds, recall points, classes, areas, max dets]
    ap50, ap = [], []
    for c in range(n_classes):
        if c not in has_truth:
            ap50.append(None)
            ap.append(None)
            continue
        p = precision[:, :, c, 0, -1]
        ap50.append(float(np.mean(np.clip(p[0], 0, None))))
        ap.append(float(np.mean(np.clip(p, 0, None))))
    known = [c for c in range(n_classes) if c in has_truth]
    return ap50, ap, float(np.mean([ap50[c] for c in known])), float(np.mean([ap[c] for c in known]))


def evaluate(
    records: list[FrameRecord],
    classes: list[str],
    settings: dict[str | None, tuple[Thresholds, FilterConfig | None]],
    min_iou: float = 0.5,
    unscored: set[str] = frozenset(),
) -> Evaluation:
    """Scores the model's boxes against the reviewer's over the reviewed frames of ``records``.

    Args:
        records: A dataset's journal (dropped frames are left out).
        classes: Its class names.
        settings: The box thresholds and filters each product's frames were written with
            (key: ``record.product``; None for a product dataset's own).
        min_iou: The IoU that makes a match.
        unscored: Reviewed frames whose model boxes were not kept (left out, counted).
    """
    scores = {c: Score() for c in range(len(classes))}
    frames: list[tuple[list[Box], list[Box]]] = []
    skipped = 0
    overall = Score()
    for r in records:
        if not r.reviewed or r.dropped is not None:
            continue
        if r.name in unscored:
            skipped += 1
            continue
        model = r.model_boxes if r.model_boxes is not None else r.boxes
        thresholds, filters = settings.get(r.product, settings.get(None))
        written = FrameRecord(r.name, r.source, r.index, r.t, r.width, r.height)
        settle(written, [Box(**asdict(b)) for b in model], thresholds, filters)
        preds = written.boxes if written.dropped is None else []
        score_frame(preds, r.boxes, scores, min_iou)
        frames.append((model, r.boxes))
        overall.frames += 1
        for c in {b.class_id for b in r.boxes}:
            scores[c].frames += 1
        for b in r.boxes:
            scores[b.class_id].boxes += 1
    ap50, ap, mean50, mean = average_precision(frames, len(classes))
    result: dict[str, Score] = {}
    warnings = []
    for c, name in enumerate(classes):
        s = scores[c].finish()
        s.ap50, s.ap50_95 = ap50[c], ap[c]
        for key in ("tp", "fp", "fn", "boxes", "predicted", *ERRORS):
            setattr(overall, key, getattr(overall, key) + getattr(s, key))
        result[name] = s
        if s.boxes < MIN_BOXES or s.frames < MIN_FRAMES:
            warnings.append(
                f"{name}: {s.boxes} reviewed boxes in {s.frames} frames: too few to trust "
                f"(review at least {MIN_BOXES} boxes in {MIN_FRAMES} frames)"
            )
    overall.finish()
    overall.ap50, overall.ap50_95 = (None if math.isnan(mean50) else mean50), (None if math.isnan(mean) else mean)
    if not frames:
        warnings.insert(
            0, "no reviewed frames to score: review some (autolabel report --export label-studio --review N)"
        )
    if skipped:
        warnings.append(
            f"{skipped} frames were reviewed before the model's boxes were kept (autolabel < 0.2): not scored"
        )
    return Evaluation(overall, result, len(frames), min_iou, warnings, skipped)


EVAL_JSON = "eval.json"


def evaluate_dataset(root, min_iou: float = 0.5) -> Evaluation:
    """Scores a dataset (product or merged) and writes ``eval.json`` into it."""
    import json

    from autolabel.datasets.dataset import Dataset
    from autolabel.errors import ConfigError
    from autolabel.fileio import atomic_write_text, output_errors

    if not 0.0 < min_iou <= 1.0:
        raise ConfigError(f"--iou must be in (0, 1], got {min_iou}")
    Dataset.peek(root)
    with output_errors(root), Dataset.open(root, "eval") as ds:
        records = list(ds.records(masks=False))  # boxes are scored, not outlines
        result = evaluate(records, ds.classes, ds.derivation(), min_iou, set(ds.state.unscored))
        atomic_write_text(root / EVAL_JSON, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return result
