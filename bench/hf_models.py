"""``--base-model hf`` on the full-size architectures, with random weights (no hub download needed).

Builds Grounding DINO (Swin-T, BERT-base: the shape of IDEA-Research/grounding-dino-tiny),
MM-Grounding-DINO (the same backbone and text encoder: the shape of the tiny MM-Grounding-DINO
and LLMDet checkpoints) and OWLv2 (ViT-B/16 at 960 px: google/owlv2-base-patch16-ensemble)
from ``transformers``' default configs, saves each with ``save_pretrained`` and labels frames
through ``create_labeler``, as ``autolabel run --base-model hf --hf-model FOLDER`` does.
The Grounding DINO family uses the bert-base-uncased vocabulary bundled with autolabel; OWLv2
a small character vocabulary (speed does not depend on it). A second ontology of 120 captions
passes the 256-token limit and is split into several prompts. Prints seconds per frame.

    python bench/hf_models.py [--frames 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def grounding(folder: Path, mm: bool) -> None:
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
    )

    from autolabel.weights import bundled_text_encoder

    model = MMGroundingDinoForObjectDetection(MMGroundingDinoConfig()) if mm else None
    model = model or GroundingDinoForObjectDetection(GroundingDinoConfig())
    model.save_pretrained(folder)
    tokenizer = BertTokenizerFast(str(bundled_text_encoder() / "vocab.txt"), do_lower_case=True)
    GroundingDinoProcessor(GroundingDinoImageProcessor(), tokenizer).save_pretrained(folder)


def owlv2(folder: Path) -> None:
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    tokens = list(chars) + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    end = vocab["<|endoftext|>"]
    text = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": end, "pad_token_id": end}
    Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config={"image_size": 960})).save_pretrained(folder)
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    Owlv2Processor(Owlv2ImageProcessor(), tokenizer).save_pretrained(folder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from autolabel.config import load_config
    from autolabel.labelers import create_labeler
    from autolabel.ontology import Ontology

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8) for _ in range(args.frames)]
    small = Ontology.from_mapping({"cardboard box": "box", "a hand": "hand", "cup": "cup"})
    words = ["red", "blue", "green", "small", "large", "dark"]
    things = ["box", "cup", "bottle", "phone", "book", "bag", "shoe", "lamp", "chair", "toy"]
    large = Ontology.from_mapping({f"{words[i % 6]} {things[i % 10]} {i}": things[i % 10] for i in range(120)})
    print(f"{'model':<20} {'ontology':<14} {'prompts':>7} {'s/frame':>8} {'boxes/frame':>11}")
    with tempfile.TemporaryDirectory(prefix="autolabel-hf-bench-") as tmp:
        for name, build in (
            ("grounding-dino", lambda f: grounding(f, mm=False)),
            ("mm-grounding-dino", lambda f: grounding(f, mm=True)),
            ("owlv2", owlv2),
        ):
            folder = Path(tmp) / name
            build(folder)
            settings = {"model.base_model": "hf", "model.hf_model": str(folder), "model.device": args.device}
            labeler = create_labeler(load_config(None, settings).model, progress=False)
            for label, ontology in (("3 captions", small), (f"{len(large.captions)} captions", large)):
                labeler.prepare(ontology)
                prompts = len(labeler.prompts(ontology)) if labeler.grounding else 1
                labeler.label(frames[:1], ontology)  # warm-up
                start = time.perf_counter()
                out = labeler.label(frames, ontology)
                per_frame = (time.perf_counter() - start) / len(frames)
                boxes = sum(len(d) for d in out) / len(out)
                print(f"{name:<20} {label:<14} {prompts:>7} {per_frame:>8.2f} {boxes:>11.1f}", flush=True)
            del labeler
    return 0


if __name__ == "__main__":
    sys.exit(main())
