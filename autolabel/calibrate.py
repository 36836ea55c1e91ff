"""``autolabel eval --fit-thresholds``: a box threshold per class, fitted on the reviewed frames.

For each class, the model's boxes on the reviewed frames (every box at or above
``model.keep_threshold``) are matched one to one with the reviewer's (same class, IoU at
least 0.5, highest score first); each candidate threshold then keeps the boxes scoring
above it, and the one chosen gives the best F1, or, with a target precision, the most
recall among those reaching it. The thresholds are fitted before the dataset's filters
(size, overlap), which apply after them as always. K-fold cross-validation (folds of
reviewed frames) says how well the choice carries to frames it was not fitted on: its F1
is shown beside the in-sample one. A class with too few reviewed boxes keeps the run's
threshold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from autolabel.datasets.records import Box, FrameRecord
from autolabel.evaluate import MIN_BOXES, match, prf

FOLDS = 5
# Scores are journaled with 4 decimals: a threshold 1e-4 below a score keeps it.
STEP = 1e-4


@dataclass
class Fit:
    """One class's fitted threshold."""

    name: str
    threshold: float  # the one written to thresholds.yaml
    fitted: bool  # False: kept the run's (too few reviewed boxes, or no threshold reaches the target)
    f1: float | None  # in-sample F1 at the threshold
    cv_f1: float | None  # k-fold cross-validated F1 (None with too few frames)
    precision: float | None
    recall: float | None
    boxes: int  # reviewed boxes of the class
    note: str = ""


def _curve(frames: list[tuple[list[Box], list[Box]]], class_id: int) -> tuple[list[tuple[float, bool]], int]:
    """The class's model boxes as (score, matched) over these frames, and its reviewer's box count.

    Matching in descending score is greedy, so the boxes above a threshold match as they
    would with the lower ones left out: one matching serves every threshold.
    """
    scored, truth_count = [], 0
    for model, reviewed in frames:
        preds = [b for b in model if b.class_id == class_id and b.confidence is not None]
        truth = [b for b in reviewed if b.class_id == class_id]
        truth_count += len(truth)
        matched = {i for i, _ in match(preds, truth, 0.5)}
        scored += [(float(p.confidence), i in matched) for i, p in enumerate(preds)]
    return sorted(scored, key=lambda s: -s[0]), truth_count


def _counts(scored: list[tuple[float, bool]], truth: int, threshold: float) -> tuple[int, int, int]:
    tp = sum(1 for s, m in scored if s > threshold and m)
    fp = sum(1 for s, m in scored if s > threshold and not m)
    return tp, fp, truth - tp


def choose(scored: list[tuple[float, bool]], truth: int, floor: float, target: float | None) -> float | None:
    """The threshold (at least ``floor``) with the best F1, or the lowest reaching precision ``target`` (or None).

    ``scored``: in descending score, as :func:`_curve` gives it; the candidates are swept in one pass.
    """
    candidates = sorted({round(s - STEP, 6) for s, _ in scored if s - STEP >= floor} | {floor}, reverse=True)
    best, best_key = None, None
    above = tp = 0  # boxes scored above the candidate, and the matched ones among them
    for t in candidates:  # highest first: among equals, the highest threshold (fewer boxes) wins
        while above < len(scored) and scored[above][0] > t:
            tp += scored[above][1]
            above += 1
        p, _, f1 = prf(tp, above - tp, truth - tp)
        if target is not None:
            if p is not None and p >= target:
                best = t  # keeps going down: the lowest that still reaches the target
            continue
        key = f1 if f1 is not None else -1.0
        if best_key is None or key > best_key:
            best, best_key = t, key
    return None if best is None else _midway(scored, best, floor)


def _midway(scored: list[tuple[float, bool]], t: float, floor: float) -> float:
    """The threshold halfway between the lowest score ``t`` keeps and the highest it leaves out: the same boxes
    on these frames, with a margin either side for frames it has not seen."""
    kept = [s for s, _ in scored if s > t]
    left = [s for s, _ in scored if s <= t]
    if not kept:
        return t
    low = max(left) if left else floor
    mid = round((min(kept) + max(low, floor)) / 2, 4)
    return mid if max(low, floor) <= mid < min(kept) else t


def _fold(name: str, k: int) -> int:
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16) % k


def fit_thresholds(
    records: list[FrameRecord],
    classes: list[str],
    current: dict[int, float],
    floor: float,
    target: float | None = None,
) -> list[Fit]:
    """A threshold per class from the reviewed frames of ``records``.

    Args:
        records: A dataset's journal.
        classes: Its class names.
        current: Each class's threshold now (kept where nothing can be fitted).
        floor: The lowest threshold the journal can serve (``model.keep_threshold``).
        target: Precision to reach (the lowest threshold that does); None: best F1.
    """
    reviewed = [r for r in records if r.reviewed and r.dropped is None]
    frames = [(r.model_boxes if r.model_boxes is not None else r.boxes, r.boxes) for r in reviewed]
    k = min(FOLDS, len(frames))
    folds = [_fold(r.name, k) for r in reviewed] if k >= 2 else []
    fits = []
    for c, name in enumerate(classes):
        scored, truth = _curve(frames, c)
        if truth < MIN_BOXES:
            note = f"{truth} reviewed boxes (fewer than {MIN_BOXES}): kept the run's threshold"
            fits.append(Fit(name, current[c], False, None, None, None, None, truth, note))
            continue
        t = choose(scored, truth, floor, target)
        if t is None:
            note = f"no threshold reaches precision {target:g}: kept the run's threshold"
            fits.append(Fit(name, current[c], False, None, None, None, None, truth, note))
            continue
        p, r, f1 = prf(*_counts(scored, truth, t))
        cv = None
        if folds:
            tp = fp = fn = 0
            for f in range(k):
                train = [fr for fr, fo in zip(frames, folds, strict=True) if fo != f]
                test = [fr for fr, fo in zip(frames, folds, strict=True) if fo == f]
                s_train, n_train = _curve(train, c)
                s_test, n_test = _curve(test, c)
                t_fold = choose(s_train, n_train, floor, target)
                a, b, d = _counts(s_test, n_test, t_fold if t_fold is not None else current[c])
                tp, fp, fn = tp + a, fp + b, fn + d
            cv = prf(tp, fp, fn)[2]
        fits.append(Fit(name, round(t, 4), True, f1, cv, p, r, truth))
    return fits


def thresholds_yaml(fits: list[Fit]) -> str:
    """``thresholds.yaml``: ``class: threshold`` for every class (names YAML-escaped)."""
    import yaml

    header = (
        "# Written by autolabel eval --fit-thresholds: a box threshold per class.\n"
        "# Apply with: autolabel run --class-thresholds thresholds.yaml (no relabeling above keep_threshold).\n"
    )
    return header + yaml.safe_dump({f.name: f.threshold for f in fits}, sort_keys=False, allow_unicode=True)


THRESHOLDS_YAML = "thresholds.yaml"


def fit_dataset(root, target: float | None = None) -> tuple[list[Fit], object]:
    """Fits every class's threshold on a dataset's reviewed frames and writes ``thresholds.yaml`` into it."""
    from autolabel.datasets.dataset import Dataset
    from autolabel.errors import ConfigError
    from autolabel.fileio import atomic_write_text, output_errors

    if target is not None and not 0.0 < target <= 1.0:
        raise ConfigError(f"--target-precision must be in (0, 1], got {target}")
    Dataset.peek(root)
    with output_errors(root), Dataset.open(root, "eval") as ds:
        unscored = set(ds.state.unscored)
        records = [r for r in ds.records(masks=False) if r.name not in unscored]
        settings = ds.derivation()
        thresholds = settings.get(None)[0] if not ds.is_merged() else next(iter(settings.values()))[0]
        current = {c: thresholds.of(c) for c in range(len(ds.classes))}
        floor = ds.state.floor if ds.state.floor is not None else min(current.values(), default=0.0)
        fits = fit_thresholds(records, ds.classes, current, floor, target)
        path = root / THRESHOLDS_YAML
        atomic_write_text(path, thresholds_yaml(fits))
    return fits, path
