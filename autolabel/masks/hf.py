"""SAM-family mask models from ``transformers``: SAM 2 (``Sam2Model``), SAM, SAM-HQ and EdgeTAM.

Each is loaded with ``AutoModel`` and ``AutoProcessor`` from a hub id (fetched by
:mod:`autolabel.fetch` through ``huggingface_hub``: its cache, mirrors, one download, offline
first) or a folder written by ``save_pretrained``; only configs and ``.safetensors`` weights are
read (no pickles).

Frames go through the image encoder in batches (the expensive part: each frame's embedding is
computed once); then each frame's boxes are decoded together, in chunks of at most
:data:`BOXES_PER_CALL`, with the box prompts the processors take (``input_boxes``: pixel corners
scaled to the model's input as the processor scales them). A frame's decoding never shares a call
with another frame: the decoder's output for a box moves in its last bits with the other prompts
in its call (measured on CPU), and ``Sam2Processor`` refuses frames with different box counts in
one call anyway; so a frame's masks depend on nothing but the frame and its boxes, and a resumed
run writes the same bytes as an uninterrupted one. Under bf16/fp16 autocast on CUDA; each box's
mask is upsampled to the frame by the processor's own ``post_process_masks`` one box at a time
(memory: one full-frame mask).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from autolabel import pretrained
from autolabel.errors import ConfigError, InputError
from autolabel.fetch import Hub, ModelFile, check_hub_id, is_local

log = logging.getLogger(__name__)

# Only what from_pretrained reads: configs and safetensors weights.
HUB_FILES = ("*.json", "*.safetensors")
# Box prompts decoded in one call (the decoder's memory grows with them: one image embedding copy each).
BOXES_PER_CALL = 16
# EdgeTAM's config builds its default backbone config from this hub repo, also when loading a checkpoint.
EDGETAM_BACKBONE = Hub("timm/repvit_m1.dist_in1k", "config.json")


def model_files(mc, cache: str | None = None) -> list[ModelFile]:
    """The model folder (the one given, or the hub snapshot); EdgeTAM also needs its backbone's config."""
    from autolabel.masks import source

    spec = source(mc)
    if is_local(spec):
        if mc.revision:
            raise ConfigError(f"--mask-revision {mc.revision}: only for a hub id; --mask-model {spec} is a folder")
        path = Path(spec).expanduser()
        files = [ModelFile("mask_model", "mask model folder", "--mask-model", path=path, folder=True)]
    else:
        check_hub_id(spec, "--mask-model")
        hub = Hub(spec, revision=mc.revision, allow=HUB_FILES)
        files = [ModelFile("mask_model", f"mask model {spec}", "--mask-model", hub=hub, folder=True)]
    if mc.model == "edgetam":
        files.append(ModelFile("edgetam_backbone", "EdgeTAM backbone config (timm RepViT)", hub=EDGETAM_BACKBONE))
    return files


def create(mc, files: dict[str, Path], device: str = "auto", precision: str = "auto") -> HfMasker:
    """Loads the fetched model folder on ``device``."""
    from transformers import AutoModel, AutoProcessor

    from autolabel.labelers.base import pick_device, pick_dtype
    from autolabel.masks import get, source

    folder = files["mask_model"]
    what = f"--masks {mc.model} --mask-model {source(mc)}"
    pretrained.check_folder(folder, what)
    processor_files = "preprocessor_config.json, as save_pretrained writes it"
    model, processor = pretrained.load(
        folder, what, AutoModel, "a SAM-family model", AutoProcessor.from_pretrained, processor_files
    )
    expected = get(mc.model).model_type
    if model.config.model_type != expected:
        raise InputError(
            f"{what}: a {model.config.model_type!r} model, not {expected!r}; name its family with --masks "
            "(sam2, sam, sam-hq, edgetam)"
        )
    device = pick_device(device)
    identity = {"masks": mc.model, "model_type": expected}
    if not is_local(source(mc)):
        identity["revision"] = folder.name  # a snapshot folder is named by its commit
    return HfMasker(model, processor, device, pick_dtype(precision, device), mc.batch_size, identity)


class HfMasker:
    """A transformers SAM-family model behind the :class:`autolabel.masks.Masker` contract."""

    def __init__(self, model, processor, device: str, dtype, batch_size: int | None, identity: dict) -> None:
        self.device = device
        self.dtype = dtype
        self.model = model.to(device)
        self.processor = processor
        self.kind = model.config.model_type
        self.batch_size = batch_size or (8 if device.startswith("cuda") else 2)
        self._identity = identity

    def describe(self) -> dict:
        from autolabel.labelers.base import precision_name

        return {**self._identity, "precision": precision_name(self.dtype)}

    def _embed(self, pixel_values):
        """Each frame's image embedding, computed once (the family's own ``get_image_embeddings``)."""
        out = self.model.get_image_embeddings(pixel_values)
        if self.kind == "sam_hq":
            embeddings, intermediate = out
            return {"image_embeddings": embeddings, "intermediate_embeddings": intermediate}
        return {"image_embeddings": out}

    @staticmethod
    def _frame(embeddings: dict, i: int) -> dict:
        """One frame's slice of a batch's embeddings."""
        out = {}
        for key, value in embeddings.items():
            out[key] = [v[i : i + 1] for v in value] if isinstance(value, list | tuple) else value[i : i + 1]
        return out

    def masks(
        self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[tuple[float, float, float, float]]]
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Each box's mask (H x W bool), frame by frame: encoder batched, each frame's boxes decoded on their own."""
        import torch

        from autolabel.labelers.base import autocast

        rgb = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inputs = self.processor(images=rgb, return_tensors="pt")
        original = inputs["original_sizes"]
        reshaped = inputs["reshaped_input_sizes"]
        with torch.inference_mode(), autocast(self.device, self.dtype):
            embeddings = self._embed(inputs["pixel_values"].to(self.device))
        for i, frame_boxes in enumerate(boxes):
            if not len(frame_boxes):
                continue
            (h, w), (rh, rw) = original[i].tolist(), reshaped[i].tolist()
            scale = torch.tensor([rw / w, rh / h, rw / w, rh / h], dtype=torch.float32)
            prompts = torch.tensor(frame_boxes, dtype=torch.float32).reshape(-1, 4) * scale
            frame = self._frame(embeddings, i)
            for start in range(0, len(prompts), BOXES_PER_CALL):
                chunk = prompts[start : start + BOXES_PER_CALL][None].to(self.device)
                with torch.inference_mode(), autocast(self.device, self.dtype):
                    out = self.model(**frame, input_boxes=chunk, multimask_output=False)
                low = out.pred_masks.float()  # (1, boxes, 1, h', w')
                for j in range(low.shape[1]):
                    yield i, start + j, self._upsample(low[:, j : j + 1], original[i : i + 1], reshaped[i : i + 1])

    def _upsample(self, low, original, reshaped) -> np.ndarray:
        """One box's low-resolution mask logits to a bitmap of the frame (the processor's own post-processing)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.kind in ("sam", "sam_hq"):
                full = self.processor.post_process_masks(low.cpu(), original, reshaped)[0]
            else:
                full = self.processor.post_process_masks(low.cpu(), original)[0]
        return full[0, 0].numpy().astype(bool)
