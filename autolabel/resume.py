"""Resume: what a product's run does given what its dataset holds — start, resume, relabel, or refuse.

A dataset records the settings its labels were made with (its fingerprint: ontology,
sampling, model files by content, thresholds, filters). A re-run with the same settings
labels only what is missing; one with other settings is refused unless ``--overwrite``
asks to relabel. Sources count by content: a renamed video keeps its frames, a replaced
one is a change.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

from autolabel import masks
from autolabel.config import RunConfig
from autolabel.datasets import formats
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.layout import JOURNAL, MERGED_DIR, RUN_YAML, STATE
from autolabel.datasets.records import PROBE, FrameRecord
from autolabel.datasets.rederive import rederive as rederive_journal
from autolabel.datasets.state import PRODUCT, SourceState, State, product_id
from autolabel.errors import InputError, OutputError
from autolabel.fileio import TMP_MARK, sync_dir
from autolabel.identity import source_identity
from autolabel.jobs import Job
from autolabel.labelers import registry
from autolabel.ontology import Ontology
from autolabel.postprocess import Thresholds
from autolabel.sampling import estimated_count
from autolabel.selection import DUPLICATE, SIGNAL
from autolabel.sources import Product, Source, list_sources
from autolabel.weights import cache_dir

log = logging.getLogger(__name__)

BACKUPS = ".autolabel-backups"
RESERVED_OUTPUTS = {MERGED_DIR}


def model_identity(mc, cache: str | None) -> dict[str, str | None]:
    """What each model file is (None where it is not on disk yet): sha256, cached by path, size and mtime.

    A hub model (``--hf-model ORG/NAME``) counts by its cached snapshot's commit, ``ORG/NAME@<sha>``.
    Nothing downloads.
    """
    from autolabel.fetch import identities

    return identities(registry.get(mc.base_model).model_files(mc, cache), cache_dir(cache))


def fingerprint(config: RunConfig, ontology: Ontology, model_id: dict[str, str | None] | None = None) -> dict:
    """The settings that decide a product's labels; a resumed run must match them.

    Model files count by content (sha256), not by name: a retrained ``best.pt`` under
    the same name is another model.
    """
    m, s = config.model, config.sampling
    spec = registry.get(m.base_model)
    return {
        "ontology": ontology.to_mapping(),
        "sampling": {
            "frame_rate": s.frame_rate if s.fps is None else None,
            "fps": s.fps,
            # Absent unless set, so datasets made before these settings existed resume as they are.
            **({"dedup": s.dedup} if s.dedup else {}),
            **({"max_frames": s.max_frames} if s.max_frames is not None else {}),
            **({"selection_signal": SIGNAL} if s.dedup or s.max_frames is not None else {}),
        },
        "model": {
            "base_model": m.base_model,
            "files": dict(model_id or {}),
            "box_threshold": m.box_threshold,
            # Absent unless set, so datasets made before it existed resume as they are.
            **({"class_thresholds": dict(sorted(m.class_thresholds.items()))} if m.class_thresholds else {}),
            "text_threshold": m.text_threshold,
            "nms_iou": m.nms_iou,
            "image_size": m.image_size,
            "max_size": m.max_size,
            "precision": m.precision,
            # A model's own section (discover's), so datasets of the other models resume as they are.
            **({spec.section: spec.settings(m)} if spec.section else {}),
        },
        "filters": dataclasses.asdict(config.filters),
        "jpeg_quality": config.dataset.jpeg_quality,
        # Absent unless on, so datasets made without it resume as they are.
        **({"tracking": dataclasses.asdict(config.tracking)} if config.tracking.enabled else {}),
        # Absent without --masks, so datasets without masks resume as they are.
        **({"masks": mask_settings} if (mask_settings := masks.settings(config.masks, config.cache_dir)) else {}),
    }


# Settings a dataset can change without labeling again: its files are derived from the journal anew.
SOFT = ("model.box_threshold", "model.class_thresholds")
# The mask settings change without labeling a box again: the masks are made again (autolabel.masks.step).
MASKS = "masks"


def refresh_soft(fp: dict | None, config: RunConfig) -> None:
    """Puts a run's box thresholds and mask settings into a dataset's fingerprint (they change without labeling).

    Only once the journal follows them (re-derived, masks switched): a run killed before still finds the
    old ones recorded, and derives again.
    """
    if fp is None or "model" not in fp:
        return
    m = config.model
    fp["model"]["box_threshold"] = m.box_threshold
    if m.class_thresholds:
        fp["model"]["class_thresholds"] = dict(sorted(m.class_thresholds.items()))
    else:
        fp["model"].pop("class_thresholds", None)
    if config.masks.model == masks.NONE:
        fp.pop(MASKS, None)
    elif config.masks.model is not None:
        fp[MASKS] = masks.settings(config.masks, config.cache_dir)


def mask_change(old: dict | None, config: RunConfig) -> str | None:
    """What a run does to a dataset's masks: ``add``, ``remask`` (other settings or model), ``strip``, or None.

    Without ``--masks`` a dataset keeps what it has; the model counts by content, not by where it is.
    """
    if config.masks.model is None:
        return None
    if config.masks.model == masks.NONE:
        return "strip" if old else None
    new = masks.settings(config.masks, config.cache_dir) or {}
    if not old:
        return "add"
    same = all(old.get(k) == new.get(k) for k in ("model", "tolerance", "min_area"))
    files_known = all(v is not None for v in (new.get("files") or {}).values())
    if same and (old.get("files") == new.get("files") or not files_known):
        return None
    return "remask"


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What changed between two fingerprints, in words (model files not on disk yet, and masks, are passed over)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key == MASKS:
            continue  # masks change without labeling a box again (mask_change)
        a, b = old.get(key), new.get(key)
        if prefix == "model.files." and (a is None or b is None):
            continue  # a file not on disk yet: checked again once the model is loaded
        if isinstance(a, dict) and isinstance(b, dict) and key != "ontology":
            diffs += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            if key == "ontology":
                diffs.append("ontology.json changed")
            elif prefix == "model.files.":
                diffs.append(f"model file {key} has other content (sha256 {a[:12]}... -> {b[:12]}...)")
            else:
                diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


def check_target(ds: Dataset, product: str) -> State | None:
    """The state of ``ds`` when it holds this product's dataset, None when absent or empty; refuses anything else."""
    out = ds.root
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is a file; remove it or choose another --output")
    # A run killed before its first state write leaves only an empty .autolabel/: that is an empty folder.
    if ds.state is None and not ds.exists_empty():
        raise OutputError(f"{out}: exists and is not an autolabel dataset; remove it or choose another --output")
    if ds.state is not None and ds.state.kind != PRODUCT:
        raise OutputError(f"{out}: holds a {ds.state.kind} dataset, not product {product!r}'s; choose another --output")
    return ds.state


def _source_changes(
    state: State, sources: list[Source], done: dict[str, set[int]], ids: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Sources replaced since their frames were labeled (hard changes), and sources gone (soft)."""
    replaced = []
    present = {s.path.name for s in sources}
    for source in sources:
        info = state.sources.get(source.path.name)
        if info and done.get(info.stem) and info.id != ids[source.path.name]:
            replaced.append(f"{source.path.name} was replaced since its frames were labeled")
    gone = [
        f"{name} is gone; its {len(done.get(info.stem, ()))} frames are kept (--overwrite relabels without them)"
        for name, info in sorted(state.sources.items())
        if name not in present and done.get(info.stem)
    ]
    return replaced, gone


def _carry_renames(state: State, sources: list[Source], ids: dict[str, str]) -> list[Source]:
    """A source renamed since it was labeled (same content, new name) keeps its stem and frames.

    Without this, the renamed file would be labeled again under a new stem while the old
    frames stay: every frame twice, and twins across train and val.
    """
    recorded = state.sources
    present = {s.path.name for s in sources}
    gone = {info.id: name for name, info in recorded.items() if name not in present}
    if not gone:
        return sources
    carried = []
    for source in sources:
        old = gone.pop(ids[source.path.name], None) if source.path.name not in recorded else None
        if old is not None:
            entry = recorded.pop(old)
            recorded[source.path.name] = entry
            source = dataclasses.replace(source, stem=entry.stem)
            log.info("%s: %s was renamed to %s; its frames are kept", source.path.parent, old, source.path.name)
        carried.append(source)
    return carried


def plan(ds: Dataset, product: Product, config: RunConfig, overwrite: bool, model_id: dict[str, str | None]) -> Job:
    """Decides, without writing, what a product's run does: start, resume, relabel, or refuse.

    Args:
        ds: The product's dataset folder, opened (locked) for the run.
        product: The product.
        config: The run's settings.
        overwrite: ``--overwrite`` was given.
        model_id: The model files' identity (:func:`model_identity`).
    """
    if product.slug.lower() in RESERVED_OUTPUTS:
        raise InputError(
            f"{product.folder}: the product name {product.name!r} is reserved for merge output; rename the folder"
        )
    if registry.get(config.model.base_model).open_classes and not product.ontology_path.exists():
        ontology = Ontology.empty()  # every discovered object keeps the name the model gives it
    else:
        ontology = Ontology.load(product.ontology_path)
    out = ds.root
    state = check_target(ds, product.name)
    recorded = {name: info.stem for name, info in state.sources.items()} if state is not None else {}
    sources = list_sources(product, recorded)
    ids = {s.path.name: source_identity(s.path) for s in sources}
    if state is not None:
        sources = _carry_renames(state, sources, ids)
    records = list(ds.records(masks=False)) if state is not None else []  # the boxes; masks stay on disk
    done: dict[str, set[int]] = {}
    for record in records:
        done.setdefault(record.source, set()).add(record.index)
    relabel, notes, rederive = False, [], False
    reviewed = sum(1 for r in records if r.reviewed)
    masks_change = None
    if state is not None:
        changes = differences(state.fingerprint or {}, fingerprint(config, ontology, model_id))
        masks_change = mask_change((state.fingerprint or {}).get(MASKS), config)
        soft = [c for c in changes if c.startswith(SOFT)]
        changes = [c for c in changes if not c.startswith(SOFT)]
        if soft:
            lowest = Thresholds.of_run(config, state.classes)
            if lowest.applies and (state.floor is None or lowest.lowest() < state.floor):
                kept = f"down to {state.floor:g}" if state.floor is not None else "only at the old threshold"
                changes.append(
                    f"box threshold {lowest.lowest():g}: the journal holds boxes {kept}, so the model must label again"
                )
            else:
                rederive = True
        replaced, gone = _source_changes(state, sources, done, ids)
        changes += replaced
        if changes or (overwrite and gone):
            if not overwrite:
                raise OutputError(
                    f"{out}: was labeled with other settings or sources ({'; '.join(changes[:3])}); "
                    "re-run with --overwrite to relabel it, or pick another --output"
                )
            if reviewed and product.name not in (config.products or []):
                raise OutputError(
                    f"{out}: holds {reviewed} reviewed frames (autolabel import) and would be relabeled "
                    f"({'; '.join((changes or gone)[:2])}); to relabel it anyway, name it: "
                    f"--overwrite --product {product.name!r} (the reviewed labels are backed up first)"
                )
            relabel, state, done, records, rederive, masks_change = True, None, {}, [], False, None
        else:
            notes = gone + (
                [
                    f"new box thresholds ({'; '.join(soft)}): every format derived again from the journal, "
                    "no frame labeled again"
                ]
                if rederive
                else []
            )
    rederived = None
    if rederive:
        rederived = rederive_journal(ds, records, Thresholds.of_run(config, state.classes), config.filters)
        by_stem = {info.stem: name for name, info in state.sources.items()}
        for r in rederived.unimaged:  # let in again, but never written: labeled again
            done[r.source].discard(r.index)
            state.sources[by_stem[r.source]].complete = False
        if rederived.unimaged:
            notes.append(f"{len(rederived.unimaged)} frames a filter had left out are let in: labeling them again")
    duplicates: dict[str, set[int]] = {}
    probed: dict[str, set[int]] = {}
    for record in records:
        if record.dropped == DUPLICATE:
            duplicates.setdefault(record.source, set()).add(record.index)
        elif record.dropped == PROBE:
            probed.setdefault(record.source, set()).add(record.index)
    complete = state.complete_sources() if state is not None else set()
    pending = 0  # for the progress bar only: a source is done when read to its end, whatever its header says
    s = config.sampling
    for source in sources:
        if source.path.name not in complete:
            try:
                count = estimated_count(source, s.frame_rate, s.fps)
                if s.max_frames is not None and source.is_video:
                    count = min(count, s.max_frames)
            except InputError:
                count = 1  # reported when it is read
            pending += max(0, count - len(done.get(source.stem, ())))
    missing = _missing_images(out, rederived.records if rederived else records, state, sources)
    needs_work = state is None or bool(missing) or any(src.path.name not in complete for src in sources)
    job = Job(product, ontology, sources, out, done, pending, needs_work, state, relabel, notes=notes)
    job.rederived = rederived
    job.reviewed = reviewed
    job.missing_images = len(missing)
    job.source_ids = ids
    job.duplicates = duplicates
    job.probed = probed
    job.masks_change = masks_change
    if masks_change is not None:
        notes.append(MASK_NOTES[masks_change])
    return job


MASK_NOTES = {
    "add": "masks added to the dataset's boxes (--masks): no box labeled again",
    "remask": "other mask settings: the masks of unreviewed frames are made again, no box labeled again",
    "strip": "--masks none: the masks are taken away, the files hold boxes again",
}


def _missing_images(out: Path, records: list[FrameRecord], state: State | None, sources: list[Source]) -> list:
    """Journaled frames whose image is gone; an error when one cannot be made again."""
    missing = [r for r in records if r.dropped is None and not (out / r.image).is_file()]
    if not missing:
        return []
    by_stem = {info.stem: name for name, info in state.sources.items()}
    present = {s.path.name for s in sources}
    lost = [r for r in missing if r.reviewed or by_stem.get(r.source) not in present]
    if lost:
        raise InputError(
            f"{out / lost[0].image}: image missing and cannot be made again "
            f"({'it holds a review' if lost[0].reviewed else 'its source is gone'}; {len(lost)} such frames); "
            "restore it, or relabel with --overwrite"
        )
    return missing


def init_output(ds: Dataset, job: Job, config: RunConfig, model_id: dict[str, str | None]) -> State:
    """Creates (or, for --overwrite, replaces) the product's folder; records its sources before any frame.

    Returns the state as written. An --overwrite moves the old folder aside in one
    rename before deleting it, so a crash leaves either the old dataset or none, never
    a half-deleted one that claims to be complete.
    """
    out = job.out
    if job.relabel and out.exists():
        if job.reviewed:
            backup = out.parent / BACKUPS / f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            backup.mkdir(parents=True, exist_ok=True)
            for name in (JOURNAL, STATE, RUN_YAML):
                if (out / name).is_file():
                    shutil.copy2(out / name, backup / Path(name).name)
            log.warning("%s: %d reviewed frames backed up to %s before relabeling", out, job.reviewed, backup)
        aside = out.with_name(f".{out.name}{TMP_MARK}overwritten")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(out, aside)
        sync_dir(out.parent)
        shutil.rmtree(aside)
    out.mkdir(parents=True, exist_ok=True)
    ds.repair_journal()
    fresh = job.state is None
    state = dataclasses.replace(job.state) if not fresh else _new_state(job, config, model_id)
    state.complete = False  # unfinished again until finalized
    state.formats = formats.ordered([*state.formats, *config.dataset.formats])
    sources = dict(state.sources)
    for source in job.sources:
        info = dataclasses.replace(sources.get(source.path.name) or SourceState(source.stem))
        identity = job.source_ids[source.path.name]
        if info.id != identity:  # new, or changed before any of its frames was labeled
            info.id, info.complete = identity, False
        sources[source.path.name] = info
    state.sources = sources
    # (A changed box threshold or mask setting is no relabel: the fingerprint takes it once the journal
    # follows it, :func:`refresh_soft`, so a kill before then leaves a dataset that says its old settings.)
    if state.id is None:  # a new dataset, or one an older autolabel made: named by what it was made from
        state.id = product_id(job.product.name, state.fingerprint, state.sources)
    ds.state = state
    ds.save()
    return state


def _new_state(job: Job, config: RunConfig, model_id: dict[str, str | None]) -> State:
    return State(
        kind=PRODUCT,
        product=job.product.name,
        classes=list(job.ontology.classes),
        fingerprint=fingerprint(config, job.ontology, model_id),
        formats=list(config.dataset.formats),
    )
