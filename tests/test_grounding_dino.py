"""The Grounding DINO labeler: prompt spans, output decoding, batching, on a tiny random model."""

import contextlib
import warnings

import numpy as np
import pytest
import supervision as sv
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


def test_a_caption_of_unknown_tokens_only_is_an_error(model):
    # Every such caption would read as the same [UNK]: their classes could not be told apart.
    assert len(build_prompt(model.tokenizer, ["café cup"]).spans) == 1  # accents are stripped: known
    for caption in ("\U0001f642", "\u2603 \u2602"):
        with pytest.raises(InputError, match="has no tokens the text encoder knows"):
            build_prompt(model.tokenizer, ["cup", caption])


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


def test_resize_keeps_a_pixel_across_slivers():
    """4000x1 made the package's rounding give a 0-pixel side (and interpolate failed)."""
    assert resized_shape(1, 4000, 800, 1333) == (1, 1333)
    assert resized_shape(4000, 1, 800, 1333) == (1333, 1)
    assert resized_shape(3, 4000, 128, 200) == (1, 200)
    assert resized_shape(1, 1, 128, 200) == (128, 128)


@pytest.mark.parametrize("shape", [(1, 4000), (4000, 1), (2, 3000)])
def test_sliver_images_are_labeled(model, shape):
    h, w = shape
    labeler = GroundingDinoLabeler(model, image_size=96, max_size=200, batch_size=2, box_threshold=0.3)
    image = np.random.default_rng(4).integers(0, 255, (h, w, 3), dtype=np.uint8)
    dets = labeler.label([image, image], Ontology.from_mapping({"box": "box", "a hand": "hand"}))
    assert len(dets) == 2 and len(dets[0]) > 0
    for det in dets:
        assert (det.xyxy >= 0).all() and (det.xyxy[:, [0, 2]] <= w).all() and (det.xyxy[:, [1, 3]] <= h).all()


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


def _assert_same(a: sv.Detections, b: sv.Detections) -> None:
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    assert a.class_id.tolist() == b.class_id.tolist()


def test_a_frames_labels_do_not_depend_on_the_sizes_of_its_batch_mates(model):
    """Padded into one batch with a larger frame, a frame got other boxes than alone."""
    rng = np.random.default_rng(5)
    small, tall, small2 = (rng.integers(0, 255, s, dtype=np.uint8) for s in [(64, 96, 3), (80, 60, 3), (64, 96, 3)])
    ont = Ontology.from_mapping({"box": "box", "a hand": "hand"})
    labeler = GroundingDinoLabeler(model, image_size=96, max_size=200, batch_size=4, box_threshold=0.3)
    alone = [labeler.label([f], ont)[0] for f in (small, tall)]
    assert all(len(d) for d in alone)
    mixed = labeler.label([small, tall], ont)
    for a, b in zip(mixed, alone, strict=True):
        _assert_same(a, b)
    # Same-size frames still share a forward, in the order given.
    pair = labeler.label([small, small2], ont)
    three = labeler.label([small, tall, small2], ont)
    for a, b in zip(three, [pair[0], alone[1], pair[1]], strict=True):
        _assert_same(a, b)


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
    ((_, prompt),) = labeler.prompts(ont)
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
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="model.device is 'mps' but no Apple MPS device is available"):
            pick_device("mps")
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


def test_batch_size_from_free_memory():
    from autolabel.labelers.grounding_dino import batch_size_for

    gb = 10**9
    # A 720p frame goes in at 750x1333 (the long side caps it): 1.0 MP, 0.25 GB under autocast.
    assert batch_size_for(80 * gb, 800, 1333, mixed=True) == 64  # capped
    assert batch_size_for(8 * gb, 800, 1333, mixed=True) == 16  # half of 8 GB / 0.25 GB
    assert batch_size_for(8 * gb, 800, 1333, mixed=False) == 8  # fp32 takes twice the memory
    assert batch_size_for(4 * gb, 400, 1333, mixed=True) == 28  # 400x711: 0.28 MP
    assert batch_size_for(gb // 10, 800, 1333, mixed=True) == 1  # never 0


@contextlib.contextmanager
def _before_forward(model, hook):
    """Runs ``hook(module, args)`` before each forward of ``model`` inside the block (a way to fake device errors)."""
    handle = model.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _frames(n: int, seed: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(n)]


def test_out_of_memory_halves_the_batch_and_loses_no_frame(model, caplog):
    """A device that holds at most 2 frames: a batch of 8 is retried as 4, then 2."""
    ont = Ontology.from_mapping({"box": "box", "a hand": "hand"})
    frames = _frames(5)
    reference = GroundingDinoLabeler(model, image_size=96, max_size=200, batch_size=1, box_threshold=0.3).label(
        frames, ont
    )
    seen = []

    def two_at_most(module, args):
        seen.append(args[0].tensors.shape[0])
        if seen[-1] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    labeler = GroundingDinoLabeler(model, image_size=96, max_size=200, batch_size=8, box_threshold=0.3)
    with _before_forward(labeler.model, two_at_most), caplog.at_level("WARNING", logger="autolabel"):
        out = labeler.label(frames, ont)
    assert seen == [5, 4, 2, 2, 1] and labeler.batch_size == 2
    assert "batch size lowered to 2" in caplog.text
    assert len(out) == 5
    for a, b in zip(out, reference, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-2)
        assert a.class_id.tolist() == b.class_id.tolist()

    def always(module, args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with _before_forward(labeler.model, always), pytest.raises(torch.OutOfMemoryError):
        labeler.label(frames[:1], ont)  # at batch 1 there is nothing left to halve
    assert labeler.batch_size == 1


def test_mixed_precision_agrees_with_fp32_and_falls_back_on_a_dtype_clash(model, caplog):
    """Autocast (bf16, on the CPU here; CUDA takes the same path) keeps the boxes of fp32."""
    ont = Ontology.from_mapping({"box": "box", "a hand": "hand"})
    frames = _frames(4, seed=3)
    fp32 = GroundingDinoLabeler(model, image_size=96, max_size=200, batch_size=2, box_threshold=0.3)
    reference = fp32.label(frames, ont)
    mixed = GroundingDinoLabeler(model, image_size=96, max_size=200, batch_size=2, box_threshold=0.3)
    mixed.dtype = torch.bfloat16  # pick_dtype gives it only on CUDA
    misses = mixed.model.bert.misses
    out = mixed.label(frames, ont)
    assert mixed.model.bert.misses == misses + 1  # bf16 text features are cached apart from fp32 ones
    matched = total = 0
    for a, b in zip(out, reference, strict=True):
        total += max(len(a), len(b))
        if len(a) and len(b):
            iou = sv.box_iou_batch(a.xyxy, b.xyxy)
            matched += int((iou.max(axis=1) > 0.9).sum())
    assert total > 0 and matched / total > 0.9

    def clash(module, args):
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("expected mat1 and mat2 to have the same dtype, but got: float != c10::BFloat16")

    with _before_forward(mixed.model, clash), caplog.at_level("WARNING", logger="autolabel"):
        again = mixed.label(frames, ont)
    assert mixed.dtype is None and "continuing in fp32" in caplog.text
    for a, b in zip(again, reference, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        assert a.class_id.tolist() == b.class_id.tolist()


# Random bytes make torch.load (weights only) raise all of these: UnpicklingError, IndexError,
# UnicodeDecodeError, KeyError, RuntimeError ('Invalid magic number'), some after a warning.
@pytest.mark.parametrize("seed", [0, 17, 54, 62, 941])
def test_random_bytes_are_not_a_checkpoint(tiny_gdino, tmp_path, seed):
    bad = tmp_path / "random.pth"
    bad.write_bytes(np.random.default_rng(seed).bytes(2000))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(InputError) as err:
        warnings.simplefilter("always")
        load_model(tiny_gdino.model_config, bad, tiny_gdino.text_encoder)
    message = str(err.value)
    assert message.startswith(f"{bad}: not a loadable PyTorch checkpoint (")
    assert "\n" not in message and len(message) < len(str(bad)) + 150, message
    assert not caught, [str(w.message) for w in caught]


def test_the_text_encoder_needs_no_weights_file(tiny_gdino, tmp_path):
    """Weights come from the checkpoint: no weights, or other weights, in --text-encoder change nothing."""
    import shutil

    from transformers import BertConfig, BertModel

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in tiny_gdino.text_encoder.iterdir():
        if f.suffix in (".json", ".txt"):
            shutil.copyfile(f, bare / f.name)
    assert not (bare / "model.safetensors").exists()
    other = tmp_path / "other"
    shutil.copytree(tiny_gdino.text_encoder, other)
    torch.manual_seed(123)  # weights unlike the checkpoint's
    BertModel(BertConfig.from_pretrained(other)).save_pretrained(other)

    ont = Ontology.from_mapping({"cardboard box": "box", "a hand": "hand"})
    frames = [np.random.default_rng(5).integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(2)]
    checkpoint = torch.load(tiny_gdino.weights, weights_only=True)["model"]
    results = []
    for folder in (tiny_gdino.text_encoder, bare, other):
        model = load_model(tiny_gdino.model_config, tiny_gdino.weights, folder)
        bert = {k: v for k, v in model.state_dict().items() if k.startswith("bert.")}
        assert bert and all(torch.equal(v, checkpoint[k]) for k, v in bert.items())
        labeler = GroundingDinoLabeler(model, image_size=96, max_size=160, box_threshold=0.0, text_threshold=0.0)
        results.append(labeler.label(frames, ont))
    for reference, *others in zip(*results, strict=True):
        assert len(reference) > 0
        for det in others:
            np.testing.assert_array_equal(det.xyxy, reference.xyxy)
            np.testing.assert_array_equal(det.class_id, reference.class_id)

    # A checkpoint without the text encoder's tensors needs a folder that has them.
    no_text = tmp_path / "no_text.pth"
    torch.save({"model": {k: v for k, v in checkpoint.items() if not k.startswith("bert.")}}, no_text)
    with pytest.raises(InputError, match=r"no weights for the text encoder \(23 bert\.\* tensors missing"):
        load_model(tiny_gdino.model_config, no_text, bare)


def test_bert_base_uncased_config_and_vocabulary_ship_with_the_package():
    from transformers import AutoTokenizer, BertConfig

    from autolabel.weights import resolve_text_encoder

    folder = resolve_text_encoder(None)
    assert sorted(p.name for p in folder.iterdir()) == [
        "LICENSE",
        "NOTICE",
        "config.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    config, default = BertConfig.from_pretrained(folder).to_dict(), BertConfig().to_dict()
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        assert config[key] == default[key]
    assert (config["max_position_embeddings"], config["type_vocab_size"]) == (512, 2)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == 30522
    assert tokenizer("a cup .")["input_ids"] == [101, 1037, 2452, 1012, 102]
