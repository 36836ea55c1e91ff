"""Ultralytics checkpoints as base models: closed-set YOLO, and open-vocabulary YOLO-World / YOLOE.

A closed-set checkpoint keeps its classes: every caption must name one of them
(case-insensitive), and each box takes the ontology class of the caption naming its
model class. An open-vocabulary checkpoint gets the captions as its classes. Frames go
to ``predict`` in batches, with the box threshold as ``conf`` and the NMS IoU as
``iou``; on CUDA in half precision unless fp32 is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import supervision as sv

from autolabel.errors import InputError, MissingWeightsError
from autolabel.fetch import ModelFile
from autolabel.labelers.base import label_by_size, pick_device
from autolabel.ontology import Ontology, closest_names
from autolabel.yolo import DEFAULT_ULTRALYTICS_WEIGHTS, checkpoint_file, open_yolo

log = logging.getLogger(__name__)


def model_files(mc, cache: str | None = None) -> list[ModelFile]:
    """``model.base_weights`` (default yolo11n.pt): a local file, or an Ultralytics asset name fetched to the cache."""
    f = checkpoint_file(mc.base_weights or DEFAULT_ULTRALYTICS_WEIGHTS, flag="--base-weights")
    return [f] if f is not None else []


def create(mc, files: dict[str, Path], cache: str | None = None, progress: bool = True) -> UltralyticsLabeler:
    """Loads the fetched checkpoint (or builds an architecture yaml) on the configured device."""
    weights = mc.base_weights or DEFAULT_ULTRALYTICS_WEIGHTS
    model = open_yolo(weights, files.get("base_weights"), "--base-weights", cache)
    if getattr(model, "task", "detect") not in ("detect", "segment", "pose", "obb"):
        raise InputError(f"{weights}: a {model.task} model has no boxes; use a detection checkpoint")
    device = pick_device(mc.device, "slower than on a GPU (the run summary gives its frames/s)")
    half = device.startswith("cuda") and mc.precision in ("auto", "fp16")
    if device.startswith("cuda") and mc.precision == "bf16":
        log.warning("Ultralytics predicts in fp16 or fp32; using fp16 for precision bf16")
        half = True
    return UltralyticsLabeler(
        model, Path(weights).name, device, half, mc.image_size, mc.box_threshold, mc.nms_iou, mc.batch_size
    )


class UltralyticsLabeler:
    """An Ultralytics model behind the :class:`Labeler` contract."""

    def __init__(
        self,
        model,
        weights_name: str,
        device: str = "cpu",
        half: bool = False,
        image_size: int | None = None,
        box_threshold: float = 0.35,
        nms_iou: float = 0.5,
        batch_size: int | None = None,
    ) -> None:
        from ultralytics.nn.tasks import WorldModel, YOLOEModel

        self.model = model
        self.weights_name = weights_name
        self.device = device
        self.half = half
        self.open_vocabulary = isinstance(model.model, (WorldModel, YOLOEModel))
        args = getattr(model.model, "args", None) or {}
        trained = args.get("imgsz") if isinstance(args, dict) else None
        self.image_size = image_size or (trained if isinstance(trained, int) else 640)
        self.box_threshold = box_threshold
        self.nms_iou = nms_iou
        self.batch_size = batch_size or (32 if device != "cpu" else 4)
        self._ontology: Ontology | None = None
        self._class_map: dict[int, int] = {}

    def describe(self) -> dict:
        """Model identity and the settings that change its output."""
        return {
            "base_model": "ultralytics",
            "weights": self.weights_name,
            "open_vocabulary": self.open_vocabulary,
            "image_size": self.image_size,
            "box_threshold": self.box_threshold,
            "nms_iou": self.nms_iou,
            "half": self.half,
            "precision": "fp16" if self.half else "fp32",
        }

    def prepare(self, ontology: Ontology) -> None:
        """Maps captions to the checkpoint's classes, or sets them as its classes (open vocabulary)."""
        if self._ontology == ontology:
            return
        if self.open_vocabulary:
            try:
                self.model.set_classes(list(ontology.captions))
            except (ImportError, OSError, ConnectionError, RuntimeError) as exc:
                raise MissingWeightsError(
                    f"{self.weights_name}: open-vocabulary model, but its text encoder could not be loaded to set "
                    f"the captions as classes ({type(exc).__name__}: {exc}); install Ultralytics' CLIP "
                    "(pip install git+https://github.com/ultralytics/CLIP.git) with network access once"
                ) from exc
            self._class_map = dict(enumerate(ontology.caption_class))
        else:
            names = self.model.names if isinstance(self.model.names, dict) else dict(enumerate(self.model.names))
            lookup = {str(n).lower(): int(i) for i, n in names.items()}
            mapping: dict[int, int] = {}
            for caption, cls in zip(ontology.captions, ontology.caption_class, strict=True):
                model_id = lookup.get(caption.lower().strip())
                if model_id is None:
                    close = closest_names(caption, list(lookup))
                    every = list(lookup) if len(lookup) <= 100 else [*list(lookup)[:20], "..."]
                    hint = f"closest: {', '.join(close)}" if close else f"its classes: {', '.join(every)}"
                    raise InputError(
                        f"caption {caption!r} names none of {self.weights_name}'s {len(lookup)} classes ({hint}); "
                        "a closed-set checkpoint finds only its own classes: use one of them as the caption "
                        '(e.g. {"cup": "mug"}), or an open-vocabulary one (YOLO-World, YOLOE)'
                    )
                mapping[model_id] = cls
            self._class_map = mapping
        self._ontology = ontology

    def _device_arg(self) -> str:
        if self.device == "cuda":
            return "0"
        return self.device.removeprefix("cuda:")

    def label(self, images: Sequence[np.ndarray], ontology: Ontology) -> list[sv.Detections]:
        """Labels a batch of BGR frames, in the order given.

        Frames of different sizes are predicted apart, one call per size: Ultralytics letterboxes
        a mixed batch to a square, so a frame's boxes would depend on its batch-mates.
        """
        self.prepare(ontology)
        return label_by_size(images, self._label_same_size)

    def _label_same_size(self, images: list[np.ndarray]) -> list[sv.Detections]:
        classes = None if self.open_vocabulary else sorted(self._class_map)
        results = self.model.predict(
            list(images),
            conf=self.box_threshold,
            iou=self.nms_iou,
            imgsz=self.image_size,
            device=self._device_arg(),
            quantize=16 if self.half else 32,
            classes=classes,
            batch=len(images),
            verbose=False,
        )
        out = []
        for result in results:
            det = sv.Detections.from_ultralytics(result)
            if det.class_id is None or not len(det):
                out.append(sv.Detections.empty())
                continue
            keep = np.array([int(c) in self._class_map for c in det.class_id], dtype=bool)
            det = det[keep]
            det.class_id = np.array([self._class_map[int(c)] for c in det.class_id], dtype=int)
            det.data = {}
            out.append(det)
        return out
