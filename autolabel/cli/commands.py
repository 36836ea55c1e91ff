"""What each command does once its flags are read: call its stage, print the outcome.

:func:`guarded` wraps every command: logging set up from ``--quiet``/``--debug``, SIGTERM taken
as Ctrl-C, and a known error turned into one line on stderr and its exit code.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from autolabel import progress
from autolabel.cli.flags import Given
from autolabel.cli.output import echo, print_merge_summary, print_report, print_run_summary, write_report_for
from autolabel.errors import AutolabelError, ConfigError

RETIRED = "--only-flagged is retired: use --review N (the N unreviewed frames the review queue puts first)"
TRAIN_KEYS = ("model", "epochs", "imgsz", "batch")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"autolabel: {record.levelname.lower()}: {record.getMessage()}"


def _setup(quiet: bool, debug: bool) -> None:
    progress.configure(not quiet)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("autolabel")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM (docker stop, a scheduler) interrupts it as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def guarded(fn: Callable[[Given], Any]) -> Callable[[Given], Any]:
    """Runs a command with logging set up, known errors as one line and interrupts as a clean exit."""

    @functools.wraps(fn)
    def run(given: Given) -> Any:
        quiet, debug = given["quiet"], given["debug"]
        _setup(quiet, debug)
        try:
            with _sigterm_as_interrupt():
                code = fn(given)
        except AutolabelError as exc:
            if debug:
                raise
            typer.echo(f"autolabel: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            if debug:
                raise
            what, code = ("terminated (SIGTERM)", 143) if isinstance(exc, _Terminated) else ("interrupted", 130)
            typer.echo(f"autolabel: {what}; finished frames are kept, re-run the same command to resume", err=True)
            raise typer.Exit(code) from None
        if code:
            raise typer.Exit(code)

    return run


def run_cmd(given: Given) -> int:
    from autolabel.config import load_config
    from autolabel.pipeline import run as run_pipeline

    if given["frame_rate"] is not None and given["fps"] is not None:
        raise ConfigError("give either --frame-rate (a stride) or --fps, not both")
    overrides = given.overrides()
    if given["class_thresholds"] is not None:
        overrides["model.class_thresholds"] = _class_thresholds(given["class_thresholds"])
    cfg = load_config(given["config"], overrides)
    given.check_needs(cfg)
    for key in TRAIN_KEYS:
        if given[key] is not None and not given["train"]:
            raise ConfigError(f"--{key} is for --train (the model trained after the merge)")
    if given["frame_rate"] is not None:
        cfg.sampling.fps = None

    from autolabel import labelers

    create = labelers.create_labeler  # looked up now (tests replace it); travels to Ray's workers with the factory

    def factory():
        return create(cfg.model, cfg.cache_dir, progress.enabled())

    results = run_pipeline(cfg, factory, overwrite=given["overwrite"])
    print_run_summary(results)
    if cfg.report:
        for r in results:
            if r.output is not None and r.frames:
                print_report(write_report_for(r.output))
    failed = [r for r in results if not r.ok]
    if not any(r.frames for r in results) and not failed:  # a failed product has said why already
        logging.getLogger("autolabel").error("no frames were kept in any product (thresholds or filters?)")
        failed = results
    if given["merge"] or given["train"]:
        merged = _merge(given, cfg, Path(cfg.output), None, "--output")
        if given["train"]:
            from autolabel.train import TrainOptions, train_model

            overrides = {k: given[k] for k in TRAIN_KEYS} | ({"verbose": False} if given["quiet"] else {})
            outcome = train_model(TrainOptions(data=merged.output / "data.yaml", overrides=overrides))
            echo(outcome.describe())
    return 1 if failed else 0


def _class_thresholds(path: Path) -> dict:
    """A ``thresholds.yaml``: ``class name: threshold``."""
    from autolabel.config import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: expected 'class name: threshold' lines (as autolabel eval --fit-thresholds writes)")
    return data


def eval_cmd(given: Given) -> None:
    from autolabel.cli.output import print_eval, print_fits
    from autolabel.evaluate import EVAL_JSON, evaluate_dataset

    dataset = given["dataset"]
    if given["target_precision"] is not None and not given["fit_thresholds"]:
        raise ConfigError("--target-precision applies to --fit-thresholds")
    result = evaluate_dataset(dataset, given["iou"])
    print_eval(result, dataset / EVAL_JSON)
    if given["fit_thresholds"]:
        from autolabel.calibrate import fit_dataset

        fits, path = fit_dataset(dataset, given["target_precision"])
        print_fits(fits, path)
        echo(f"  apply: autolabel run --class-thresholds {path} (the same --input/--output; nothing is labeled again)")
    if (dataset / "report.html").is_file():
        print_report(write_report_for(dataset))


def merge_cmd(given: Given) -> None:
    from autolabel.config import load_config

    cfg = load_config(given["config"], given.overrides())
    _merge(given, cfg, given["root"], given["output"])


def _merge(given: Given, cfg, root: Path, out: Path | None, flag: str = "--root"):
    """Merges the datasets named (``datasets``), else the product datasets under ``root``; prints it, and reports."""
    from autolabel.merge import MERGED, find_product_datasets, merge_datasets

    out = out or root / MERGED
    inputs, skipped = list(given.values.get("datasets") or []), []  # run --merge: none named
    if not inputs:
        inputs, skipped = find_product_datasets(root, exclude=out, flag=flag)
    chosen = cfg.dataset.formats if given["format"] else None
    result = merge_datasets(inputs, out, cfg.filters, chosen, given["unite_case"])
    print_merge_summary(result, skipped)
    if cfg.report:
        print_report(write_report_for(result.output))
    return result


def train_cmd(given: Given) -> None:
    from autolabel.train import TrainOptions, train_model

    keys = (*TRAIN_KEYS, "device", "name")
    overrides: dict[str, Any] = {k: given[k] for k in keys}
    if given["quiet"]:
        overrides["verbose"] = False
    export, task = given["export"] or [], given["task"]
    options = TrainOptions(data=given["data"], config=given["config"], overrides=overrides, export=export, task=task)
    echo(train_model(options).describe())


def report_cmd(given: Given) -> None:
    export, dataset = given["export"], given["dataset"]
    if export not in (None, "label-studio"):
        raise ConfigError(f"--export {export!r}: the supported review tool is label-studio")
    if given["only_flagged"]:
        raise ConfigError(RETIRED)
    if given["review"] is not None and export is None:
        raise ConfigError("--review applies to --export label-studio (tasks for a reviewer)")
    print_report(write_report_for(dataset))
    if export == "label-studio":
        from autolabel.review import export_label_studio

        tasks, config, n = export_label_studio(dataset, given["image_url_prefix"], review=given["review"])
        what = f" ({n} frames, the review queue's first)" if given["review"] is not None else f" ({n} frames)"
        echo(f"Label Studio tasks{what}: {tasks}\nLabel Studio labeling config: {config}")


def export_cmd(given: Given) -> None:
    from autolabel.export import export_dataset

    if given["only_flagged"]:
        raise ConfigError(RETIRED)
    r = export_dataset(given["dataset"], given["to"], given["output"], given["image_url_prefix"], given["review"])
    split = " / ".join(f"{k} {v}" for k, v in r.split.items())
    images = f"images {r.linked} hard-linked, {r.copied} copied" if r.linked or r.copied else "images not copied"
    echo(f"exported {r.frames} frames ({split}), {r.boxes} boxes -> {r.output} ({r.to}); {images}")
    if r.unreviewed is not None:
        echo(f"  the review queue's first {r.frames} of {r.unreviewed} unreviewed frames ({r.total} in the dataset)")
    if r.kept:
        echo(f"  kept {len(r.kept)} files of yours from the earlier export (e.g. {r.kept[0]})")
    echo(f"  load: {r.load}")


def import_cmd(given: Given) -> None:
    from autolabel.imports import import_annotations

    dataset = given["dataset"]
    r = import_annotations(dataset, given["source"], given["from_"])
    into = f"{dataset} (products {', '.join(r.products)}, merged again)" if r.products else str(dataset)
    echo(
        f"imported {r.frames_reviewed} reviewed frames into {into} ({r.source_format}): "
        f"{r.frames_changed} changed, boxes {r.boxes_before} -> {r.boxes_after}; "
        f"{r.reviewed_total} of {r.frames_total} frames now reviewed"
    )
    if r.matched_by_name:
        echo(f"  matched by file name: {r.frames_reviewed} frames (the source carries no dataset id)")
    if r.masks is not None:
        from autolabel.cli.output import mask_line

        echo(f"  {mask_line(r.masks)}")
