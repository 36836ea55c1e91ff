"""Finds products, their media files and their ontology files."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from autolabel.errors import InputError
from autolabel.naming import safe_name, unique_name

log = logging.getLogger(__name__)

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


def list_sources(product: Product, recorded: dict[str, str] | None = None) -> list[Source]:
    """Media files of a product (top level of its folder), sorted by name, each with a unique stem.

    Args:
        product: The product.
        recorded: Stems already allocated to file names (from the dataset's state); kept
            as they are, so a re-run names every frame as the first run did.

    Other files and sub-folders are skipped with a warning naming them.
    """
    try:
        entries = sorted(product.folder.iterdir())
    except OSError as exc:
        raise InputError(f"{product.folder}: cannot read product folder: {exc.strerror or exc}") from exc
    files, skipped = [], []
    for p in entries:
        if p.name.startswith(".") or p.name == ONTOLOGY_FILE:
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
            files.append(p)
        else:
            skipped.append(f"{p.name}/" if p.is_dir() else p.name)
    if skipped:
        log.warning(
            "%s: skipped %s (not a supported media file; sub-folders are not searched)",
            product.folder,
            ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""),
        )
    if not files:
        raise InputError(
            f"{product.folder}: no media files (expected videos {' '.join(sorted(VIDEO_EXTENSIONS))} "
            f"or images {' '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    stems = allocate_stems([p.name for p in files], recorded or {})
    return [Source(p, stems[p.name], p.suffix.lower() in VIDEO_EXTENSIONS) for p in files]


def allocate_stems(file_names: list[str], recorded: dict[str, str]) -> dict[str, str]:
    """A unique output stem per file name (case-insensitively), keeping recorded ones.

    ``box.mp4`` alone is ``box``; with ``box.mov`` beside it each gets a hash suffix of its
    full name; ``a b.mp4`` becomes ``a_b-<hash>`` so it never meets ``a_b.mp4``.
    """
    stems = {name: recorded[name] for name in file_names if name in recorded}
    taken = set(recorded.values())
    plain = Counter(safe_name(Path(n).stem).lower() for n in file_names if n not in recorded)
    for name in file_names:
        if name in stems:
            continue
        stem = Path(name).stem
        clash = plain[safe_name(stem).lower()] > 1
        stem_name = unique_name(stem, taken | ({safe_name(stem)} if clash else set()), salt=name)
        stems[name] = stem_name
        taken.add(stem_name)
    return stems
