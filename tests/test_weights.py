import hashlib

import pytest

from autolabel.errors import MissingWeightsError
from autolabel.weights import RemoteFile, file_digest, resolve


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
