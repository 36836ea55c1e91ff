"""Ontology: captions sent to the detector, mapped to class labels.

``ontology.json`` is ``{"caption": "class"}``. Several captions may name one class
(synonyms share its id); class ids follow first appearance.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from autolabel.errors import InputError

_NOT_TEXT = {"Cc": "a control character", "Cs": "a lone surrogate"}  # Unicode categories refused in names


@dataclass(frozen=True)
class Ontology:
    """Captions and the class each one maps to.

    Attributes:
        captions: The prompts, in file order.
        caption_class: For each caption, the index of its class in ``classes``.
        classes: Class labels in order of first appearance (index = class id).
    """

    captions: tuple[str, ...]
    caption_class: tuple[int, ...]
    classes: tuple[str, ...]

    @classmethod
    def empty(cls) -> Ontology:
        """No ontology: a discovering base model (``discover``) keeps every class it finds."""
        return cls((), (), ())

    @classmethod
    def from_mapping(cls, mapping: dict[str, str], where: str = "ontology") -> Ontology:
        """Validates a ``{caption: class}`` mapping and builds the ontology."""
        if not isinstance(mapping, dict):
            raise InputError(f"{where}: expected a JSON object {{caption: class}}, got {type(mapping).__name__}")
        if not mapping:
            raise InputError(f"{where}: the ontology is empty; add at least one caption: class pair")
        captions: list[str] = []
        caption_class: list[int] = []
        classes: list[str] = []
        seen_captions: set[str] = set()
        for caption, label in mapping.items():
            if not isinstance(caption, str) or not caption.strip():
                raise InputError(f"{where}: caption {caption!r} is blank; captions must be text")
            if not isinstance(label, str) or not label.strip():
                raise InputError(
                    f"{where}: class for caption {caption!r} must be a non-blank string, got {json.dumps(label)}"
                )
            caption, label = caption.strip(), label.strip()
            _check_plain_text(caption, label, where)
            key = caption.lower()
            if key in seen_captions:
                raise InputError(f"{where}: caption {caption!r} appears twice (captions are case-insensitive)")
            seen_captions.add(key)
            if label not in classes:
                classes.append(label)
            captions.append(caption)
            caption_class.append(classes.index(label))
        return cls(tuple(captions), tuple(caption_class), tuple(classes))

    @classmethod
    def load(cls, path: Path) -> Ontology:
        """Reads and validates an ``ontology.json`` file."""
        if not path.is_file():
            raise InputError(f'{path}: missing ontology.json (expected {{"caption": "class"}})')
        try:
            text = path.read_text(encoding="utf-8-sig")  # Notepad starts UTF-8 files with a BOM
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read: {exc}") from exc
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
        return cls.from_mapping(data, where=str(path))

    def to_mapping(self) -> dict[str, str]:
        """The ``{caption: class}`` mapping, as in the file."""
        return {c: self.classes[i] for c, i in zip(self.captions, self.caption_class, strict=True)}


def _check_plain_text(caption: str, label: str, where: str) -> None:
    """Captions and classes end up in XML, prompts and reports: a control character breaks them (VOC crashes)."""
    named = (f"caption {json.dumps(caption)}", f"class {json.dumps(label)} (caption {json.dumps(caption)})")
    for name, text in zip(named, (caption, label), strict=True):
        bad = next((c for c in text if unicodedata.category(c) in _NOT_TEXT), None)
        if bad is not None:
            raise InputError(
                f"{where}: {name} contains {_NOT_TEXT[unicodedata.category(bad)]} (U+{ord(bad):04X}); "
                "captions and classes must be plain text"
            )


def _no_duplicate_keys(path: Path):
    def hook(pairs: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                raise InputError(f"{path}: caption {key!r} appears twice")
            out[key] = value
        return out

    return hook


def closest_names(caption: str, names: list[str], n: int = 5) -> list[str]:
    """The names a caption most likely meant, for "names none of the classes" errors (may be none).

    Names sharing a whole word with the caption (``mobile phone`` -> ``cell phone``), then near
    spellings (``cofee mug`` -> ``coffee mug``), best first. Names that only share letters
    (``cardboard box`` -> ``surfboard``, ``carrot``) are no suggestion: they send a user the wrong way.
    """
    import difflib
    import re

    def words(text: str) -> set[str]:
        return set(re.findall(r"\w+", text.lower()))

    said = caption.lower().strip()
    own = words(said)

    def ratio(name: str) -> float:
        return difflib.SequenceMatcher(None, said, name.lower()).ratio()

    sharing = sorted((name for name in names if own & words(name)), key=ratio, reverse=True)
    spelled = difflib.get_close_matches(said, [name.lower() for name in names], n=n, cutoff=0.75)
    by_lower = {name.lower(): name for name in names}
    ordered = [*[by_lower[s] for s in spelled], *sharing]
    return list(dict.fromkeys(ordered))[:n]
