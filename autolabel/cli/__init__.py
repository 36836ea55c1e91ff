"""The command line: parse, load config, call a stage, print, map errors to exit codes.

Known errors become one line on stderr and their exit code; ``--debug`` shows the
traceback instead. Every option is declared once (:mod:`autolabel.cli.flags`), grouped
and shared between commands; a base model's own flags come from its registry spec. The
app is built on first use (``main()`` or ``autolabel.cli.app``), not at import, since
building it reads the plug-ins' entry points.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import typer

from autolabel.cli import commands
from autolabel.cli.flags import Flag, argument, command, model_flags

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
        shown="off",
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
REPORT = Flag(("--report/--no-report",), bool, "Write report.html per dataset.", key="report")
ONLY_FLAGGED = Flag(("--only-flagged",), bool, "Retired: use --review N.", default=False)


@functools.cache
def _train_defaults() -> dict[str, Any]:
    """The train settings ``autolabel train`` starts from (configs/train.yaml here, else packaged), for --help."""
    from autolabel.config import read_yaml
    from autolabel.train import default_train_config

    path = default_train_config()
    data = read_yaml(path)
    return {k: f"{v} ({path})" for k, v in data.items()} if isinstance(data, dict) else {}


def _train_flags(prefix: str = "") -> list[Flag]:
    """What to train and how long: ``train``'s flags, also ``run --train``'s (``prefix`` says so in --help)."""
    shown = _train_defaults()
    texts = {
        "model": "The YOLO model: yolo11n.pt (checkpoint) or yolo11n.yaml (scratch).",
        "epochs": "Training epochs.",
        "imgsz": "Training image size.",
        "batch": "Training batch size.",
    }
    kinds = {"model": str, "epochs": int, "imgsz": int, "batch": int}
    return [
        Flag((f"--{k}",), kinds[k], f"{prefix}{t[0].lower() + t[1:] if prefix else t}", shown=shown.get(k))
        for k, t in texts.items()
    ]


def _format_flag() -> Flag:
    from autolabel.datasets import formats

    return Flag(("--format",), str, f"Comma list of {', '.join(formats.names(dataset=True))}.", key="dataset.formats")


def _run_flags() -> list[Flag]:
    from autolabel.labelers import registry

    return [
        Flag(("--input", "-i"), Path, "Folder of product folders.", key="input"),
        Flag(("--output", "-o"), Path, "Dataset folder (one sub-folder per product).", key="output"),
        Flag(("--product", "-p"), list[str], "Only this product (repeatable).", key="products"),
        Flag(
            ("--frame-rate",),
            int,
            "Keep every Nth frame (0, N, 2N, ...).",
            key="sampling.frame_rate",
            aliases=("--frame_rate",),  # the seed's spelling
        ),  # fmt: skip
        Flag(("--fps",), float, "Keep F frames per second of video instead.", key="sampling.fps", shown="off"),
        Flag(
            ("--dedup",),
            float,
            "Drop a frame this similar (0-1) to the last kept one, e.g. 0.98; 0: off.",
            key="sampling.dedup",
            shown="off",
        ),  # fmt: skip
        Flag(
            ("--max-frames",),
            int,
            "Keep N frames per video, chosen for diversity.",
            key="sampling.max_frames",
            shown="every sampled frame",
        ),  # fmt: skip
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
        Flag(
            ("--image-size",),
            int,
            "Model input short side (px; OWL: the square side).",
            key="model.image_size",
            shown="the model's own",
        ),  # fmt: skip
        Flag(
            ("--batch-size",),
            int,
            "Frames per forward.",
            key="model.batch_size",
            shown="from free GPU memory; 2 on CPU",
        ),  # fmt: skip
        Flag(("--device",), str, "auto, cpu, cuda, cuda:N, mps.", key="model.device"),
        Flag(("--precision",), str, "auto, fp32, fp16, bf16.", key="model.precision"),
        *MASK_FLAGS,
        _format_flag(),
        Flag(("--val-fraction",), float, "Share of frames in the validation split.", key="dataset.val_fraction"),
        Flag(
            ("--track",),
            bool,
            "Link boxes into tracks: fill missed frames, drop blips, one class per object.",
            key="tracking.enabled",
        ),  # fmt: skip
        Flag(
            ("--track-stride",),
            int,
            "With --track: detect on every Nth frame of each video (1: every frame).",
            key="tracking.stride",
            needs=("tracking.enabled", True, "--track"),
        ),  # fmt: skip
        Flag(
            ("--max-gap",),
            int,
            "With --track: fill a track's gaps of up to this many frames.",
            key="tracking.max_gap",
            needs=("tracking.enabled", True, "--track"),
        ),  # fmt: skip
        Flag(
            ("--min-track",),
            int,
            "With --track: drop tracks with fewer detections (blips).",
            key="tracking.min_track",
            needs=("tracking.enabled", True, "--track"),
        ),  # fmt: skip
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
            "With --engine ray: auto or ray://HOST:PORT joins a cluster.",
            key="engine.ray_address",
            shown="start one on this machine",
            needs=("engine.name", "ray", "--engine"),
        ),  # fmt: skip
        Flag(
            ("--actors",),
            int,
            "With --engine ray: labeler actors.",
            key="engine.actors",
            shown="one per GPU",
            needs=("engine.name", "ray", "--engine"),
        ),  # fmt: skip
        REPORT,
        Flag(("--merge",), bool, "Then merge all products into <output>/merged.", default=False),
        Flag(("--train",), bool, "Then merge and train a YOLO model (configs/train.yaml).", default=False),
        *_train_flags("With --train: "),
        QUIET,
        DEBUG,
    ]


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
        rich_markup_mode=None,  # click's plain help: no type column (<bool> on every flag), no markup eaten
        context_settings={"max_content_width": 100},
    )
    app.callback()(_callback)
    command(
        app,
        "run",
        _run_flags(),
        commands.guarded(commands.run_cmd),
        "Label every product folder under --input into --output/<product>/.",
    )
    merge_flags = [
        argument("datasets", list[Path] | None, "Product datasets (default: all under --root).", default=None),
        Flag(("--root",), Path, "Folder of product datasets.", default=Path("dataset")),
        Flag(("--output", "-o"), Path, "Merged dataset (default <root>/merged)."),
        Flag(("--config", "-c"), Path, "YAML config for filters and formats."),
        _format_flag(),
        *FILTERS,
        UNITE_CASE,
        REPORT,
        QUIET,
        DEBUG,
    ]
    doc = "Merge product datasets into one (classes united by name, files prefixed by product)."
    command(app, "merge", merge_flags, commands.guarded(commands.merge_cmd), doc)
    train_flags = [
        Flag(("--data",), Path, "Dataset yaml.", default=Path("dataset/merged/data.yaml")),
        *_train_flags(),
        Flag(("--device",), str, "cpu, 0, 0,1, cuda:0, mps.", shown="CUDA when available, else cpu"),
        Flag(("--name",), str, "Run name under runs/.", shown=_train_defaults().get("name")),
        Flag(("--task",), str, "detect or segment.", shown="segment when the dataset holds masks (a -seg model)"),
        Flag(("--config", "-c"), Path, "Train settings (default ./configs/train.yaml, else packaged)."),
        Flag(("--export",), list[str], "Export best.pt, e.g. onnx (repeatable)."),
        QUIET,
        DEBUG,
    ]
    doc = "Distill a YOLO model from a dataset with Ultralytics; prints best.pt and mAP."
    command(app, "train", train_flags, commands.guarded(commands.train_cmd), doc)
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
    command(app, "report", report_flags, commands.guarded(commands.report_cmd), doc)
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
    command(app, "export", export_flags, commands.guarded(commands.export_cmd), doc)
    readable = ", ".join(n for n, f in formats.registry().items() if f.readable())
    import_flags = [
        argument("source", Path, "The reviewed file or folder (a Label Studio export, COCO file, labels folder...)."),
        Flag(("--dataset", "-d"), Path, "The dataset the frames came from.", default=...),
        Flag(("--from",), str, f"Its format: {readable} (default: detected).", name="from_"),
        QUIET,
        DEBUG,
    ]
    doc = "Bring reviewed labels back into the dataset (journal, then every format's files)."
    command(app, "import", import_flags, commands.guarded(commands.import_cmd), doc)
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
    command(app, "eval", eval_flags, commands.guarded(commands.eval_cmd), doc)
    return app


def _version(value: bool) -> None:
    if value:
        from autolabel import __version__

        typer.echo(f"autolabel {__version__}")
        raise typer.Exit


def _callback(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
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
