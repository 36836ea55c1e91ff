"""The Grounding DINO checkpoint as a model file: its addresses, its hash, its hub copy, its messages."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from autolabel.config import load_config
from autolabel.errors import MissingWeightsError
from autolabel.fetch import Hub, fetch
from autolabel.labelers.grounding_dino import default_model_config, model_files
from autolabel.weights import GDINO_RELEASE, bundled_text_encoder


def test_the_checkpoint_has_its_release_address_its_hash_and_its_hub_copy(tmp_path):
    files = model_files(load_config(None, {}).model)
    assert [f.key for f in files] == ["weights", "model_config", "text_encoder"]
    weights, config, text = files
    assert weights.url == f"{GDINO_RELEASE}/groundingdino_swint_ogc.pth" and weights.cache_name == weights.url[-27:]
    assert weights.digest == "3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799"
    assert weights.hub == Hub("ShilongLiu/GroundingDINO", "groundingdino_swint_ogc.pth") and weights.flag == "--weights"
    assert (config.path, config.given) == (default_model_config(), False)
    assert (text.path, text.given, text.folder) == (bundled_text_encoder(), False, True)
    given = model_files(load_config(None, {"model.weights": str(tmp_path / "w.pth")}).model)[0]
    assert given.path == tmp_path / "w.pth" and given.given


def test_missing_everywhere_names_both_sources_the_place_and_the_flag(tmp_path):
    from autolabel.fetch import hf_where

    """Offline (AUTOLABEL_OFFLINE=1 in the tests) with nothing cached."""
    cache = tmp_path / "cache"
    with pytest.raises(MissingWeightsError) as err:
        fetch(model_files(load_config(None, {}).model), cache, progress=False)
    assert str(err.value) == (
        "missing Grounding DINO weights groundingdino_swint_ogc.pth (AUTOLABEL_OFFLINE=1): download "
        f"{GDINO_RELEASE}/groundingdino_swint_ogc.pth and put it at {cache / 'groundingdino_swint_ogc.pth'}, "
        "or run `hf download ShilongLiu/GroundingDINO groundingdino_swint_ogc.pth`, or pass --weights FILE"
        + hf_where()  # where `hf` is, when it is not on PATH
    )


def test_given_paths_that_do_not_exist_are_named_with_their_flags(tmp_path):
    settings = {"model.text_encoder": str(tmp_path / "bert"), "model.model_config": str(tmp_path / "c.py")}
    with pytest.raises(MissingWeightsError) as err:
        fetch(model_files(load_config(None, settings).model), tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert f"Grounding DINO model config: {tmp_path / 'c.py'} does not exist (given by --model-config)" in msg
    assert f"text encoder: {tmp_path / 'bert'} does not exist (given by --text-encoder)" in msg
    assert "missing Grounding DINO weights groundingdino_swint_ogc.pth (AUTOLABEL_OFFLINE=1)" in msg  # all at once


def test_a_hub_copy_is_found_without_network_and_used_only_with_the_published_hash(tmp_path):
    from huggingface_hub import constants

    from autolabel.fetch import locate
    from autolabel.resume import model_identity

    repo = Path(constants.HF_HUB_CACHE) / "models--ShilongLiu--GroundingDINO"
    assert not repo.exists() and repo.is_relative_to(os.environ["HF_HOME"])  # the tests' own cache
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("c0ffee")
    copy = repo / "snapshots" / "c0ffee" / "groundingdino_swint_ogc.pth"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"not the checkpoint")
    mc, cache = load_config(None, {}).model, str(tmp_path / "cache")
    try:
        weights = next(f for f in model_files(mc, cache) if f.key == "weights")
        assert locate(weights, Path(cache)) == copy  # what a resumed run identifies: that same file
        assert model_identity(mc, cache)["weights"] == hashlib.sha256(b"not the checkpoint").hexdigest()
        with pytest.raises(MissingWeightsError, match=f"^{copy} \\(Grounding DINO weights .*\\) has hash .*; not used"):
            fetch(model_files(mc), tmp_path / "cache", progress=False)
    finally:
        shutil.rmtree(repo)
