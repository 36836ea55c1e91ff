"""Typed configuration: dataclass defaults, YAML files, flag overrides.

``configs/default.yaml`` mirrors these defaults with comments (a test keeps them
equal). Unknown keys are an error naming the key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autolabel.errors import ConfigError

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class SamplingConfig:
    """Which frames of each video are kept."""

    frame_rate: int = 30
    fps: float | None = None
    dedup: float | None = None
    max_frames: int | None = None


@dataclass
class DiscoverConfig:
    """Prompt-free discovery (``base_model: discover``): a DINO ViT, LOST, an ImageNet-21k classifier."""

    backbone: str = "vit_small_patch16_224.dino"
    backbone_weights: str | None = None
    classifier: str = "convnext_base.fb_in22k"
    classifier_weights: str | None = None
    method: str = "seeds"
    n_seeds: int = 10
    seed_correlation: float | None = None
    seed_score: float = 0.4
    seed_nms: float = 0.5
    seed_confidence: float = 0.25
    number_seeds: int = 3
    correlation_th: float = 0.5
    k_patches: int = 100
    min_object_size: float = 0.01
    min_confidence: float = 0.0
    keep_unmapped: bool = False


@dataclass
class ModelConfig:
    """The base model that labels frames, and its thresholds."""

    base_model: str = "grounding-dino"
    weights: str | None = None
    model_config: str | None = None
    text_encoder: str | None = None
    base_weights: str | None = None
    hf_model: str | None = None
    hf_revision: str | None = None
    box_threshold: float = 0.35
    class_thresholds: dict[str, float] = field(default_factory=dict)
    keep_threshold: float = 0.1
    text_threshold: float = 0.25
    nms_iou: float = 0.5
    image_size: int | None = None
    max_size: int = 1333
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    discover: DiscoverConfig = field(default_factory=DiscoverConfig)
    # Config sections of plug-in base models, by section name (listed in run.yaml only when set).
    sections: dict[str, Any] = field(default_factory=dict)

    def floor(self) -> float:
        """The score down to which a run journals the model's boxes: keep_threshold, or a lower box threshold."""
        return min([self.keep_threshold, self.box_threshold, *self.class_thresholds.values()])


@dataclass
class DatasetConfig:
    """What the dataset writer produces."""

    formats: list[str] = field(default_factory=lambda: ["yolo", "voc"])
    val_fraction: float = 0.2
    seed: int = 0
    jpeg_quality: int = 95


@dataclass
class FilterConfig:
    """Box and frame filters; the defaults keep everything."""

    min_box_size: float = 0.0
    max_box_size: float = 1.0
    overlap_iou: float | None = None
    drop_empty: bool = False
    drop_multi: bool = False


@dataclass
class TrackingConfig:
    """Tracks across frames (``--track``): missed frames filled, one-frame blips dropped, one class per object."""

    enabled: bool = False
    stride: int = 5
    max_gap: int = 10
    min_track: int = 3


@dataclass
class MaskConfig:
    """Segmentation masks from the final boxes (``--masks``): a SAM-family model outlines each box."""

    model: str | None = None
    mask_model: str | None = None
    revision: str | None = None
    tolerance: float = 1.0
    min_area: int = 0
    batch_size: int | None = None


@dataclass
class EngineConfig:
    """Where labeling runs: this process (local) or a Ray cluster (ray). Never changes the output."""

    name: str = "local"
    ray_address: str | None = None
    actors_per_gpu: int = 1
    actors: int | None = None
    actor_cpus: float = 1.0
    decode_cpus: float = 1.0
    item_batches: int = 4


@dataclass
class RunConfig:
    """Everything ``autolabel run`` needs."""

    input: str = "videos"
    output: str = "dataset"
    products: list[str] = field(default_factory=list)
    cache_dir: str | None = None
    report: bool = True
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def validate(self) -> RunConfig:
        """Checks ranges and choices; returns self."""
        s, m, d, f = self.sampling, self.model, self.dataset, self.filters
        if s.frame_rate < 1:  # checked even when fps is set: a bad value is never silently kept
            raise ConfigError(f"sampling.frame_rate (--frame-rate) must be >= 1, got {show(s.frame_rate)}")
        if s.fps is not None and s.fps <= 0:
            raise ConfigError(f"sampling.fps (--fps) must be > 0, got {s.fps}")
        if s.dedup is not None and not 0.0 <= s.dedup <= 1.0:
            raise ConfigError(f"sampling.dedup (--dedup) must be between 0 (off) and 1, got {s.dedup}")
        if s.dedup == 0:
            s.dedup = None  # 0 means off, as null does: one spelling in the fingerprint and run.yaml
        if s.max_frames is not None and s.max_frames < 1:
            raise ConfigError(
                f"sampling.max_frames (--max-frames) must be >= 1 (or null for all), got {show(s.max_frames)}"
            )
        for name in ("box_threshold", "keep_threshold", "text_threshold", "nms_iou"):
            value = getattr(m, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"model.{name} must be between 0 and 1, got {value}")
        for name, value in m.class_thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"model.class_thresholds: {show(name)} must be between 0 and 1, got {value}")
        from autolabel.labelers import registry

        if m.base_model not in registry.names():
            raise ConfigError(
                f"model.base_model must be one of {', '.join(registry.names())}, got {show(m.base_model)}"
            )
        if m.max_size < 32:
            raise ConfigError(f"model.max_size must be >= 32, got {show(m.max_size)}")
        if m.image_size is not None and (m.image_size < 32 or m.max_size < m.image_size):
            raise ConfigError(
                f"model.image_size must be >= 32 and <= model.max_size, got {show(m.image_size)} / {show(m.max_size)}"
            )
        if m.batch_size is not None and m.batch_size < 1:
            raise ConfigError(f"model.batch_size must be >= 1 (or null for automatic), got {show(m.batch_size)}")
        if not DEVICE.fullmatch(m.device):
            raise ConfigError(f"model.device (--device) must be auto, cpu, cuda, cuda:N or mps, got {show(m.device)}")
        if m.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError(f"model.precision must be auto, fp32, fp16 or bf16, got {show(m.precision)}")
        validate_discover(m.discover)
        registry.get(m.base_model).validate(m)
        from autolabel.datasets import formats

        choices = formats.names(dataset=True)
        unknown = [x for x in d.formats if x not in choices]
        if unknown or not d.formats:
            raise ConfigError(
                f"dataset.formats must be a non-empty subset of {', '.join(choices)}, got {show(d.formats)}"
            )
        if not 0.0 <= d.val_fraction < 1.0:
            raise ConfigError(f"dataset.val_fraction must be in [0, 1), got {d.val_fraction}")
        if not 1 <= d.jpeg_quality <= 100:
            raise ConfigError(f"dataset.jpeg_quality must be in 1..100, got {show(d.jpeg_quality)}")
        validate_filters(f)
        validate_tracking(self.tracking)
        validate_masks(self.masks)
        validate_engine(self.engine)
        return self


def validate_tracking(t: TrackingConfig) -> None:
    """Checks the tracking knobs."""
    for name, least in (("stride", 1), ("max_gap", 0), ("min_track", 1)):
        value = getattr(t, name)
        if value < least:
            flag = {"stride": "--track-stride", "max_gap": "--max-gap", "min_track": "--min-track"}[name]
            raise ConfigError(f"tracking.{name} ({flag}) must be >= {least}, got {show(value)}")


ENGINES = ("local", "ray")


def validate_engine(e: EngineConfig) -> None:
    """Checks the engine's name and counts."""
    if e.name not in ENGINES:
        raise ConfigError(f"engine.name (--engine) must be local or ray, got {show(e.name)}")
    if e.ray_address is not None and not (e.ray_address == "auto" or ":" in e.ray_address):
        raise ConfigError(
            f"engine.ray_address (--ray-address) must be auto, ray://HOST:PORT or HOST:PORT, got {show(e.ray_address)}"
        )
    for name in ("actors_per_gpu", "item_batches"):
        if getattr(e, name) < 1:
            raise ConfigError(f"engine.{name} must be >= 1, got {show(getattr(e, name))}")
    if e.actors is not None and e.actors < 1:
        raise ConfigError(f"engine.actors (--actors) must be >= 1 (or null for one per GPU), got {show(e.actors)}")
    for name in ("actor_cpus", "decode_cpus"):
        if not getattr(e, name) > 0:
            raise ConfigError(f"engine.{name} must be > 0, got {show(getattr(e, name))}")


def validate_masks(mc: MaskConfig) -> None:
    """Checks the mask model's name and knobs."""
    from autolabel import masks

    if mc.model is not None and mc.model != masks.NONE:
        masks.get(mc.model)
    elif mc.mask_model is not None or mc.revision is not None:
        flag = "--mask-model" if mc.mask_model is not None else "--mask-revision"
        raise ConfigError(f"{flag} needs a mask model: --masks {'|'.join(masks.names())}")
    if not 0.0 <= mc.tolerance <= 16.0:
        raise ConfigError(f"masks.tolerance must be between 0 (lossless) and 16 pixels, got {mc.tolerance}")
    if mc.min_area < 0:
        raise ConfigError(f"masks.min_area must be >= 0 pixels, got {show(mc.min_area)}")
    if mc.batch_size is not None and mc.batch_size < 1:
        raise ConfigError(f"masks.batch_size must be >= 1 (or null for automatic), got {show(mc.batch_size)}")


def validate_filters(f: FilterConfig) -> None:
    """Checks filter ranges."""
    if not 0.0 <= f.min_box_size <= f.max_box_size <= 1.0:
        raise ConfigError(
            f"filters need 0 <= min_box_size <= max_box_size <= 1, got {f.min_box_size} / {f.max_box_size}"
        )
    if f.overlap_iou is not None and not 0.0 < f.overlap_iou <= 1.0:
        raise ConfigError(f"filters.overlap_iou must be in (0, 1] or null, got {f.overlap_iou}")


# seeds: seed 002's multi-seed method (the default); lost: LOST's expansion, seed by seed (autolabel's first).
DISCOVER_METHODS = ("seeds", "lost")


def validate_discover(c: DiscoverConfig) -> None:
    """Checks the discovery knobs."""
    for name in ("backbone", "classifier"):
        if not getattr(c, name).strip():
            raise ConfigError(f"model.discover.{name} must name a timm model, got {show(getattr(c, name))}")
    if c.method not in DISCOVER_METHODS:
        raise ConfigError(f"model.discover.method must be one of {', '.join(DISCOVER_METHODS)}, got {show(c.method)}")
    if c.n_seeds < 1:
        raise ConfigError(f"model.discover.n_seeds must be >= 1, got {show(c.n_seeds)}")
    if c.seed_correlation is not None and not math.isfinite(c.seed_correlation):
        raise ConfigError(f"model.discover.seed_correlation must be a finite number, got {c.seed_correlation}")
    if c.number_seeds < 1:
        raise ConfigError(f"model.discover.number_seeds must be >= 1, got {show(c.number_seeds)}")
    if c.k_patches < 1:
        raise ConfigError(f"model.discover.k_patches must be >= 1, got {show(c.k_patches)}")
    for name in ("correlation_th", "min_object_size", "min_confidence", "seed_score", "seed_nms", "seed_confidence"):
        value = getattr(c, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"model.discover.{name} must be between 0 and 1, got {value}")


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for error messages (values can be huge)."""
    short = reprlib.Repr()  # bounded work: never builds the full repr of a large value
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 6, 6, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid keys: {', '.join(valid)})"


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Checks a YAML value against a dataclass field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is dict:
        key_type, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {show(value)}")
        return {_coerce(k, key_type, f"{where}"): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {show(value)}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int past float's range
                number = math.inf
            if not math.isfinite(number):  # NaN passes every range check; YAML writes it .nan
                raise ConfigError(f"{where}: expected a finite number, got {show(value)}")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the types above are used
        raise TypeError(hint)
    raise ConfigError(f"{where}: expected {hint.__name__}, got {show(value)}")


def _plugin_sections() -> dict[str, type]:
    """Config sections of plug-in base models, by name (built-ins have theirs as fields)."""
    from autolabel.labelers import registry

    return {s.section: s.section_type for s in registry.registry().values() if s.section and s.section_type}


def _apply(obj: Any, data: dict, where: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'top level'} must be a mapping, got {show(data)}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj) if f.name != "sections"]
    sections = _plugin_sections() if isinstance(obj, ModelConfig) and data else {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key in sections:
            section = obj.sections.setdefault(key, sections[key]())
            _apply(section, value, where, f"{dotted}.")
            continue
        if key not in names:
            raise ConfigError(f"{where}: unknown key {show(dotted)}" + _closest(str(key), names + list(sections)))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, where, f"{dotted}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}: {dotted}"))


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Builds a RunConfig from defaults, an optional YAML file and dotted overrides.

    Args:
        path: A YAML file with any subset of the keys of ``configs/default.yaml``.
        overrides: ``{"model.box_threshold": 0.3, ...}``; ``None`` values are ignored.
    """
    config = RunConfig()
    if path is not None:
        data = read_yaml(path)
        _apply(config, data or {}, str(path))
    nested: dict = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    _apply(config, nested, "flags")
    return config.validate()


class _ConfigLoader(yaml.SafeLoader):
    """A stricter ``yaml.SafeLoader``: no anchors or aliases, no duplicate keys, values it cannot build marked.

    A few lines of nested aliases expand to gigabytes; a duplicate key would make the last one win silently.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not allowed in config files", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:  # a date such as 2024-13-45, an int past Python's digit limit
            raise yaml.constructor.ConstructorError(None, None, str(exc), node.start_mark) from exc

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if seen is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {show(key)} appears twice (first on line {seen.start_mark.line + 1})",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """Reads a YAML file, turning I/O and syntax errors into one clear line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")  # PyYAML skips a leading BOM itself
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        line, column = raw.count(b"\n", 0, exc.start) + 1, len(raw[start : exc.start].decode("utf-8", "replace")) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from exc
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a stricter SafeLoader
    except yaml.reader.ReaderError as exc:  # no mark, and a two-line message
        line, column = text.count("\n", 0, exc.position) + 1, exc.position - text.rfind("\n", 0, exc.position)
        raise ConfigError(
            f"{path}:{line}:{column}: invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{loc}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc


def to_dict(config: Any) -> dict:
    """Plain nested dict of a config dataclass (for run.yaml); plug-in sections only when set."""
    out = dataclasses.asdict(config)
    model = out.get("model")
    if isinstance(model, dict) and not model.get("sections"):
        model.pop("sections", None)
    return out
