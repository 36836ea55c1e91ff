"""The Ultralytics training layout: ``images/{train,val}/``, ``labels/{train,val}/``, ``data.yaml``.

``data.yaml`` has no ``path:``, so the folder trains wherever it is; CVAT imports it as
"Ultralytics YOLO Detection 1.0" (a segmentation dataset: YOLO-seg labels, "Ultralytics YOLO
Segmentation 1.0"). Read back from such a folder (labels of both splits,
class names from its ``data.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from autolabel.datasets.formats.base import Annotations, ExportFolder, Format, ReadContext, image_name, marker_id
from autolabel.datasets.formats.yolo import (
    class_names_beside,
    data_yaml_text,
    id_map,
    read_label_folder,
    yolo_lines,
    yolo_tolerance,
)
from autolabel.datasets.layout import DATA_YAML, SPLITS
from autolabel.errors import InputError


class Ultralytics(Format):
    name = "ultralytics"
    help = "Ultralytics YOLO (an export: images/ and labels/ per split, data.yaml; trains as is)"
    dataset_format = False
    outlines = True

    def export(self, out: ExportFolder) -> str:
        for r in out.records:
            out.image(r, f"images/{r.split}/{image_name(r)}")
            out.write(f"labels/{r.split}/{r.name}.txt", yolo_lines(r, out.ctx.masks))
        has_val = bool(out.split("val"))
        out.write(DATA_YAML, data_yaml_text(out.ctx.classes, has_val, train="images/train", val="images/val"))
        return f"yolo train data={out.output / DATA_YAML}"

    def read(self, path: Path, ctx: ReadContext) -> Annotations:
        folders = [path / "labels" / split for split in SPLITS if (path / "labels" / split).is_dir()]
        if not folders:
            raise InputError(f"{path}: not an Ultralytics folder (no labels/train or labels/val)")
        out = Annotations(dataset_id=marker_id(path))
        ctx.check_id(out.dataset_id, path)
        ids = id_map(class_names_beside(path / "labels"), ctx.classes)
        for folder in folders:
            part = read_label_folder(folder, ctx, ids)
            for name in part.frames:
                if name in out.frames:
                    raise InputError(f"{part.where[name]}: frame {name!r} is also in {out.where[name]}")
            out.frames |= part.frames
            out.where |= part.where
        return out

    def detect(self, path: Path) -> bool:
        return path.is_dir() and (path / DATA_YAML).is_file() and (path / "labels").is_dir()

    def tolerance(self, width: int, height: int) -> float:
        return yolo_tolerance(width, height)
