"""Synthetic clips for the benchmarks (each frame carries its own index, so a planted-error labeler knows it),
and the model-free labeler of the memory and mask benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

BITS = 10


def write_clip(path: Path, frames: int, size: tuple[int, int], frame: Callable[[int], np.ndarray]) -> None:
    """An mp4v clip at 30 fps of ``frame(i)`` for each index ``i``, ``size`` as (width, height)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
    for i in range(frames):
        writer.write(frame(i))
    writer.release()


def rolling_noise_clip(path: Path, frames: int) -> None:
    """640x480 noise that rolls 4 px a frame: every frame differs, nothing in it to find."""
    base = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    write_clip(path, frames, (640, 480), lambda i: np.roll(base, i * 4, axis=1))


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
