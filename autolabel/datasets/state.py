"""A dataset's state (``.autolabel/state.json``): typed, versioned, validated on read.

Version 4 (this one) adds the dataset's id, the per-box extras (mask, track id, origin) and
the model's boxes kept beside a reviewer's in the journal. Versions 3 and 2 are read and
upgraded by the next command that writes the dataset: version 3's files are already this
version's, version 2's label files are rewritten from the journal.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel.datasets.layout import JOURNAL, STATE
from autolabel.errors import InputError
from autolabel.fileio import atomic_write_text
from autolabel.naming import short_hash

STATE_VERSION = 4
# Version 2 wrote YOLO with 5 decimals and VOC without <pose>/<truncated>/<difficult>; its
# datasets are read, and their derived files rewritten from the journal, by the next run or import.
OLDEST_STATE_VERSION = 2
PRODUCT = "product"
MERGED = "merged"


@dataclass
class SourceState:
    """One media file of a product: its stem in frame names, its content identity, whether read to its end."""

    stem: str
    id: str | None = None
    complete: bool = False


@dataclass
class State:
    """What a dataset is and how far it got.

    Attributes:
        kind: ``product`` (one product's run) or ``merged`` (``autolabel merge``).
        version: The layout version it was written in.
        classes: Class names by id.
        formats: The formats the dataset is written in (format registry names).
        complete: Finished: every source read, split and dataset files written.
        id: The dataset's identity, carried by its exports (an import checks it).
        product: A product dataset's product name.
        fingerprint: The settings its labels were made with (resume refuses others).
        sources: A product's media files by file name.
        model: What labeled it (the labeler's description and its files' sha256).
        source_errors: Sources that could not be read to their end.
        floor: The score down to which the journal holds the model's boxes (box thresholds at or
            above it can change without labeling again); None: not known.
        pending: A re-derivation of the files from the journal was under way (finished by the next run).
        unscored: Frames reviewed before the model's boxes were kept beside a review (``eval`` skips them).
        track_blocks: Each tracked video's block of track ids, by source stem (``--track``).
        settings: A merged dataset's products' box thresholds and filters (what ``eval`` scores).
        merge: A merged dataset's options (filters, unite_case), to merge it again the same way.
        inputs: A merged dataset's product dataset folders.
        products: A merged dataset's products.
    """

    kind: str
    version: int = STATE_VERSION
    classes: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    complete: bool = False
    id: str | None = None
    product: str | None = None
    fingerprint: dict | None = None
    sources: dict[str, SourceState] = field(default_factory=dict)
    model: dict | None = None
    source_errors: list[str] = field(default_factory=list)
    floor: float | None = None
    pending: bool = False
    unscored: list[str] = field(default_factory=list)
    track_blocks: dict[str, int] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    settings: dict[str, dict] = field(default_factory=dict)
    merge: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to disk (only the fields of its kind)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "version": self.version,
            "id": self.id,
            "classes": list(self.classes),
            "formats": list(self.formats),
            "complete": self.complete,
        }
        if self.kind == MERGED:
            out |= {"inputs": list(self.inputs), "products": list(self.products), "settings": self.settings}
            out |= {"merge": self.merge}
        else:
            out |= {
                "product": self.product,
                "fingerprint": self.fingerprint,
                "sources": {name: dataclasses.asdict(s) for name, s in self.sources.items()},
                "model": self.model,
                "source_errors": list(self.source_errors),
                "floor": self.floor,
                "pending": self.pending,
                "unscored": list(self.unscored),
                "track_blocks": dict(self.track_blocks),
            }
        return out

    @property
    def segmented(self) -> bool:
        """Its files hold outlines (``run --masks``): each box's mask, or its box as a polygon where it has none.

        A product dataset's fingerprint records its mask settings; a merged dataset has masks when a product has.
        """
        if self.kind == MERGED:
            return any(isinstance(s, dict) and s.get("masks") for s in self.settings.values())
        return bool((self.fingerprint or {}).get("masks"))

    def complete_sources(self) -> set[str]:
        """File names of the sources read to their end."""
        return {name for name, info in self.sources.items() if info.complete}

    def model_files(self) -> dict[str, str | None]:
        """The model files' sha256 that the dataset was labeled with."""
        return dict(sorted(((self.fingerprint or {}).get("model") or {}).get("files", {}).items()))


def dataset_id(*parts: object) -> str:
    """A dataset's id: a digest of what it was made from (the same inputs and settings give the same id)."""
    return short_hash(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str), 16)


def product_id(product: str, fingerprint: dict | None, sources: dict[str, SourceState]) -> str:
    """A product dataset's id: its product, settings and the sources it started with.

    The box thresholds and the mask settings are left out: they change without labeling again, and the
    dataset stays itself.
    """
    fp = {k: v for k, v in (fingerprint or {}).items() if k != "masks"}
    if isinstance(fp.get("model"), dict):
        fp["model"] = {k: v for k, v in fp["model"].items() if k not in ("box_threshold", "class_thresholds")}
    return dataset_id(PRODUCT, product, fp, sorted(s.id or name for name, s in sources.items()))


def _fail(path: Path, what: str) -> InputError:
    return InputError(
        f"{path}: {what}; restore it from a backup (the journal {JOURNAL} holds every box, reviews included), "
        "or label into a new --output"
    )


def _typed(path: Path, data: dict, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(key, default)
    if value is default:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(path, f"'{key}' has the wrong type ({type(value).__name__})")
    return value


def _names(path: Path, data: dict, key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise InputError(f"{path}: '{key}' must be a list of names")
    return list(value)


def parse_state(path: Path, data: Any) -> State:
    """Checks a state file's content field by field; InputError naming the file and the field."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise InputError(f"{path}: not an autolabel dataset state (expected a JSON object with 'kind')")
    version = data.get("version")
    if type(version) is not int or not OLDEST_STATE_VERSION <= version <= STATE_VERSION:
        raise InputError(
            f"{path}: dataset written by another autolabel version (state version {version!r}, "
            f"this one reads {OLDEST_STATE_VERSION} to {STATE_VERSION}); relabel into a new --output"
        )
    kind = data["kind"]
    state = State(kind=kind, version=version, classes=_names(path, data, "classes"))
    state.formats = _names(path, data, "formats") if "formats" in data else ["yolo", "voc"]
    state.complete = bool(_typed(path, data, "complete", bool, False))
    state.id = _typed(path, data, "id", str, None)
    if kind == MERGED:
        # Version 3 and older listed a merge's inputs under 'sources'.
        state.inputs = _names(path, data, "inputs" if "inputs" in data else "sources")
        state.products = _names(path, data, "products")
        state.settings = _typed(path, data, "settings", dict, {})
        state.merge = _typed(path, data, "merge", dict, {})
        return state
    state.product = _typed(path, data, "product", str, None)
    state.fingerprint = _typed(path, data, "fingerprint", dict, None)
    state.model = _typed(path, data, "model", dict, None)
    state.source_errors = _names(path, data, "source_errors")
    floor = data.get("floor")
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, int | float)):
        raise _fail(path, "'floor' has the wrong type")
    # A dataset from before the journal kept the model's boxes holds them down to its box threshold.
    state.floor = float(floor) if floor is not None else None if "floor" in data else _old_floor(state)
    state.pending = bool(_typed(path, data, "pending", bool, False))
    state.unscored = _names(path, data, "unscored")
    blocks = _typed(path, data, "track_blocks", dict, {})
    if not all(isinstance(k, str) and type(v) is int for k, v in blocks.items()):
        raise _fail(path, "'track_blocks' must map source stems to integers")
    state.track_blocks = dict(blocks)
    sources = _typed(path, data, "sources", dict, {})
    for name, info in sources.items():
        if not isinstance(info, dict) or not isinstance(info.get("stem"), str):
            raise _fail(path, f"source {name!r} has no stem")
        ident = info.get("id")
        if ident is not None and not isinstance(ident, str):
            raise _fail(path, f"source {name!r} has an id of the wrong type")
        state.sources[name] = SourceState(info["stem"], ident, bool(info.get("complete", False)))
    return state


def _old_floor(state: State) -> float | None:
    """Before version 4 the journal held the boxes above the box threshold, after the filters.

    Where a filter was on, what it removed is lost: no box threshold can be served (None).
    """
    fp = state.fingerprint or {}
    f = fp.get("filters") or {}
    if f.get("min_box_size", 0) > 0 or f.get("max_box_size", 1) < 1 or f.get("overlap_iou") is not None:
        return None
    if f.get("drop_empty") or f.get("drop_multi"):
        return None
    value = (fp.get("model") or {}).get("box_threshold")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_state(root: Path) -> State | None:
    """The dataset's state, or None when ``root`` is not an autolabel dataset."""
    path = root / STATE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(path, f"unreadable dataset state ({exc})") from exc
    return parse_state(path, data)


def write_state(root: Path, state: State) -> None:
    """Writes the state file atomically."""
    atomic_write_text(root / STATE, json.dumps(state.to_dict(), indent=2, sort_keys=True) + "\n")
