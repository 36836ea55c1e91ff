"""Segmentation masks from the boxes: the mask models (``run --masks NAME``) and what a run records of them.

A mask model is not a base model: it never finds boxes, it outlines the boxes a dataset already
holds, after thresholds, filters (and tracking) have settled them. Its registry has the base
models' shape: each entry names a module with

- ``model_files(mc, cache) -> list[autolabel.fetch.ModelFile]``: what makes the model (``mc``: the
  ``masks:`` config), fetched once by :func:`autolabel.fetch.fetch` (offline first, one line naming
  every missing file);
- ``create(mc, files, device, precision) -> Masker``: loads it.

Importing this package imports nothing heavy. The step that runs a mask model over a dataset is
:mod:`autolabel.masks.step`; rings and formats' shapes are :mod:`autolabel.masks.geometry`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from autolabel.errors import ConfigError

# ``--masks none`` takes a dataset's masks away (its files hold boxes again).
NONE = "none"


@dataclass(frozen=True)
class MaskModel:
    """A mask model: what ``--masks NAME`` picks.

    Attributes:
        name: The ``--masks`` value.
        help: One line for ``--help`` and the README.
        module: The module with ``model_files`` and ``create`` (imported when used).
        default: The ``--mask-model`` used when none is given (a hub id, or an Ultralytics checkpoint name).
        model_type: The ``config.json`` ``model_type`` a transformers model must have (None: not transformers).
    """

    name: str
    help: str
    module: str
    default: str
    model_type: str | None = None

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


BUILTIN: tuple[MaskModel, ...] = (
    MaskModel("sam2", "SAM 2.1 (transformers Sam2Model)", "autolabel.masks.hf", "facebook/sam2.1-hiera-large", "sam2"),
    MaskModel("sam", "SAM (transformers SamModel)", "autolabel.masks.hf", "facebook/sam-vit-base", "sam"),
    MaskModel(
        "sam-hq", "SAM-HQ (transformers SamHQModel)", "autolabel.masks.hf", "syscv-community/sam-hq-vit-base", "sam_hq"
    ),
    MaskModel(
        "edgetam", "EdgeTAM (transformers EdgeTamModel)", "autolabel.masks.hf", "yonigozlan/EdgeTAM-hf", "edgetam"
    ),
    MaskModel(
        "ultralytics",
        "Ultralytics SAM, SAM 2 or MobileSAM checkpoint (--mask-model sam2_b.pt, mobile_sam.pt, ...)",
        "autolabel.masks.ultralytics",
        "sam2_b.pt",
    ),
)
REGISTRY = {m.name: m for m in BUILTIN}


def names() -> list[str]:
    """The mask models' names."""
    return list(REGISTRY)


def get(name: str) -> MaskModel:
    """The mask model called ``name``; ConfigError listing the choices when there is none."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ConfigError(f"masks.model (--masks) must be one of {', '.join([*names(), NONE])}, got {name!r}")
    return spec


class Masker(Protocol):
    """A loaded mask model.

    ``masks`` takes BGR uint8 frames (sizes may differ) and each frame's boxes (pixel corners
    ``x1, y1, x2, y2``) and yields ``(frame index, box index, bitmap)`` for every box, one at a
    time (H x W, nonzero inside), so at most one full-frame bitmap is held at once. Each frame's
    image embedding is computed once, whatever its box count; a box's mask depends only on its
    frame and that frame's boxes, never on batch-mates.
    """

    batch_size: int

    def masks(
        self, images: Sequence[Any], boxes: Sequence[Sequence[tuple[float, float, float, float]]]
    ) -> Iterator[tuple[int, int, Any]]: ...

    def describe(self) -> dict: ...


def source(mc) -> str:
    """What ``--mask-model`` names (or the model's default)."""
    return mc.mask_model or get(mc.model).default


def model_files(mc, cache: str | None = None) -> list:
    """The files that make the mask model ``mc.model`` (nothing downloads)."""
    return get(mc.model).load().model_files(mc, cache)


def identity(mc, cache: str | None = None) -> dict[str, str | None]:
    """Each mask model file's content identity (sha256, or a hub snapshot's commit); None where not on disk."""
    from autolabel.fetch import identities
    from autolabel.weights import cache_dir

    return identities(model_files(mc, cache), cache_dir(cache))


def settings(mc, cache: str | None = None) -> dict | None:
    """What a dataset's fingerprint records of its masks (None: no masks).

    ``source`` (what ``--mask-model`` named) tells a later run where to find the model; the
    model counts by its files' content (``files``), so a copy moved elsewhere is the same model.
    """
    if mc.model is None or mc.model == NONE:
        return None
    return {  # in key order, as the state file (sorted) gives it back: run.yaml lists it the same either way
        "files": identity(mc, cache),
        "min_area": mc.min_area,
        "model": mc.model,
        "source": source(mc),
        "tolerance": mc.tolerance,
    }


def fetch_files(mc, cache: str | None = None, progress: bool = True) -> dict[str, Path]:
    """The mask model's files on disk, downloaded once where missing (offline: one line naming every missing one)."""
    from autolabel.fetch import fetch
    from autolabel.weights import cache_dir

    return fetch(model_files(mc, cache), cache_dir(cache), progress)


def create(mc, files: dict[str, Path], device: str = "auto", precision: str = "auto") -> Masker:
    """Loads the mask model from its fetched files on ``device``."""
    return get(mc.model).load().create(mc, files, device, precision)
