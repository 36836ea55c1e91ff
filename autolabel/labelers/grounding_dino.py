"""Grounding DINO (Swin-T OGC) through the ``groundingdino`` package.

All captions of an ontology go to the model in one prompt (``a . b . c .``), and a
batch of frames in one forward. Each box takes the caption whose tokens score
highest; its confidence is that score. Frames are resized and normalised on the
device; on CUDA the forward runs under autocast (bf16 where supported).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.resources
import io
import logging
import pickle
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import supervision as sv

from autolabel.errors import InputError, MissingWeightsError
from autolabel.fetch import ModelFile
from autolabel.labelers.base import (
    autocast,
    label_by_size,
    label_in_batches,
    merge_parts,
    pick_device,
    pick_dtype,
    precision_name,
)
from autolabel.ontology import Ontology
from autolabel.weights import GROUNDING_DINO_WEIGHTS, bundled_text_encoder, resolve_text_encoder

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 800  # the package's own short side
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def default_model_config() -> Path:
    """The SwinT OGC config that ships inside the groundingdino package."""
    return Path(str(importlib.resources.files("groundingdino.config") / "GroundingDINO_SwinT_OGC.py"))


def model_files(mc, cache: str | None = None) -> list[ModelFile]:
    """The checkpoint (given, cached, or from its GitHub release / hub copy), the model config, the text encoder."""
    weights = GROUNDING_DINO_WEIGHTS
    if mc.weights:
        weights = dataclasses.replace(weights, path=Path(mc.weights).expanduser())
    given_config = Path(mc.model_config).expanduser() if mc.model_config else None
    given_text = Path(mc.text_encoder).expanduser() if mc.text_encoder else None
    return [
        weights,
        ModelFile(
            "model_config", "Grounding DINO model config", "--model-config",
            path=given_config or default_model_config(), given=given_config is not None,
        ),
        ModelFile(
            "text_encoder", "text encoder", "--text-encoder",
            path=given_text or bundled_text_encoder(), given=given_text is not None, folder=True,
        ),
    ]  # fmt: skip


def create(mc, files: dict[str, Path], cache: str | None = None, progress: bool = True) -> GroundingDinoLabeler:
    """Loads the model from its fetched files (see :func:`model_files`) on the configured device."""
    weights, config = files["weights"], files["model_config"]
    text_encoder = resolve_text_encoder(str(files["text_encoder"]) if mc.text_encoder else None)
    device = pick_device(mc.device)
    model = load_model(config, weights, text_encoder)
    identity = {
        "base_model": "grounding-dino",
        "weights": _file_id(weights),
        "model_config": hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.is_file() else None,
        "text_encoder": text_encoder.name,
    }
    return GroundingDinoLabeler(
        model,
        device=device,
        precision=mc.precision,
        image_size=mc.image_size or DEFAULT_IMAGE_SIZE,
        max_size=mc.max_size,
        box_threshold=mc.box_threshold,
        text_threshold=mc.text_threshold,
        batch_size=mc.batch_size,
        identity=identity,
        nms_iou=mc.nms_iou,
    )


def resized_shape(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """Short side to ``short`` unless the long side would pass ``max_size`` (as the package's RandomResize).

    Each side is at least 1 px and at most ``max_size``: a sliver such as 4000x1 keeps 1 px across
    (the package's rounding gives 0) and its long side is capped (its aspect ratio cannot be kept).
    """
    lo, hi = min(height, width), max(height, width)
    if hi / lo * short > max_size:
        short = int(round(max_size * lo / hi))
    short = max(1, short)
    long = max(1, min(max_size, int(short * hi / lo)))
    return (long, short) if width < height else (short, long)


def batch_size_for(free_bytes: int, image_size: int, max_size: int, mixed: bool) -> int:
    """A batch size that fits in half of ``free_bytes`` of device memory, from 1 to 64.

    Sized for 16:9 video frames: about 0.25 GB per megapixel of model input per image
    under autocast, twice that in fp32. Too large a guess is caught at run time (the
    batch is halved on out-of-memory).
    """
    h, w = resized_shape(720, 1280, image_size, max_size)
    per_image = 0.25e9 * h * w / 1e6 * (1 if mixed else 2)
    return int(max(1, min(64, free_bytes * 0.5 // per_image)))


def auto_batch_size(device: str, image_size: int, max_size: int, mixed: bool) -> int:
    """The automatic batch size: from the free memory of a CUDA ``device``; 2 elsewhere."""
    import torch

    if not device.startswith("cuda"):
        return 2
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return batch_size_for(free, image_size, max_size, mixed=mixed)


@dataclass(frozen=True)
class Prompt:
    """An ontology turned into one caption and the token span of each caption."""

    text: str
    spans: tuple[tuple[int, int], ...]


def build_prompt(tokenizer, captions: Sequence[str], max_tokens: int = 256) -> Prompt:
    """Joins captions as ``a . b .`` and finds each caption's token positions."""
    parts = [" ".join(c.lower().replace(".", " ").split()) for c in captions]
    text = " . ".join(parts) + " ."
    starts, pos = [], 0
    for part in parts:
        starts.append(pos)
        pos += len(part) + 3
    encoded = tokenizer(text, return_offsets_mapping=True)
    offsets, ids = encoded["offset_mapping"], encoded["input_ids"]
    spans = []
    for caption, part, start in zip(captions, parts, starts, strict=True):
        end = start + len(part)
        tokens = [i for i, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
        if all(ids[i] == tokenizer.unk_token_id for i in tokens):  # none, or only [UNK] (emoji, unknown scripts)
            raise InputError(f"caption {caption!r} has no tokens the text encoder knows: use English words")
        spans.append((tokens[0], tokens[-1] + 1))
    if len(offsets) > max_tokens:
        raise InputError(
            f"the ontology's captions make {len(offsets)} tokens; Grounding DINO reads at most {max_tokens}: "
            "use fewer or shorter captions"
        )
    return Prompt(text, tuple(spans))


def plan_prompts(tokenizer, captions: Sequence[str], max_tokens: int = 256) -> list[tuple[tuple[int, ...], Prompt]]:
    """Packs captions, in order, into as few prompts as fit ``max_tokens`` each.

    Returns (indices of the captions, prompt) per prompt; one prompt when all fit. Each caption
    costs its own tokens and its `` .``, the prompt ``[CLS]`` and ``[SEP]`` (WordPiece splits on
    the spaces around the dots, so captions never share a token).
    """
    groups: list[list[int]] = []
    current: list[int] = []
    used = 2
    for i, caption in enumerate(captions):
        part = " ".join(caption.lower().replace(".", " ").split())
        cost = len(tokenizer(part, add_special_tokens=False)["input_ids"]) + 1
        if 2 + cost > max_tokens:
            raise InputError(
                f"caption {caption!r} alone makes {2 + cost} tokens; the model reads at most {max_tokens}: shorten it"
            )
        if current and used + cost > max_tokens:
            groups.append(current)
            current, used = [], 2
        current.append(i)
        used += cost
    groups.append(current)
    return [(tuple(g), build_prompt(tokenizer, [captions[j] for j in g], max_tokens)) for g in groups]


def decode_outputs(
    logits,
    boxes,
    prompt: Prompt,
    caption_class: Sequence[int],
    sizes: Sequence[tuple[int, int]],
    box_threshold: float,
    text_threshold: float,
) -> list[sv.Detections]:
    """Model outputs to detections in pixels, each box with the class of its best caption.

    Args:
        logits: (B, queries, tokens) raw token logits.
        boxes: (B, queries, 4) normalised cx, cy, w, h.
        prompt: The caption token spans.
        caption_class: Ontology class of each caption.
        sizes: (height, width) of each image.
        box_threshold: Keep a box whose best caption scores above this...
        text_threshold: ...and above this.
    """
    import torch

    probs = logits.float().sigmoid()
    scores = torch.stack([probs[..., a:b].max(-1).values for a, b in prompt.spans], dim=-1)  # (B, Q, captions)
    confidence, caption = scores.max(-1)
    keep = (confidence > box_threshold) & (confidence > text_threshold)
    # One transfer for the whole batch, no per-frame round trips.
    boxes = boxes.float().cpu().numpy()
    confidence, caption, keep = confidence.cpu().numpy(), caption.cpu().numpy(), keep.cpu().numpy()
    return pixel_detections(boxes, confidence, caption, keep, caption_class, sizes)


def pixel_detections(
    boxes: np.ndarray,
    confidence: np.ndarray,
    caption: np.ndarray,
    keep: np.ndarray,
    caption_class: Sequence[int],
    sizes: Sequence[tuple[int, int]],
    padded_square: bool = False,
) -> list[sv.Detections]:
    """A batch's kept boxes in pixels, one ``sv.Detections`` per frame.

    ``boxes`` (B, Q, 4) are normalised cx, cy, w, h: relative to the frame, or to the square
    its long side pads it to (``padded_square``, as OWL's processor does). ``caption`` (B, Q)
    is each box's caption, ``caption_class`` each caption's class, ``keep`` (B, Q) which boxes stay.
    """
    classes = np.asarray(caption_class)
    detections = []
    for i, (h, w) in enumerate(sizes):
        scale = [max(h, w)] * 4 if padded_square else [w, h, w, h]
        cx, cy, bw, bh = boxes[i, keep[i]].T
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1) * scale
        xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
        detections.append(
            sv.Detections(
                xyxy=xyxy.reshape(-1, 4),
                confidence=confidence[i, keep[i]].astype(np.float32),
                class_id=classes[caption[i, keep[i]]].astype(int),
            )
        )
    return detections


def _file_id(path: Path) -> str:
    return f"{path.name}:{path.stat().st_size}"


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@contextlib.contextmanager
def text_encoder_folder(text_encoder: Path) -> Iterator[tuple[Path, bool]]:
    """A folder ``BertModel.from_pretrained`` reads, and whether it was staged without weights.

    The groundingdino package builds its BERT with ``from_pretrained(text_encoder_type)``, which
    needs a weights file, while the checkpoint already holds every ``bert.*`` tensor. A folder
    with weights is used as it is; otherwise its config and tokenizer files are copied into a
    temporary folder beside an empty ``model.safetensors``: ``from_pretrained`` then initialises
    every tensor as missing (a supported path: no weights read), and the checkpoint overwrites
    them all (``load_model`` checks that none is left).
    """
    from safetensors.torch import save_file

    if any((text_encoder / name).is_file() for name in WEIGHT_FILES):
        yield text_encoder, False
        return
    with tempfile.TemporaryDirectory(prefix="autolabel-text-encoder-") as tmp:
        staged = Path(tmp)
        for f in text_encoder.iterdir():
            if f.is_file() and f.suffix in (".json", ".txt", ".model"):
                shutil.copyfile(f, staged / f.name)
        save_file({}, str(staged / "model.safetensors"), metadata={"format": "pt"})
        yield staged, True


def load_model(model_config: Path, weights: Path, text_encoder: Path):
    """Builds Grounding DINO from its config and loads the checkpoint safely (weights only).

    The text encoder is built from ``text_encoder``'s config and tokenizer files; its weights
    come from the checkpoint (a weights file in that folder is not needed).
    """
    import torch
    from transformers.utils import logging as hf_logging

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecation notice on groundingdino's import
        from groundingdino.models import build_model
        from groundingdino.util.misc import clean_state_dict
        from groundingdino.util.slconfig import SLConfig

    if not model_config.is_file():
        raise MissingWeightsError(f"model config {model_config} does not exist (given by --model-config)")
    try:
        args = SLConfig.fromfile(str(model_config))
    except (SyntaxError, OSError, KeyError, NameError, AttributeError, ValueError) as exc:
        raise InputError(f"{model_config}: not a Grounding DINO config: {exc}") from exc
    args.device = "cpu"
    # Gradient checkpointing only slows inference down.
    args.use_checkpoint = False
    args.use_transformer_ckpt = False
    verbosity = hf_logging.get_verbosity()
    with (
        text_encoder_folder(text_encoder) as (folder, staged),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        args.text_encoder_type = str(folder)
        hf_logging.set_verbosity_error()  # "Some weights of BertModel were not initialized": they come next
        try:
            model = build_model(args)
        except (OSError, ValueError) as exc:
            raise MissingWeightsError(f"text encoder {text_encoder}: cannot load: {exc}") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
    try:
        # Not a checkpoint: torch warns about odd pickle protocols before it fails, so the warning goes.
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    # What torch.load raises on files that are not checkpoints (random bytes give all of these).
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        IndexError,
        KeyError,
        OSError,
        zipfile.BadZipFile,
    ) as exc:
        raise InputError(f"{weights}: not a loadable PyTorch checkpoint ({_load_error(exc)})") from exc
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{weights}: not a Grounding DINO checkpoint (no 'model' state dict)")
    state = clean_state_dict(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if len(missing) > len(expected) // 10:
        raise InputError(
            f"{weights}: does not match the model in {model_config.name}: "
            f"{len(missing)} of {len(expected)} weights missing (e.g. {missing[0]})"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise InputError(f"{weights}: does not match the model in {model_config.name}: {first}") from exc
    text_missing = [k for k in missing if k.startswith("bert.")]
    if staged and text_missing:
        raise InputError(
            f"{weights}: holds no weights for the text encoder ({len(text_missing)} bert.* tensors missing, e.g. "
            f"{text_missing[0]}): pass --text-encoder a BERT folder with its model.safetensors"
        )
    if missing:
        log.warning("%s: %d weights not in the checkpoint (left at their initial values)", weights, len(missing))
    return model.eval()


def _load_error(exc: BaseException) -> str:
    """One short line from torch.load's error (the weights-only one is a page that names its cause late)."""
    text = str(exc)
    _, marker, cause = text.partition("WeightsUnpickler error:")
    detail = next((line.strip() for line in (cause if marker else text).splitlines() if line.strip()), "")
    detail = detail if len(detail) <= 100 else detail[:97] + "..."
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class GroundingDinoLabeler:
    """Batched, mixed-precision Grounding DINO behind the :class:`Labeler` contract."""

    def __init__(
        self,
        model,
        device: str = "cpu",
        precision: str = "auto",
        image_size: int = 800,
        max_size: int = 1333,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        batch_size: int | None = None,
        identity: dict | None = None,
        nms_iou: float = 0.5,
    ) -> None:
        import torch

        from autolabel.labelers.text_cache import CachedTextEncoder

        self.device = device
        self.dtype = pick_dtype(precision, device)
        if not isinstance(model.bert, CachedTextEncoder):
            model.bert = CachedTextEncoder(model.bert)  # the prompt is encoded once, not once per frame
        self.model = model.to(device)
        self.image_size = image_size
        self.max_size = max_size
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.batch_size = batch_size or self._auto_batch_size()
        self.nms_iou = nms_iou
        self._identity = identity or {}
        self._prompts: dict[tuple[str, ...], list[tuple[tuple[int, ...], Prompt]]] = {}
        self._mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

    def describe(self) -> dict:
        """Model identity and the settings that change its output."""
        return {
            **self._identity,
            "image_size": self.image_size,
            "max_size": self.max_size,
            "box_threshold": self.box_threshold,
            "text_threshold": self.text_threshold,
            "precision": precision_name(self.dtype),  # as used: fp32 after a fall-back
        }

    def _auto_batch_size(self) -> int:
        return auto_batch_size(self.device, self.image_size, self.max_size, mixed=self.dtype is not None)

    def prepare(self, ontology: Ontology) -> None:
        """Checks that each caption fits the text encoder and plans the prompts."""
        self.prompts(ontology)

    def prompts(self, ontology: Ontology) -> list[tuple[tuple[int, ...], Prompt]]:
        """The (cached) prompts for an ontology: one, or several when the captions pass the token limit."""
        key = ontology.captions
        if key not in self._prompts:
            max_tokens = getattr(self.model, "max_text_len", 256)
            plan = plan_prompts(self.model.tokenizer, ontology.captions, max_tokens)
            if len(plan) > 1:
                log.info("%d captions pass the %d-token limit: %d prompts a frame", len(key), max_tokens, len(plan))
            self._prompts[key] = plan
        return self._prompts[key]

    def _preprocess(self, images: Sequence[np.ndarray]):
        """BGR uint8 frames of one size to a normalised, resized NestedTensor on the device (no padding)."""
        import torch
        import torch.nn.functional as F
        from groundingdino.util.misc import NestedTensor

        pin = self.device.startswith("cuda")

        def to_device(array: np.ndarray):
            t = torch.from_numpy(array)
            if pin:
                t = t.pin_memory()
            return t.to(self.device, non_blocking=True)

        def normalise(batch, shape):  # batch: (B, H, W, 3) uint8 BGR
            x = batch.permute(0, 3, 1, 2).flip(1).float().div_(255.0)
            h, w = resized_shape(shape[0], shape[1], self.image_size, self.max_size)
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
            return (x - self._mean) / self._std

        x = normalise(to_device(np.stack(images)), images[0].shape[:2])
        mask = torch.zeros(x.shape[0], x.shape[2], x.shape[3], dtype=torch.bool, device=self.device)
        return NestedTensor(x, mask)

    def label(self, images: Sequence[np.ndarray], ontology: Ontology) -> list[sv.Detections]:
        """Labels frames, in the order given.

        Frames of different sizes go through separate forwards, one per size: padded into one
        batch, a frame's boxes would depend on its batch-mates.
        """
        return label_by_size(images, lambda same: self._label_same_size(same, ontology))

    def _label_same_size(self, images: Sequence[np.ndarray], ontology: Ontology) -> list[sv.Detections]:
        """Labels frames of one size; splits the batch in half and retries on CUDA out-of-memory."""
        return label_in_batches(self, images, lambda chunk: self._label_batch(chunk, ontology))

    def _label_batch(self, images: Sequence[np.ndarray], ontology: Ontology) -> list[sv.Detections]:
        import torch

        samples = self._preprocess(images)
        sizes = [im.shape[:2] for im in images]
        parts: list[list[sv.Detections]] = [[] for _ in images]
        for indices, prompt in self.prompts(ontology):
            with torch.inference_mode(), autocast(self.device, self.dtype), warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                warnings.simplefilter("ignore", category=FutureWarning)
                out = self.model(samples, captions=[prompt.text] * len(images))
            classes = [ontology.caption_class[j] for j in indices]
            decoded = decode_outputs(
                out["pred_logits"], out["pred_boxes"], prompt, classes, sizes, self.box_threshold, self.text_threshold
            )
            for frame_parts, detections in zip(parts, decoded, strict=True):
                frame_parts.append(detections)
        return [merge_parts(p, self.nms_iou) for p in parts]
