import hashlib

import pytest

from autolabel.errors import MissingWeightsError
from autolabel.weights import RemoteFile, cached_path, file_digest, resolve


def test_download_checks_the_hash_and_lands_atomically(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOLABEL_OFFLINE", raising=False)
    src = tmp_path / "served.bin"
    src.write_bytes(b"weights" * 1000)
    good = RemoteFile("m/model.bin", src.as_uri(), hashlib.sha256(src.read_bytes()).hexdigest(), 7000)
    cache = tmp_path / "cache"
    path = resolve(good, None, cache, "test weights", "--weights", progress=False)
    assert path == cache / "m" / "model.bin" and path.read_bytes() == src.read_bytes()
    assert [p.name for p in (cache / "m").iterdir()] == ["model.bin"]

    bad = RemoteFile("m/other.bin", src.as_uri(), "0" * 64, 7000)
    with pytest.raises(MissingWeightsError, match="expected 0000"):
        resolve(bad, None, cache, "test weights", "--weights", progress=False)
    assert [p.name for p in (cache / "m").iterdir()] == ["model.bin"]


def test_unreachable_download_names_file_address_and_place(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOLABEL_OFFLINE", raising=False)
    remote = RemoteFile("w.pth", (tmp_path / "nowhere.pth").as_uri(), "0" * 64, 1)
    with pytest.raises(MissingWeightsError) as err:
        resolve(remote, None, tmp_path / "cache", "test weights", "--weights", progress=False)
    msg = str(err.value)
    assert msg.startswith("missing test weights w.pth (download failed")
    assert f"put it at {tmp_path / 'cache' / 'w.pth'}" in msg and "--weights PATH" in msg


def test_git_blob_digest_matches_git(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"hello\n")
    # `git hash-object` of "hello\n"
    assert file_digest(f, "0" * 40) == "ce013625030ba8dba906f756967f9e9ca394464a"


def _hub_cache(root, repo_id: str, filename: str, data: bytes):
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("c0ffee")
    (repo / "snapshots" / "c0ffee").mkdir(parents=True)
    (repo / "snapshots" / "c0ffee" / filename).write_bytes(data)
    return repo / "snapshots" / "c0ffee" / filename


def test_a_checkpoint_in_the_hub_cache_is_used_after_the_same_hash_check(tmp_path):
    data = b"checkpoint" * 100
    nowhere = (tmp_path / "nowhere.pth").as_uri()
    remote = RemoteFile("ckpt.pth", nowhere, hashlib.sha256(data).hexdigest(), len(data), hub=("org/gd", "ckpt.pth"))
    hub = tmp_path / "hub"
    copy = _hub_cache(hub, "org/gd", "ckpt.pth", data)
    path = resolve(remote, None, tmp_path / "cache", "test weights", "--weights", progress=False, hub_cache=hub)
    assert path == copy  # no download, no second copy in our cache
    assert not (tmp_path / "cache" / "ckpt.pth").exists()
    # What a resumed run hashes is that same file, found without any download.
    assert cached_path(remote, tmp_path / "cache", hub_cache=hub) == copy
    assert cached_path(remote, tmp_path / "cache", hub_cache=tmp_path / "empty") == tmp_path / "cache" / "ckpt.pth"

    other = RemoteFile("other.pth", nowhere, "0" * 64, len(data), hub=("org/bad", "other.pth"))
    _hub_cache(hub, "org/bad", "other.pth", data)
    with pytest.raises(MissingWeightsError, match="expected 0000"):
        resolve(other, None, tmp_path / "cache", "test weights", "--weights", progress=False, hub_cache=hub)


def test_missing_everywhere_names_both_sources(tmp_path):
    """Offline (AUTOLABEL_OFFLINE=1, HF_HUB_OFFLINE=1 in the tests) with nothing cached."""
    remote = RemoteFile("ckpt.pth", "https://example.invalid/ckpt.pth", "0" * 64, 1, hub=("org/gd", "ckpt.pth"))
    with pytest.raises(MissingWeightsError) as err:
        resolve(remote, None, tmp_path / "cache", "test weights", "--weights", progress=False, hub_cache=tmp_path)
    msg = str(err.value)
    assert msg.startswith("missing test weights ckpt.pth (AUTOLABEL_OFFLINE=1; hub: ")
    assert "https://example.invalid/ckpt.pth" in msg and "`hf download org/gd ckpt.pth`" in msg
