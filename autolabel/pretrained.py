"""Loading a ``transformers`` model saved by ``save_pretrained``: what the detectors and the mask models share.

The folder must hold a ``config.json`` and (for a hub snapshot, or always where asked) ``.safetensors``
weights: only those are loaded, never pickles. Loading is quiet (transformers' notices are ours to
say, one line per run) and each failure is one line: an unknown or wrong kind of model is an
``InputError``, missing or corrupt weights or processor files a ``MissingWeightsError``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from autolabel.errors import InputError, MissingWeightsError


def check_folder(folder: Path, what: str, safetensors: bool = True) -> None:
    """A ``save_pretrained`` folder: its ``config.json``, and (``safetensors``) its ``.safetensors`` weights."""
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(f"{what}: no config.json in {folder} (a folder written by save_pretrained)")
    if safetensors and not any(folder.glob("*.safetensors")):
        raise MissingWeightsError(f"{what}: no .safetensors weights in {folder} (only those are loaded: no pickles)")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """transformers' logging at errors only, and its warnings silenced, while a model loads."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)


def load(folder: Path, what: str, model_class, kind: str, processor: Callable[[Path], object], files: str):
    """``model_class`` (safetensors only) and ``processor(folder)`` from ``folder``, quietly; the model in eval mode.

    Args:
        folder: The model folder.
        what: The flags that named it, for messages.
        model_class: An ``Auto*`` class.
        kind: What the model must be ("a zero-shot object detector"), said when it is not.
        processor: Loads the processor from the folder.
        files: The processor's files, said when they cannot be loaded.
    """
    from safetensors import SafetensorError

    with quiet():
        try:
            model = model_class.from_pretrained(folder, use_safetensors=True)
        except ValueError as exc:  # an unknown model type, or another kind of model
            raise InputError(f"{what}: not {kind}: {str(exc).splitlines()[0]}") from exc
        except (OSError, SafetensorError) as exc:  # missing, or truncated / corrupt weights
            raise MissingWeightsError(f"{what}: cannot load: {str(exc).splitlines()[0]}") from exc
        try:
            loaded = processor(folder)
        except (OSError, ValueError, TypeError) as exc:  # TypeError: a tokenizer without its vocabulary files
            raise MissingWeightsError(
                f"{what}: cannot load its processor ({files}): {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from exc
    return model.eval(), loaded
