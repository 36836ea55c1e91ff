"""``autolabel train``: distill a small YOLO model from a labeled dataset with Ultralytics.

Ultralytics runs offline with its settings in autolabel's cache (see :mod:`autolabel.yolo`).
A segmentation dataset (``run --masks``: YOLO-seg labels) trains a ``-seg`` model: the task is
read from the dataset (its state, else its label files) unless ``--task`` says it, and a YOLO
model name without ``-seg`` (``yolo11n.pt``, ``yolo11n.yaml``) becomes its ``-seg`` twin.
"""

from __future__ import annotations

import difflib
import importlib.resources
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel import progress
from autolabel.config import read_yaml, show
from autolabel.errors import ConfigError, InputError
from autolabel.yolo import load_yolo, quiet_ultralytics, ultralytics_env

log = logging.getLogger(__name__)

# A project folder's own configs/train.yaml, else the copy shipped in the package (equal to the repository's).
PROJECT_TRAIN_CONFIG = Path("configs/train.yaml")
# Settings the CLI owns or autolabel sets itself.
_RESERVED = {"data", "mode", "task"}
# Ultralytics' device forms: cpu, mps, CUDA indices (0 or 0,1), cuda, cuda:N, -1 (an idle GPU).
TRAIN_DEVICE = re.compile(r"cpu|mps|cuda(:\d+(,\d+)*)?|(\d+|-1)(,(\d+|-1))*")


@dataclass
class TrainOptions:
    """What to train; ``overrides`` are Ultralytics train settings (flags over the yaml)."""

    data: Path = Path("dataset/merged/data.yaml")
    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    export: list[str] = field(default_factory=list)
    task: str | None = None  # detect or segment; None: the dataset's


@dataclass
class TrainOutcome:
    """Where the weights went and how good they are."""

    best: Path
    save_dir: Path
    map50: float
    map50_95: float
    exported: list[Path] = field(default_factory=list)
    no_val: bool = False  # the dataset has no validation frames: the scores are on training frames
    task: str = "detect"
    mask_map50: float | None = None  # a segment model's mask mAP50 and mAP50-95
    mask_map50_95: float | None = None

    def describe(self) -> str:
        """The lines the CLI prints."""
        if self.no_val:
            score = (
                f"no validation frames: mAP50 {self.map50:.4f}, mAP50-95 {self.map50_95:.4f} on the TRAINING frames "
                "(not a validation score; raise --val-fraction and label again for one)"
            )
        else:
            score = f"validation mAP50 {self.map50:.4f}, mAP50-95 {self.map50_95:.4f}"
        if self.mask_map50 is not None:
            score += f" (boxes); masks mAP50 {self.mask_map50:.4f}, mAP50-95 {self.mask_map50_95:.4f}"
        lines = [f"best weights: {self.best} ({self.task})", score]
        lines += [f"exported: {p}" for p in self.exported]
        return "\n".join(lines)


def default_train_config() -> Path:
    """``configs/train.yaml`` in the working directory, else the defaults shipped with autolabel."""
    if PROJECT_TRAIN_CONFIG.is_file():
        return PROJECT_TRAIN_CONFIG
    return Path(str(importlib.resources.files("autolabel") / "configs" / "train.yaml"))


def load_train_settings(config: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """configs/train.yaml (or another file) plus flag overrides, checked against Ultralytics' keys."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    settings: dict[str, Any] = {}
    origin: dict[str, str] = {}  # where each setting came from, for the error messages
    path = config if config is not None else default_train_config()
    log.info("train settings from %s", path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of Ultralytics train settings")
    settings.update(data)
    origin.update(dict.fromkeys(data, str(path)))
    flags = {k: v for k, v in overrides.items() if v is not None}
    settings.update(flags)
    origin.update(dict.fromkeys(flags, "flags"))
    valid = sorted(set(DEFAULT_CFG_DICT) | {"model"})
    for key in settings:
        if key in _RESERVED:
            raise ConfigError(f"{origin[key]}: {key!r} is set by autolabel (use --data for the dataset)")
        if key not in valid:
            match = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise ConfigError(f"{origin[key]}: unknown Ultralytics train setting {show(key)}{hint}")
        check_train_setting(key, settings[key], origin[key])
    settings.setdefault("model", "yolo11n.pt")
    settings.setdefault("project", "runs")
    settings.setdefault("name", "autolabel")
    return settings


def check_train_setting(key: str, value: Any, where: str) -> None:
    """Types and ranges of one train setting, by Ultralytics' own checks plus the ranges it leaves to training."""
    from ultralytics.cfg import check_cfg

    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a finite number, got {value}")
    try:
        check_cfg({key: value})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {show(str(exc), 200)[1:-1]}") from exc
    whole = isinstance(value, int) and not isinstance(value, bool)
    if key == "imgsz" and not (whole and value >= 32):
        raise ConfigError(f"{where}: imgsz (--imgsz) must be an int >= 32, got {show(value)}")
    if key == "batch" and not ((whole and (value >= 1 or value == -1)) or (isinstance(value, float) and 0 < value < 1)):
        raise ConfigError(
            f"{where}: batch (--batch) must be an int >= 1, -1 (automatic) or a fraction of GPU memory in (0, 1), "
            f"got {show(value)}"
        )


def check_data_yaml(data: Path) -> bool:
    """A dataset yaml Ultralytics can train on: a mapping with train, val and names (checked before training).

    Returns whether it has validation frames of its own (False: val is the training set).
    """
    if not data.is_file():
        raise InputError(
            f"{data}: dataset file not found (run `autolabel run` and `autolabel merge` first, or give --data)"
        )
    content = read_yaml(data)
    if not isinstance(content, dict):
        got = "an empty file" if content is None else f"a {type(content).__name__}"
        raise ConfigError(f"{data}: not a dataset yaml: expected a mapping with train, val and names, got {got}")
    for key in ("train", "val"):
        if key not in content:
            raise ConfigError(f"{data}: not a dataset yaml: no {key!r} key")
    if "names" not in content and "nc" not in content:
        raise ConfigError(f"{data}: not a dataset yaml: no 'names' (or 'nc') key")
    return content["val"] != content["train"]


def check_export_formats(formats: list[str]) -> None:
    """Each ``--export`` format must be one Ultralytics exports to (checked before training, not after)."""
    if not formats:
        return
    from ultralytics.engine.exporter import export_formats

    valid = [f for f in export_formats()["Argument"] if f != "-"]  # "-" is the PyTorch .pt itself
    for fmt in formats:
        if fmt.lower() not in valid:
            match = difflib.get_close_matches(fmt.lower(), valid, n=1, cutoff=0.6)
            hint = f"did you mean {match[0]!r}? " if match else ""
            raise ConfigError(
                f"--export {show(fmt)}: not an Ultralytics export format ({hint}valid: {', '.join(valid)})"
            )


def pick_train_device(requested: Any, length: str = "") -> str:
    """CUDA when available (never silently the CPU on a GPU machine); a requested device must exist.

    ``length`` says how long the training is (epochs, image size), for the warning when it falls back to the CPU.
    """
    import torch

    if isinstance(requested, (list, tuple)):  # device: [0, 1] in train.yaml
        requested = ",".join(str(d) for d in requested)
    if requested is not None and requested != "":
        text = str(requested) if not isinstance(requested, bool) else ""
        if not TRAIN_DEVICE.fullmatch(text):
            raise ConfigError(
                f"--device must be cpu, mps, a CUDA index list (0 or 0,1), cuda, cuda:N or -1, got {show(requested)}"
            )
        if text == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("--device mps: no Apple MPS device is available (use --device cpu)")
        if text not in ("cpu", "mps"):
            if not torch.cuda.is_available():
                raise ConfigError(f"--device {text}: no CUDA device is available (use --device cpu)")
            count = torch.cuda.device_count()
            if any(int(i) >= count for i in re.findall(r"\d+", text)):
                raise ConfigError(f"--device {text}: only {count} CUDA device(s) (indices 0..{count - 1})")
        return text
    if torch.cuda.is_available():
        return "0"
    log.warning("no CUDA device found: training on the CPU, which is slow%s", f" ({length})" if length else "")
    return "cpu"


TASKS = ("detect", "segment")
# A YOLO model named by Ultralytics' scheme (yolo11n.pt, yolov8s.yaml): its -seg twin has the same name + "-seg".
YOLO_NAME = re.compile(r"(yolo[a-z0-9]*?)(-seg)?(\.pt|\.yaml|\.yml)")


def dataset_task(data: Path) -> str:
    """``segment`` for a segmentation dataset (its state says so, else its labels hold polygons), else ``detect``."""
    from autolabel.datasets.dataset import Dataset

    state = Dataset.state_of(data.parent)
    if state is not None:
        return "segment" if state.segmented else "detect"
    for i, label in enumerate(sorted((data.parent / "labels").rglob("*.txt"))):
        if i >= 200:
            break
        try:
            line = next((ln for ln in label.read_text(encoding="utf-8").splitlines() if ln.strip()), None)
        except (OSError, UnicodeDecodeError):
            continue
        if line is not None:
            return "segment" if len(line.split()) > 5 else "detect"
    return "detect"


def model_for_task(model: str, task: str) -> str:
    """A YOLO model name for ``task``: yolo11n.pt becomes yolo11n-seg.pt for segment (and back for detect)."""
    match = YOLO_NAME.fullmatch(model)
    if match is None:
        return model  # a file of the user's: its own task is checked once loaded
    stem, seg, suffix = match.groups()
    wanted = f"{stem}-seg{suffix}" if task == "segment" else f"{stem}{suffix}"
    if wanted != model:
        log.info("%s dataset: training %s instead of %s", task, wanted, model)
    return wanted


def train_model(options: TrainOptions, cache: str | None = None) -> TrainOutcome:
    """Trains (and optionally exports) a YOLO model on ``options.data`` (a ``-seg`` model on a segmentation dataset)."""
    ultralytics_env(cache)
    data = options.data
    # Everything that can be checked is checked before training starts, not after hours of it.
    has_val = check_data_yaml(data)
    if options.task is not None and options.task not in TASKS:
        raise ConfigError(f"--task must be detect or segment, got {show(options.task)}")
    task = options.task or dataset_task(data)
    settings = load_train_settings(options.config, options.overrides)
    check_export_formats(options.export)
    model_name = model_for_task(str(settings.pop("model")), task)
    length = f"{settings.get('epochs', 100)} epochs at {settings.get('imgsz', 640)} px; --epochs and --imgsz shorten it"
    settings["device"] = pick_train_device(settings.get("device"), length)
    model = load_yolo(model_name, cache=cache, progress=progress.enabled())
    quiet_ultralytics(model, not progress.enabled())
    if getattr(model, "task", task) != task:
        raise ConfigError(
            f"--model {model_name} is a {model.task} model and the dataset is trained for {task}: give a "
            f"{'-seg ' if task == 'segment' else 'detection '}model (or --task {model.task})"
        )
    project = Path(settings.pop("project", "runs")).expanduser().resolve()
    if not has_val:
        log.warning(
            "%s: no validation frames (val is the training set): the scores after training are on training frames",
            data,
        )
    metrics = model.train(data=str(data.resolve()), project=str(project), **settings)
    trainer = model.trainer
    best = Path(trainer.best)
    if not best.exists():
        best = Path(trainer.last)
    exported = []
    for fmt in options.export:
        trained = load_yolo(str(best), cache=cache)
        exported.append(Path(trained.export(format=fmt, simplify=False, device=settings["device"])))
    box = getattr(metrics, "box", None)
    seg = getattr(metrics, "seg", None) if task == "segment" else None
    return TrainOutcome(
        best=best,
        save_dir=Path(trainer.save_dir),
        map50=float(box.map50) if box is not None else 0.0,
        map50_95=float(box.map) if box is not None else 0.0,
        no_val=not has_val,
        exported=exported,
        task=task,
        mask_map50=float(seg.map50) if seg is not None else None,
        mask_map50_95=float(seg.map) if seg is not None else None,
    )
