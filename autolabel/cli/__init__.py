"""The command line: parse, load config, call a stage, print, map errors to exit codes.

Known errors become one line on stderr and their exit code; ``--debug`` shows the
traceback instead. Every option is declared once (:mod:`autolabel.cli.flags`), grouped
and shared between commands; a base model's own flags come from its registry spec. The
app is built on first use (``main()`` or ``autolabel.cli.app``), not at import, since
building it reads the plug-ins' entry points.
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
from autolabel.cli.flags import Flag, Given, argument, command, model_flags
from autolabel.cli.output import echo, print_merge_summary, print_report, print_run_summary, write_report_for
from autolabel.errors import AutolabelError, ConfigError

QUIET = Flag(("--quiet", "-q"), bool, "No progress bars or info lines.", default=False)
DEBUG = Flag(("--debug",), bool, "Show tracebacks for known errors.", default=False)
CONFIG = Flag(("--config", "-c"), Path, "YAML config (see configs/default.yaml); flags override it.")
FILTERS = [
    Flag(("--min-box-size",), float, "Drop boxes under this area fraction.", key="filters.min_box_size"),
    Flag(("--max-box-size",), float, "Drop boxes over this area fraction.", key="filters.max_box_size"),
    Flag(
        ("--overlap-iou",),
        float,
        "Drop the less confident of two boxes overlapping this much.",
        key="filters.overlap_iou",
    ),  # fmt: skip
    Flag(("--drop-empty/--keep-empty",), bool, "Drop frames without boxes.", key="filters.drop_empty"),
    Flag(("--drop-multi/--keep-multi",), bool, "Drop frames with several boxes.", key="filters.drop_multi"),
]
MASK_FLAGS = [
    Flag(
        ("--masks",),
        str,
        "Segmentation masks from the final boxes: sam2, sam, sam-hq, edgetam, ultralytics (none: take them away).",
        key="masks.model",
    ),  # fmt: skip
    Flag(
        ("--mask-model",),
        str,
        "The mask model: hub id or folder (transformers), or an Ultralytics checkpoint (sam2_b.pt, mobile_sam.pt).",
        key="masks.mask_model",
    ),  # fmt: skip
    Flag(("--mask-revision",), str, "Hub branch, tag or commit of a hub id --mask-model.", key="masks.revision"),
    Flag(
        ("--mask-tolerance",),
        float,
        "Polygon simplification (px), kept only at mask IoU >= 0.99; 0: lossless.",
        key="masks.tolerance",
    ),  # fmt: skip
]
UNITE_CASE = Flag(
    ("--unite-case",), bool, "Merge: unite classes whose names differ only in case (hand/Hand).", default=False
)
IMAGE_URL_PREFIX = Flag(
    ("--image-url-prefix",), str, "Label Studio image URL prefix (default: its Local Files storage)."
)
REVIEW = Flag(("--review",), int, "label-studio: only the N frames the review queue puts first, in its order.")
ONLY_FLAGGED = Flag(("--only-flagged",), bool, "Retired: use --review N.", default=False)
RETIRED = "--only-flagged is retired: use --review N (the N unreviewed frames the review queue puts first)"


def _format_flag() -> Flag:
    from autolabel.datasets import formats

    return Flag(("--format",), str, f"Comma list of {', '.join(formats.names(dataset=True))}.", key="dataset.formats")


def _run_flags() -> list[Flag]:
    from autolabel.labelers import registry

    return [
        Flag(("--input", "-i"), Path, "Folder of product folders.", key="input"),
        Flag(("--output", "-o"), Path, "Dataset folder (one sub-folder per product).", key="output"),
        Flag(("--product", "-p"), list[str], "Only this product (repeatable).", key="products"),
        Flag(("--frame-rate", "--frame_rate"), int, "Keep every Nth frame (0, N, 2N, ...).", key="sampling.frame_rate"),
        Flag(("--fps",), float, "Keep F frames per second of video instead.", key="sampling.fps"),
        Flag(
            ("--dedup",),
            float,
            "Drop a frame this similar (0-1) to the last kept one, e.g. 0.98; 0: off.",
            key="sampling.dedup",
        ),  # fmt: skip
        Flag(("--max-frames",), int, "Keep N frames per video, chosen for diversity.", key="sampling.max_frames"),
        CONFIG,
        Flag(("--base-model",), str, f"{', '.join(registry.names())}.", key="model.base_model"),
        *model_flags(),
        Flag(("--box-threshold",), float, "Keep a box scoring above this.", key="model.box_threshold"),
        Flag(
            ("--class-thresholds",),
            Path,
            "YAML file of a box threshold per class name (autolabel eval --fit-thresholds writes one).",
        ),  # fmt: skip
        Flag(
            ("--keep-threshold",),
            float,
            "The journal keeps the model's boxes down to this, so thresholds can change without labeling again.",
            key="model.keep_threshold",
        ),  # fmt: skip
        Flag(
            ("--text-threshold",),
            float,
            "Grounding DINO family: ... and its best token above this.",
            key="model.text_threshold",
        ),  # fmt: skip
        Flag(("--image-size",), int, "Model input short side (px; OWL: the square side).", key="model.image_size"),
        Flag(("--batch-size",), int, "Frames per forward (default: automatic).", key="model.batch_size"),
        Flag(("--device",), str, "auto, cpu, cuda, cuda:N, mps.", key="model.device"),
        Flag(("--precision",), str, "auto, fp32, fp16, bf16.", key="model.precision"),
        *MASK_FLAGS,
        _format_flag(),
        Flag(("--val-fraction",), float, "Share of frames in the validation split.", key="dataset.val_fraction"),
        Flag(("--seed",), int, "Split seed.", key="dataset.seed"),
        *FILTERS,
        Flag(
            ("--overwrite",),
            bool,
            "Relabel products whose settings or sources changed (reviewed ones only when named with --product).",
            default=False,
        ),  # fmt: skip
        UNITE_CASE,
        Flag(("--engine",), str, "local (this process) or ray (every GPU; docs/SCALE.md).", key="engine.name"),
        Flag(
            ("--ray-address",),
            str,
            "With --engine ray: auto or ray://HOST:PORT joins a cluster (default: start one).",
            key="engine.ray_address",
            needs=("engine.name", "ray", "--engine"),
        ),  # fmt: skip
        Flag(
            ("--actors",),
            int,
            "With --engine ray: labeler actors (default: one per GPU).",
            key="engine.actors",
            needs=("engine.name", "ray", "--engine"),
        ),  # fmt: skip
        Flag(("--report/--no-report",), bool, "Write report.html per dataset.", key="report"),
        Flag(("--merge",), bool, "Then merge all products into <output>/merged.", default=False),
        Flag(("--train",), bool, "Then merge and train a YOLO model (configs/train.yaml).", default=False),
        QUIET,
        DEBUG,
    ]


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


def _guarded(fn: Callable[[Given], Any]) -> Callable[[Given], Any]:
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


def _run(given: Given) -> int:
    from autolabel.config import load_config
    from autolabel.pipeline import run as run_pipeline

    if given["frame_rate"] is not None and given["fps"] is not None:
        raise ConfigError("give either --frame-rate (a stride) or --fps, not both")
    overrides = given.overrides()
    if given["class_thresholds"] is not None:
        overrides["model.class_thresholds"] = _class_thresholds(given["class_thresholds"])
    cfg = load_config(given["config"], overrides)
    given.check_needs(cfg)
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
        from autolabel.merge import MERGED, find_product_datasets, merge_datasets

        out = Path(cfg.output) / MERGED
        inputs, skipped = find_product_datasets(Path(cfg.output), exclude=out)
        chosen = cfg.dataset.formats if given["format"] else None
        merged = merge_datasets(inputs, out, cfg.filters, chosen, given["unite_case"])
        print_merge_summary(merged, skipped)
        if cfg.report:
            print_report(write_report_for(merged.output))
        if given["train"]:
            from autolabel.train import TrainOptions, train_model

            outcome = train_model(TrainOptions(data=merged.output / "data.yaml"))
            echo(outcome.describe())
    return 1 if failed else 0


def _class_thresholds(path: Path) -> dict:
    """A ``thresholds.yaml``: ``class name: threshold``."""
    from autolabel.config import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: expected 'class name: threshold' lines (as autolabel eval --fit-thresholds writes)")
    return data


def _eval(given: Given) -> None:
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


def _merge(given: Given) -> None:
    from autolabel.config import load_config
    from autolabel.merge import MERGED, find_product_datasets, merge_datasets

    cfg = load_config(given["config"], given.overrides())
    root = given["root"]
    out = given["output"] or root / MERGED
    inputs, skipped = list(given["datasets"] or []), []
    if not inputs:
        inputs, skipped = find_product_datasets(root, exclude=out)
    chosen = cfg.dataset.formats if given["format"] else None
    result = merge_datasets(inputs, out, cfg.filters, chosen, given["unite_case"])
    print_merge_summary(result, skipped)


def _train(given: Given) -> None:
    from autolabel.train import TrainOptions, train_model

    keys = ("model", "epochs", "imgsz", "batch", "device", "name")
    overrides: dict[str, Any] = {k: given[k] for k in keys}
    if given["quiet"]:
        overrides["verbose"] = False
    export, task = given["export"] or [], given["task"]
    options = TrainOptions(data=given["data"], config=given["config"], overrides=overrides, export=export, task=task)
    echo(train_model(options).describe())


def _report(given: Given) -> None:
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


def _export(given: Given) -> None:
    from autolabel.export import export_dataset

    if given["only_flagged"]:
        raise ConfigError(RETIRED)
    r = export_dataset(given["dataset"], given["to"], given["output"], given["image_url_prefix"], given["review"])
    split = " / ".join(f"{k} {v}" for k, v in r.split.items())
    images = f"images {r.linked} hard-linked, {r.copied} copied" if r.linked or r.copied else "images not copied"
    echo(f"exported {r.frames} frames ({split}), {r.boxes} boxes -> {r.output} ({r.to}); {images}")
    if r.unreviewed is not None:
        echo(f"  the review queue's first {r.frames} of {r.unreviewed} unreviewed frames ({r.total} in the dataset)")
    echo(f"  load: {r.load}")


def _import(given: Given) -> None:
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


DATASET = argument("dataset", Path, "A product dataset or a merged one.")


def build_app() -> typer.Typer:
    """The Typer app with every command (reads the plug-ins' entry points for their flags)."""
    from autolabel.datasets import formats

    app = typer.Typer(
        name="autolabel",
        help="Label product videos with Grounding DINO, merge the datasets, distill a YOLO model.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_callback)
    command(
        app, "run", _run_flags(), _guarded(_run), "Label every product folder under --input into --output/<product>/."
    )
    merge_flags = [
        argument("datasets", list[Path] | None, "Product datasets (default: all under --root).", default=None),
        Flag(("--root",), Path, "Folder of product datasets.", default=Path("dataset")),
        Flag(("--output", "-o"), Path, "Merged dataset (default <root>/merged)."),
        Flag(("--config", "-c"), Path, "YAML config for filters and formats."),
        _format_flag(),
        *FILTERS,
        UNITE_CASE,
        QUIET,
        DEBUG,
    ]
    doc = "Merge product datasets into one (classes united by name, files prefixed by product)."
    command(app, "merge", merge_flags, _guarded(_merge), doc)
    train_flags = [
        Flag(("--data",), Path, "Dataset yaml.", default=Path("dataset/merged/data.yaml")),
        Flag(("--model",), str, "yolo11n.pt (checkpoint) or yolo11n.yaml (scratch)."),
        Flag(("--epochs",), int, "Training epochs (default: configs/train.yaml)."),
        Flag(("--imgsz",), int, "Training image size (default: configs/train.yaml)."),
        Flag(("--batch",), int, "Training batch size (default: configs/train.yaml)."),
        Flag(("--device",), str, "cpu, 0, 0,1, cuda:0, mps (default: CUDA when available)."),
        Flag(("--name",), str, "Run name under runs/."),
        Flag(("--task",), str, "detect or segment (default: segment when the dataset holds masks: a -seg model)."),
        Flag(("--config", "-c"), Path, "Train settings (default ./configs/train.yaml, else packaged)."),
        Flag(("--export",), list[str], "Export best.pt, e.g. onnx (repeatable)."),
        QUIET,
        DEBUG,
    ]
    doc = "Distill a YOLO model from a dataset with Ultralytics; prints best.pt and mAP."
    command(app, "train", train_flags, _guarded(_train), doc)
    report_flags = [
        DATASET,
        Flag(("--export",), str, "Also write an import file for: label-studio."),
        IMAGE_URL_PREFIX,
        REVIEW,
        ONLY_FLAGGED,
        QUIET,
        DEBUG,
    ]
    doc = "Write report.html (counts, histograms, frames worth a second look, annotated thumbnails)."
    command(app, "report", report_flags, _guarded(_report), doc)
    export_flags = [
        DATASET,
        Flag(("--to",), str, f"{', '.join(formats.names())}.", default=...),
        Flag(("--output", "-o"), Path, "Export folder (new, empty, or an earlier export).", default=...),
        IMAGE_URL_PREFIX,
        REVIEW,
        ONLY_FLAGGED,
        QUIET,
        DEBUG,
    ]
    doc = "Write a dataset in the layout another tool imports (images hard-linked, not copied)."
    command(app, "export", export_flags, _guarded(_export), doc)
    readable = ", ".join(n for n, f in formats.registry().items() if f.readable())
    import_flags = [
        argument("source", Path, "The reviewed file or folder (a Label Studio export, COCO file, labels folder...)."),
        Flag(("--dataset", "-d"), Path, "The dataset the frames came from.", default=...),
        Flag(("--from",), str, f"Its format: {readable} (default: detected).", name="from_"),
        QUIET,
        DEBUG,
    ]
    doc = "Bring reviewed labels back into the dataset (journal, then every format's files)."
    command(app, "import", import_flags, _guarded(_import), doc)
    eval_flags = [
        DATASET,
        Flag(("--iou",), float, "IoU that makes a model box match a reviewer's.", default=0.5),
        Flag(("--fit-thresholds",), bool, "Also fit a box threshold per class: thresholds.yaml.", default=False),
        Flag(
            ("--target-precision",),
            float,
            "With --fit-thresholds: the lowest threshold reaching this precision (default: best F1).",
        ),  # fmt: skip
        QUIET,
        DEBUG,
    ]
    doc = "Score the model's labels against the reviewed frames (eval.json), and fit thresholds per class."
    command(app, "eval", eval_flags, _guarded(_eval), doc)
    return app


def _callback() -> None:
    """Label product videos with Grounding DINO, merge the datasets, distill a YOLO model."""


@functools.cache
def _app() -> typer.Typer:
    return build_app()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app()
    raise AttributeError(name)


def main() -> None:
    """Console entry point."""
    _app()()
