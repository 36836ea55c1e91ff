"""Streams frames into a dataset folder, one frame at a time, each file atomic.

Per frame: the image, the YOLO ``.txt`` and the VOC ``.xml`` land by rename, then the
journal line is appended. A frame whose line is missing is redone on resume.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autolabel.datasets.layout import ANNOTATIONS, IMAGE_SUFFIX, IMAGES, JOURNAL, LABELS, FrameRecord
from autolabel.errors import OutputError
from autolabel.fileio import atomic_write_bytes, atomic_write_text, link_or_copy, sync_dir
from autolabel.postprocess import to_detections


def yolo_lines(record: FrameRecord) -> str:
    """The YOLO label file for a record (supervision's serialiser), empty when no boxes."""
    from supervision.dataset.formats.yolo import object_to_yolo

    shape = (record.height, record.width)
    lines = [object_to_yolo(np.array([b.x1, b.y1, b.x2, b.y2]), b.class_id, shape) for b in record.boxes]
    return "".join(f"{line}\n" for line in lines)


def voc_xml(record: FrameRecord, classes: list[str]) -> str:
    """The Pascal VOC XML for a record (supervision's serialiser; names are XML-escaped)."""
    from supervision.dataset.formats.pascal_voc import detections_to_pascal_voc

    return detections_to_pascal_voc(
        to_detections(record.boxes), list(classes), f"{record.name}{IMAGE_SUFFIX}", (record.height, record.width, 3)
    )


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

    def __init__(self, root: Path, classes: list[str], formats: list[str], jpeg_quality: int = 95) -> None:
        self.root = root
        self.classes = list(classes)
        self.formats = set(formats)
        self.jpeg_quality = jpeg_quality
        self._dirs = [root / IMAGES, root / LABELS] + ([root / ANNOTATIONS] if "voc" in self.formats else [])
        for sub in self._dirs:
            sub.mkdir(parents=True, exist_ok=True)
        self._journal = (root / JOURNAL).open("a", encoding="utf-8")
        self._pending: list[str] = []

    def add(
        self,
        record: FrameRecord,
        image: np.ndarray | None = None,
        image_bytes: bytes | None = None,
        image_file: Path | None = None,
    ) -> None:
        """Writes one frame's files (unless dropped by a filter) and queues its journal line.

        The image comes as an array, as encoded bytes, or as an existing file to link
        (or copy, across file systems).
        """
        if record.dropped is None:
            target = self.root / IMAGES / f"{record.name}{IMAGE_SUFFIX}"
            if image_file is not None:
                link_or_copy(image_file, target, sync_parent=False)
            else:
                data = image_bytes if image_bytes is not None else encode_jpeg(image, self.jpeg_quality)
                atomic_write_bytes(target, data, sync_parent=False)
            # YOLO labels are always written: Ultralytics reads them and the split lists point at them.
            atomic_write_text(self.root / LABELS / f"{record.name}.txt", yolo_lines(record), sync_parent=False)
            if "voc" in self.formats:
                atomic_write_text(
                    self.root / ANNOTATIONS / f"{record.name}.xml", voc_xml(record, self.classes), sync_parent=False
                )
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
