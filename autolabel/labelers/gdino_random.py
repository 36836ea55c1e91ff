"""Grounding DINO files with random weights, for tests and throughput benchmarks.

Speed does not depend on weight values, and the real checkpoint cannot always be had
(no network), so this writes what ``--weights``, ``--model-config`` and
``--text-encoder`` expect: a config derived from the package's SwinT OGC config, a
BERT folder (``save_pretrained`` layout) and a checkpoint ``{"model": state_dict}``.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from autolabel.labelers.grounding_dino import default_model_config

# The ids groundingdino hard-codes: [CLS]=101, [SEP]=102, "."=1012.
_SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: "."}


@dataclass(frozen=True)
class ModelFiles:
    """Paths for the three model flags."""

    weights: Path
    model_config: Path
    text_encoder: Path


def tiny_vocab() -> list[str]:
    """A WordPiece vocabulary that spells any lowercase word, with BERT's special ids."""
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    pieces = list(letters) + [f"##{c}" for c in letters] + list(",?!-'()/&:;\"<>")
    words = ["box", "cup", "hand", "held", "in", "a", "the", "dark", "tumbler", "cardboard", "person", "car"]
    vocab: list[str] = []
    extra = iter(pieces + words)
    for i in range(1013):
        if i in _SPECIAL:
            vocab.append(_SPECIAL[i])
        elif 104 <= i < 1012:
            vocab.append(next(extra, f"[unused{i}]"))
        else:
            vocab.append(f"[unused{i}]")
    vocab += [t for t in extra if t not in vocab]
    return vocab


def write_random_grounding_dino(
    folder: Path, tiny: bool = True, vocab_file: Path | None = None, seed: int = 0
) -> ModelFiles:
    """Writes a random-weight Grounding DINO (config, BERT folder, checkpoint) into ``folder``.

    Args:
        folder: Where to write.
        tiny: One encoder/decoder layer, 30 queries and a 32-wide BERT (tests); otherwise
            the full SwinT OGC architecture with a full-size BERT (benchmarks).
        vocab_file: A BERT ``vocab.txt``; default: a small synthetic one.
        seed: Torch seed for the weights.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from autolabel.labelers.grounding_dino import load_model

    folder.mkdir(parents=True, exist_ok=True)
    bert = folder / "bert"
    bert.mkdir(exist_ok=True)
    if vocab_file is not None:
        (bert / "vocab.txt").write_bytes(Path(vocab_file).read_bytes())
    else:
        (bert / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    vocab_size = sum(1 for _ in (bert / "vocab.txt").open(encoding="utf-8"))
    BertTokenizerFast(str(bert / "vocab.txt"), do_lower_case=True).save_pretrained(str(bert))
    torch.manual_seed(seed)
    if tiny:
        bert_config = BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    else:
        bert_config = BertConfig(vocab_size=vocab_size)
    BertModel(bert_config).save_pretrained(str(bert))

    text = default_model_config().read_text(encoding="utf-8")
    if tiny:
        for key, value in {"enc_layers": 1, "dec_layers": 1, "dim_feedforward": 64, "num_queries": 30}.items():
            text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    config = folder / ("GroundingDINO_tiny.py" if tiny else "GroundingDINO_SwinT_OGC.py")
    config.write_text(text, encoding="utf-8")

    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig

    args = SLConfig.fromfile(str(config))
    args.text_encoder_type = str(bert)
    args.device = "cpu"
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(args)
    weights = folder / "groundingdino_random.pth"
    torch.save({"model": model.state_dict()}, weights)
    files = ModelFiles(weights, config, bert)
    load_model(files.model_config, files.weights, files.text_encoder)  # fail here, not in a test
    return files
