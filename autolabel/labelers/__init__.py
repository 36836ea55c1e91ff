"""Base models behind one small interface: frames in, ``sv.Detections`` out (see :mod:`.registry`).

Importing this package imports nothing heavy: the CLI builds its flags from the registry.
Each base model's module lists the files it needs (``model_files``) and builds its labeler
from them once fetched (``create``); :func:`create_labeler` fetches them in one go
(:func:`autolabel.fetch.fetch`: one line naming every missing file when offline).
"""

from __future__ import annotations


def create_labeler(model_config, cache: str | None = None, progress: bool = True):
    """Fetches the files of the base model ``model_config.base_model`` names, then builds its labeler."""
    from autolabel.labelers.registry import get

    return get(model_config.base_model).create(model_config, cache, progress)
