"""Base models behind one small interface: frames in, ``sv.Detections`` out.

Each base model's module lists the files it needs (``model_files``) and builds its labeler
from them once fetched (``create``); :func:`create_labeler` fetches them in one go
(:func:`autolabel.fetch.fetch`: one line naming every missing file when offline).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from autolabel.fetch import ModelFile
from autolabel.labelers.base import Labeler

__all__ = ["Labeler", "create_labeler", "model_files"]

MODULES = {"grounding-dino": "grounding_dino", "ultralytics": "ultralytics", "hf": "hf", "discover": "discover"}


def _module(base_model: str) -> ModuleType:
    """The module of a base model (imports it, and so torch or transformers, lazily)."""
    return importlib.import_module(f"autolabel.labelers.{MODULES.get(base_model, 'grounding_dino')}")


def model_files(model_config, cache: str | None = None) -> list[ModelFile]:
    """The :class:`autolabel.fetch.ModelFile` list of the base model ``model_config.base_model`` names."""
    return _module(model_config.base_model).model_files(model_config, cache)


def create_labeler(model_config, cache: str | None = None, progress: bool = True) -> Labeler:
    """Fetches the files of the base model ``model_config.base_model`` names, then builds its labeler."""
    from autolabel.fetch import fetch
    from autolabel.weights import cache_dir

    module = _module(model_config.base_model)
    files = fetch(module.model_files(model_config, cache), cache_dir(cache), progress)
    return module.create(model_config, files, cache, progress)
