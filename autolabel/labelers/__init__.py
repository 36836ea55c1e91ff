"""Base models behind one small interface: frames in, ``sv.Detections`` out (see :mod:`.registry`).

Importing this package imports nothing heavy: the CLI builds its flags from the registry.
"""

from __future__ import annotations


def create_labeler(model_config, cache: str | None = None, progress: bool = True):
    """Builds the labeler that ``model_config.base_model`` names (imports torch lazily)."""
    from autolabel.labelers.registry import get

    return get(model_config.base_model).create(model_config, cache, progress)
