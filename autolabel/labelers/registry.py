"""The base-model registry: each base model is a spec (name, config section, CLI flags) and a module.

The spec is light (the CLI builds its flags from it without importing torch); the module
it names does the work, through functions of fixed names:

- ``model_files(mc, cache) -> list[autolabel.fetch.ModelFile]``: the files that make the model
  (``mc``: the ``model:`` config): a path given, or where to download it from. They are
  fetched in one go (one line naming every missing file when offline) and count by content
  in the resume fingerprint.
- ``create(mc, files, cache, progress) -> Labeler``: loads the model from the fetched files
  (``files``: each file's key to its path).
- optional ``validate(mc)``: a ConfigError for settings the model cannot use.

Built-ins are listed here; third-party base models register a :class:`BaseModel` under the
``autolabel.labelers`` entry point group (docs/PLUGINS.md). Nothing outside a model's own
module asks which model it is: flags, the check that a flag belongs to the chosen model,
the fingerprint's per-model settings and the factory all come from the spec.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from autolabel.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One command-line flag of a base model and the ``model.`` config key it sets.

    Attributes:
        flag: ``--weights``; a boolean is a ``--on/--off`` pair.
        key: The key under ``model:`` (``weights``, ``discover.backbone``).
        type: ``str``, ``int``, ``float`` or ``bool``.
        help: One line for ``--help``.
        file: The value is a model file (it counts by content, not by name).
    """

    flag: str
    key: str
    type: type
    help: str
    file: bool = False


@dataclass(frozen=True)
class BaseModel:
    """A base model: what ``--base-model NAME`` picks.

    Attributes:
        name: The ``--base-model`` value.
        help: One line for ``--help``.
        module: The module with ``create`` and ``model_files`` (imported when the model is used).
        options: Its own flags.
        section: Its config section under ``model:`` (a dataclass field of the config, or a
            plug-in's :attr:`section_type`), whose settings shape labels and so join the
            resume fingerprint (file options excepted: they count by content).
        section_type: A plug-in's section dataclass (built-ins have theirs in the config).
        open_classes: It names classes itself; an ontology is optional.
        thresholds: Which of box_threshold and text_threshold it reads (for docs and warnings).
    """

    name: str
    help: str
    module: str
    options: tuple[Option, ...] = ()
    section: str | None = None
    section_type: type | None = None
    open_classes: bool = False
    thresholds: tuple[str, ...] = ("box_threshold",)

    def load(self) -> ModuleType:
        """The module that does the work."""
        return importlib.import_module(self.module)

    def create(self, mc: Any, cache: str | None = None, progress: bool = True):
        """Fetches the model's files (one line naming every missing one when offline), then loads the model."""
        from autolabel.fetch import fetch
        from autolabel.weights import cache_dir

        module = self.load()
        files = fetch(module.model_files(mc, cache), cache_dir(cache), progress)
        if "box_threshold" in self.thresholds:  # the journal keeps every box down to keep_threshold
            mc = dataclasses.replace(mc, box_threshold=mc.floor())
        return module.create(mc, files, cache, progress)

    def model_files(self, mc: Any, cache: str | None) -> list:
        """The files that make the model (:class:`autolabel.fetch.ModelFile`); nothing downloads."""
        return self.load().model_files(mc, cache)

    def validate(self, mc: Any) -> None:
        """The module's own checks of the settings, if it has any."""
        fn = getattr(self.load(), "validate", None)
        if fn is not None:
            fn(mc)

    def settings(self, mc: Any) -> dict | None:
        """Its section's settings that shape labels (file options excepted), for the fingerprint."""
        if self.section is None:
            return None
        section = section_of(mc, self.section)
        files = {o.key.split(".", 1)[1] for o in self.options if o.file and o.key.startswith(f"{self.section}.")}
        return {k: v for k, v in dataclasses.asdict(section).items() if k not in files}


def section_of(mc: Any, name: str):
    """A base model's config section: a field of the model config, or a plug-in's in ``mc.sections``.

    A plug-in's section that the config does not set is its :attr:`BaseModel.section_type`'s defaults.
    """
    if hasattr(mc, name) and dataclasses.is_dataclass(getattr(mc, name)):
        return getattr(mc, name)
    if name not in mc.sections:
        for spec in registry().values():
            if spec.section == name and spec.section_type is not None:
                return spec.section_type()
    return mc.sections[name]


BUILTIN: tuple[BaseModel, ...] = (
    BaseModel(
        "grounding-dino",
        "Grounding DINO (IDEA-Research, Swin-T OGC): text-prompted, the default",
        "autolabel.labelers.grounding_dino",
        (
            Option("--weights", "weights", str, "Grounding DINO checkpoint (.pth).", file=True),
            Option("--model-config", "model_config", str, "Grounding DINO config (.py).", file=True),
            Option(
                "--text-encoder", "text_encoder", str, "BERT config + tokenizer folder (default: bundled).", file=True
            ),
        ),
        thresholds=("box_threshold", "text_threshold"),
    ),
    BaseModel(
        "ultralytics",
        "An Ultralytics YOLO (closed set), YOLO-World or YOLOE checkpoint",
        "autolabel.labelers.ultralytics",
        (Option("--base-weights", "base_weights", str, "Ultralytics checkpoint (.pt).", file=True),),
    ),
    BaseModel(
        "hf",
        "A Hugging Face zero-shot detector (Grounding DINO, MM-Grounding-DINO, OWL-ViT/OWLv2): --hf-model",
        "autolabel.labelers.hf",
        (
            Option(
                "--hf-model", "hf_model", str, "Hugging Face zero-shot detector: hub id or local folder.", file=True
            ),
            Option("--hf-revision", "hf_revision", str, "Hub branch, tag or commit."),
        ),
        thresholds=("box_threshold", "text_threshold"),
    ),
    BaseModel(
        "discover",
        "No prompt: a DINO ViT finds objects (LOST), an ImageNet-21k classifier names them",
        "autolabel.labelers.discover",
        (
            Option("--discover-backbone", "discover.backbone", str, "discover: timm ViT that finds objects."),
            Option(
                "--backbone-weights",
                "discover.backbone_weights",
                str,
                "discover: its weights (.safetensors, .pth).",
                file=True,
            ),  # fmt: skip
            Option("--discover-classifier", "discover.classifier", str, "discover: timm ImageNet-21k classifier."),
            Option(
                "--classifier-weights",
                "discover.classifier_weights",
                str,
                "discover: its weights (.safetensors, .pth).",
                file=True,
            ),  # fmt: skip
            Option(
                "--discover-method",
                "discover.method",
                str,
                "discover: seeds (seed 002's: every seed cluster an object) or lost (LOST, seed by seed).",
            ),  # fmt: skip
            Option("--number-seeds", "discover.number_seeds", int, "discover, method lost: objects per frame."),
            Option(
                "--keep-unmapped/--drop-unmapped",
                "discover.keep_unmapped",
                bool,
                "discover: keep objects the ontology does not name.",
            ),  # fmt: skip
        ),
        section="discover",
        open_classes=True,
        thresholds=(),
    ),
)


def _check(obj: object, name: str) -> BaseModel:
    from autolabel.plugins import registered

    return registered(obj, BaseModel, name)


@functools.cache
def registry() -> dict[str, BaseModel]:
    """Every base model by name: the built-ins, then the plug-ins that load (one warning for each that does not)."""
    from autolabel import plugins

    out = {spec.name: spec for spec in BUILTIN}
    flags = {o.flag for spec in BUILTIN for o in spec.options}
    for name, spec in plugins.load(plugins.LABELERS, set(out), _check).items():
        clash = [o.flag for o in spec.options if o.flag in flags]  # type: ignore[attr-defined]
        if clash:
            import logging

            logging.getLogger(__name__).warning("plug-in %r: flag %s is taken; refused", name, clash[0])
            continue
        out[name] = spec  # type: ignore[assignment]
        flags |= {o.flag for o in spec.options}  # type: ignore[attr-defined]
    return out


def names() -> list[str]:
    """The registered base models' names."""
    return list(registry())


def get(name: str) -> BaseModel:
    """The base model called ``name``; ConfigError listing the choices when there is none."""
    spec = registry().get(name)
    if spec is None:
        raise ConfigError(f"model.base_model must be one of {', '.join(names())}, got {name!r}")
    return spec


def options() -> list[tuple[BaseModel, Option]]:
    """Every base model's flags, with their owner."""
    return [(spec, o) for spec in registry().values() for o in spec.options]
