"""The run pipeline with a fake labeler (planted boxes): exact writers, resume, refusals."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from autolabel.datasets.journal import read_journal
from autolabel.datasets.layout import JOURNAL
from autolabel.errors import OutputError
from autolabel.naming import safe_name
from autolabel.pipeline import run
from tests.conftest import FakeLabeler, make_product, make_video, run_config


def tree(root: Path) -> dict[str, object]:
    """Every file's bytes; run.yaml parsed, without the output folder (which differs on purpose)."""
    files: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(root))] = p.read_bytes()
    run_yaml = yaml.safe_load(files.pop("run.yaml"))
    run_yaml["config"].pop("output")
    files["run.yaml"] = run_yaml
    return files


def test_writers_produce_exact_files(tmp_path):
    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "a hand": "hand"}, {"clip.mp4": 5})
    results = run(run_config(tmp_path, **{"dataset.formats": "yolo,voc,coco"}), FakeLabeler)
    (r,) = results
    assert r.ok and r.frames == 3 and r.new_frames == 3 and r.boxes_per_class == {"mug": 3, "hand": 3}
    out = tmp_path / "dataset" / "mug"
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "clip_000000.jpg",
        "clip_000002.jpg",
        "clip_000004.jpg",
    ]
    # 96x64 frames, planted boxes at (0.1, 0.2, 0.5, 0.6) and (0.6, 0.1, 0.9, 0.9) of the image.
    assert (out / "labels" / "clip_000002.txt").read_text() == (
        "0 0.300000 0.400000 0.400000 0.400000\n1 0.750000 0.500000 0.300000 0.800000\n"
    )
    xml = ET.parse(out / "annotations" / "clip_000002.xml").getroot()
    assert [o.find("name").text for o in xml.iter("object")] == ["mug", "hand"]
    assert xml.find("filename").text == "clip_000002.jpg"
    journal = [json.loads(line) for line in (out / JOURNAL).read_text().splitlines()]
    assert [b[5] for b in journal[0]["boxes"]] == [0.9, 0.6]
    assert journal[0]["boxes"][0][:5] == [0, 9.6, 12.8, 48.0, 38.4]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {"train": "train.txt", "val": "val.txt", "nc": 2, "names": {0: "mug", 1: "hand"}}
    listed = (out / "train.txt").read_text().split() + (out / "val.txt").read_text().split()
    assert sorted(listed) == sorted(f"./images/{p.name}" for p in (out / "images").iterdir())
    run_yaml = yaml.safe_load((out / "run.yaml").read_text())
    assert run_yaml["config"]["sampling"]["frame_rate"] == 2 and "supervision" in run_yaml["versions"]


def test_names_are_escaped_in_xml_and_yaml_and_sanitized_in_paths(tmp_path):
    weird = '<script>alert("x")</script> & co: {a}'
    make_product(tmp_path / "videos", "evil <name>?*", {"thing": weird, "other": "b: c"}, {"v 1.mp4": 2})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    out = tmp_path / "dataset" / safe_name("evil <name>?*")
    assert r.output == out and out.is_dir()
    xml = ET.parse(out / "annotations" / f"{safe_name('v 1')}_000000.xml").getroot()
    assert [o.find("name").text for o in xml.iter("object")] == [weird, "b: c"]
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: weird, 1: "b: c"}


def test_resume_after_interrupt_gives_the_same_files(tmp_path):
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 30, "b.mp4": 11})
    full = run(run_config(tmp_path, output=str(tmp_path / "full")), FakeLabeler)
    assert full[0].frames == 21

    with pytest.raises(KeyboardInterrupt):
        run(run_config(tmp_path), lambda: FakeLabeler(fail_after_batches=2))
    partial = tmp_path / "dataset" / "box"
    assert len(list(read_journal(partial))) == 8
    assert not (partial / "data.yaml").exists()
    # A crash while appending leaves half a line; a killed write leaves a temporary file.
    with (partial / JOURNAL).open("a") as fh:
        fh.write('{"name":"a_0000')
    (partial / "images" / ".x.jpg.autolabel-tmp-123").write_bytes(b"junk")

    second = FakeLabeler()
    (r,) = run(run_config(tmp_path), lambda: second)
    assert second.frames == 21 - 8
    assert r.frames == 21 and r.new_frames == 13
    assert tree(partial) == tree(tmp_path / "full" / "box")

    third = FakeLabeler()
    (r,) = run(run_config(tmp_path), lambda: third)
    assert third.frames == 0 and r.new_frames == 0
    assert tree(partial) == tree(tmp_path / "full" / "box")


def test_changed_settings_are_refused_then_overwritten(tmp_path):
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 6})
    run(run_config(tmp_path), FakeLabeler)
    (r,) = run(run_config(tmp_path, **{"model.text_threshold": 0.5}), FakeLabeler)
    assert r.output is None
    assert "model.text_threshold: 0.25 -> 0.5" in r.errors[0] and "--overwrite" in r.errors[0]
    (r,) = run(run_config(tmp_path, **{"sampling.frame_rate": 3}), FakeLabeler)
    assert "sampling.frame_rate: 2 -> 3" in r.errors[0]
    (r,) = run(run_config(tmp_path, **{"sampling.frame_rate": 3}), FakeLabeler, overwrite=True)
    assert r.ok and r.frames == 2


def test_formats_and_default_weight_paths_can_change_without_relabeling(tmp_path):
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 6})
    run(run_config(tmp_path, **{"dataset.formats": "yolo"}), FakeLabeler)
    out = tmp_path / "dataset" / "box"
    assert not (out / "annotations").exists()
    labeler = FakeLabeler()
    weights = str(tmp_path / "elsewhere" / "groundingdino_swint_ogc.pth")
    (r,) = run(run_config(tmp_path, **{"dataset.formats": "yolo,voc,coco", "model.weights": weights}), lambda: labeler)
    assert r.ok and labeler.frames == 0
    assert sorted(p.stem for p in (out / "annotations").iterdir()) == sorted(p.stem for p in (out / "images").iterdir())
    assert (out / "coco_train.json").is_file()


def test_a_replaced_video_is_not_mixed_with_old_labels(tmp_path):
    folder = make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 6})
    run(run_config(tmp_path), FakeLabeler)
    make_video(folder / "a.mp4", frames=9)
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert "a.mp4 was replaced since its frames were labeled" in r.errors[0] and "--overwrite" in r.errors[0]
    (r,) = run(run_config(tmp_path), FakeLabeler, overwrite=True)
    assert r.ok and r.frames == 5


def test_bad_products_are_reported_and_the_others_still_run(tmp_path):
    videos = tmp_path / "videos"
    make_product(videos, "good", {"box": "box"}, {"a.mp4": 4})
    make_product(videos, "badjson", '{"box": "box",}', {"a.mp4": 4})
    make_product(videos, "nomedia", {"box": "box"}, {})
    make_product(videos, "noontology", None, {"a.mp4": 4})
    make_product(videos, "badvideo", {"box": "box"}, {"a.mp4": 4})
    (videos / "badvideo" / "z.mp4").write_bytes(b"\x00" * 1000)
    make_product(videos, "truncated", {"box": "box"}, {})
    _truncated_avi(videos / "truncated" / "t.avi")
    results = {r.product: r for r in run(run_config(tmp_path), FakeLabeler)}
    assert results["truncated"].frames >= 2 and "t.avi: video ends at frame" in results["truncated"].errors[0]
    assert results["good"].ok and results["good"].frames == 2
    assert "badjson/ontology.json:1:15: invalid JSON" in results["badjson"].errors[0]
    assert "nomedia: no media files" in results["nomedia"].errors[0]
    assert "missing ontology.json" in results["noontology"].errors[0]
    assert results["badvideo"].frames == 2 and "z.mp4: cannot open video" in results["badvideo"].errors[0]


def _truncated_avi(path: Path) -> None:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(40):
        writer.write(np.full((64, 96, 3), i * 5, np.uint8))
    writer.release()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_output_that_is_a_file_or_foreign_folder_is_refused(tmp_path):
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 2})
    (tmp_path / "dataset").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        run(run_config(tmp_path), FakeLabeler)
    (tmp_path / "dataset").unlink()
    (tmp_path / "dataset" / "box").mkdir(parents=True)
    (tmp_path / "dataset" / "box" / "precious.txt").write_text("mine")
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert "not an autolabel dataset" in r.errors[0]
    assert (tmp_path / "dataset" / "box" / "precious.txt").read_text() == "mine"


def test_filters_at_run_time_are_counted(tmp_path):
    make_product(tmp_path / "videos", "box", {"box": "box", "hand": "hand"}, {"a.mp4": 4})
    # Planted boxes cover 0.4*0.4=0.16 and 0.3*0.8=0.24 of the image.
    (r,) = run(run_config(tmp_path, **{"filters.max_box_size": 0.2}), FakeLabeler)
    assert r.filtered == {"boxes_too_large": 2}
    assert r.boxes_per_class == {"box": 2, "hand": 0}
