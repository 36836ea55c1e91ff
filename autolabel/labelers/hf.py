"""Zero-shot detectors from Hugging Face ``transformers``: the Grounding DINO family and OWL-ViT/OWLv2.

Anything ``AutoModelForZeroShotObjectDetection`` and ``AutoProcessor`` load, from a hub id
(fetched by :mod:`autolabel.fetch` through ``huggingface_hub``: its cache, ``HF_ENDPOINT``
mirrors, resumable downloads) or a local folder:

- Grounding DINO, MM-Grounding-DINO and LLMDet (an MM-Grounding-DINO checkpoint): all
  captions in one prompt ``a . b .``; each box takes the class of the caption whose tokens
  score best (as the ``grounding-dino`` labeler). An ontology past the model's token limit
  is split into several prompts, and their boxes are merged with class-aware NMS.
- OWL-ViT and OWLv2: each caption is a text query; a box takes its best query's class.

Frames of one size go through one forward, preprocessed by the model's own image processor
(its fast, torch version, on the device where it has one), under autocast on CUDA.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import supervision as sv

from autolabel import pretrained
from autolabel.errors import ConfigError, InputError
from autolabel.fetch import Hub, ModelFile, check_hub_id, is_local
from autolabel.labelers.base import (
    autocast,
    label_by_size,
    label_in_batches,
    merge_parts,
    pick_device,
    pick_dtype,
    precision_name,
)
from autolabel.labelers.grounding_dino import Prompt, auto_batch_size, decode_outputs, pixel_detections, plan_prompts
from autolabel.ontology import Ontology

log = logging.getLogger(__name__)

GROUNDING = ("grounding-dino", "mm-grounding-dino")
OWL = ("owlv2", "owlvit")
# Only what from_pretrained reads: configs, tokenizer files and safetensors weights (no ONNX, no duplicates).
HUB_FILES = ("*.json", "*.txt", "*.safetensors", "*.model", "*.tiktoken")


def model_files(mc, cache: str | None = None) -> list[ModelFile]:
    """The model folder: the one given, or the hub snapshot (configs, tokenizer files, safetensors)."""
    spec = mc.hf_model
    if is_local(spec):
        if mc.hf_revision:
            raise ConfigError(f"--hf-revision {mc.hf_revision}: only for a hub id; --hf-model {spec} is a local folder")
        return [
            ModelFile("hf_model", "Hugging Face model folder", "--hf-model", path=Path(spec).expanduser(), folder=True)
        ]
    check_hub_id(spec, "--hf-model")
    hub = Hub(spec, revision=mc.hf_revision, allow=HUB_FILES)
    return [ModelFile("hf_model", f"Hugging Face model {spec}", "--hf-model", hub=hub, folder=True)]


def create(mc, files: dict[str, Path], cache: str | None = None, progress: bool = True) -> HfLabeler:
    """Loads the fetched model folder (see :func:`model_files`) on the configured device."""
    folder = files["hf_model"]
    commit = None if is_local(mc.hf_model) else folder.name  # a snapshot folder is named by its commit
    # (a local folder may hold other weights too: loading says what is wrong with them)
    pretrained.check_folder(folder, f"--hf-model {mc.hf_model}", safetensors=commit is not None)
    model, processor = load(folder, f"--hf-model {mc.hf_model}")
    identity = {"base_model": "hf", "hf_model": mc.hf_model, "model_type": model.config.model_type}
    if commit:
        identity["revision"] = commit
    return HfLabeler(
        model,
        processor,
        device=pick_device(mc.device),
        precision=mc.precision,
        image_size=mc.image_size,
        max_size=mc.max_size,
        box_threshold=mc.box_threshold,
        text_threshold=mc.text_threshold,
        nms_iou=mc.nms_iou,
        batch_size=mc.batch_size,
        identity=identity,
    )


def load(folder: Path, what: str):
    """``AutoModelForZeroShotObjectDetection`` and ``AutoProcessor`` from a local folder."""
    from transformers import AutoImageProcessor, AutoModelForZeroShotObjectDetection, AutoProcessor

    def processor(path: Path):
        loaded = AutoProcessor.from_pretrained(path, use_fast=True)
        # AutoProcessor ignores use_fast where the processor names its image processor class
        # (Grounding DINO, OWL-ViT): the fast, torch one comes from AutoImageProcessor.
        loaded.image_processor = AutoImageProcessor.from_pretrained(path, use_fast=True)
        return loaded

    files = "image processor and tokenizer files, as written by save_pretrained"
    model, processor = pretrained.load(
        folder, what, AutoModelForZeroShotObjectDetection, "a zero-shot object detector", processor, files
    )
    kind = model.config.model_type
    if kind not in GROUNDING + OWL:
        raise InputError(
            f"{what}: model type {kind!r} is not supported; supported: {', '.join(GROUNDING + OWL)} "
            "(Grounding DINO, MM-Grounding-DINO, LLMDet, OWL-ViT, OWLv2)"
        )
    return model, processor


class HfLabeler:
    """A ``transformers`` zero-shot detector behind the :class:`Labeler` contract."""

    def __init__(
        self,
        model,
        processor,
        device: str = "cpu",
        precision: str = "auto",
        image_size: int | None = None,
        max_size: int = 1333,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float = 0.5,
        batch_size: int | None = None,
        identity: dict | None = None,
    ) -> None:
        self.device = device
        self.dtype = pick_dtype(precision, device)
        self.model = model.to(device)
        self.processor = processor
        self.kind = model.config.model_type
        self.grounding = self.kind in GROUNDING
        own = processor.image_processor.size
        if self.grounding:
            self.image_size = image_size or own.get("shortest_edge", 800)
            self.max_size = max(max_size, self.image_size)
            self._size = {"shortest_edge": self.image_size, "longest_edge": self.max_size}
            self.max_tokens = int(getattr(model.config, "max_text_len", 256))
        else:  # OWL: a square input; another size than trained interpolates the position embeddings
            trained = model.config.vision_config.image_size
            self.image_size = image_size or own.get("height", trained)
            self.max_size = self.image_size
            self._size = {"height": self.image_size, "width": self.image_size}
            self.max_tokens = int(model.config.text_config.max_position_embeddings)
        self._interpolate = not self.grounding and self.image_size != model.config.vision_config.image_size
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.nms_iou = nms_iou
        self.batch_size = batch_size or self._auto_batch_size()
        self._identity = identity or {"base_model": "hf", "hf_model": self.kind}
        self._prompts: dict[tuple[str, ...], list[tuple[tuple[int, ...], Prompt]]] = {}
        self._queries: dict[tuple[str, ...], dict] = {}

    def describe(self) -> dict:
        """Model identity and the settings that change its output."""
        return {
            **self._identity,
            "image_size": self.image_size,
            "max_size": self.max_size,
            "box_threshold": self.box_threshold,
            "text_threshold": self.text_threshold if self.grounding else None,
            "precision": precision_name(self.dtype),  # as used: fp32 after a fall-back
        }

    def _auto_batch_size(self) -> int:
        return auto_batch_size(self.device, self.image_size, self.max_size, mixed=self.dtype is not None)

    def prepare(self, ontology: Ontology) -> None:
        """Checks that every caption fits the text encoder; plans the prompts or queries."""
        if self.grounding:
            self.prompts(ontology)
        else:
            self.queries(ontology)

    def prompts(self, ontology: Ontology) -> list[tuple[tuple[int, ...], Prompt]]:
        """Grounding DINO family: the (cached) prompts, several when the captions pass the token limit."""
        key = ontology.captions
        if key not in self._prompts:
            plan = plan_prompts(self.processor.tokenizer, ontology.captions, self.max_tokens)
            if len(plan) > 1:
                log.info("%d captions pass the %d-token limit: %d prompts", len(key), self.max_tokens, len(plan))
            self._prompts[key] = plan
        return self._prompts[key]

    def queries(self, ontology: Ontology) -> dict:
        """OWL: the (cached) tokenized text queries, one per caption, on the device."""
        key = ontology.captions
        if key not in self._queries:
            tokenizer = self.processor.tokenizer
            for caption in key:
                n = len(tokenizer(caption)["input_ids"])
                if n > self.max_tokens:
                    raise InputError(
                        f"caption {caption!r} makes {n} tokens; this model reads at most {self.max_tokens} per query: "
                        "shorten it"
                    )
            encoded = tokenizer(list(key), padding="max_length", max_length=self.max_tokens, return_tensors="pt")
            keep = ("input_ids", "attention_mask")
            self._queries[key] = {k: v.to(self.device) for k, v in encoded.items() if k in keep}
        return self._queries[key]

    def label(self, images: Sequence[np.ndarray], ontology: Ontology) -> list[sv.Detections]:
        """Labels frames, in the order given (one forward per frame size)."""
        return label_by_size(
            images, lambda same: label_in_batches(self, same, lambda chunk: self._label_batch(chunk, ontology))
        )

    def _pixels(self, images: Sequence[np.ndarray]) -> dict:
        """BGR uint8 frames of one size to the model's pixel inputs, by its own image processor."""
        import torch

        frames = [torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1])).permute(2, 0, 1) for im in images]
        processor = self.processor.image_processor
        kwargs = {"size": self._size, "return_tensors": "pt"}
        if getattr(processor, "is_fast", False):
            kwargs["device"] = self.device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inputs = processor(frames, **kwargs)
        keep = ("pixel_values", "pixel_mask")
        return {k: v.to(self.device) for k, v in inputs.items() if k in keep}

    def _label_batch(self, images: Sequence[np.ndarray], ontology: Ontology) -> list[sv.Detections]:
        import torch

        pixels = self._pixels(images)
        sizes = [im.shape[:2] for im in images]
        n = len(images)
        if not self.grounding:
            queries = self.queries(ontology)
            text = {k: v.repeat(n, 1) for k, v in queries.items()}
            extra = {"interpolate_pos_encoding": True} if self._interpolate else {}
            with torch.inference_mode(), autocast(self.device, self.dtype):
                out = self.model(**pixels, **text, **extra)
            square = self.kind == "owlv2"
            return decode_owl(out.logits, out.pred_boxes, ontology.caption_class, sizes, self.box_threshold, square)
        parts: list[list[sv.Detections]] = [[] for _ in images]
        tokenizer = self.processor.tokenizer
        for indices, prompt in self.prompts(ontology):
            text = tokenizer([prompt.text] * n, return_tensors="pt").to(self.device)
            with torch.inference_mode(), autocast(self.device, self.dtype), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = self.model(**pixels, **text)
            classes = [ontology.caption_class[j] for j in indices]
            decoded = decode_outputs(
                out.logits, out.pred_boxes, prompt, classes, sizes, self.box_threshold, self.text_threshold
            )
            for frame_parts, detections in zip(parts, decoded, strict=True):
                frame_parts.append(detections)
        return [merge_parts(p, self.nms_iou) for p in parts]


def decode_owl(
    logits,
    boxes,
    caption_class: Sequence[int],
    sizes: Sequence[tuple[int, int]],
    box_threshold: float,
    padded_square: bool = True,
) -> list[sv.Detections]:
    """OWL outputs to detections in pixels: each box takes its best query's class and score.

    Args:
        logits: (B, boxes, queries) raw query logits.
        boxes: (B, boxes, 4) cx, cy, w, h, normalised to the model input.
        caption_class: Ontology class of each query.
        sizes: (height, width) of each image.
        box_threshold: Keep a box whose best query scores above this.
        padded_square: OWLv2 pads bottom and right to a square before resizing, so its boxes
            are fractions of the long side; OWL-ViT stretches the frame, fractions of each side.
    """
    confidence, query = logits.float().sigmoid().max(-1)
    keep = (confidence > box_threshold).cpu().numpy()
    boxes = boxes.float().cpu().numpy()
    confidence, query = confidence.cpu().numpy(), query.cpu().numpy()
    return pixel_detections(boxes, confidence, query, keep, caption_class, sizes, padded_square)


def validate(mc) -> None:
    """A model must be named."""
    if not mc.hf_model:
        raise ConfigError("--base-model hf needs a model: --hf-model HUB_ID_OR_FOLDER (config model.hf_model)")
