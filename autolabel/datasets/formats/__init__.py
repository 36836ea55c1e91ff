"""The format registry: built-in formats by name, then plug-ins (entry point group ``autolabel.formats``).

Every part of autolabel that writes or reads a format (the writer, finalize, merge,
import, export, the report) loops over this registry; adding a format is one module.
"""

from __future__ import annotations

import functools
import importlib

from autolabel.datasets.formats.base import Annotations, Context, ExportFolder, Format, ReadContext
from autolabel.errors import ConfigError

# Built-ins in code (module, class), imported when first used.
BUILTIN: dict[str, tuple[str, str]] = {
    "yolo": ("autolabel.datasets.formats.yolo", "Yolo"),
    "voc": ("autolabel.datasets.formats.voc", "Voc"),
    "coco": ("autolabel.datasets.formats.coco", "Coco"),
    "cvat": ("autolabel.datasets.formats.cvat", "Cvat"),
    "label-studio": ("autolabel.datasets.formats.label_studio", "LabelStudio"),
    "ultralytics": ("autolabel.datasets.formats.ultralytics", "Ultralytics"),
    "mot": ("autolabel.datasets.formats.mot", "Mot"),
}
# The formats a dataset always has: its labels back data.yaml and the split lists.
ALWAYS = "yolo"

__all__ = [
    "ALWAYS",
    "Annotations",
    "Context",
    "ExportFolder",
    "Format",
    "ReadContext",
    "get",
    "names",
    "ordered",
    "registry",
    "written",
]


def _check(obj: object, name: str) -> Format:
    from autolabel.plugins import registered

    return registered(obj, Format, name)


@functools.cache
def registry() -> dict[str, Format]:
    """Every format by name: the built-ins, then the plug-ins that load."""
    from autolabel import plugins

    out: dict[str, Format] = {}
    for name, (module, cls) in BUILTIN.items():
        out[name] = _check(getattr(importlib.import_module(module), cls), name)
    for name, fmt in plugins.load(plugins.FORMATS, set(out), _check).items():
        out[name] = fmt  # type: ignore[assignment]
    return out


def names(dataset: bool = False) -> list[str]:
    """Registered format names (only those a dataset can be written in, with ``dataset``)."""
    return [n for n, f in registry().items() if f.dataset_format or not dataset]


def get(name: str, dataset: bool = False) -> Format:
    """The format called ``name``; ConfigError listing the choices when there is none."""
    fmt = registry().get(name)
    if fmt is None or (dataset and not fmt.dataset_format):
        raise ConfigError(f"format {name!r}: choose one of {', '.join(names(dataset))}")
    return fmt


def ordered(formats: list[str]) -> list[str]:
    """Format names in registry order, duplicates dropped."""
    order = list(registry())
    wanted = set(formats)
    return [n for n in order if n in wanted] + sorted(n for n in wanted if n not in order)


def written(formats: list[str]) -> list[Format]:
    """The formats whose files a dataset with ``formats`` holds: those, and ``yolo`` always."""
    return [get(n) for n in ordered([*formats, ALWAYS])]
