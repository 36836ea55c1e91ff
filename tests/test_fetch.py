"""One fetch for every model file: cache, lock, hash, fsync + mode, offline decided once, one line for all missing."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from autolabel import fetch, fileio
from autolabel.errors import MissingWeightsError
from autolabel.fetch import Hub, ModelFile
from autolabel.identity import DigestCache
from tests.conftest import make_product

DATA = b"weights" * 50_000  # 350 kB: several reads, a visible half-way point


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remote(served, name: str = "model.bin", data: bytes = DATA, digest: str | None = "auto", **kw) -> ModelFile:
    """A file of ours with a direct download from the local server."""
    served.files[name] = data
    return ModelFile(
        key="weights", what="test weights", flag="--weights", url=served.url(name), cache_name=name,
        digest=sha256(data) if digest == "auto" else digest, **kw,
    )  # fmt: skip


def leftovers(folder: Path) -> list[str]:
    """Temporary files a download left (the lock file stays on purpose)."""
    return sorted(p.name for p in folder.iterdir() if fileio.TMP_MARK in p.name)


@pytest.fixture
def umask_022():
    """The process umask at 022 (as on most systems), whatever the test runner had."""
    old = os.umask(0o022)
    fileio.umask.cache_clear()
    yield
    os.umask(old)
    fileio.umask.cache_clear()


def test_a_download_is_fsynced_then_renamed_with_the_umasks_mode(tmp_path, served, online, umask_022, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", f"{src} -> {dst}"))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    cache = tmp_path / "cache"
    got = fetch.fetch([remote(served)], cache, progress=False)

    target = cache / "model.bin"
    assert got == {"weights": target} and target.read_bytes() == DATA
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # mkstemp alone would leave 0600
    [staged] = [path for kind, path in events if kind == "fsync" and fileio.TMP_MARK in path]
    order = [kind for kind, _ in events]
    assert order.index("fsync") < order.index("replace")  # on disk before it gets its name
    assert events[order.index("replace")] == ("replace", f"{staged} -> {target}")
    assert events[-1] == ("fsync", str(cache))  # and the folder entry flushed after the rename
    assert served.requests == ["model.bin"] and leftovers(cache) == []
    # Found from now on: no second request.
    assert fetch.fetch([remote(served)], cache, progress=False) == {"weights": target}
    assert served.requests == ["model.bin"]


def test_a_hash_mismatch_is_refused_and_leaves_nothing(tmp_path, served, online):
    cache = tmp_path / "cache"
    with pytest.raises(MissingWeightsError) as err:
        fetch.fetch([remote(served, digest="0" * 64)], cache, progress=False)
    msg = str(err.value)
    assert f"gave a file with hash {sha256(DATA)}, expected {'0' * 64}; not used" in msg
    assert msg.startswith("missing test weights model.bin (download failed: ")
    assert f"put it at {cache / 'model.bin'}" in msg and "--weights FILE" in msg
    assert not (cache / "model.bin").exists() and leftovers(cache) == []


def test_a_stalled_download_gives_up_and_leaves_nothing(tmp_path, served, online, monkeypatch):
    f = remote(served, digest=None)
    monkeypatch.setattr(fetch, "DOWNLOAD_TIMEOUT", 1.0)
    served.hold = threading.Event()  # the server stops half-way and never finishes in time
    with pytest.raises(MissingWeightsError, match=r"\(download failed: http://127.0.0.1:\d+/model.bin: timed out\)"):
        fetch.fetch([f], tmp_path / "cache", progress=False)
    served.hold.set()
    assert not (tmp_path / "cache" / "model.bin").exists() and leftovers(tmp_path / "cache") == []


def test_a_second_fetch_waits_for_the_first_and_downloads_nothing(tmp_path, served, online):
    cache = tmp_path / "cache"
    f = remote(served)
    served.hold = threading.Event()
    results: dict[str, Path] = {}

    def run(name: str) -> None:
        results[name] = fetch.fetch([f], cache, progress=False)["weights"]

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert served.started.wait(10)  # the first download is half-way, holding the lock
    second = threading.Thread(target=run, args=("second",))
    second.start()
    time.sleep(0.5)
    assert second.is_alive() and not (cache / "model.bin").exists()  # waiting on the lock, not downloading
    served.hold.set()
    first.join(10)
    second.join(10)
    assert results == {"first": cache / "model.bin", "second": cache / "model.bin"}
    assert served.requests == ["model.bin"]  # one download for both
    assert (cache / "model.bin").read_bytes() == DATA and leftovers(cache) == []


def test_what_a_killed_download_left_is_removed_before_the_next(tmp_path, served, online):
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / f".model.bin{fileio.TMP_MARK}dead"
    stale.write_bytes(b"half")
    fetch.fetch([remote(served)], cache, progress=False)
    assert not stale.exists() and (cache / "model.bin").read_bytes() == DATA


def test_offline_is_decided_once_per_process_and_only_when_a_file_is_missing(tmp_path, served, monkeypatch):
    monkeypatch.delenv("AUTOLABEL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probes: list[list[str]] = []

    def probe(hosts, timeout=fetch.PROBE_TIMEOUT):
        probes.append(list(hosts))
        return "nothing answers"

    monkeypatch.setattr(fetch, "probe", probe)
    fetch.reset_offline()
    try:
        there = tmp_path / "given.bin"
        there.write_bytes(b"x")
        local = ModelFile("weights", "test weights", "--weights", path=there)
        assert fetch.fetch([local], tmp_path / "cache") == {"weights": there}
        assert probes == []  # nothing missing: no probe
        for _ in range(3):
            with pytest.raises(MissingWeightsError, match=r"^missing test weights model.bin \(nothing answers\)"):
                fetch.fetch([remote(served)], tmp_path / "cache", progress=False)
        assert fetch.offline() and fetch.offline_reason() == "nothing answers"
        assert probes == [[served.base]]  # once, with the host the missing file comes from
        assert served.requests == []
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the variables need no probe
        assert fetch.offline_reason() == "HF_HUB_OFFLINE=1" and len(probes) == 1
    finally:
        fetch.reset_offline()


def test_the_probe_is_quick_and_any_answer_counts(served):
    assert fetch.probe([served.base]) is None  # a 404 is an answer
    import socket

    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        start = time.perf_counter()
        why = fetch.probe([f"http://127.0.0.1:{silent.getsockname()[1]}"], timeout=0.5)
        assert time.perf_counter() - start < 2
        assert why is not None and "cannot be reached" in why and "timed out" in why
        assert fetch.probe([served.base, f"http://127.0.0.1:{silent.getsockname()[1]}"], timeout=0.5) is None
    finally:
        silent.close()


def test_offline_one_line_names_every_missing_file_at_once(tmp_path, served):
    """AUTOLABEL_OFFLINE=1 (as in every test): no request, no probe, one line for all."""
    given = tmp_path / "nope.pth"
    files = [
        remote(served, "a.bin"),
        ModelFile("hub_file", "hub weights", "--hub-weights", hub=Hub("autolabel-tests/w", "model.safetensors")),
        ModelFile("snapshot", "Hugging Face model autolabel-tests/m", "--hf-model", hub=Hub("autolabel-tests/m"),
                  folder=True),
        ModelFile("config", "model config", "--model-config", path=given),
    ]  # fmt: skip
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as err:
        fetch.fetch(files, tmp_path / "cache", progress=False)
    assert time.perf_counter() - start < 1.5
    msg = str(err.value)
    assert "\n" not in msg and served.requests == []
    assert msg.startswith(f"model config: {given} does not exist (given by --model-config); ")
    assert "missing 3 model files (AUTOLABEL_OFFLINE=1): test weights a.bin: download " in msg
    assert f"put it at {tmp_path / 'cache' / 'a.bin'}, or pass --weights FILE" in msg
    assert "hub weights: run `hf download autolabel-tests/w model.safetensors`, or pass --hub-weights FILE" in msg
    assert "run `hf download autolabel-tests/m`, or pass --hf-model FOLDER" in msg


def test_the_hub_copy_is_used_when_the_download_fails_and_its_hash_is_checked(tmp_path, served, online, monkeypatch):
    hub_file = tmp_path / "hub" / "ckpt.pth"
    hub_file.parent.mkdir()
    hub_file.write_bytes(DATA)
    calls = []

    def hub_download(hub, progress):
        calls.append(hub)
        return hub_file

    monkeypatch.setattr(fetch, "_hub_download", hub_download)
    f = ModelFile(
        "weights", "test weights", "--weights", url=served.url("gone.pth"), cache_name="ckpt.pth",
        digest=sha256(DATA), hub=Hub("org/gd", "ckpt.pth"),
    )  # fmt: skip
    assert fetch.fetch([f], tmp_path / "cache", progress=False) == {"weights": hub_file}
    assert served.requests == ["gone.pth"] and calls == [Hub("org/gd", "ckpt.pth")]
    assert not (tmp_path / "cache" / "ckpt.pth").exists()

    hub_file.write_bytes(b"tampered")
    wrong = f"{hub_file} \\(test weights ckpt.pth\\) has hash {sha256(b'tampered')}"
    with pytest.raises(MissingWeightsError, match=wrong):
        fetch.fetch([f], tmp_path / "cache", progress=False)


def test_a_failed_download_and_hub_name_both_reasons(tmp_path, served, online, monkeypatch):
    def hub_download(hub, progress):
        raise fetch._Failed(f"{hub.repo_id} cannot be reached (LocalEntryNotFoundError)")

    monkeypatch.setattr(fetch, "_hub_download", hub_download)
    f = ModelFile(
        "weights", "test weights", "--weights", url=served.url("gone.pth"), cache_name="ckpt.pth",
        digest="0" * 64, hub=Hub("org/gd", "ckpt.pth"),
    )  # fmt: skip
    with pytest.raises(MissingWeightsError) as err:
        fetch.fetch([f], tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert msg.startswith("missing test weights ckpt.pth (download failed: ")
    assert "HTTP 404" in msg and "; hub: org/gd cannot be reached (LocalEntryNotFoundError)): download " in msg
    assert "run `hf download org/gd ckpt.pth`" in msg


def _hub_cache(repo_id: str, files: dict[str, bytes], commit: str = "c0ffee") -> Path:
    """A repo in the tests' Hugging Face cache (HF_HOME): refs/main -> snapshots/<commit>/<files>."""
    from huggingface_hub import constants

    # Never the user's own cache: conftest points HF_HOME at a temporary folder before the hub is imported.
    assert Path(constants.HF_HUB_CACHE).is_relative_to(os.environ["HF_HOME"])
    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def test_locate_finds_hub_files_and_snapshots_without_network_and_identity_names_them(tmp_path):
    snapshot = _hub_cache("autolabel-tests/locate", {"pytorch_model.bin": DATA, "config.json": b"{}"}, "ab" * 20)
    cache = tmp_path / "cache"
    # A hub file by its fallback name (timm: model.safetensors, else pytorch_model.bin).
    hub = Hub("autolabel-tests/locate", "model.safetensors", fallbacks=("pytorch_model.bin",))
    weights = ModelFile("w", "w", hub=hub)
    folder = ModelFile("m", "m", hub=Hub("autolabel-tests/locate", allow=("*.json",)), folder=True)
    absent = ModelFile("x", "x", hub=Hub("autolabel-tests/absent", "model.safetensors"))
    assert fetch.locate(weights, cache) == snapshot / "pytorch_model.bin"
    assert fetch.locate(folder, cache) == snapshot
    assert fetch.locate(absent, cache) is None
    digests = DigestCache(tmp_path / "digests")
    assert fetch.identity(weights, snapshot / "pytorch_model.bin", digests) == sha256(DATA)
    assert fetch.identity(folder, snapshot, digests) == f"autolabel-tests/locate@{'ab' * 20}"
    # Our cache before the hub cache.
    ours = ModelFile("w", "w", cache_name="pytorch_model.bin", hub=weights.hub)
    (cache / "pytorch_model.bin").parent.mkdir(parents=True)
    (cache / "pytorch_model.bin").write_bytes(b"ours")
    assert fetch.locate(ours, cache) == cache / "pytorch_model.bin"


def test_a_hub_cache_copy_with_the_right_hash_is_used_as_is(tmp_path):
    snapshot = _hub_cache("autolabel-tests/gd", {"ckpt.pth": DATA})
    f = ModelFile(
        "weights", "test weights", "--weights", url="https://example.invalid/ckpt.pth", cache_name="ckpt.pth",
        digest=sha256(DATA), hub=Hub("autolabel-tests/gd", "ckpt.pth"),
    )  # fmt: skip
    assert fetch.fetch([f], tmp_path / "cache") == {"weights": snapshot / "ckpt.pth"}  # offline: no download needed
    assert not (tmp_path / "cache" / "ckpt.pth").exists()
    bad = ModelFile("weights", "test weights", "--weights", digest="0" * 64, hub=Hub("autolabel-tests/gd", "ckpt.pth"))
    with pytest.raises(MissingWeightsError, match="has hash .* expected 0000.*; not used: delete it"):
        fetch.fetch([bad], tmp_path / "cache")


def test_git_blob_digest_matches_git(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"hello\n")
    assert fetch.file_digest(f, "0" * 40) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    assert fetch.file_digest(f, "0" * 64) == sha256(b"hello\n")


def test_the_hub_command_can_be_pasted_into_a_shell():
    import shlex

    words = shlex.split(Hub("org/model", revision="my branch", allow=("*.json", "*.txt")).command())
    assert words == ["hf", "download", "org/model", "--revision", "my branch", "--include", "*.json", "*.txt"]
    assert shlex.split(Hub("org/m", "a b.pth").command()) == ["hf", "download", "org/m", "a b.pth"]


def test_discover_offline_names_both_weights_in_one_line_within_seconds(tmp_path):
    """The issue's case: nothing cached, offline; before, one file per run after 24-57 s of hub retries."""
    import timm  # noqa: F401  (imported before timing: what is timed is the fetch, not the import)

    from autolabel.config import load_config
    from autolabel.labelers import create_labeler

    mc = load_config(None, {"model.base_model": "discover", "model.device": "cpu"}).model
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as err:
        create_labeler(mc, str(tmp_path / "cache"), progress=False)
    assert time.perf_counter() - start < 2.0
    msg = str(err.value)
    assert msg.startswith("missing 2 model files (AUTOLABEL_OFFLINE=1): discovery backbone weights for ")
    assert "run `hf download timm/vit_small_patch16_224.dino model.safetensors`, or pass --backbone-weights" in msg
    assert "run `hf download timm/convnext_base.fb_in22k model.safetensors`, or pass --classifier-weights" in msg


def test_unreachable_hosts_make_the_run_one_line_without_any_hub_call(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from autolabel.cli import app

    monkeypatch.delenv("AUTOLABEL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(fetch, "probe", lambda hosts, timeout=3.0: f"{hosts[0]} cannot be reached (no route)")
    monkeypatch.setattr(fetch, "_hub_download", lambda *a: pytest.fail("no hub download when offline"))
    fetch.reset_offline()
    try:
        make_product(tmp_path / "videos", "mug", None, {"a.mp4": 3})
        args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--base-model", "discover", "-q"]
        result = CliRunner().invoke(app, args)
    finally:
        fetch.reset_offline()
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert "missing 2 model files (https://huggingface.co cannot be reached (no route)): " in lines[0]
