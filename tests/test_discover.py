"""``--base-model discover``: LOST on planted objects, and the whole mode with tiny random timm models."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.datasets.journal import read_journal
from autolabel.labelers import lost
from tests.conftest import make_h264, make_product, make_video, read_state
from tests.crashpoint import crash_cli, dataset_files

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def planted(grid: tuple[int, int], objects: list[tuple[slice, slice, np.ndarray]], seed: int = 0):
    """Keys of a patch grid: one vector for the background, one per object region, a little noise."""
    rows, cols = grid
    rng = np.random.default_rng(seed)
    keys = np.tile(np.array([1.0, 0.0, 0.0, 0.0]), (rows, cols, 1))
    for ys, xs, vector in objects:
        keys[ys, xs] = vector
    keys = (keys + rng.normal(0, 0.02, keys.shape)).reshape(rows * cols, -1).astype(np.float32)
    return keys, keys @ keys.T


MUG = np.array([-0.5, 1.0, 0.0, 0.0])  # anti-correlated with the background
BOX = np.array([-0.5, -0.5, 1.0, 0.0])  # ... and with the mug


def boxes(found: list[lost.Discovery]) -> list[tuple[int, int, int, int]]:
    return [(d.x0, d.y0, d.x1, d.y1) for d in found]


def test_lost_finds_the_planted_objects_smallest_first_and_stops_at_the_background():
    keys, affinity = planted((10, 12), [(slice(1, 4), slice(2, 5), MUG), (slice(6, 8), slice(7, 11), BOX)])
    one = lost.discover(keys, affinity, (10, 12), number_seeds=1)
    assert boxes(one) == [(7, 6, 11, 8)]  # 8 patches: the lowest degree
    every = lost.discover(keys, affinity, (10, 12), number_seeds=5)
    assert boxes(every) == [(7, 6, 11, 8), (2, 1, 5, 4)]  # no third: the background covers most patches


def test_lost_correlation_th_decides_whether_a_look_alike_region_is_another_object():
    regions = [(slice(1, 4), slice(1, 4), MUG), (slice(6, 9), slice(8, 11), MUG)]
    keys, affinity = planted((10, 12), regions)
    assert boxes(lost.discover(keys, affinity, (10, 12), number_seeds=3, correlation_th=0.5)) == [(1, 1, 4, 4)]
    both = lost.discover(keys, affinity, (10, 12), number_seeds=3, correlation_th=1.0)
    assert sorted(boxes(both)) == [(1, 1, 4, 4), (8, 6, 11, 9)]


def test_lost_similarity_batched_equals_one_by_one():
    import torch

    keys = torch.randn(3, 20, 8)
    batched = lost.similarity(keys)
    for i in range(3):
        assert torch.allclose(batched[i], lost.similarity(keys[i : i + 1])[0])
    with pytest.raises(ValueError, match="do not fit a 4x4 grid"):
        lost.discover(np.zeros((20, 8)), np.zeros((20, 20)), (4, 4))


def discover_args(models: dict[str, Path], videos: Path, out: Path, classifier: str = "classifier") -> list[str]:
    return [
        "run", "-i", str(videos), "-o", str(out), "--base-model", "discover",
        "--discover-backbone", "test_vit", "--backbone-weights", str(models["backbone"]),
        "--discover-classifier", "test_convnext", "--classifier-weights", str(models[classifier]),
        "--frame-rate", "3", "--device", "cpu", "-q",
    ]  # fmt: skip


def check_dataset(ds: Path) -> tuple[list[str], list]:
    """The class list every file of a dataset agrees on, and its frames; asserts they agree."""
    classes = read_state(ds)["classes"]
    data = yaml.safe_load((ds / "data.yaml").read_text())
    assert data["nc"] == len(classes) and list(data["names"].values()) == classes
    records = list(read_journal(ds, len(classes)))
    for r in records:
        lines = (ds / "labels" / f"{r.name}.txt").read_text().split("\n")
        assert [int(line.split()[0]) for line in lines if line] == [b.class_id for b in r.boxes]
    return classes, records


def test_no_ontology_every_object_keeps_its_imagenet_name(tmp_path, tiny_discover):
    from autolabel.labelers.discover import imagenet_names

    make_product(tmp_path / "videos", "mug", None, {"a.mp4": 12})
    make_h264(tmp_path / "videos" / "box" / "b.mp4", frames=12)
    args = [*discover_args(tiny_discover, tmp_path / "videos", tmp_path / "ds"), "--format", "yolo,voc,coco", "--merge"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    known = set(imagenet_names(21841))
    every = []
    for product in ("mug", "box"):
        classes, records = check_dataset(tmp_path / "ds" / product)
        assert classes and set(classes) <= known
        assert len(records) == 4 and sum(len(r.boxes) for r in records) >= 2
        assert {classes[b.class_id] for r in records for b in r.boxes} == set(classes)
        coco = json.loads((tmp_path / "ds" / product / "coco_train.json").read_text())
        assert [c["name"] for c in coco["categories"]] == classes
        voc = {
            obj.findtext("name")
            for path in (tmp_path / "ds" / product / "annotations").glob("*.xml")
            for obj in ET.parse(path).getroot().iter("object")
        }
        assert voc == set(classes)
        assert (tmp_path / "ds" / product / "report.html").is_file()
        every += classes
    merged = yaml.safe_load((tmp_path / "ds" / "merged" / "data.yaml").read_text())
    assert set(merged["names"].values()) == set(every)
    assert any(", " in name for name in every)  # ImageNet descriptions list synonyms: names hold commas
    state = read_state(tmp_path / "ds" / "mug")
    assert state["fingerprint"]["ontology"] == {}
    assert state["fingerprint"]["model"]["discover"]["classifier"] == "test_convnext"
    assert len(state["fingerprint"]["model"]["files"]) == 2  # both weights files, by content

    args = discover_args(tiny_discover, tmp_path / "videos", tmp_path / "ds")
    seeds = runner.invoke(app, [*args, "--product", "mug", "--number-seeds", "1"])
    assert seeds.exit_code == 1 and "model.discover.number_seeds: 3 -> 1" in seeds.output
    mug_args = discover_args(tiny_discover, tmp_path / "videos", tmp_path / "ds", "mug")
    other = runner.invoke(app, [*mug_args, "-p", "mug"])
    assert other.exit_code == 1 and "model file classifier_weights has other content" in other.output


def test_ontology_maps_imagenet_classes_and_drops_or_keeps_the_rest(tmp_path, tiny_discover):
    make_product(tmp_path / "videos", "mug", {"Coffee Mug": "mug", "beer mug": "mug"}, {"a.mp4": 9})
    result = runner.invoke(app, [*discover_args(tiny_discover, tmp_path / "videos", tmp_path / "ds", "mug")])
    assert result.exit_code == 0, result.output
    classes, records = check_dataset(tmp_path / "ds" / "mug")
    assert classes == ["mug"]
    assert all(b.class_id == 0 and b.confidence > 0.99 for r in records for b in r.boxes)
    assert sum(len(r.boxes) for r in records) >= 3

    (tmp_path / "videos" / "mug" / "ontology.json").write_text('{"stein": "mug"}')  # a lemma of "beer mug, stein"
    dropped = runner.invoke(app, [*discover_args(tiny_discover, tmp_path / "videos", tmp_path / "d2", "mug")])
    assert dropped.exit_code == 0, dropped.output
    classes, records = check_dataset(tmp_path / "d2" / "mug")
    assert classes == ["mug"] and not any(r.boxes for r in records)

    args = [*discover_args(tiny_discover, tmp_path / "videos", tmp_path / "d3", "mug"), "--keep-unmapped"]
    kept = runner.invoke(app, args)
    assert kept.exit_code == 0, kept.output
    classes, records = check_dataset(tmp_path / "d3" / "mug")
    assert classes == ["mug", "coffee mug"] and all(b.class_id == 1 for r in records for b in r.boxes)


def test_captions_name_classes_by_any_lemma_or_the_whole_description():
    from autolabel.labelers.discover import class_map
    from autolabel.ontology import Ontology

    names = ["beer mug, stein", "coffee mug", "mug", "Stein, Gertrude Stein"]
    ontology = Ontology.from_mapping({"STEIN": "mug", "coffee mug": "cup"})
    assert class_map(names, ontology, keep_unmapped=False) == ["mug", "cup", None, "mug"]
    whole = Ontology.from_mapping({"Beer Mug, Stein": "mug"})  # as a run without ontology names it
    assert class_map(names, whole, keep_unmapped=True) == ["mug", "coffee mug", "mug", "Stein, Gertrude Stein"]
    assert class_map(names, Ontology.empty(), keep_unmapped=False) == names


def test_a_caption_naming_no_imagenet_class_is_an_error_with_the_closest(tmp_path, tiny_discover):
    make_product(tmp_path / "videos", "mug", {"cofee mugg": "mug"}, {"a.mp4": 3})
    result = runner.invoke(app, discover_args(tiny_discover, tmp_path / "videos", tmp_path / "ds"))
    assert result.exit_code == 1
    assert "caption 'cofee mugg' names none of the classifier's 21841 classes (closest: coffee mug" in result.output


def test_missing_weights_and_unknown_models_are_one_line(tmp_path, tiny_discover):
    make_product(tmp_path / "videos", "mug", None, {"a.mp4": 3})
    base = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--base-model", "discover"]
    offline = runner.invoke(app, [*base, "--device", "cpu"])
    assert offline.exit_code == 2 and len(offline.stderr.strip().splitlines()) == 1, offline.stderr
    # Both files in one line, each with its source and its flag: not one per run.
    first = "missing 2 model files (AUTOLABEL_OFFLINE=1): discovery backbone weights for vit_small_patch16_224.dino: "
    assert first in offline.stderr
    assert "--backbone-weights FILE; discovery classifier weights for convnext_base.fb_in22k: run `hf download" in (
        offline.stderr
    )
    assert "--classifier-weights FILE" in offline.stderr
    # A given file and a missing hub file: both named at once too.
    given = runner.invoke(app, [*base, "--backbone-weights", str(tmp_path / "nope.safetensors")])
    assert given.exit_code == 2 and f"{tmp_path / 'nope.safetensors'} does not exist (given by --backbone-weights)" in (
        given.stderr
    )
    assert "missing discovery classifier weights for convnext_base.fb_in22k (AUTOLABEL_OFFLINE=1)" in given.stderr
    unknown = runner.invoke(app, [*base, "--discover-backbone", "vit_smal_patch16_224.dino"])
    assert unknown.exit_code == 2 and "is not a timm model (closest: vit_small_patch16_224.dino" in unknown.stderr
    # Checked before anything is fetched: the classifier's (larger) weights are missing here, and not asked for.
    convnext = [*base, "--discover-backbone", "test_convnext", "--backbone-weights", str(tiny_discover["classifier"])]
    not_vit = runner.invoke(app, convnext)
    assert not_vit.exit_code == 2 and "'test_convnext' (--discover-backbone) is not a ViT" in not_vit.stderr
    base += ["--discover-classifier", "test_convnext", "--classifier-weights", str(tiny_discover["classifier"])]
    wrong = [*base, "--discover-backbone", "test_vit", "--backbone-weights", str(tiny_discover["classifier"])]
    wrong_result = runner.invoke(app, wrong)
    assert "these weights do not fit discovery backbone 'test_vit'" in wrong_result.stderr
    assert "(given by --backbone-weights)" in wrong_result.stderr
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    garbage = runner.invoke(app, [*base, "--discover-backbone", "test_vit", "--backbone-weights", str(bad)])
    assert garbage.exit_code == 1 and "not a readable state dict" in garbage.stderr


def test_batched_equals_one_by_one(tiny_discover):
    from autolabel.config import load_config
    from autolabel.labelers import create_labeler
    from autolabel.ontology import Ontology

    mc = load_config(
        None,
        {
            "model.base_model": "discover",
            "model.device": "cpu",
            "model.discover.backbone": "test_vit",
            "model.discover.backbone_weights": str(tiny_discover["backbone"]),
            "model.discover.classifier": "test_convnext",
            "model.discover.classifier_weights": str(tiny_discover["classifier"]),
        },
    ).model
    labeler = create_labeler(mc, progress=False)
    rng = np.random.default_rng(1)
    images = []
    for i in range(4):
        img = np.full((90, 120, 3), 60, np.uint8)
        x, y = 10 + 20 * i, 15 + 5 * i
        img[y : y + 30, x : x + 25] = rng.integers(150, 255, 3)
        images.append(img)
    images.append(np.full((64, 64, 3), 30, np.uint8))  # another size: its own forward
    batched = labeler.label(images, Ontology.empty())
    assert sum(len(d) for d in batched) >= 4
    for image, together in zip(images, batched, strict=True):
        (alone,) = labeler.label([image], Ontology.empty())
        assert np.array_equal(alone.xyxy, together.xyxy)
        assert list(alone.data.get("class_name", [])) == list(together.data.get("class_name", []))
        assert np.allclose(alone.confidence, together.confidence, rtol=1e-4) if len(alone) else True


def test_timms_hub_weights_in_the_hugging_face_cache_are_loaded_like_given_files(tmp_path, tiny_discover):
    """Without --backbone-weights, the file timm's pretrained download would fetch is used (found offline)."""
    import hashlib
    import os

    import torch
    from huggingface_hub import constants
    from safetensors.torch import save_file

    from autolabel.config import load_config
    from autolabel.labelers import create_labeler
    from autolabel.resume import model_identity

    snapshots = {}
    for repo_id, source in (("timm/test_vit.r160_in1k", "backbone"), ("timm/test_convnext.r160_in1k", "classifier")):
        repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
        assert not repo.exists() and repo.is_relative_to(os.environ["HF_HOME"])  # the tests' own cache
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("c0ffee")
        (repo / "snapshots" / "c0ffee").mkdir(parents=True)
        snapshots[source] = repo / "snapshots" / "c0ffee" / "model.safetensors"
        if source == "backbone":
            shutil.copyfile(tiny_discover["backbone"], snapshots[source])
        else:
            save_file(torch.load(tiny_discover["classifier"], weights_only=True), str(snapshots[source]))
    settings = {"model.base_model": "discover", "model.device": "cpu"}
    settings |= {"model.discover.backbone": "test_vit", "model.discover.classifier": "test_convnext"}
    mc = load_config(None, settings).model
    try:
        labeler = create_labeler(mc, str(tmp_path / "cache"), progress=False)
        assert labeler.names[:1] == ["organism, being"] and len(labeler.names) == 21841
        given = create_labeler(
            load_config(None, settings | {"model.discover.classifier_weights": str(tiny_discover["classifier"])}).model,
            progress=False,
        )
        for a, b in zip(labeler.classifier.state_dict().values(), given.classifier.state_dict().values(), strict=True):
            assert torch.equal(a, b)  # the same weights, whichever way they came
        files = model_identity(mc, str(tmp_path / "cache"))
        assert files == {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in (
            ("backbone_weights", snapshots["backbone"]), ("classifier_weights", snapshots["classifier"]))}  # fmt: skip
    finally:
        for path in snapshots.values():
            shutil.rmtree(path.parents[2])


def check_class_ids_recorded(ds: Path) -> None:
    """At any moment: every class id on disk (journal, label files, data.yaml) is in the recorded class lists."""
    classes = read_state(ds)["classes"]
    ids = {b.class_id for r in read_journal(ds) for b in r.boxes}
    for path in (ds / "labels").glob("*.txt"):
        ids |= {int(line.split()[0]) for line in path.read_text().splitlines() if line}
    assert not ids or max(ids) < len(classes), (sorted(ids), classes)
    if (ds / "data.yaml").is_file():  # written after the state: it may lag by classes no file uses yet
        names = list(yaml.safe_load((ds / "data.yaml").read_text())["names"].values())
        assert names == classes[: len(names)] and (not ids or max(ids) < len(names)), (sorted(ids), names)


def test_killed_run_that_discovers_new_classes_resumes_byte_identical(tmp_path, tiny_discover, monkeypatch):
    """A finished dataset grows by a new video; that run is killed at several points, then resumed."""
    make_product(tmp_path / "videos", "mug", None, {"a.mp4": 9})
    args = [*discover_args(tiny_discover, Path("../videos"), Path("ds")), "--format", "yolo,voc,coco", "--no-report"]
    first = tmp_path / "first"
    first.mkdir()
    monkeypatch.chdir(first)
    assert runner.invoke(app, args).exit_code == 0
    before = read_state(first / "ds" / "mug")["classes"]
    make_video(tmp_path / "videos" / "mug" / "b.mp4", frames=12, size=(80, 80))
    clean = tmp_path / "clean"
    shutil.copytree(first, clean)
    done = crash_cli(clean, *args, count=tmp_path / "points", real_labeler=True)
    assert done.returncode == 0, done.stderr
    expected = dataset_files(clean / "ds")
    assert len(read_state(clean / "ds" / "mug")["classes"]) > len(before)  # the second video named new classes
    points = int((tmp_path / "points").read_text())
    for fraction in (0.35, 0.75):
        crash_at = max(1, round(points * fraction))
        work = tmp_path / f"trial-{crash_at}"
        shutil.copytree(first, work)
        died = crash_cli(work, *args, crash_at=crash_at, real_labeler=True)
        assert died.returncode == 137, died.stderr
        check_class_ids_recorded(work / "ds" / "mug")
        again = crash_cli(work, *args, real_labeler=True)
        assert again.returncode == 0, again.stderr
        assert dataset_files(work / "ds") == expected
