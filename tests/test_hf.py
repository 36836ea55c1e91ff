"""``--base-model hf``: tiny random Grounding DINO, MM-Grounding-DINO and OWLv2 built from their configs.

Each is saved with ``save_pretrained`` (model and processor) and loaded the way users load
theirs, through the CLI or ``create_labeler``. Thresholds are 0 so that a random
model's boxes are all kept and the assertions see real outputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.config import load_config
from autolabel.errors import InputError
from autolabel.labelers import create_labeler
from autolabel.labelers.gdino_random import tiny_vocab
from autolabel.labelers.grounding_dino import plan_prompts
from autolabel.labelers.hf import HfLabeler, decode_owl
from autolabel.ontology import Ontology
from tests.conftest import make_product

runner = CliRunner()
ONTOLOGY = {"cardboard box": "box", "box": "box", "cup": "cup"}


def _grounding(folder, mm: bool = False, max_text_len: int = 256):
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    backbone = SwinConfig(
        embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], out_features=["stage2", "stage3", "stage4"]
    )
    text = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    config_cls, model_cls = (
        (MMGroundingDinoConfig, MMGroundingDinoForObjectDetection)
        if mm
        else (GroundingDinoConfig, GroundingDinoForObjectDetection)
    )
    config = config_cls(
        backbone_config=backbone,
        text_config=text,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=30,
        max_text_len=max_text_len,
    )
    model_cls(config).save_pretrained(folder)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    GroundingDinoProcessor(image_processor, tokenizer).save_pretrained(folder)
    return folder


def _owlv2(folder):
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz"
    tokens = list(chars) + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    end = vocab["<|endoftext|>"]
    config = Owlv2Config(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": end,
            "pad_token_id": end,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    Owlv2Processor(Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_models")
    return {
        "grounding-dino": _grounding(root / "gdino"),
        "mm-grounding-dino": _grounding(root / "mm", mm=True),
        "owlv2": _owlv2(root / "owlv2"),
        "short-limit": _grounding(root / "gdino_short", max_text_len=5),
    }


def _labeler(folder, **overrides) -> HfLabeler:
    settings = {"model.base_model": "hf", "model.hf_model": str(folder), "model.device": "cpu"}
    settings |= {"model.box_threshold": 0.0, "model.text_threshold": 0.0, **overrides}
    return create_labeler(load_config(None, settings).model, progress=False)


def _frames(n: int = 4, shape=(64, 96, 3)) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("kind", ["grounding-dino", "mm-grounding-dino", "owlv2"])
def test_run_through_the_cli_writes_the_usual_dataset(tmp_path, models, kind):
    videos = tmp_path / "videos"
    make_product(videos, "box", ONTOLOGY, {"clip.mp4": 6})
    out = tmp_path / "dataset"
    args = ["run", "-i", str(videos), "-o", str(out), "--frame-rate", "3", "--base-model", "hf"]
    args += ["--hf-model", str(models[kind]), "--box-threshold", "0", "--text-threshold", "0"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--no-report", "--quiet"])
    assert result.exit_code == 0, result.stderr
    labels = sorted((out / "box" / "labels").iterdir())
    assert [p.name for p in labels] == ["clip_000000.txt", "clip_000003.txt"]
    classes = {line.split()[0] for p in labels for line in p.read_text().splitlines()}
    assert classes == {"0", "1"}  # three captions, two classes: box (two synonyms) and cup
    assert (out / "box" / "data.yaml").is_file() and (out / "box" / "annotations").is_dir()
    run = yaml.safe_load((out / "box" / "run.yaml").read_text())
    assert run["model"]["base_model"] == "hf" and run["model"]["model_type"] == kind
    # The same command resumes; another model on the same dataset is refused.
    assert runner.invoke(app, [*args, "--device", "cpu", "--no-report", "--quiet"]).exit_code == 0
    other = models["owlv2" if kind != "owlv2" else "grounding-dino"]
    args[args.index(str(models[kind]))] = str(other)
    refused = runner.invoke(app, [*args, "--device", "cpu", "--no-report", "--quiet"])
    assert refused.exit_code != 0 and "hf_model" in refused.stderr


@pytest.mark.parametrize("kind", ["grounding-dino", "owlv2"])
def test_batched_equals_one_by_one_and_classes_follow_the_ontology(models, kind):
    ontology = Ontology.from_mapping(ONTOLOGY)
    frames = _frames(4)
    batched = _labeler(models[kind], **{"model.batch_size": 4}).label(frames, ontology)
    single = _labeler(models[kind], **{"model.batch_size": 1})
    for frame, b in zip(frames, batched, strict=True):
        (s,) = single.label([frame], ontology)
        assert len(b) > 0 and len(b) == len(s)
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=1e-3)
        np.testing.assert_allclose(b.confidence, s.confidence, atol=1e-4)
        assert b.class_id.tolist() == s.class_id.tolist()
        assert set(b.class_id.tolist()) == {0, 1}
        assert (b.xyxy >= 0).all() and (b.xyxy[:, [0, 2]] <= 96).all() and (b.xyxy[:, [1, 3]] <= 64).all()


def test_owl_boxes_take_their_best_query_class_in_pixels():
    logits = torch.full((1, 3, 3), -10.0)
    logits[0, 0, 2] = 3.0  # box 0: query 2 (class 1)
    logits[0, 1, 0] = 1.0  # box 1: query 0 (class 0)
    logits[0, 2, 1] = -2.0  # box 2: below the threshold
    boxes = torch.tensor([[[0.5, 0.25, 0.2, 0.1], [0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 1.0, 1.0]]])
    (det,) = decode_owl(logits, boxes, [0, 0, 1], [(100, 200)], 0.3)
    assert det.class_id.tolist() == [1, 0]
    # OWLv2 pads to a 200x200 square: fractions of the long side; the second box is clipped at 0.
    np.testing.assert_allclose(det.xyxy, [[80, 40, 120, 60], [0, 0, 40, 40]], atol=1e-4)
    (stretched,) = decode_owl(logits, boxes, [0, 0, 1], [(100, 200)], 0.3, padded_square=False)
    np.testing.assert_allclose(stretched.xyxy[0], [80, 20, 120, 30], atol=1e-4)


def test_prompts_are_split_at_the_token_limit_and_keep_every_caption(models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["grounding-dino"])
    captions = ["cardboard box", "cup", "a hand", "box"]
    plan = plan_prompts(tokenizer, captions, max_tokens=8)
    assert [indices for indices, _ in plan] == [(0, 1), (2, 3)]
    for _, prompt in plan:
        assert len(tokenizer(prompt.text)["input_ids"]) <= 8
    assert [i for indices, _ in plan_prompts(tokenizer, captions, 256) for i in indices] == [0, 1, 2, 3]
    with pytest.raises(InputError, match="alone makes"):
        plan_prompts(tokenizer, ["cardboard box held in a hand"], max_tokens=8)

    # A model that reads 5 tokens: one caption a prompt, and every class is still found.
    labeler = _labeler(models["short-limit"])
    ontology = Ontology.from_mapping({"cup": "cup", "box": "box", "hand": "hand"})
    labeler.prepare(ontology)
    assert [indices for indices, _ in labeler.prompts(ontology)] == [(0,), (1,), (2,)]
    for detections in labeler.label(_frames(2), ontology):
        assert set(detections.class_id.tolist()) == {0, 1, 2}


def test_the_grounding_dino_labeler_splits_long_ontologies_too(tiny_gdino):
    from autolabel.labelers.grounding_dino import GroundingDinoLabeler, load_model

    model = load_model(tiny_gdino.model_config, tiny_gdino.weights, tiny_gdino.text_encoder)
    model.max_text_len = 5
    labeler = GroundingDinoLabeler(model, image_size=96, max_size=160, box_threshold=0.0, text_threshold=0.0)
    ontology = Ontology.from_mapping({"cup": "cup", "box": "box", "hand": "hand"})
    assert len(labeler.prompts(ontology)) == 3
    for detections in labeler.label(_frames(2), ontology):
        assert set(detections.class_id.tolist()) == {0, 1, 2}


def test_a_hub_model_missing_offline_is_one_line_with_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_product(tmp_path / "videos", "box", ONTOLOGY, {"clip.mp4": 2})
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--base-model", "hf"]
    result = runner.invoke(app, [*args, "--hf-model", "autolabel-tests/no-such-model", "--quiet"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "autolabel-tests/no-such-model" in lines[0] and "hf download autolabel-tests/no-such-model" in lines[0]
    # Only what is loaded: many repos also hold pytorch_model.bin, TF and ONNX copies of the weights.
    assert "--include '*.json' '*.txt' '*.safetensors'" in lines[0]


def test_base_model_hf_needs_a_model_and_a_detector(tmp_path, models):
    result = runner.invoke(app, ["run", "-i", str(tmp_path), "--base-model", "hf", "--quiet"])
    assert result.exit_code == 2 and "--hf-model" in result.stderr
    bert_only = tmp_path / "bert"
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(bert_only)
    with pytest.raises(InputError, match="not a zero-shot object detector"):
        _labeler(bert_only)


def test_an_owl_query_past_the_token_limit_is_an_error_naming_it(models):
    labeler = _labeler(models["owlv2"])
    with pytest.raises(
        InputError, match="'a very long caption indeed' makes 24 tokens; this model reads at most 16 per query"
    ):
        labeler.prepare(Ontology.from_mapping({"cup": "cup", "a very long caption indeed": "box"}))


@pytest.mark.parametrize(("kind", "size"), [("owlv2", 96), ("grounding-dino", 64)])
def test_image_size_sets_the_model_input(models, kind, size):
    labeler = _labeler(models[kind], **{"model.image_size": size})
    seen = []
    hook = labeler.model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(tuple(kwargs["pixel_values"].shape)), with_kwargs=True
    )
    ontology = Ontology.from_mapping(ONTOLOGY)
    (detections,) = labeler.label(_frames(1), ontology)
    hook.remove()
    # OWLv2: a size x size square (position embeddings interpolated); Grounding DINO: the short side.
    assert seen == ([(1, 3, size, size)] if kind == "owlv2" else [(1, 3, size, 96)])
    assert labeler.describe()["image_size"] == size and len(detections) > 0


@pytest.mark.parametrize("broken", ["truncated weights", "no tokenizer files"])
def test_a_broken_model_folder_is_one_line_not_a_traceback(tmp_path, models, broken):
    import shutil

    folder = shutil.copytree(models["grounding-dino"], tmp_path / "model")
    if broken == "truncated weights":  # an interrupted copy
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
    make_product(tmp_path / "videos", "box", ONTOLOGY, {"clip.mp4": 2})
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--base-model", "hf"]
    result = runner.invoke(app, [*args, "--hf-model", str(folder), "--device", "cpu", "--quiet"])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--hf-model {folder}: cannot load" in lines[0], result.stderr


@pytest.mark.parametrize("kind", ["grounding-dino", "mm-grounding-dino", "owlv2"])
def test_frames_go_through_the_fast_torch_image_processor(models, kind):
    # Resized and normalised by torch on the labeler's device, not by PIL/numpy on the CPU.
    assert _labeler(models[kind]).processor.image_processor.is_fast


def test_resuming_after_the_model_folder_changed_is_refused_in_one_line(tmp_path, models):
    import shutil

    folder = shutil.copytree(models["grounding-dino"], tmp_path / "model")
    make_product(tmp_path / "videos", "box", ONTOLOGY, {"clip.mp4": 2})
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--base-model", "hf"]
    args += ["--hf-model", str(folder), "--device", "cpu", "--no-report", "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    config = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps(config | {"image_mean": [0.1, 0.1, 0.1]}))
    refused = runner.invoke(app, args)
    lines = refused.stderr.strip().splitlines()
    assert refused.exit_code == 1 and len(lines) == 1, refused.stderr
    assert "model file hf_model has other content" in lines[0] and "--overwrite" in lines[0]
    # The same content elsewhere is the same model: it resumes.
    shutil.copytree(models["grounding-dino"], tmp_path / "moved")
    args[args.index(str(folder))] = str(tmp_path / "moved")
    assert runner.invoke(app, args).exit_code == 0


def test_a_revision_for_a_local_folder_is_refused_not_ignored(tmp_path, models):
    make_product(tmp_path / "videos", "box", ONTOLOGY, {"clip.mp4": 2})
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--base-model", "hf", "--quiet"]
    result = runner.invoke(app, [*args, "--hf-model", str(models["owlv2"]), "--hf-revision", "v2"])
    assert result.exit_code == 2 and "--hf-revision v2: only for a hub id" in result.stderr, result.stderr


def test_a_hub_that_never_answers_falls_back_to_the_cache_instead_of_hanging(tmp_path, models):
    import os
    import shutil
    import socket
    import subprocess
    import sys

    # A proxy that accepts connections and never answers (huggingface_hub's look-up has no timeout).
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    offline = ("AUTOLABEL_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    env = {k: v for k, v in os.environ.items() if k not in offline}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}", "HF_HUB_ETAG_TIMEOUT": "1"}
    env |= {"HF_HOME": str(tmp_path / "hf")}
    make_product(tmp_path / "videos", "box", ONTOLOGY, {"clip.mp4": 2})
    args = [sys.executable, "-m", "autolabel", "run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds")]
    args += ["--base-model", "hf", "--hf-model", "autolabel-tests/model", "--device", "cpu", "--no-report", "--quiet"]
    try:
        missing = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
        port = server.getsockname()[1]
        assert f"(http://127.0.0.1:{port} cannot be reached (timed out)): run `hf download autolabel-tests/model" in (
            missing.stderr
        )
        # The same model in the hub cache: used as it is.
        repo = tmp_path / "hf" / "hub" / "models--autolabel-tests--model"
        shutil.copytree(models["owlv2"], repo / "snapshots" / ("0" * 40))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
        cached = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert cached.returncode == 0, cached.stderr
        run = yaml.safe_load((tmp_path / "ds" / "box" / "run.yaml").read_text())
        assert run["model"]["revision"] == "0" * 40 and run["model"]["model_type"] == "owlv2"
    finally:
        server.close()


@pytest.mark.parametrize("spec", ["my model", "org/na me", "org/model--x"])
def test_neither_a_folder_nor_a_hub_id_is_one_line(tmp_path, spec):
    make_product(tmp_path / "videos", "box", ONTOLOGY, {"clip.mp4": 2})
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--base-model", "hf", "--quiet"]
    result = runner.invoke(app, [*args, "--hf-model", spec])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert f"--hf-model {spec!r}: no such folder, and not a hub id (ORG/NAME)" in lines[0]


def test_the_fetch_command_can_be_pasted_into_a_shell():
    import shlex

    from autolabel.labelers.hf import model_files

    settings = {"model.base_model": "hf", "model.hf_model": "org/model", "model.hf_revision": "my branch"}
    [f] = model_files(load_config(None, settings).model)
    assert (f.key, f.flag, f.folder, f.path) == ("hf_model", "--hf-model", True, None)
    words = shlex.split(f.hub.command())
    assert words[:5] == ["hf", "download", "org/model", "--revision", "my branch"]
    assert words[5:8] == ["--include", "*.json", "*.txt"]


def test_hf_model_without_base_model_hf_is_refused_not_ignored(tmp_path, models):
    # Otherwise the run silently labels with the default Grounding DINO instead of the model named.
    make_product(tmp_path / "videos", "box", ONTOLOGY, {"clip.mp4": 2})
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--quiet"]
    result = runner.invoke(app, [*args, "--hf-model", str(models["owlv2"])])
    assert result.exit_code == 2 and "--hf-model is for --base-model hf (base model: grounding-dino)" in result.stderr


def test_a_flag_of_another_base_model_is_refused_not_ignored(tmp_path):
    # --base-weights is Ultralytics' and --text-encoder Grounding DINO's: with another model they would do nothing.
    make_product(tmp_path / "videos", "box", ONTOLOGY, {"clip.mp4": 2})
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--quiet"]
    result = runner.invoke(app, [*args, "--base-weights", "yolo11n.pt"])
    assert result.exit_code == 2 and "--base-weights is for --base-model ultralytics (base model: grounding-dino)" in (
        result.stderr
    )
    result = runner.invoke(app, [*args, "--base-model", "ultralytics", "--text-encoder", "bert", "--number-seeds", "2"])
    assert result.exit_code == 2 and "--text-encoder is for --base-model grounding-dino" in result.stderr
    assert not (tmp_path / "ds").exists()
