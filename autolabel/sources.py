"""Finds products, their media files and their ontology files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from autolabel.errors import InputError
from autolabel.naming import safe_name

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
ONTOLOGY_FILE = "ontology.json"


@dataclass(frozen=True)
class Source:
    """One media file of a product.

    Attributes:
        path: The file.
        stem: A file-name-safe stem, unique within the product.
        is_video: Video (sampled) or still image (one frame, index 0).
    """

    path: Path
    stem: str
    is_video: bool


@dataclass(frozen=True)
class Product:
    """One product folder.

    Attributes:
        name: The folder name, as the user wrote it.
        slug: The file-name-safe name used for the output folder.
        folder: The input folder.
        ontology_path: Its ``ontology.json``.
    """

    name: str
    slug: str
    folder: Path
    ontology_path: Path


def discover_products(input_dir: Path, only: list[str] | None = None) -> list[Product]:
    """Lists product folders under ``input_dir``, sorted by name.

    Args:
        input_dir: Folder with one sub-folder per product.
        only: Product names to keep; each must exist.
    """
    if not input_dir.exists():
        raise InputError(f"{input_dir}: input folder does not exist")
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: input must be a folder of product folders, not a file")
    folders = sorted(p for p in input_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(
            f"{input_dir}: no product folders (expected {input_dir}/<product>/ with videos and {ONTOLOGY_FILE})"
        )
    if only:
        names = {p.name for p in folders}
        missing = [n for n in only if n not in names]
        if missing:
            raise InputError(
                f"{input_dir}: no product folder named {missing[0]!r} (available: {', '.join(sorted(names))})"
            )
        folders = [p for p in folders if p.name in only]
    products = [Product(p.name, safe_name(p.name), p, p / ONTOLOGY_FILE) for p in folders]
    slugs = Counter(p.slug.lower() for p in products)
    for p in products:
        if slugs[p.slug.lower()] > 1:
            clash = [q.name for q in products if q.slug.lower() == p.slug.lower()]
            raise InputError(
                f"{input_dir}: product folders {', '.join(repr(c) for c in clash)} map to the same "
                f"output name {p.slug!r}; rename one"
            )
    return products


def list_sources(product: Product) -> list[Source]:
    """Media files of a product (top level of its folder), sorted by name, with unique stems."""
    files = sorted(
        p
        for p in product.folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
    )
    if not files:
        raise InputError(
            f"{product.folder}: no media files (expected videos {' '.join(sorted(VIDEO_EXTENSIONS))} "
            f"or images {' '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    stems = Counter(safe_name(p.stem).lower() for p in files)
    sources = []
    for p in files:
        stem = safe_name(p.stem)
        if stems[stem.lower()] > 1:  # box.mp4 and box.mov: keep both, apart
            stem = safe_name(f"{p.stem}_{p.suffix.lstrip('.')}")
        sources.append(Source(p, stem, p.suffix.lower() in VIDEO_EXTENSIONS))
    return sources
