"""Streams frames into a dataset folder, one frame at a time, each file atomic.

Per frame: the image and each format's frame files (YOLO's ``.txt``, VOC's ``.xml``, ...)
land by rename, then the journal line is appended. A frame whose line is missing is
redone on resume.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autolabel.datasets.formats import Context, written
from autolabel.datasets.layout import IMAGE_SUFFIX, IMAGES, JOURNAL
from autolabel.datasets.records import FrameRecord
from autolabel.errors import OutputError
from autolabel.fileio import link_or_copy, publish, stage_bytes, sync_dir


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a BGR image."""
    import cv2

    ok, buf = cv2.imencode(IMAGE_SUFFIX, image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OutputError("cannot encode frame as JPEG")
    return buf.tobytes()


class DatasetWriter:
    """Writes frames of one dataset in the formats asked for, then journals them.

    Files land durably (fsync, rename) as each frame is added; journal lines wait in a
    buffer until :meth:`commit`, which flushes the folders first and the journal last,
    so a journal line never reaches the disk before the files it vouches for. Committing
    a group of frames at once costs a few fsyncs instead of a few per frame.
    """

    def __init__(
        self, root: Path, classes: list[str], formats: list[str], jpeg_quality: int = 95, masks: bool = False
    ) -> None:
        self.root = root
        self.classes = list(classes)  # grows as a discovering labeler names new classes
        self.formats = written(formats)
        self.jpeg_quality = jpeg_quality
        self.masks = masks  # a segmentation dataset: the formats write outlines
        dirs = [IMAGES] + [d for fmt in self.formats for d in (*fmt.frame_dirs, *(fmt.mask_dirs if masks else ()))]
        self._dirs = [root / d for d in dict.fromkeys(dirs)]
        for sub in self._dirs:
            sub.mkdir(parents=True, exist_ok=True)
        self._journal = (root / JOURNAL).open("a", encoding="utf-8")
        self._pending: list[str] = []

    def stage(self, record: FrameRecord, image_bytes: bytes) -> list[tuple[Path, Path]]:
        """Writes a frame's files beside their targets, flushed to disk but not yet in place.

        Safe from any thread (the slow part, fsync, then runs in parallel); :meth:`add`
        with ``staged=`` puts them in place, in frame order.
        """
        if record.dropped is not None:
            return []
        files = [(self.root / IMAGES / f"{record.name}{IMAGE_SUFFIX}", image_bytes), *self._label_files(record)]
        return [(stage_bytes(target, data), target) for target, data in files]

    def _label_files(self, record: FrameRecord) -> list[tuple[Path, bytes]]:
        # YOLO labels are always written: Ultralytics reads them and the split lists point at them.
        ctx = Context(self.classes, masks=self.masks)
        return [(self.root / rel, data) for fmt in self.formats for rel, data in fmt.frame_files(record, ctx).items()]

    def add(
        self,
        record: FrameRecord,
        image: np.ndarray | None = None,
        image_file: Path | None = None,
        staged: list[tuple[Path, Path]] | None = None,
    ) -> None:
        """Puts one frame's files in place (unless dropped by a filter) and queues its journal line.

        The files come staged by :meth:`stage`, or the image as an array or as an
        existing file to link (or copy, across file systems).
        """
        if staged is not None:
            for tmp, target in staged:
                publish(tmp, target)
        elif record.dropped is None:
            if image_file is not None:
                link_or_copy(image_file, self.root / IMAGES / f"{record.name}{IMAGE_SUFFIX}", sync_parent=False)
                for path, data in self._label_files(record):
                    publish(stage_bytes(path, data), path)
            else:
                for tmp, path in self.stage(record, encode_jpeg(image, self.jpeg_quality)):
                    publish(tmp, path)
        self._pending.append(record.to_json() + "\n")

    def commit(self) -> None:
        """Makes the added frames durable: folders flushed, then their journal lines written and flushed."""
        if not self._pending:
            return
        for sub in self._dirs:
            sync_dir(sub)
        self._journal.write("".join(self._pending))
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self._pending.clear()

    def close(self) -> None:
        """Commits what is pending and closes the journal."""
        try:
            self.commit()
        finally:
            self._journal.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._journal.close()
