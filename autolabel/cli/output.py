"""What the commands print: the run, merge and report summaries (stdout; errors go to stderr)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer


def echo(line: str = "") -> None:
    """One line on stdout."""
    typer.echo(line)


def print_run_summary(results) -> None:
    """One block per product: frames, boxes per class, empty frames, time, frames/s."""
    echo()
    echo("Summary")
    for r in results:
        if r.output is None:  # its error was logged (stderr) when it happened: not printed twice
            echo(f"  {r.product}: FAILED, see {_errors(r.errors)} above")
            continue
        classes = ", ".join(f"{name} {n}" for name, n in r.boxes_per_class.items()) or "-"
        split = " / ".join(f"{k} {v}" for k, v in r.split.items())
        echo(f"  {r.product} -> {r.output}")
        echo(f"    frames {r.frames} ({split}), new this run {r.new_frames}, empty {r.empty_frames}")
        echo(f"    boxes per class: {classes}")
        if r.duplicate_frames:
            echo(f"    near-duplicates dropped (--dedup, not labeled): {r.duplicate_frames}")
        if r.sampled_frames is not None:
            left = max(0, r.sampled_frames - r.chosen_frames - r.duplicate_frames)
            echo(
                f"    --max-frames: {r.chosen_frames} of the videos' {r.sampled_frames} sampled frames chosen; "
                f"{left} left out (not labeled)"
            )
        if r.filtered or r.dropped_frames:
            removed = ", ".join(f"{k} {v}" for k, v in r.filtered.items())
            echo(f"    filters removed: {removed or '-'} (frames dropped in total: {r.dropped_frames})")
        if r.tracked or r.new_probes:
            echo(
                f"    tracks (--track): {r.new_probes} more frames labeled for tracking, {r.tracked} kept frames "
                f"settled on their tracks ({r.tracking_seconds:.2f} s)"
            )
        if r.reviewed_frames:
            echo(f"    reviewed frames (autolabel import): {r.reviewed_frames}")
        if r.masks is not None:
            echo(f"    {mask_line(r.masks, r.seconds)}")
        missing = [p for p, differed in r.repaired if not differed]
        edited = [p for p, differed in r.repaired if differed]
        if missing:
            echo(f"    wrote {len(missing)} missing derived files from the journal (e.g. {missing[0]})")
        if edited:
            echo(
                f"    rewrote {len(edited)} files that differed from the journal (e.g. {edited[0]}); the edited "
                "copies are in .autolabel/edited/. To keep the corrections:"
            )
            for folder, fmt in (("labels", "yolo"), ("annotations", "voc")):
                if any(p.startswith(f"{folder}/") for p in edited):
                    source = shlex.quote(str(r.output / ".autolabel" / "edited" / folder))
                    echo(f"      autolabel import {source} --dataset {shlex.quote(str(r.output))} --from {fmt}")
        if r.new_frames or r.new_duplicates:
            echo(f"    time {r.seconds:.1f} s, {r.fps:.2f} frames/s")
        else:
            echo(f"    up to date: nothing new to label ({r.seconds:.1f} s)")
        for note in r.notes:
            echo(f"    note: {note}")
        for warning in r.warnings:
            echo(f"    warning: {warning}")
        if r.errors:
            echo(f"    see {_errors(r.errors)} above")


def _errors(errors: list[str]) -> str:
    return "the error" if len(errors) == 1 else f"{len(errors)} errors" if errors else "no error message"


def mask_line(m, seconds: float | None = None) -> str:
    """What a segmentation dataset's boxes hold: masks, empty ones, ones without; the mask step's time."""
    line = f"masks: {m.masked} of {m.boxes} boxes"
    polygons = []
    if m.empty:
        polygons.append(f"{m.empty} came out empty")
    if m.missing:
        polygons.append(f"{m.missing} have none yet (no mask model at hand: re-run with --masks)")
    if polygons:
        line += f"; box polygons where {' and '.join(polygons)}"
    if m.made:
        share = f", {100 * m.seconds / seconds:.0f}% of the time" if seconds else ""
        line += f"; {m.made} made on {m.frames} frames in {m.seconds:.1f} s{share}"
    return line


def print_merge_summary(result, skipped: list[str] = ()) -> None:
    """Frames, classes, boxes and filter removals of a merge, and the datasets left out."""
    split = " / ".join(f"{k} {v}" for k, v in result.split.items())
    echo(f"merged {', '.join(result.products)} -> {result.output}")
    for why in skipped:
        echo(f"  left out: {why}")
    echo(f"  frames {result.frames} ({split})")
    echo(f"  classes: {', '.join(f'{i}: {n}' for i, n in enumerate(result.classes))}")
    echo(f"  boxes per class: {', '.join(f'{n} {c}' for n, c in result.boxes_per_class.items())}")
    if result.filtered:
        echo(f"  filters removed: {', '.join(f'{k} {v}' for k, v in result.filtered.items())}")
    for warning in result.warnings:
        echo(f"  warning: {warning}")


def write_report_for(dataset: Path):
    """Writes a dataset's report (imports the report module lazily)."""
    from autolabel.report import write_report

    return write_report(dataset)


def print_report(result) -> None:
    """Where the report is, the review queue's head, the facts and the warnings."""
    facts = ", ".join(f"{k} {v}" for k, v in result.facts.items() if v) or "-"
    echo(
        f"report: {result.path} ({result.frames} frames, {result.reviewed} reviewed; review queue: {result.queue} "
        f"frames with a reason; facts: {facts}; {result.seconds:.1f} s)"
    )
    if result.top:
        echo(f"  first in the review queue: {result.top}")
    for warning in result.warnings:
        echo(f"  warning: {warning}")


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_eval(result, path) -> None:
    """The scores as a table: one row per class, then all classes; the warnings after it."""
    head = f"{'class':<20} {'frames':>6} {'boxes':>6} {'tp':>5} {'fp':>5} {'fn':>5} {'prec':>6} {'rec':>6} {'f1':>6}"
    head += f" {'ap50':>6} {'ap50-95':>7} {'missed':>6} {'spur':>5} {'class':>5} {'place':>5}"
    echo(f"eval: {result.frames} reviewed frames, IoU >= {result.iou:g} -> {path}")
    echo(head)
    for name, s in [*result.classes.items(), ("all", result.overall)]:
        label = name if len(name) <= 20 else name[:19] + "…"
        echo(
            f"{label:<20} {s.frames:>6} {s.boxes:>6} {s.tp:>5} {s.fp:>5} {s.fn:>5} {_num(s.precision):>6} "
            f"{_num(s.recall):>6} {_num(s.f1):>6} {_num(s.ap50):>6} {_num(s.ap50_95):>7} {s.missed:>6} "
            f"{s.spurious:>5} {s.wrong_class:>5} {s.misplaced:>5}"
        )
    echo("  prec/rec/f1 at the dataset's thresholds; ap over every kept box; errors: missed, spurious,")
    echo("  wrong class (the right place), misplaced (the right class, IoU 0.1 to the match IoU)")
    for warning in result.warnings:
        echo(f"  warning: {warning}")


def print_fits(fits, path) -> None:
    """Each class's fitted threshold, its in-sample and cross-validated F1, or why it kept the run's."""
    echo(f"thresholds -> {path}")
    echo(f"{'class':<20} {'threshold':>9} {'f1':>6} {'cv f1':>6} {'prec':>6} {'rec':>6} {'boxes':>6}")
    for f in fits:
        label = f.name if len(f.name) <= 20 else f.name[:19] + "…"
        echo(
            f"{label:<20} {f.threshold:>9.4f} {_num(f.f1):>6} {_num(f.cv_f1):>6} {_num(f.precision):>6} "
            f"{_num(f.recall):>6} {f.boxes:>6}" + (f"  ({f.note})" if f.note else "")
        )
