"""Base models behind one small interface: frames in, ``sv.Detections`` out."""

from __future__ import annotations

from autolabel.labelers.base import Labeler

__all__ = ["Labeler", "create_labeler"]


def create_labeler(model_config, cache: str | None = None, progress: bool = True) -> Labeler:
    """Builds the labeler that ``model_config.base_model`` names (imports torch lazily)."""
    if model_config.base_model == "ultralytics":
        from autolabel.labelers.ultralytics import UltralyticsLabeler

        return UltralyticsLabeler.from_config(model_config)
    if model_config.base_model == "hf":
        from autolabel.labelers.hf import HfLabeler

        return HfLabeler.from_config(model_config, progress=progress)
    if model_config.base_model == "discover":
        from autolabel.labelers.discover import DiscoverLabeler

        return DiscoverLabeler.from_config(model_config)
    from autolabel.labelers.grounding_dino import GroundingDinoLabeler

    return GroundingDinoLabeler.from_config(model_config, cache=cache, progress=progress)
