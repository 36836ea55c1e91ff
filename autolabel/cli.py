"""The command line: parse, load config, call a stage, print, map errors to exit codes.

Known errors become one line on stderr and their exit code; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from autolabel import progress
from autolabel.errors import AutolabelError, ConfigError

app = typer.Typer(
    name="autolabel",
    help="Label product videos with Grounding DINO, merge the datasets, distill a YOLO model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info lines.")]
MinBoxSize = Annotated[float | None, typer.Option("--min-box-size", help="Drop boxes under this area fraction.")]
MaxBoxSize = Annotated[float | None, typer.Option("--max-box-size", help="Drop boxes over this area fraction.")]
OverlapIou = Annotated[
    float | None, typer.Option("--overlap-iou", help="Drop the less confident of two boxes overlapping this much.")
]
DropEmpty = Annotated[bool | None, typer.Option("--drop-empty/--keep-empty", help="Drop frames without boxes.")]
DropMulti = Annotated[bool | None, typer.Option("--drop-multi/--keep-multi", help="Drop frames with several boxes.")]
Formats = Annotated[str | None, typer.Option("--format", help="Comma list of yolo, voc, coco.")]
UniteCase = Annotated[
    bool, typer.Option("--unite-case", help="Merge: unite classes whose names differ only in case (hand/Hand).")
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks for known errors.")]
DatasetArg = Annotated[Path, typer.Argument(help="A product dataset or a merged one.")]
ImageUrlPrefix = Annotated[
    str | None,
    typer.Option("--image-url-prefix", help="Label Studio image URL prefix (default: its Local Files storage)."),
]
OnlyFlagged = Annotated[
    bool,
    typer.Option("--only-flagged", help="label-studio: only the frames the report flags, to review those first."),
]


@app.callback()
def _main() -> None:
    """Label product videos with Grounding DINO, merge the datasets, distill a YOLO model."""


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


def _guard(debug: bool, fn: Callable[[], Any]) -> Any:
    try:
        with _sigterm_as_interrupt():
            return fn()
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


def _filter_overrides(min_box_size, max_box_size, overlap_iou, drop_empty, drop_multi) -> dict[str, Any]:
    return {
        "filters.min_box_size": min_box_size,
        "filters.max_box_size": max_box_size,
        "filters.overlap_iou": overlap_iou,
        "filters.drop_empty": drop_empty,
        "filters.drop_multi": drop_multi,
    }


def _echo(line: str = "") -> None:
    typer.echo(line)


def print_run_summary(results) -> None:
    """One block per product: frames, boxes per class, empty frames, time, frames/s."""
    _echo()
    _echo("Summary")
    for r in results:
        if r.output is None:
            _echo(f"  {r.product}: FAILED: {r.errors[0] if r.errors else 'unknown error'}")
            continue
        classes = ", ".join(f"{name} {n}" for name, n in r.boxes_per_class.items()) or "-"
        split = " / ".join(f"{k} {v}" for k, v in r.split.items())
        _echo(f"  {r.product} -> {r.output}")
        _echo(f"    frames {r.frames} ({split}), new this run {r.new_frames}, empty {r.empty_frames}")
        _echo(f"    boxes per class: {classes}")
        if r.duplicate_frames:
            _echo(f"    near-duplicates dropped (--dedup, not labeled): {r.duplicate_frames}")
        if r.filtered or r.dropped_frames:
            removed = ", ".join(f"{k} {v}" for k, v in r.filtered.items())
            _echo(f"    filters removed: {removed or '-'} (frames dropped in total: {r.dropped_frames})")
        if r.reviewed_frames:
            _echo(f"    reviewed frames (autolabel import): {r.reviewed_frames}")
        missing = [p for p, differed in r.repaired if not differed]
        edited = [p for p, differed in r.repaired if differed]
        if missing:
            _echo(f"    wrote {len(missing)} missing derived files from the journal (e.g. {missing[0]})")
        if edited:
            _echo(
                f"    rewrote {len(edited)} files that differed from the journal (e.g. {edited[0]}); the edited "
                "copies are in .autolabel/edited/: bring corrections in with autolabel import"
            )
        _echo(f"    time {r.seconds:.1f} s, {r.fps:.2f} frames/s")
        for note in r.notes:
            _echo(f"    note: {note}")
        for e in r.errors:
            _echo(f"    error: {e}")


def _check_model_flags(base_model: str, given: dict[str, tuple[str, object]]) -> None:
    """A flag that only another base model reads is an error: ignored, the run would use a model not asked for."""
    for flag, (owner, value) in given.items():
        if value is not None and owner != base_model:
            raise ConfigError(f"{flag} is for --base-model {owner} (base model: {base_model})")


@app.command()
def run(
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Folder of product folders (default videos/).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Dataset folder (default dataset/).")] = None,
    product: Annotated[
        list[str] | None, typer.Option("--product", "-p", help="Only this product (repeatable).")
    ] = None,
    frame_rate: Annotated[
        int | None, typer.Option("--frame-rate", "--frame_rate", help="Keep every Nth frame (0, N, 2N, ...).")
    ] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Keep F frames per second of video instead.")] = None,
    dedup: Annotated[
        float | None,
        typer.Option("--dedup", help="Drop a frame this similar (0-1) to the last kept one, e.g. 0.98; 0: off."),
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", help="Keep N frames per video, chosen for diversity.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config (see configs/default.yaml).")
    ] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="grounding-dino, ultralytics, hf (--hf-model) or discover.")
    ] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Grounding DINO checkpoint (.pth).")] = None,
    model_config: Annotated[str | None, typer.Option("--model-config", help="Grounding DINO config (.py).")] = None,
    text_encoder: Annotated[
        str | None, typer.Option("--text-encoder", help="BERT config + tokenizer folder (default: bundled).")
    ] = None,
    base_weights: Annotated[str | None, typer.Option("--base-weights", help="Ultralytics checkpoint (.pt).")] = None,
    hf_model: Annotated[
        str | None, typer.Option("--hf-model", help="Hugging Face zero-shot detector: hub id or local folder.")
    ] = None,
    hf_revision: Annotated[str | None, typer.Option("--hf-revision", help="Hub branch, tag or commit.")] = None,
    discover_backbone: Annotated[
        str | None, typer.Option("--discover-backbone", help="discover: timm ViT that finds objects.")
    ] = None,
    backbone_weights: Annotated[
        str | None, typer.Option("--backbone-weights", help="discover: its weights (.safetensors, .pth).")
    ] = None,
    discover_classifier: Annotated[
        str | None, typer.Option("--discover-classifier", help="discover: timm ImageNet-21k classifier.")
    ] = None,
    classifier_weights: Annotated[
        str | None, typer.Option("--classifier-weights", help="discover: its weights (.safetensors, .pth).")
    ] = None,
    number_seeds: Annotated[int | None, typer.Option("--number-seeds", help="discover: objects per frame.")] = None,
    keep_unmapped: Annotated[
        bool | None,
        typer.Option("--keep-unmapped/--drop-unmapped", help="discover: keep objects the ontology does not name."),
    ] = None,
    box_threshold: Annotated[float | None, typer.Option("--box-threshold")] = None,
    text_threshold: Annotated[float | None, typer.Option("--text-threshold")] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Model input short side (px; OWL: the square side).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Frames per forward (default: automatic).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N, mps.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto, fp32, fp16, bf16.")] = None,
    format: Formats = None,
    val_fraction: Annotated[float | None, typer.Option("--val-fraction")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Split seed.")] = None,
    min_box_size: MinBoxSize = None,
    max_box_size: MaxBoxSize = None,
    overlap_iou: OverlapIou = None,
    drop_empty: DropEmpty = None,
    drop_multi: DropMulti = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Relabel products whose settings or sources changed (reviewed ones only when named with --product).",
        ),
    ] = False,
    unite_case: UniteCase = False,
    engine: Annotated[
        str | None, typer.Option("--engine", help="local (this process) or ray (every GPU; docs/SCALE.md).")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="With --engine ray: auto or ray://HOST:PORT joins a cluster (default: start one here).",
        ),
    ] = None,
    actors: Annotated[
        int | None, typer.Option("--actors", help="With --engine ray: labeler actors (default: one per GPU).")
    ] = None,
    report: Annotated[bool | None, typer.Option("--report/--no-report", help="Write report.html per dataset.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Then merge all products into <output>/merged.")] = False,
    train: Annotated[
        bool, typer.Option("--train", help="Then merge and train a YOLO model (configs/train.yaml).")
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Label every product folder under --input into --output/<product>/."""
    _setup(quiet, debug)

    def go() -> int:
        from autolabel.config import load_config
        from autolabel.labelers import create_labeler
        from autolabel.pipeline import run as run_pipeline

        if frame_rate is not None and fps is not None:
            raise ConfigError("give either --frame-rate (a stride) or --fps, not both")
        overrides = {
            "input": str(input) if input else None,
            "output": str(output) if output else None,
            "products": product or None,
            "sampling.frame_rate": frame_rate,
            "sampling.fps": fps,
            "sampling.dedup": dedup,
            "sampling.max_frames": max_frames,
            "model.base_model": base_model,
            "model.weights": weights,
            "model.model_config": model_config,
            "model.text_encoder": text_encoder,
            "model.base_weights": base_weights,
            "model.hf_model": hf_model,
            "model.hf_revision": hf_revision,
            "model.discover.backbone": discover_backbone,
            "model.discover.backbone_weights": backbone_weights,
            "model.discover.classifier": discover_classifier,
            "model.discover.classifier_weights": classifier_weights,
            "model.discover.number_seeds": number_seeds,
            "model.discover.keep_unmapped": keep_unmapped,
            "model.box_threshold": box_threshold,
            "model.text_threshold": text_threshold,
            "model.image_size": image_size,
            "model.batch_size": batch_size,
            "model.device": device,
            "model.precision": precision,
            "dataset.formats": format,
            "dataset.val_fraction": val_fraction,
            "dataset.seed": seed,
            **_filter_overrides(min_box_size, max_box_size, overlap_iou, drop_empty, drop_multi),
            "engine.name": engine,
            "engine.ray_address": ray_address,
            "engine.actors": actors,
            "report": report,
        }
        cfg = load_config(config, overrides)
        _check_model_flags(
            cfg.model.base_model,
            {
                "--weights": ("grounding-dino", weights),
                "--model-config": ("grounding-dino", model_config),
                "--text-encoder": ("grounding-dino", text_encoder),
                "--base-weights": ("ultralytics", base_weights),
                "--hf-model": ("hf", hf_model),
                "--hf-revision": ("hf", hf_revision),
                "--discover-backbone": ("discover", discover_backbone),
                "--backbone-weights": ("discover", backbone_weights),
                "--discover-classifier": ("discover", discover_classifier),
                "--classifier-weights": ("discover", classifier_weights),
                "--number-seeds": ("discover", number_seeds),
                "--keep-unmapped/--drop-unmapped": ("discover", keep_unmapped),
            },
        )
        if frame_rate is not None:
            cfg.sampling.fps = None
        results = run_pipeline(
            cfg, lambda: create_labeler(cfg.model, cfg.cache_dir, progress.enabled()), overwrite=overwrite
        )
        print_run_summary(results)
        if cfg.report:
            for r in results:
                if r.output is not None and r.frames:
                    print_report(write_report_for(r.output))
        failed = [r for r in results if not r.ok]
        if not any(r.frames for r in results) and not failed:  # a failed product has said why already
            logging.getLogger("autolabel").error("no frames were kept in any product (thresholds or filters?)")
            failed = results
        if merge or train:
            from autolabel.merge import MERGED, find_product_datasets, merge_datasets

            out = Path(cfg.output) / MERGED
            inputs, skipped = find_product_datasets(Path(cfg.output), exclude=out)
            merged = merge_datasets(inputs, out, cfg.filters, format and cfg.dataset.formats, unite_case)
            print_merge_summary(merged, skipped)
            if cfg.report:
                print_report(write_report_for(merged.output))
            if train:
                from autolabel.train import TrainOptions, train_model

                outcome = train_model(TrainOptions(data=merged.output / "data.yaml"))
                _echo(outcome.describe())
        return 1 if failed else 0

    code = _guard(debug, go)
    raise typer.Exit(code)


@app.command()
def merge(
    datasets: Annotated[list[Path] | None, typer.Argument(help="Product datasets (default: all under --root).")] = None,
    root: Annotated[Path, typer.Option("--root", help="Folder of product datasets.")] = Path("dataset"),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Merged dataset (default <root>/merged).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config for filters and formats.")] = None,
    format: Formats = None,
    min_box_size: MinBoxSize = None,
    max_box_size: MaxBoxSize = None,
    overlap_iou: OverlapIou = None,
    drop_empty: DropEmpty = None,
    drop_multi: DropMulti = None,
    unite_case: UniteCase = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Merge product datasets into one (classes united by name, files prefixed by product)."""
    _setup(quiet, debug)

    def go() -> None:
        from autolabel.config import load_config
        from autolabel.merge import MERGED, find_product_datasets, merge_datasets

        cfg = load_config(
            config,
            {
                "dataset.formats": format,
                **_filter_overrides(min_box_size, max_box_size, overlap_iou, drop_empty, drop_multi),
            },
        )
        out = output or root / MERGED
        inputs, skipped = list(datasets or []), []
        if not inputs:
            inputs, skipped = find_product_datasets(root, exclude=out)
        result = merge_datasets(inputs, out, cfg.filters, format and cfg.dataset.formats, unite_case)
        print_merge_summary(result, skipped)

    _guard(debug, go)


def print_merge_summary(result, skipped: list[str] = ()) -> None:
    """Frames, classes, boxes and filter removals of a merge, and the datasets left out."""
    split = " / ".join(f"{k} {v}" for k, v in result.split.items())
    _echo(f"merged {', '.join(result.products)} -> {result.output}")
    for why in skipped:
        _echo(f"  left out: {why}")
    _echo(f"  frames {result.frames} ({split})")
    _echo(f"  classes: {', '.join(f'{i}: {n}' for i, n in enumerate(result.classes))}")
    _echo(f"  boxes per class: {', '.join(f'{n} {c}' for n, c in result.boxes_per_class.items())}")
    if result.filtered:
        _echo(f"  filters removed: {', '.join(f'{k} {v}' for k, v in result.filtered.items())}")


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Dataset yaml.")] = Path("dataset/merged/data.yaml"),
    model: Annotated[
        str | None, typer.Option("--model", help="yolo11n.pt (checkpoint) or yolo11n.yaml (scratch).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    imgsz: Annotated[int | None, typer.Option("--imgsz")] = None,
    batch: Annotated[int | None, typer.Option("--batch")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, 0, 0,1, cuda:0, mps (default: CUDA when available).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name under runs/.")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Train settings (default ./configs/train.yaml, else packaged)."),
    ] = None,
    export: Annotated[
        list[str] | None, typer.Option("--export", help="Export best.pt, e.g. onnx (repeatable).")
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Distill a YOLO model from a dataset with Ultralytics; prints best.pt and mAP."""
    _setup(quiet, debug)

    def go() -> None:
        from autolabel.train import TrainOptions, train_model

        overrides = {"model": model, "epochs": epochs, "imgsz": imgsz, "batch": batch, "device": device, "name": name}
        if quiet:
            overrides["verbose"] = False
        outcome = train_model(TrainOptions(data=data, config=config, overrides=overrides, export=export or []))
        _echo(outcome.describe())

    _guard(debug, go)


@app.command()
def report(
    dataset: DatasetArg,
    export: Annotated[str | None, typer.Option("--export", help="Also write an import file for: label-studio.")] = None,
    image_url_prefix: ImageUrlPrefix = None,
    only_flagged: OnlyFlagged = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Write report.html (counts, histograms, frames worth a second look, annotated thumbnails)."""
    _setup(quiet, debug)

    def go() -> None:
        if export not in (None, "label-studio"):
            raise ConfigError(f"--export {export!r}: the supported review tool is label-studio")
        if only_flagged and export is None:
            raise ConfigError("--only-flagged applies to --export label-studio (a review queue)")
        print_report(write_report_for(dataset))
        if export == "label-studio":
            from autolabel.review import export_label_studio

            tasks, config = export_label_studio(dataset, image_url_prefix, flagged=only_flagged)
            what = " (flagged frames only)" if only_flagged else ""
            _echo(f"Label Studio tasks{what}: {tasks}\nLabel Studio labeling config: {config}")

    _guard(debug, go)


@app.command()
def export(
    dataset: DatasetArg,
    to: Annotated[str, typer.Option("--to", help="ultralytics, coco, voc, cvat or label-studio.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Export folder (new, empty, or an earlier export).")],
    image_url_prefix: ImageUrlPrefix = None,
    only_flagged: OnlyFlagged = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Write a dataset in the layout another tool imports (images hard-linked, not copied)."""
    _setup(quiet, debug)

    def go() -> None:
        from autolabel.export import export_dataset

        r = export_dataset(dataset, to, output, image_url_prefix, only_flagged)
        split = " / ".join(f"{k} {v}" for k, v in r.split.items())
        images = f"images {r.linked} hard-linked, {r.copied} copied" if r.to != "label-studio" else "images not copied"
        _echo(f"exported {r.frames} frames ({split}), {r.boxes} boxes -> {r.output} ({r.to}); {images}")
        _echo(f"  load: {r.load}")

    _guard(debug, go)


def write_report_for(dataset: Path):
    """Writes a dataset's report (imports the report module lazily)."""
    from autolabel.report import write_report

    return write_report(dataset)


def print_report(result) -> None:
    """Where the report is and what it flagged."""
    flagged = ", ".join(f"{k} {v}" for k, v in result.flagged.items())
    _echo(
        f"report: {result.path} ({result.frames} frames; flagged: {flagged}; {result.flagged_frames} frames flagged "
        f"in all; {result.seconds:.1f} s)"
    )


@app.command(name="import")
def import_(
    export: Annotated[Path, typer.Argument(help="Label Studio JSON export of the reviewed tasks.")],
    dataset: Annotated[Path, typer.Option("--dataset", "-d", help="The dataset the tasks came from.")],
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Bring a Label Studio review back into the dataset (labels, VOC, COCO, journal)."""
    _setup(quiet, debug)

    def go() -> None:
        from autolabel.review import import_label_studio

        r = import_label_studio(dataset, export)
        _echo(
            f"imported {r.frames_reviewed} reviewed frames into {dataset}: {r.frames_changed} changed, "
            f"boxes {r.boxes_before} -> {r.boxes_after}; {r.reviewed_total} of {r.frames_total} frames now reviewed"
        )

    _guard(debug, go)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
