"""Merge: classes united by name, ids remapped once, names prefixed, splits kept, COCO."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.config import load_config
from autolabel.errors import InputError, OutputError
from autolabel.merge import merge_datasets
from autolabel.pipeline import run
from tests.conftest import FakeLabeler, make_product


def label(tmp_path: Path, formats: str = "yolo,voc") -> Path:
    videos = tmp_path / "videos"
    make_product(videos, "shop_a", {"red mug": "mug", "cardboard box": "box"}, {"1.mp4": 10})
    make_product(videos, "shop_b", {"a box": "box", "green bottle": "bottle"}, {"1.mp4": 6})
    cfg = load_config(
        None,
        {
            "input": str(videos),
            "output": str(tmp_path / "dataset"),
            "sampling.frame_rate": 2,
            "report": False,
            "dataset.formats": formats,
        },
    )
    assert all(r.ok for r in run(cfg, FakeLabeler))
    return tmp_path / "dataset"


def test_merge_remaps_ids_and_prefixes_names(tmp_path):
    ds = label(tmp_path)
    result = CliRunner().invoke(app, ["merge", "--root", str(ds), "-q"])
    assert result.exit_code == 0, result.stderr
    merged = ds / "merged"
    data = yaml.safe_load((merged / "data.yaml").read_text())
    assert data["names"] == {0: "mug", 1: "box", 2: "bottle"}
    images = sorted(p.name for p in (merged / "images").iterdir())
    assert images == [f"shop_a__1_{i:06d}.jpg" for i in range(0, 10, 2)] + [f"shop_b__1_{i:06d}.jpg" for i in (0, 2, 4)]
    # Shop a: class 0 mug -> 0, 1 box -> 1. Shop b: 0 box -> 1, 1 bottle -> 2. Two boxes per frame, never more.
    a = (merged / "labels" / "shop_a__1_000000.txt").read_text().splitlines()
    b = (merged / "labels" / "shop_b__1_000000.txt").read_text().splitlines()
    assert [line.split()[0] for line in a] == ["0", "1"] and [line.split()[0] for line in b] == ["1", "2"]
    assert a[0].split()[1:] == (ds / "shop_a" / "labels" / "1_000000.txt").read_text().splitlines()[0].split()[1:]
    total = sum(len(p.read_text().splitlines()) for p in (merged / "labels").iterdir())
    assert total == 2 * 8
    assert "boxes per class: mug 5, box 8, bottle 3" in result.stdout
    # Train/val membership is kept.
    for product, prefix in (("shop_a", "shop_a__"), ("shop_b", "shop_b__")):
        for split in ("train", "val"):
            old = {
                line.replace("./images/", f"./images/{prefix}")
                for line in (ds / product / f"{split}.txt").read_text().split()
            }
            new = {
                line for line in (merged / f"{split}.txt").read_text().split() if line.startswith(f"./images/{prefix}")
            }
            assert old == new
    before = {str(p.relative_to(merged)): p.read_bytes() for p in merged.rglob("*") if p.is_file()}
    # Re-running gives the same result and never merges its own output back in.
    again = CliRunner().invoke(app, ["merge", "--root", str(ds), "-q"])
    assert again.exit_code == 0
    assert {str(p.relative_to(merged)): p.read_bytes() for p in merged.rglob("*") if p.is_file()} == before


def test_merge_refuses_foreign_output_and_conflicts(tmp_path):
    ds = label(tmp_path)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="not a merge output"):
        merge_datasets([ds / "shop_a"], foreign)
    assert (foreign / "notes.txt").read_text() == "keep"
    merge_datasets([ds / "shop_a", ds / "shop_b"], ds / "merged")
    with pytest.raises(
        InputError,
        match=r"is a merged dataset; merge outputs are never merged back in \(merge its product datasets instead\)",
    ):
        merge_datasets([ds / "merged", ds / "shop_a"], tmp_path / "m2")
    # The same product name with another class list.
    other = tmp_path / "other"
    videos = tmp_path / "v2"
    make_product(videos, "shop_a", {"a hat": "hat"}, {"1.mp4": 2})
    run(load_config(None, {"input": str(videos), "output": str(other), "report": False}), FakeLabeler)
    with pytest.raises(InputError, match="product 'shop_a' appears twice with different class lists"):
        merge_datasets([ds / "shop_a", other / "shop_a"], tmp_path / "m3")


def test_merge_filters_are_counted(tmp_path):
    ds = label(tmp_path)
    result = CliRunner().invoke(app, ["merge", "--root", str(ds), "--max-box-size", "0.2", "--drop-multi", "-q"])
    assert result.exit_code == 0, result.stderr
    # Every frame loses its 0.24 box to max size, so none has several boxes left.
    assert "filters removed: boxes_too_large 8" in result.stdout


def test_coco_output_loads_in_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    ds = label(tmp_path, formats="yolo,voc,coco")
    merged = merge_datasets([ds / "shop_a", ds / "shop_b"], ds / "merged", formats=["yolo", "coco"])
    total = 0
    for root in (ds / "shop_a", merged.output):
        for split in ("train", "val"):
            coco = COCO(str(root / f"coco_{split}.json"))
            images = coco.loadImgs(coco.getImgIds())
            assert len(images) == len((root / f"{split}.txt").read_text().split())
            assert all((root / img["file_name"]).is_file() for img in images)
            if root == merged.output:
                total += len(coco.getAnnIds())
                assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["mug", "box", "bottle"]
    assert total == 16
