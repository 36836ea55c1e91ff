"""Checks, on the full-size Grounding DINO Swin-T OGC architecture, that the text encoder needs no weights file.

Writes a random full-size checkpoint (as ``groundingdino_swint_ogc.pth`` is laid out:
``{"model": state_dict}`` with every ``bert.*`` tensor), builds the model from the
bert-base-uncased config and vocabulary bundled with autolabel (no weights in that
folder), loads the checkpoint, and counts the ``bert.*`` tensors of the model's state
dict that the checkpoint covers and that hold the checkpoint's values afterwards (none
left at its initial value). CPU, about 2-4 minutes and 1.5 GB of disk in a temporary folder.

    python bench/text_encoder.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from autolabel.labelers.gdino_random import write_random_grounding_dino
from autolabel.labelers.grounding_dino import load_model
from autolabel.weights import bundled_text_encoder


def main() -> int:
    start = time.perf_counter()
    bundled = bundled_text_encoder()
    with tempfile.TemporaryDirectory(prefix="autolabel-bench-") as tmp:
        files = write_random_grounding_dino(Path(tmp), tiny=False, vocab_file=bundled / "vocab.txt", seed=1)
        checkpoint = torch.load(files.weights, map_location="cpu", weights_only=True)["model"]
        torch.manual_seed(2)  # the staged encoder's initial values differ from the checkpoint's
        model = load_model(files.model_config, files.weights, bundled)
    state = model.state_dict()
    bert = [k for k in state if k.startswith("bert.")]
    covered = [k for k in bert if k in checkpoint]
    loaded = [k for k in covered if torch.equal(state[k], checkpoint[k])]
    params = sum(state[k].numel() for k in bert)
    print(f"bert.* tensors in the model's state dict: {len(bert)} ({params / 1e6:.1f} M values)")
    print(f"covered by the checkpoint's keys:         {len(covered)}")
    print(f"equal to the checkpoint after loading:    {len(loaded)}")
    print(f"left at their initial value:              {len(bert) - len(loaded)}")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0 if bert and len(loaded) == len(bert) else 1


if __name__ == "__main__":
    sys.exit(main())
