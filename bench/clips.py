"""Synthetic clips for the benchmarks (each frame carries its own index, so a planted-error labeler knows it),
and the model-free labeler of the memory and mask benchmarks."""

from __future__ import annotations

import numpy as np

BITS = 10


def stamp(image: np.ndarray, index: int, cell: int) -> None:
    """Writes ``index`` in binary as black and white cells along the frame's top-left edge."""
    for bit in range(BITS):
        image[0:cell, bit * cell : (bit + 1) * cell] = 255 if index >> bit & 1 else 0


def read_stamp(image: np.ndarray, cell: int) -> int:
    """The index :func:`stamp` wrote (the middle of each cell, so compression leaves it readable)."""
    inner = max(1, cell // 4)
    return sum(
        1 << bit
        for bit in range(BITS)
        if image[inner : cell - inner, bit * cell + inner : (bit + 1) * cell - inner].mean() > 128
    )


class TwoBoxes:
    """Two fixed boxes on every frame (scores 0.9 and 0.6): labeling that costs nothing, so the rest is measured."""

    batch_size = 8

    def prepare(self, ontology) -> None:
        pass

    def label(self, images, ontology):
        import supervision as sv

        xyxy = np.array([[64, 96, 320, 288], [384, 48, 576, 432]], np.float32)
        return [sv.Detections(xyxy=xyxy, class_id=np.array([0, 1]), confidence=np.array([0.9, 0.6])) for _ in images]

    def describe(self) -> dict:
        return {"base_model": "planted"}
