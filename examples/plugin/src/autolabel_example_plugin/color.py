"""``example-color``: one box per 8-connected blob of saturated red, the ontology's first class, score 1.0.

A pixel is red when, in the BGR frame, R > 150, G < 80 and B < 80. No model file, no
threshold: every blob is a box. The module provides the two functions the registry calls
(:func:`create`, :func:`model_files`); the labeler follows autolabel's Labeler protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv

from autolabel.errors import InputError
from autolabel.ontology import Ontology

RED_MIN = 150  # R above this
OTHER_MAX = 80  # G and B below this
DEFAULT_BATCH_SIZE = 16


def red_mask(image: np.ndarray) -> np.ndarray:
    """The saturated red pixels of a BGR uint8 frame, as a 0/1 uint8 mask."""
    b, g, r = image[..., 0], image[..., 1], image[..., 2]
    return ((r > RED_MIN) & (g < OTHER_MAX) & (b < OTHER_MAX)).astype(np.uint8)


def red_blobs(image: np.ndarray) -> np.ndarray:
    """Pixel ``xyxy`` boxes (far edges exclusive: a one-pixel blob at (x, y) is [x, y, x+1, y+1]), one per blob."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(red_mask(image), connectivity=8)
    xywh = stats[1:count, :4].astype(np.float32)  # label 0 is the background
    return np.column_stack([xywh[:, 0], xywh[:, 1], xywh[:, 0] + xywh[:, 2], xywh[:, 1] + xywh[:, 3]]).reshape(-1, 4)


class ColorLabeler:
    """Red blobs behind autolabel's Labeler protocol (no model: CPU, fp32 arithmetic only)."""

    def __init__(self, batch_size: int | None = None) -> None:
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE

    def prepare(self, ontology: Ontology) -> None:
        """Every box takes the ontology's first class: there must be one."""
        if not ontology.classes:
            raise InputError("--base-model example-color needs an ontology.json: its boxes take the first class")

    def label(self, images: Sequence[np.ndarray], ontology: Ontology) -> list[sv.Detections]:
        """One ``sv.Detections`` per frame: the red blobs, class 0, confidence 1.0."""
        self.prepare(ontology)
        out = []
        for image in images:
            xyxy = red_blobs(image)
            out.append(
                sv.Detections(
                    xyxy=xyxy,
                    class_id=np.zeros(len(xyxy), dtype=int),
                    confidence=np.ones(len(xyxy), dtype=np.float32),
                )
            )
        return out

    def describe(self) -> dict:
        """What identifies this model's output (run.yaml, the resume check)."""
        return {
            "base_model": "example-color",
            "rule": f"R>{RED_MIN},G<{OTHER_MAX},B<{OTHER_MAX}",
            "connectivity": 8,
            "precision": "fp32",
        }


def model_files(mc: Any, cache: str | None = None) -> list:
    """No model files."""
    return []


def create(mc: Any, files: dict[str, Path], cache: str | None = None, progress: bool = True) -> ColorLabeler:
    """The registry's factory (``mc``: the ``model:`` config; only ``batch_size`` is read)."""
    return ColorLabeler(mc.batch_size)
