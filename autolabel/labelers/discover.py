"""Prompt-free discovery: a self-supervised DINO ViT finds objects (LOST), an ImageNet-21k classifier names them.

A batch of frames goes through the backbone at once; a forward hook on its last block's
``attn.qkv`` captures the keys LOST reads. Every box found is cropped from the full
frame and all crops of the batch go through the classifier at once; a box's confidence
is the classifier's softmax probability of its top class, and its name that class's
ImageNet-21k description from timm's own tables (``timm.data.ImageNetInfo``, no
download).

Detections carry their class by name (``data["class_name"]``), not by id: the classes
are open-ended, and the pipeline numbers them as they are discovered. Without an
ontology every name is kept; with one, captions name ImageNet classes by lemma
(case-insensitive) and their boxes take the caption's class; the others are dropped,
or kept under their own name with ``keep_unmapped``.

Weights are files: given (``--backbone-weights``, ``--classifier-weights``) or the ones timm's
pretrained download takes from the hub, fetched by :mod:`autolabel.fetch`; either is loaded the
same way, as a state dict without running pickled code, into a model timm builds without download.
"""

from __future__ import annotations

import difflib
import functools
import logging
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import supervision as sv

from autolabel.errors import ConfigError, InputError
from autolabel.fetch import Hub, ModelFile
from autolabel.labelers import lost
from autolabel.labelers.base import (
    CLASS_NAME,
    autocast,
    label_by_size,
    label_in_batches,
    pick_device,
    pick_dtype,
    precision_name,
)
from autolabel.ontology import Ontology, closest_names

log = logging.getLogger(__name__)


def imagenet_names(num_classes: int) -> list[str]:
    """The class descriptions of an ImageNet head of ``num_classes`` outputs, in its output order."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        raise ConfigError(
            f"the discovery classifier has {num_classes} outputs, which is no ImageNet label set timm knows; "
            "use one with the 21,841-class ImageNet-21k head, e.g. convnext_base.fb_in22k"
        )
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(info.num_classes())]


def lemmas(description: str) -> list[str]:
    """The lemmas of a class description (``"beer mug, stein"`` -> ``["beer mug", "stein"]``), lower case."""
    return [lemma.strip().lower() for lemma in description.split(",") if lemma.strip()]


def class_map(names: list[str], ontology: Ontology, keep_unmapped: bool) -> list[str | None]:
    """For each classifier output, the class its boxes get (None: dropped).

    Without an ontology each output keeps its description. With one, each caption must be
    a lemma of at least one class, or a whole description (InputError naming the closest
    otherwise); case does not matter.
    """
    if not ontology.captions:
        return list(names)
    by_lemma: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        # Each lemma, and the whole description as a run without ontology names the class.
        for lemma in dict.fromkeys([*lemmas(name), name.strip().lower()]):
            by_lemma.setdefault(lemma, []).append(i)
    out: list[str | None] = list(names) if keep_unmapped else [None] * len(names)
    for caption, cls in zip(ontology.captions, ontology.caption_class, strict=True):
        hits = by_lemma.get(caption.lower())
        if not hits:
            close = closest_names(caption, list(by_lemma))
            hint = f"closest: {'; '.join(close)}" if close else "no close name"
            raise InputError(f"caption {caption!r} names none of the classifier's {len(names)} classes ({hint})")
        for i in hits:
            out[i] = ontology.classes[cls]
    return out


def _read_state_dict(path: Path, origin: str) -> dict:
    """A state dict from safetensors or a PyTorch file, loaded without running pickled code."""
    import pickle

    import torch
    from safetensors import SafetensorError

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        raise InputError(f"{path}: not a readable state dict ({type(exc).__name__}: {exc}) ({origin})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a state dict of tensors ({origin})")
    return state


# timm's own choice between a hub repo's files: its safetensors copy first, then the PyTorch file.
_SAFE_ALTERNATIVE = {
    "pytorch_model.bin": "model.safetensors",
    "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
}


def pretrained_file(key: str, name: str, what: str, flag: str, given: str | None) -> ModelFile:
    """The weights of timm model ``name``: the file given, else the one timm's pretrained download fetches.

    That is the model's hub file (``get_pretrained_cfg(name).hf_hub_id``), or its release URL
    for the few models with no hub copy; either is loaded like a file given by ``flag``.
    """
    from timm.models import get_pretrained_cfg

    words = f"{what} weights for {name}"
    if given:
        return ModelFile(key, words, flag, path=Path(given).expanduser())
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        cfg = None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if repo:
        repo_id, _, revision = repo.partition("@")
        filename = getattr(cfg, "hf_hub_filename", None) or "pytorch_model.bin"
        safe = _SAFE_ALTERNATIVE.get(filename)
        hub = Hub(repo_id, safe or filename, revision or None, fallbacks=(filename,) if safe else ())
        return ModelFile(key, words, flag, hub=hub)
    url = getattr(cfg, "url", None) if cfg is not None else None
    if url:
        return ModelFile(key, words, flag, url=url, cache_name=f"timm-{Path(urllib.parse.urlsplit(url).path).name}")
    raise ConfigError(f"{what} {name!r} has no pretrained weights that timm knows of: pass {flag} FILE")


def check_models(dc) -> None:
    """ConfigError for a backbone or classifier that timm does not know, or a backbone LOST cannot read.

    Checked before any weights are fetched: the backbone is built on the meta device (no memory, no weights),
    once per pair of names in a process (a run asks for the model's files more than once).
    """
    _check_models(dc.backbone, dc.classifier)


@functools.cache
def _check_models(backbone_name: str, classifier_name: str) -> None:
    import timm
    import torch

    for what, name, flag in (
        ("discovery backbone", backbone_name, "--discover-backbone"),
        ("discovery classifier", classifier_name, "--discover-classifier"),
    ):
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(pretrained=True), n=3, cutoff=0.6)
            raise ConfigError(
                f"{what} {name!r} (given by {flag}) is not a timm model"
                + (f" (closest: {', '.join(close)})" if close else "")
            )
    try:
        with torch.device("meta"):
            backbone = timm.create_model(backbone_name, pretrained=False, num_classes=0, dynamic_img_size=True)
    except TypeError as exc:  # only ViTs take dynamic_img_size (any input size, whole patches)
        raise ConfigError(_NOT_A_VIT.format(name=backbone_name)) from exc
    except (NotImplementedError, RuntimeError):  # a model that cannot be built on meta: checked once loaded
        return
    check_backbone(backbone, backbone_name)


def model_files(mc, cache: str | None = None) -> list[ModelFile]:
    """The backbone's and the classifier's weights: given, or timm's pretrained files on the hub."""
    dc = mc.discover
    check_models(dc)
    return [
        pretrained_file("backbone_weights", dc.backbone, "discovery backbone", "--backbone-weights",
                        dc.backbone_weights),
        pretrained_file("classifier_weights", dc.classifier, "discovery classifier", "--classifier-weights",
                        dc.classifier_weights),
    ]  # fmt: skip


def create(mc, files: dict[str, Path], cache: str | None = None, progress: bool = True) -> DiscoverLabeler:
    """Loads the backbone and the classifier from their fetched files on the configured device."""
    dc = mc.discover
    device = pick_device(mc.device, "which is slow (about a second per frame, more with many objects)")
    try:
        backbone = load_model(
            dc.backbone, files["backbone_weights"], "discovery backbone",
            _origin(files["backbone_weights"], dc.backbone_weights, "--backbone-weights"),
            num_classes=0, dynamic_img_size=True,
        )  # fmt: skip
    except TypeError as exc:  # only ViTs take dynamic_img_size (any input size, whole patches)
        raise ConfigError(_NOT_A_VIT.format(name=dc.backbone)) from exc
    check_backbone(backbone, dc.backbone)
    classifier = load_model(
        dc.classifier, files["classifier_weights"], "discovery classifier",
        _origin(files["classifier_weights"], dc.classifier_weights, "--classifier-weights"),
    )  # fmt: skip
    return DiscoverLabeler(
        backbone, classifier, dc, device, pick_dtype(mc.precision, device), mc.image_size, mc.max_size,
        mc.batch_size,
    )  # fmt: skip


def _origin(path: Path, given: str | None, flag: str) -> str:
    """Where a weights file came from, for messages."""
    return f"given by {flag}" if given else f"timm's pretrained file {path}; pass {flag} FILE for another"


def load_model(name: str, path: Path, what: str, origin: str, **kwargs):
    """A timm model built without download and loaded from the state dict in ``path``.

    Args:
        name: The timm model name.
        path: Its weights: a file given by the user or timm's pretrained file, fetched.
        what: Words for messages ("discovery backbone").
        origin: Where ``path`` came from, for messages ("given by --backbone-weights").
        **kwargs: For ``timm.create_model`` (``num_classes=0``: no head).
    """
    import timm

    state = _read_state_dict(path, origin)
    if kwargs.get("num_classes") != 0:  # the head the file has (e.g. 21,841 classes), whatever the default
        head = f"{getattr(timm.models.get_pretrained_cfg(name), 'classifier', None) or 'head'}.weight"
        found = [state[k] for k in (head, "head.fc.weight", "head.weight", "fc.weight") if k in state]
        if found and found[0].ndim == 2:
            kwargs["num_classes"] = int(found[0].shape[0])
    model = timm.create_model(name, pretrained=False, **kwargs)
    try:
        # timm's own conversion of a model's official release checkpoints (DINO's, ConvNeXt's) to its layout
        convert = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if convert is not None:
            state = convert(state, model)
        expected = model.state_dict()
        # A backbone is built without a head: a head in the file is not needed.
        state = {k: v for k, v in state.items() if k in expected or not k.startswith(("head.", "fc."))}
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines() or [type(exc).__name__]
        raise InputError(
            f"{path}: these weights do not fit {what} {name!r} ({first[1].strip() if len(first) > 1 else first[0]})"
            f" ({origin})"
        ) from exc
    return model


_NOT_A_VIT = (
    "model.discover.backbone {name!r} (--discover-backbone) is not a ViT with a qkv attention layer; "
    "LOST reads its last layer's keys (e.g. vit_small_patch16_224.dino)"
)


def check_backbone(model, name: str) -> None:
    """ConfigError unless ``model`` is a timm ViT whose last block has the ``attn.qkv`` layer LOST hooks."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer) or not hasattr(model.blocks[-1].attn, "qkv"):
        raise ConfigError(_NOT_A_VIT.format(name=name))


class DiscoverLabeler:
    """DINO ViT + LOST + ImageNet-21k classifier behind the :class:`Labeler` contract."""

    def __init__(
        self,
        backbone,
        classifier,
        dc,
        device: str = "cpu",
        dtype=None,
        image_size: int | None = None,
        max_size: int = 1333,
        batch_size: int | None = None,
    ) -> None:
        from timm.data import resolve_data_config

        check_backbone(backbone, dc.backbone)
        self.backbone = backbone.eval().to(device)
        self.classifier = classifier.eval().to(device)
        self.dc = dc
        self.device = device
        self.dtype = dtype
        self.names = imagenet_names(int(classifier.num_classes))
        self.patch = int(backbone.patch_embed.patch_size[0])
        b_cfg = resolve_data_config({}, model=backbone)
        c_cfg = resolve_data_config({}, model=classifier)
        self.image_size = image_size or int(b_cfg["input_size"][-1])
        self.max_size = max(max_size, self.image_size)
        self.crop_size = (int(c_cfg["input_size"][1]), int(c_cfg["input_size"][2]))
        self._b_norm = (b_cfg["mean"], b_cfg["std"])
        self._c_norm = (c_cfg["mean"], c_cfg["std"])
        self.batch_size = batch_size or (32 if device.startswith("cuda") else 2)
        self._ontology: Ontology | None = None
        self._map: list[str | None] = list(self.names)
        self._keys = None

    def describe(self) -> dict:
        """Model identity and the settings that change its output."""
        return {
            "base_model": "discover",
            "backbone": self.dc.backbone,
            "classifier": self.dc.classifier,
            "classes": len(self.names),
            "image_size": self.image_size,
            "max_size": self.max_size,
            "dtype": str(self.dtype).removeprefix("torch.") if self.dtype is not None else "float32",
            "precision": precision_name(self.dtype),
        }

    def prepare(self, ontology: Ontology) -> None:
        """Maps captions to ImageNet classes (InputError for a caption naming none)."""
        if self._ontology == ontology:
            return
        self._map = class_map(self.names, ontology, self.dc.keep_unmapped)
        self._ontology = ontology

    def label(self, images: Sequence[np.ndarray], ontology: Ontology) -> list[sv.Detections]:
        """Finds and names objects in a batch of BGR frames, in the order given (one forward per frame size)."""
        self.prepare(ontology)
        return label_by_size(images, lambda same: label_in_batches(self, same, self._label_same_size))

    def _input_size(self, h: int, w: int) -> tuple[int, int]:
        """Backbone input size: short side ``image_size``, long side at most ``max_size``, whole patches."""
        scale = min(self.image_size / min(h, w), self.max_size / max(h, w))
        return (max(self.patch, round(h * scale / self.patch) * self.patch),
                max(self.patch, round(w * scale / self.patch) * self.patch))  # fmt: skip

    def _hook(self, module, inputs, output) -> None:
        self._keys = output

    def _label_same_size(self, images: list[np.ndarray]) -> list[sv.Detections]:
        import torch
        import torch.nn.functional as F

        h, w = images[0].shape[:2]
        rows_px, cols_px = self._input_size(h, w)
        grid = (rows_px // self.patch, cols_px // self.patch)
        with torch.inference_mode():
            frames = torch.from_numpy(np.stack(images)[..., ::-1].copy()).to(self.device)
            frames = frames.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W) RGB in [0, 1]
            x = F.interpolate(frames, size=(rows_px, cols_px), mode="bilinear", antialias=True, align_corners=False)
            keys = self._backbone_keys(_normalize(x, *self._b_norm))
            affinity = lost.similarity(keys).cpu().numpy()
            found = self._find(keys, affinity, grid)
            min_area = self.dc.min_object_size * h * w
            boxes = [[self._to_pixels(d, h, w, rows_px, cols_px) for d in per] for per in found]
            # The first seed's object stays whatever its size (seed 002's method: LOST's guarantee).
            keep_first = self.dc.method == "seeds"
            boxes = [
                [b for j, b in enumerate(per) if (keep_first and j == 0) or (b[2] - b[0]) * (b[3] - b[1]) >= min_area]
                for per in boxes
            ]
            crops = [
                F.interpolate(
                    frames[i : i + 1, :, y0:y1, x0:x1], size=self.crop_size, mode="bilinear", antialias=True,
                    align_corners=False,
                )
                for i, per in enumerate(boxes)
                for x0, y0, x1, y1 in per
            ]  # fmt: skip
            probs = np.zeros((0,), np.float32)
            top = np.zeros((0,), np.int64)
            if crops:
                with autocast(self.device, self.dtype):
                    logits = self.classifier(_normalize(torch.cat(crops), *self._c_norm))
                p, idx = logits.float().softmax(dim=-1).max(dim=-1)
                probs, top = p.cpu().numpy(), idx.cpu().numpy()
        out, k = [], 0
        cut = max(self.dc.min_confidence, self.dc.seed_confidence if keep_first else 0.0)
        for per in boxes:
            xyxy, conf, names = [], [], []
            for j, box in enumerate(per):
                name, prob = self._map[int(top[k])], float(probs[k])
                k += 1
                least = self.dc.min_confidence if keep_first and j == 0 else cut  # the first: seed 002's cut spared
                if name is None or prob < least:
                    continue
                xyxy.append(box)
                conf.append(prob)
                names.append(name)
            if not xyxy:
                out.append(sv.Detections.empty())
                continue
            out.append(
                sv.Detections(
                    xyxy=np.array(xyxy, dtype=np.float32),
                    confidence=np.array(conf, dtype=np.float32),
                    class_id=np.zeros(len(xyxy), dtype=int),
                    data={CLASS_NAME: np.array(names, dtype=object)},
                )
            )
        return out

    def _find(self, keys, affinity: np.ndarray, grid: tuple[int, int]) -> list[list[lost.Discovery]]:
        """Each frame's objects on the patch grid, by ``model.discover.method``."""
        dc = self.dc
        if dc.method == "seeds":
            dim = int(keys.shape[-1])
            correlation = (
                dc.seed_correlation
                if dc.seed_correlation is not None
                else lost.SEED_CORRELATION * dim / lost.SEED_KEY_DIM
            )
            return [
                lost.discover_seeds(a, grid, dc.n_seeds, correlation, dc.k_patches, dc.seed_score, dc.seed_nms)
                for a in affinity
            ]
        keys_np = keys.float().cpu().numpy()
        return [
            lost.discover(keys_np[i], affinity[i], grid, dc.number_seeds, dc.correlation_th, dc.k_patches)
            for i in range(len(affinity))
        ]

    def _backbone_keys(self, x):
        """The last block's attention keys of the patch tokens, ``(B, N, dim)``."""
        attn = self.backbone.blocks[-1].attn
        handle = attn.qkv.register_forward_hook(self._hook)
        try:
            with autocast(self.device, self.dtype):
                self.backbone.forward_features(x)
        finally:
            handle.remove()
        qkv, self._keys = self._keys, None
        b, t, _ = qkv.shape
        keys = qkv.reshape(b, t, 3, -1)[:, :, 1]
        return keys[:, self.backbone.num_prefix_tokens :]

    def _to_pixels(self, d: lost.Discovery, h: int, w: int, rows_px: int, cols_px: int) -> tuple[int, int, int, int]:
        """A patch-grid box in whole frame pixels, inside the frame and at least one pixel each way."""
        sy, sx = h / rows_px, w / cols_px
        x0 = min(w - 1, int(np.floor(d.x0 * self.patch * sx)))
        y0 = min(h - 1, int(np.floor(d.y0 * self.patch * sy)))
        x1 = max(x0 + 1, min(w, int(np.ceil(d.x1 * self.patch * sx))))
        y1 = max(y0 + 1, min(h, int(np.ceil(d.y1 * self.patch * sy))))
        return x0, y0, x1, y1


def _normalize(x, mean, std):
    import torch

    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s
