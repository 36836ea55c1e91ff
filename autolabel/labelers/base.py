"""The labeler contract and the device/precision choices the labelers share."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import supervision as sv

from autolabel.errors import ConfigError
from autolabel.ontology import Ontology

log = logging.getLogger(__name__)

CLASS_NAME = "class_name"  # Detections.data key: each box's class by name, for open-ended classes


class Labeler(Protocol):
    """A base model that labels frames.

    ``label`` takes BGR uint8 images and returns one ``sv.Detections`` per image
    with pixel ``xyxy``, ontology ``class_id`` and ``confidence``, after the model's
    own thresholds. NMS and filters are the pipeline's. A labeler whose classes are
    open-ended (``discover``) names each box's class in ``data[CLASS_NAME]`` instead; the
    pipeline numbers new names as they come and records them before any frame uses them.
    """

    batch_size: int

    def prepare(self, ontology: Ontology) -> None:
        """Checks that the model can label this ontology (InputError if not) and sets it up."""
        ...

    def label(self, images: Sequence[np.ndarray], ontology: Ontology) -> list[sv.Detections]:
        """Labels a batch of images for one ontology."""
        ...

    def describe(self) -> dict:
        """What identifies this model's output (for run.yaml and the resume check)."""
        ...


def label_by_size(
    images: Sequence[np.ndarray], label_same_size: Callable[[list[np.ndarray]], list[sv.Detections]]
) -> list[sv.Detections]:
    """Labels frames one size at a time, results in the order given.

    Padded or letterboxed into one batch, a frame's boxes would depend on its batch-mates'
    sizes; grouped by size, they never do.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape[:2], []).append(i)
    results: list[sv.Detections] = [sv.Detections.empty()] * len(images)
    for indices in groups.values():
        labeled = label_same_size([images[i] for i in indices])
        for i, detections in zip(indices, labeled, strict=True):
            results[i] = detections
    return results


def label_in_batches(
    owner, images: Sequence[np.ndarray], label_batch: Callable[[Sequence[np.ndarray]], list[sv.Detections]]
) -> list[sv.Detections]:
    """Labels frames ``owner.batch_size`` at a time, results in the order given.

    On CUDA out-of-memory the batch is halved (``owner.batch_size`` keeps the smaller size);
    a dtype clash inside the model under autocast is said once and the rest runs in fp32
    (``owner.dtype`` becomes None).
    """
    import torch

    results: list[sv.Detections] = []
    start = 0
    while start < len(images):
        chunk = images[start : start + owner.batch_size]
        try:
            results.extend(label_batch(chunk))
        except torch.OutOfMemoryError:
            if owner.batch_size == 1:
                raise
            owner.batch_size = max(1, owner.batch_size // 2)
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory: batch size lowered to %d", owner.batch_size)
            continue
        except RuntimeError as exc:
            if owner.dtype is None or "dtype" not in str(exc):
                raise
            log.warning("mixed precision failed in the model (%s); continuing in fp32", str(exc).splitlines()[0])
            owner.dtype = None
            continue
        start += len(chunk)
    return results


def merge_parts(parts: Sequence[sv.Detections], nms_iou: float) -> sv.Detections:
    """One frame's detections from several prompts: concatenated, then the pipeline's class-aware NMS."""
    from autolabel.postprocess import nms

    if len(parts) == 1:
        return parts[0]
    return nms(sv.Detections.merge(list(parts)), nms_iou)


# What the CPU costs, per base model, for the warning (measured on 2 CPU cores, README "Performance").
CPU_SLOW = "which is slow (several seconds per frame)"


def pick_device(requested: str, on_cpu: str = CPU_SLOW) -> str:
    """``auto`` picks CUDA when available; an explicit CUDA or MPS request must be satisfiable.

    Args:
        requested: ``model.device``.
        on_cpu: What labeling on the CPU costs with this model, for the warning (a small YOLO
            labels several frames a second there; Grounding DINO takes seconds per frame).
    """
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        log.warning("no CUDA device found: labeling on the CPU, %s", on_cpu)
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device is {requested!r} but no CUDA device is available")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device is 'mps' but no Apple MPS device is available")
    if requested == "cpu":
        log.warning("labeling on the CPU, %s", on_cpu)
    return requested


def pick_dtype(precision: str, device: str):
    """The autocast dtype for ``precision`` on ``device`` (None: full fp32)."""
    import torch

    if precision == "fp32" or not device.startswith("cuda"):
        if precision in ("fp16", "bf16") and not device.startswith("cuda"):
            log.warning("precision %s needs CUDA; using fp32 on %s", precision, device)
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def precision_name(dtype) -> str:
    """The precision a labeler computes in, as ``describe()`` names it: ``fp32`` (no autocast), ``fp16`` or ``bf16``."""
    if dtype is None:
        return "fp32"
    return {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(dtype), str(dtype).removeprefix("torch."))


def autocast(device: str, dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (``pick_dtype`` gives one only on CUDA); nothing for None."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
