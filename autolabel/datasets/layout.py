"""The on-disk layout of an autolabel dataset and its journal.

::

    <root>/
      images/<name>.jpg          the sampled frames
      labels/<name>.txt          YOLO labels (empty file: nothing found)
      annotations/<name>.xml     Pascal VOC (1-based pixel corners, as the VOC devkit)
      labelmap.txt               VOC class list, every class in id order (with VOC)
      detections.jsonl           one line per frame: source, index, size and every box
                                 with its class id and confidence (the confidence
                                 sidecar, and the resume journal)
      train.txt, val.txt         the split, as ./images/<name>.jpg lines
      data.yaml                  Ultralytics dataset file (no absolute paths)
      coco_train.json, coco_val.json   COCO (with --format coco)
      run.yaml                   resolved config and package versions
      .autolabel/state.json      kind, classes, settings fingerprint, completion

A frame counts as done only once its journal line is written, which happens after
its image and label files are in place.
"""

from __future__ import annotations

from pathlib import Path

IMAGES = "images"
LABELS = "labels"
ANNOTATIONS = "annotations"
JOURNAL = "detections.jsonl"
STATE_DIR = ".autolabel"
STATE = f"{STATE_DIR}/state.json"
EDITED = f"{STATE_DIR}/edited"
# Masks made but not yet in the journal: one line per window of the mask step (:mod:`autolabel.datasets.journal`).
MASKS_MADE = f"{STATE_DIR}/masks.jsonl"
DATA_YAML = "data.yaml"
LABELMAP = "labelmap.txt"
RUN_YAML = "run.yaml"
SPLITS = ("train", "val")
IMAGE_SUFFIX = ".jpg"
# The folder ``autolabel merge`` writes under the dataset root; no product may be named so.
MERGED_DIR = "merged"


def read_splits(root: Path) -> dict[str, str]:
    """Each listed image name's split, from ``train.txt`` and ``val.txt``."""
    return {name: split for split in SPLITS for name in read_split(root, split)}


def read_split(root: Path, split: str) -> list[str]:
    """Image names (without suffix) listed in ``<split>.txt``."""
    path = root / f"{split}.txt"
    if not path.exists():
        return []
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            names.append(Path(line).stem)
    return names
