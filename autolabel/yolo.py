"""Ultralytics set-up shared by training and the Ultralytics labeler.

Ultralytics is told to stay offline (``YOLO_OFFLINE``, no auto-install) and to keep its
settings in autolabel's cache, not the user's home config. A local checkpoint or an
architecture yaml never touches the network; a checkpoint name that is not local gets
one clear error with its download address (``YOLO_OFFLINE=0`` lets Ultralytics fetch it).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from autolabel.errors import InputError, MissingWeightsError
from autolabel.weights import cache_dir

DEFAULT_ULTRALYTICS_WEIGHTS = "yolo11n.pt"
ULTRALYTICS_ASSETS = "https://github.com/ultralytics/assets/releases/download/v8.3.0"


def ultralytics_env(cache: str | None = None) -> None:
    """Offline, no auto-install, settings under autolabel's cache (call before importing ultralytics)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir(cache) / "ultralytics"))


def load_yolo(model: str, flag: str = "--model"):
    """A YOLO model from a local checkpoint, an architecture yaml, or an Ultralytics name."""
    ultralytics_env()
    from ultralytics import YOLO

    path = Path(model).expanduser()
    if path.suffix in (".yaml", ".yml"):
        try:
            return YOLO(str(path) if path.exists() else model)
        except (FileNotFoundError, KeyError, ValueError, SyntaxError) as exc:
            raise InputError(f"{model}: not a YOLO architecture yaml ({exc})") from exc
    if not path.exists():
        if path.parent != Path(".") or path.suffix != ".pt":
            raise MissingWeightsError(f"{model}: file not found (given by {flag})")
        if os.environ.get("YOLO_OFFLINE") == "1" or os.environ.get("AUTOLABEL_OFFLINE") == "1":
            raise MissingWeightsError(
                f"{model}: checkpoint not found locally and downloads are off (YOLO_OFFLINE=1): download "
                f"{ULTRALYTICS_ASSETS}/{path.name} and give its path with {flag}, set YOLO_OFFLINE=0 to let "
                "Ultralytics fetch it, or start from an architecture yaml such as yolo11n.yaml"
            )
        try:
            return YOLO(model)
        except (FileNotFoundError, ConnectionError, OSError) as exc:
            raise MissingWeightsError(
                f"{model}: checkpoint not found locally and could not be downloaded ({exc})"
            ) from exc
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
