"""Ultralytics' SAM, SAM 2 and MobileSAM checkpoints as mask models (``--masks ultralytics --mask-model sam2_b.pt``).

A bare checkpoint name (``sam_b.pt``, ``mobile_sam.pt``, ``sam2_b.pt``, ``sam2.1_l.pt``, ...) that is
not on disk is fetched like every model file (:func:`autolabel.yolo.checkpoint_file`: Ultralytics'
assets release, into autolabel's cache; Ultralytics itself never downloads). Ultralytics picks the
architecture from the file name, so a local file must keep its published name. Each frame goes
through ``SAM.predict`` with all its boxes as ``bboxes``: one image embedding per frame, the masks
at the frame's size (``retina_masks``), in half precision on CUDA.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from autolabel.errors import InputError
from autolabel.fetch import ModelFile

log = logging.getLogger(__name__)

# The names Ultralytics' SAM builder knows (it picks the architecture by the file name's end).
KNOWN = (
    "sam_h.pt",
    "sam_l.pt",
    "sam_b.pt",
    "mobile_sam.pt",
    "sam2_t.pt",
    "sam2_s.pt",
    "sam2_b.pt",
    "sam2_l.pt",
    "sam2.1_t.pt",
    "sam2.1_s.pt",
    "sam2.1_b.pt",
    "sam2.1_l.pt",
)


def model_files(mc, cache: str | None = None) -> list[ModelFile]:
    """The checkpoint: a local file, or an Ultralytics asset name fetched to autolabel's cache."""
    from autolabel.masks import source
    from autolabel.yolo import checkpoint_file

    spec = source(mc)
    if not Path(spec).name.endswith(KNOWN):
        raise InputError(
            f"--mask-model {spec}: Ultralytics builds a SAM model from its file name; name one of {', '.join(KNOWN)}"
        )
    f = checkpoint_file(spec, flag="--mask-model", key="mask_model")
    return [f] if f is not None else []


def create(mc, files: dict[str, Path], device: str = "auto", precision: str = "auto") -> UltralyticsMasker:
    """Loads the fetched checkpoint with Ultralytics' ``SAM``."""
    import pickle

    from autolabel.labelers.base import pick_device
    from autolabel.masks import source
    from autolabel.yolo import ultralytics_env

    ultralytics_env()
    from ultralytics import SAM

    path = files["mask_model"]
    try:
        model = SAM(str(path))
    except (pickle.UnpicklingError, RuntimeError, KeyError, ValueError, EOFError) as exc:
        raise InputError(f"--mask-model {source(mc)}: not an Ultralytics SAM checkpoint ({exc})") from exc
    device = pick_device(device)
    half = device.startswith("cuda") and precision in ("auto", "fp16", "bf16")
    return UltralyticsMasker(model, Path(path).name, device, half, mc.batch_size)


class UltralyticsMasker:
    """An Ultralytics SAM model behind the :class:`autolabel.masks.Masker` contract (one frame per call)."""

    def __init__(self, model, name: str, device: str, half: bool, batch_size: int | None) -> None:
        self.model = model
        self.name = name
        self.device = device
        self.half = half
        self.batch_size = batch_size or 1

    def describe(self) -> dict:
        return {"masks": "ultralytics", "checkpoint": self.name, "precision": "fp16" if self.half else "fp32"}

    def masks(
        self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[tuple[float, float, float, float]]]
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        for i, (image, frame_boxes) in enumerate(zip(images, boxes, strict=True)):
            if not len(frame_boxes):
                continue
            prompts = [list(map(float, b)) for b in frame_boxes]
            precision = "fp16" if self.half else "fp32"
            (result,) = self.model(image, bboxes=prompts, device=self.device, quantize=precision, verbose=False)
            data = result.masks.data if result.masks is not None else None
            for j in range(len(prompts)):
                if data is None or j >= len(data):
                    yield i, j, np.zeros(image.shape[:2], bool)
                else:
                    yield i, j, data[j].cpu().numpy().astype(bool)
