"""Ultralytics set-up shared by training and the Ultralytics labeler.

Ultralytics is told never to download or install anything itself (``YOLO_OFFLINE``, no
auto-install) and to keep its settings in autolabel's cache, not the user's home config.
A local checkpoint or an architecture yaml is used as it is; a bare checkpoint name
(``yolo11n.pt``) that is not on disk is fetched by :mod:`autolabel.fetch` from Ultralytics'
assets release into autolabel's cache, like every other model file.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import sys
from pathlib import Path

from autolabel.errors import InputError
from autolabel.fetch import ModelFile, fetch
from autolabel.weights import cache_dir

DEFAULT_ULTRALYTICS_WEIGHTS = "yolo11n.pt"
ULTRALYTICS_ASSETS = "https://github.com/ultralytics/assets/releases/download/v8.3.0"
# Published sha256 of the assets we know; others are fetched without a hash check.
ASSET_SHA256 = {"yolo11n.pt": "0ebbc80d4a7680d14987a577cd21342b65ecfd94632bd9a8da63ae6417644ee1"}
YAML = (".yaml", ".yml")


def ultralytics_env(cache: str | None = None) -> None:
    """No downloads or installs by Ultralytics itself, settings under autolabel's cache (call before importing it)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir(cache) / "ultralytics"))
    logger = logging.getLogger("ultralytics")
    if not any(isinstance(f, _NoSettingsNote) for f in logger.filters):
        logger.addFilter(_NoSettingsNote())


class _NoSettingsNote(logging.Filter):
    """Drops Ultralytics' note on first import about its settings file: autolabel keeps it in its cache."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not text.startswith(
            ("Creating new Ultralytics Settings", "View Ultralytics Settings", "Update Settings")
        )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _PlainText(logging.Filter):
    """Ultralytics' log lines without their colour codes (for a log file or a pipe, not a terminal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _ANSI.sub("", record.msg)
        return True


def quiet_ultralytics(model, quiet: bool) -> None:
    """Ultralytics' output while it trains ``model``: only its warnings with ``-q``; no colour codes off a terminal.

    Its level (``logging.getLogger("ultralytics")``) also turns its progress bars off. Its Ray Tune
    callback is taken off the trainer: with Ray installed it warns on every epoch of a training that
    is no Ray Tune trial, which ``autolabel train`` never is.
    """
    logger = logging.getLogger("ultralytics")
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not sys.stdout.isatty() and not any(isinstance(f, _PlainText) for f in logger.filters):
        logger.addFilter(_PlainText())
    model.add_callback("on_pretrain_routine_start", _without_ray_tune)


def _without_ray_tune(trainer) -> None:
    raytune = sys.modules.get("ultralytics.utils.callbacks.raytune")  # imported only where its setting is on
    hook = getattr(raytune, "callbacks", {}).get("on_fit_epoch_end")
    if hook is not None and hook in trainer.callbacks["on_fit_epoch_end"]:
        trainer.callbacks["on_fit_epoch_end"].remove(hook)


def checkpoint_file(model: str, flag: str = "--model", key: str = "base_weights") -> ModelFile | None:
    """The file a YOLO model needs: a local file, or a bare asset name (``yolo11n.pt``) from Ultralytics' release.

    None for an architecture yaml that is no local file (Ultralytics builds it from its own).
    """
    path = Path(model).expanduser()
    if path.exists() or (path.suffix in YAML and path.parent != Path(".")):
        return ModelFile(key, "YOLO model", flag, path=path)
    if path.suffix in YAML:
        return None
    if path.parent != Path(".") or path.suffix != ".pt":
        return ModelFile(key, "YOLO checkpoint", flag, path=path)  # given, not there: an error naming the flag
    hint = "start from an architecture yaml such as yolo11n.yaml" if flag == "--model" else None
    return ModelFile(
        key, "Ultralytics checkpoint", flag, url=f"{ULTRALYTICS_ASSETS}/{path.name}", cache_name=path.name,
        digest=ASSET_SHA256.get(path.name), hint=hint,
    )  # fmt: skip


def load_yolo(model: str, flag: str = "--model", cache: str | None = None, progress: bool = True):
    """A YOLO model from a local checkpoint, an architecture yaml, or an Ultralytics name (fetched when missing)."""
    f = checkpoint_file(model, flag)
    files = fetch([f], cache_dir(cache), progress) if f is not None else {}
    return open_yolo(model, files.get(f.key) if f is not None else None, flag, cache)


def open_yolo(model: str, path: Path | None, flag: str = "--model", cache: str | None = None):
    """Builds the YOLO model ``model`` names from ``path``, the file :func:`checkpoint_file` fetched (None: a yaml)."""
    ultralytics_env(cache)
    from ultralytics import YOLO

    if path is None or path.suffix in YAML:
        try:
            return YOLO(str(path) if path is not None else model)
        except (FileNotFoundError, KeyError, ValueError, SyntaxError) as exc:
            raise InputError(f"{model}: not a YOLO architecture yaml ({exc})") from exc
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an Ultralytics checkpoint (given by {flag})")
    if path.suffix.lower() != ".pt":  # Ultralytics would take it for an exported model and fail at predict
        raise InputError(f"{path}: not an Ultralytics checkpoint (a PyTorch .pt file; given by {flag})")
    try:
        return YOLO(str(path))
    except (
        pickle.UnpicklingError,
        RuntimeError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        EOFError,
        ModuleNotFoundError,
    ) as exc:
        raise InputError(f"{path}: not an Ultralytics checkpoint ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    """The first line of an error, without Ultralytics' decorations."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace("ERROR ❌️ ", "").strip()
