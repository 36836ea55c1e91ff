"""Where model files live: autolabel's cache, the bundled text encoder, the Grounding DINO checkpoint.

Finding and downloading them is :mod:`autolabel.fetch`'s job (one function for every model
file). The Grounding DINO checkpoint is published on GitHub; its hub copy is found in the
Hugging Face cache first, and downloaded from the hub when GitHub cannot be reached, with
the same sha256 check either way.
"""

from __future__ import annotations

import os
from pathlib import Path

from autolabel.errors import MissingWeightsError
from autolabel.fetch import Hub, ModelFile

GDINO_RELEASE = "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha"
GROUNDING_DINO_WEIGHTS = ModelFile(
    key="weights",
    what="Grounding DINO weights",
    flag="--weights",
    url=f"{GDINO_RELEASE}/groundingdino_swint_ogc.pth",
    cache_name="groundingdino_swint_ogc.pth",
    digest="3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799",
    size=693_997_677,
    hub=Hub("ShilongLiu/GroundingDINO", "groundingdino_swint_ogc.pth"),
)


def bundled_text_encoder() -> Path:
    """bert-base-uncased's config and tokenizer files, shipped in the package (no weights: see NOTICE there)."""
    import importlib.resources

    return Path(str(importlib.resources.files("autolabel") / "assets" / "bert-base-uncased"))


def cache_dir(configured: str | None = None) -> Path:
    """The weights cache: config value, else ``$AUTOLABEL_CACHE``, else ``~/.cache/autolabel``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("AUTOLABEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "autolabel"


def resolve_text_encoder(local: str | None) -> Path:
    """The text encoder's config and tokenizer folder: the one given, else bert-base-uncased's, bundled."""
    if not local:
        return bundled_text_encoder()
    path = Path(local).expanduser()
    if not (path / "config.json").is_file() or not any((path / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        raise MissingWeightsError(
            f"text encoder: {path} is not a BERT folder (expected config.json and vocab.txt or tokenizer.json, "
            "as written by save_pretrained; weights are not needed; given by --text-encoder)"
        )
    return path
