"""The dataset core: one object that owns a dataset folder while a command works on it.

Opening a dataset for a purpose takes its lock (an OS lock beside the folder, released
when the holder dies), clears what a killed command left (temporary files, staging
folders), and reads its typed state. Its journal, classes, formats and split lists are
read through it. ``run``, ``merge``, ``import``, ``report`` and ``export`` all open
datasets here; nothing else reads ``state.json`` or the journal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from autolabel.datasets.journal import (
    append_masks,
    fold_masks,
    read_journal,
    repair_journal,
    write_changed,
    write_journal,
)
from autolabel.datasets.layout import JOURNAL, STATE, STATE_DIR, read_splits
from autolabel.datasets.records import FrameRecord
from autolabel.datasets.state import MERGED, PRODUCT, STATE_VERSION, State, product_id, read_state, write_state
from autolabel.errors import InputError
from autolabel.fileio import FolderLock, remove_stale_temporaries


class Dataset:
    """A dataset folder and its state (None for a folder that is not a dataset yet).

    Attributes:
        root: The folder.
        state: Its typed state; None while a new dataset has not written one.
    """

    def __init__(self, root: Path, state: State | None = None) -> None:
        self.root = root
        self.state = state

    @classmethod
    @contextlib.contextmanager
    def open(cls, root: Path, purpose: str, *, new: bool = False) -> Iterator[Dataset]:
        """Opens ``root`` for ``purpose`` (``"run"``, ``"import"``, ...), holding its lock until closed.

        Args:
            root: The dataset folder.
            purpose: Words for the lock file, which a second process's error names.
            new: A folder that is not a dataset (yet) is allowed: ``state`` is then None.
                Otherwise it is an InputError.
        """
        with FolderLock(root, purpose):
            remove_stale_temporaries(root.parent, prefix=root.name)  # a staging copy of it a killed command left
            remove_stale_temporaries(root)
            state = read_state(root) if root.is_dir() else None
            if state is None and not new:
                raise InputError(f"{root}: not an autolabel dataset (no {STATE})")
            if state is not None:  # the masks a killed mask step had made (its files already hold them)
                fold_masks(root, len(state.classes))
            yield cls(root, state)

    @classmethod
    def peek(cls, root: Path) -> Dataset:
        """The dataset at ``root`` read without its lock (to list or check it); InputError when it is none."""
        state = read_state(root) if root.is_dir() else None
        if state is None:
            raise InputError(f"{root}: not an autolabel dataset (no {STATE})")
        return cls(root, state)

    @staticmethod
    def state_of(root: Path) -> State | None:
        """The state at ``root`` without a lock, None where there is no dataset."""
        return read_state(root) if root.is_dir() else None

    # --- what it is ------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self._state.kind

    @property
    def classes(self) -> list[str]:
        return self._state.classes

    @property
    def formats(self) -> list[str]:
        return self._state.formats

    @property
    def complete(self) -> bool:
        return self._state.complete

    @property
    def name(self) -> str:
        """The product's name, else the folder's."""
        return self._state.product or self.root.resolve().name

    @property
    def _state(self) -> State:
        if self.state is None:
            raise InputError(f"{self.root}: not an autolabel dataset (no {STATE})")
        return self.state

    @property
    def segmented(self) -> bool:
        """Its files hold masks (``run --masks``)."""
        return self._state.segmented

    def context(self):
        """What its formats need: classes, name, id, and whether they write masks."""
        from autolabel.datasets.formats.base import Context

        return Context(self.classes, self.name, self._state.id, self._state.segmented)

    def is_merged(self) -> bool:
        return self._state.kind == MERGED

    def outdated(self) -> bool:
        """Written by an older autolabel: its derived files may be in that version's format."""
        return self._state.version < STATE_VERSION

    def upgrade(self, reviewed: list[str]) -> None:
        """Marks the state as this version's (once its derived files are), naming an older dataset by its inputs.

        ``reviewed``: the frames reviewed so far, whose model boxes an older version did not keep.
        """
        state = self._state
        state.version = STATE_VERSION
        state.unscored = sorted(set(state.unscored) | set(reviewed))
        if state.id is None and state.kind == PRODUCT:
            state.id = product_id(state.product or self.root.name, state.fingerprint, state.sources)

    def exists_empty(self) -> bool:
        """The folder holds nothing but (perhaps) an empty state folder a killed run left."""
        if not self.root.is_dir():
            return True
        return all(e.name == STATE_DIR and e.is_dir() and not any(e.iterdir()) for e in self.root.iterdir())

    # --- state and journal -------------------------------------------------------------

    def save(self) -> None:
        """Writes the state (atomically)."""
        write_state(self.root, self._state)

    def records(self, masks: bool = True) -> Iterator[FrameRecord]:
        """Every journaled frame (dropped ones too), in journal order, checked against the class list.

        ``masks=False``: the boxes without their masks (None), for work that holds every record.
        """
        return read_journal(self.root, self._n_classes, masks)

    @property
    def _n_classes(self) -> int | None:
        return len(self.state.classes) if self.state is not None else None

    def kept(self, masks: bool = True) -> list[FrameRecord]:
        """The frames in the dataset (not dropped), in journal order."""
        return [r for r in self.records(masks) if r.dropped is None]

    def rewrite_journal(self, records: Iterable[FrameRecord], changed: set[str] | None = None) -> None:
        """Replaces the journal in one atomic write.

        With ``changed``, ``records`` were read without masks: the frames not in it keep their
        journal lines, and the boxes of those in it that stayed in place keep their masks
        (:func:`autolabel.datasets.journal.write_changed`).
        """
        if changed is None:
            write_journal(self.root, records)
        else:
            write_changed(self.root, list(records), changed, self._n_classes)

    def kept_frames(self, records: list[FrameRecord]):
        """``records`` (kept frames read without masks, each with its split) as a stream that reads their masks.

        A :class:`autolabel.datasets.formats.base.FrameStream`: the journal is read again on each pass,
        one record in memory at a time.
        """
        from autolabel.datasets.formats.base import FrameStream

        splits = {r.name: r.split for r in records}

        def read() -> Iterator[FrameRecord]:
            for r in self.records():
                if r.dropped is None and r.name in splits:
                    r.split = splits[r.name]
                    yield r

        return FrameStream(records, read)

    def append_masks(self, records: Iterable[FrameRecord]) -> None:
        """Keeps masks made for ``records`` on disk until :meth:`fold_masks` puts them in the journal."""
        append_masks(self.root, records)

    def fold_masks(self) -> int:
        """Puts the masks kept by :meth:`append_masks` into the journal; returns the frames amended."""
        return fold_masks(self.root, self._n_classes)

    def repair_journal(self) -> None:
        """Cuts off a line a crash left half-written."""
        repair_journal(self.root)

    def splits(self) -> dict[str, str]:
        """Each frame's split, as ``train.txt`` and ``val.txt`` list it."""
        return read_splits(self.root)

    def derivation(self) -> dict:
        """The box thresholds and filters the frames were written with: ``{product: (Thresholds, FilterConfig)}``.

        A product dataset has one entry (key None); a merged one one per product, from the merge.
        """
        from autolabel.config import FilterConfig
        from autolabel.postprocess import Thresholds

        state = self._state
        if state.kind == MERGED:
            out = {
                product: (
                    Thresholds.from_model(s.get("model") or {}, state.classes),
                    FilterConfig(**(s.get("filters") or {})),
                )
                for product, s in state.settings.items()
            }
            return out | {None: (Thresholds(0.0, applies=False), None)}
        fp = state.fingerprint or {}
        return {
            None: (
                Thresholds.from_model(fp.get("model") or {}, state.classes),
                FilterConfig(**(fp.get("filters") or {})),
            )
        }

    def with_splits(self, strict: bool = True, masks: bool = True) -> list[FrameRecord]:
        """The kept frames, each with its split; a frame in neither list is an error (``strict``) or left out."""
        splits = self.splits()
        out = []
        for r in self.kept(masks):
            r.split = splits.get(r.name)
            if r.split is None:
                if strict:
                    raise InputError(
                        f"{self.root / JOURNAL}: frame {r.name!r} is in neither train.txt nor val.txt; "
                        "re-run `autolabel run` to finish the dataset"
                    )
                continue
            out.append(r)
        return out
