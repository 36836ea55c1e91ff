"""The Grounding DINO labeler: prompt spans, output decoding, batching, on a tiny random model."""

import numpy as np
import pytest
import torch

from autolabel.errors import InputError
from autolabel.labelers.grounding_dino import (
    GroundingDinoLabeler,
    Prompt,
    build_prompt,
    decode_outputs,
    load_model,
    resized_shape,
)
from autolabel.ontology import Ontology


@pytest.fixture(scope="module")
def model(tiny_gdino):
    return load_model(tiny_gdino.model_config, tiny_gdino.weights, tiny_gdino.text_encoder)


def test_prompt_spans_cover_each_caption(model):
    tok = model.tokenizer
    prompt = build_prompt(tok, ["Cardboard Box.", "a hand", "cup"])
    assert prompt.text == "cardboard box . a hand . cup ."
    ids = tok(prompt.text)["input_ids"]
    words = [tok.decode(ids[a:b]).replace(" ", "") for a, b in prompt.spans]
    assert words == ["cardboardbox", "ahand", "cup"]
    assert ids[0] == 101 and ids[-1] == 102


def test_too_long_prompt_is_an_error(model):
    with pytest.raises(InputError, match="Grounding DINO reads at most 256"):
        build_prompt(model.tokenizer, ["a very long caption " * 30])


def test_decoding_takes_the_best_caption_and_applies_both_thresholds():
    prompt = Prompt("x", ((1, 3), (4, 5)))  # caption 0: tokens 1-2, caption 1: token 4
    logits = torch.full((1, 4, 8), -10.0)
    logits[0, 0, 2] = 2.0  # query 0: caption 0 at sigmoid 0.88
    logits[0, 1, 4] = 1.0  # query 1: caption 1 at 0.73
    logits[0, 1, 1] = 0.5  #   ... caption 0 lower (0.62)
    logits[0, 2, 4] = -1.0  # query 2: 0.27 < box threshold: dropped
    logits[0, 3, 7] = 5.0  # query 3: a token outside every caption: dropped
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 1, 1]]])
    (det,) = decode_outputs(logits, boxes, prompt, [1, 0], [(100, 200)], 0.35, 0.25)
    assert det.class_id.tolist() == [1, 0]
    np.testing.assert_allclose(
        det.confidence, [torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(1.0))], rtol=1e-6
    )
    # cx, cy, w, h = 0.5, 0.5, 0.2, 0.4 of 200x100; the second box is clipped at the image's top-left.
    np.testing.assert_allclose(det.xyxy, [[80, 30, 120, 70], [0, 0, 60, 30]], atol=1e-4)
    (none,) = decode_outputs(logits, boxes, prompt, [1, 0], [(100, 200)], 0.95, 0.25)
    assert len(none) == 0


def test_resize_follows_the_package():
    assert resized_shape(480, 640, 800, 1333) == (800, 1066)
    assert resized_shape(720, 2560, 800, 1333) == (375, 1333)
    assert resized_shape(640, 480, 128, 1333) == (170, 128)


def test_batched_equals_one_by_one_and_mixed_sizes_work(model):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(3)]
    ont = Ontology.from_mapping({"box": "box", "a hand": "hand"})
    labeler = GroundingDinoLabeler(model, image_size=96, max_size=200, batch_size=3, box_threshold=0.3)
    batched = labeler.label(frames, ont)
    single = GroundingDinoLabeler(model, image_size=96, max_size=200, batch_size=1, box_threshold=0.3)
    one_by_one = [single.label([f], ont)[0] for f in frames]
    for a, b in zip(batched, one_by_one, strict=True):
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-2)
        assert a.class_id.tolist() == b.class_id.tolist()
        assert set(a.class_id.tolist()) <= {0, 1}
    mixed = labeler.label([frames[0], rng.integers(0, 255, (80, 60, 3), dtype=np.uint8)], ont)
    assert len(mixed) == 2 and all(len(d) for d in mixed)
    assert mixed[1].xyxy[:, 2].max() <= 60 and mixed[1].xyxy[:, 3].max() <= 80


def test_text_is_encoded_once_per_prompt_with_identical_outputs(tiny_gdino):
    from autolabel.labelers.text_cache import CachedTextEncoder

    plain = load_model(tiny_gdino.model_config, tiny_gdino.weights, tiny_gdino.text_encoder)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(4)]
    ont = Ontology.from_mapping({"box": "box", "a hand": "hand"})
    labeler = GroundingDinoLabeler(
        load_model(tiny_gdino.model_config, tiny_gdino.weights, tiny_gdino.text_encoder),
        image_size=96,
        max_size=200,
        batch_size=2,
        box_threshold=0.3,
    )
    assert isinstance(labeler.model.bert, CachedTextEncoder)
    cached = labeler.label(frames, ont) + labeler.label(frames, ont)
    assert labeler.model.bert.misses == 1  # 4 batches, one encoding
    labeler.label(frames[:1], Ontology.from_mapping({"cup": "cup"}))
    assert labeler.model.bert.misses == 2
    # The same frames through the package's own forward, text encoded every time.
    prompt = labeler.prompt(ont)
    samples = labeler._preprocess(frames[:2])
    with torch.inference_mode():
        out = plain(samples, captions=[prompt.text] * 2)
    reference = decode_outputs(
        out["pred_logits"], out["pred_boxes"], prompt, ont.caption_class, [f.shape[:2] for f in frames[:2]], 0.3, 0.25
    )
    for a, b in zip(cached[:2], reference, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
        assert a.class_id.tolist() == b.class_id.tolist()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallbacks")
def test_device_and_precision_without_cuda(caplog):
    from autolabel.errors import ConfigError
    from autolabel.labelers.base import pick_device, pick_dtype
    from autolabel.train import pick_train_device

    with pytest.raises(ConfigError, match="no CUDA device is available"):
        pick_device("cuda:0")
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        pick_train_device("0")
    import logging

    log = logging.getLogger("autolabel")
    log.addHandler(caplog.handler)  # the CLI's set-up may have stopped propagation to the root
    try:
        with caplog.at_level("WARNING", logger="autolabel"):
            assert pick_device("auto") == "cpu"
            assert pick_train_device(None) == "cpu"
    finally:
        log.removeHandler(caplog.handler)
    assert "labeling on the CPU, which is slow" in caplog.text and "training on the CPU" in caplog.text
    assert pick_dtype("auto", "cpu") is None and pick_dtype("bf16", "cpu") is None
