"""Grounding DINO's text encoder, run once per prompt instead of once per frame.

Every frame of a product goes to the model with the same prompt, and the package's
``forward`` encodes it again for each row of each batch. The model reads its text
features only through ``model.bert(...)["last_hidden_state"]``, so this wrapper (set as
``model.bert``) encodes one row once per distinct prompt and hands back the cached
features expanded to the batch. Imported lazily with the labeler (it needs torch).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class CachedTextEncoder(nn.Module):
    """Caches the text features of identical prompts across batches.

    Attributes:
        encoder: The wrapped BERT (groundingdino's ``BertModelWarper``).
        misses: How many times the encoder really ran (for tests and benchmarks).
    """

    def __init__(self, encoder: nn.Module, max_entries: int = 64) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.max_entries = max_entries
        self.misses = 0
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def forward(self, **inputs) -> dict[str, torch.Tensor]:
        ids = inputs["input_ids"]
        batch = ids.shape[0]
        if batch > 1 and not bool((ids == ids[:1]).all()):
            return self.encoder(**inputs)  # different prompts in one batch: nothing to share
        kind = ids.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
        key = (tuple(ids[0].tolist()), str(ids.device), dtype, torch.is_grad_enabled())
        features = self._cache.get(key)
        if features is None:
            self.misses += 1
            one = {
                k: (v[:1] if isinstance(v, torch.Tensor) and v.shape[:1] == (batch,) else v) for k, v in inputs.items()
            }
            features = self.encoder(**one)["last_hidden_state"]
            self._cache[key] = features
            if len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return {"last_hidden_state": features.expand(batch, *features.shape[1:])}
