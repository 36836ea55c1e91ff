"""``autolabel train``: distill a small YOLO model from a labeled dataset with Ultralytics.

Ultralytics runs offline with its settings in autolabel's cache (see :mod:`autolabel.yolo`).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel.config import read_yaml
from autolabel.errors import ConfigError, InputError
from autolabel.yolo import load_yolo, ultralytics_env

log = logging.getLogger(__name__)

DEFAULT_TRAIN_CONFIG = Path("configs/train.yaml")
# Settings the CLI owns or autolabel sets itself.
_RESERVED = {"data", "mode", "task"}


@dataclass
class TrainOptions:
    """What to train; ``overrides`` are Ultralytics train settings (flags over the yaml)."""

    data: Path = Path("dataset/merged/data.yaml")
    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    export: list[str] = field(default_factory=list)


@dataclass
class TrainOutcome:
    """Where the weights went and how good they are."""

    best: Path
    save_dir: Path
    map50: float
    map50_95: float
    exported: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        """The lines the CLI prints."""
        lines = [
            f"best weights: {self.best}",
            f"validation mAP50 {self.map50:.4f}, mAP50-95 {self.map50_95:.4f}",
        ]
        lines += [f"exported: {p}" for p in self.exported]
        return "\n".join(lines)


def load_train_settings(config: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """configs/train.yaml (or another file) plus flag overrides, checked against Ultralytics' keys."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    settings: dict[str, Any] = {}
    path = config if config is not None else (DEFAULT_TRAIN_CONFIG if DEFAULT_TRAIN_CONFIG.is_file() else None)
    if path is not None:
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of Ultralytics train settings")
        settings.update(data)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    valid = sorted(set(DEFAULT_CFG_DICT) | {"model"})
    for key in settings:
        if key in _RESERVED:
            raise ConfigError(f"{path or 'flags'}: {key!r} is set by autolabel (use --data for the dataset)")
        if key not in valid:
            match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise ConfigError(f"{path or 'flags'}: unknown Ultralytics train setting {key!r}{hint}")
    settings.setdefault("model", "yolo11n.pt")
    settings.setdefault("project", "runs")
    settings.setdefault("name", "autolabel")
    return settings


def pick_train_device(requested: str | None) -> str:
    """CUDA when available (never silently the CPU on a GPU machine)."""
    import torch

    if requested:
        if requested not in ("cpu", "mps") and not torch.cuda.is_available():
            raise ConfigError(f"--device {requested}: no CUDA device is available (use --device cpu)")
        return requested
    if torch.cuda.is_available():
        return "0"
    log.warning("no CUDA device found: training on the CPU, which is slow")
    return "cpu"


def train_model(options: TrainOptions, cache: str | None = None) -> TrainOutcome:
    """Trains (and optionally exports) a YOLO model on ``options.data``."""
    ultralytics_env(cache)
    data = options.data
    if not data.is_file():
        raise InputError(
            f"{data}: dataset file not found (run `autolabel run` and `autolabel merge` first, or give --data)"
        )
    settings = load_train_settings(options.config, options.overrides)
    model_name = str(settings.pop("model"))
    settings["device"] = pick_train_device(settings.get("device"))
    model = load_yolo(model_name)
    project = Path(settings.pop("project", "runs")).expanduser().resolve()
    metrics = model.train(data=str(data.resolve()), project=str(project), **settings)
    trainer = model.trainer
    best = Path(trainer.best)
    if not best.exists():
        best = Path(trainer.last)
    exported = []
    for fmt in options.export:
        exported.append(Path(load_yolo(str(best)).export(format=fmt, simplify=False, device=settings["device"])))
    box = getattr(metrics, "box", None)
    return TrainOutcome(
        best=best,
        save_dir=Path(trainer.save_dir),
        map50=float(box.map50) if box is not None else 0.0,
        map50_95=float(box.map) if box is not None else 0.0,
        exported=exported,
    )
