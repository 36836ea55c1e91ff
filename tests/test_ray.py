"""``--engine ray`` on a local Ray instance (2 CPUs): the same datasets as ``--engine local``, file for file."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import FakeLabeler, make_h264, make_image, make_product, run_config
from tests.crashpoint import crash_cli as cli
from tests.crashpoint import dataset_files
from tests.test_discover import discover_args
from tests.test_frames import FROZEN, TURNING, make_turning_product

REPO = Path(__file__).resolve().parents[1]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
# Two labeler actors and two decode tasks fit in the session's 2 CPUs; items of one batch (4 frames).
RAY = {"engine.name": "ray", "engine.actor_cpus": 0.5, "engine.decode_cpus": 0.5, "engine.item_batches": 1}
RAY_FLAGS = ["--engine", "ray"]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    import ray

    # Workers of drivers that join from another folder (the CLI tests) import this checkout's autolabel.
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), before]))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def make_input(root: Path, broken: bool = False) -> Path:
    """Two products: H.264 videos with a keyframe every 8 frames (split into several items), a photo, mp4v.

    ``broken`` adds what a run must report and go past: a video cut in half (its frames
    before the cut are labeled, then it fails), a file that is no video, a product whose
    ontology does not parse.
    """
    videos = root / "videos"
    make_product(videos, "mug", {"red mug": "mug", "hand": "hand"}, {"b.mp4": 9})
    make_h264(videos / "mug" / "a.mp4", frames=60, gop=8)
    make_image(videos / "mug" / "still.jpg", size=(120, 90))
    make_product(videos, "cup", {"cup": "cup"}, {})
    make_h264(videos / "cup" / "turn.mp4", frames=40, gop=8, size=(64, 48))
    if broken:
        import cv2
        import numpy as np

        whole = root / "whole.avi"
        writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
        for i in range(40):
            writer.write(np.full((64, 96, 3), i * 5, np.uint8))
        writer.release()
        (videos / "cup" / "cut.avi").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        (videos / "cup" / "broken.mp4").write_bytes(b"not a video")
        make_product(videos, "bad", "{", {"x.mp4": 3})
    return videos


def run(root: Path, factory=FakeLabeler, **settings):
    """Labels ``root/videos`` into ``root/dataset`` (batches of 4); returns the results and every file written."""
    from autolabel.pipeline import run as run_pipeline

    config = run_config(root, **settings)
    config.model.batch_size = 4
    results = run_pipeline(config, factory)
    return results, dataset_files(root / "dataset")


def both(root: Path, factory=FakeLabeler, **settings):
    """The same run with each engine into the same output path (run.yaml holds it): results and files."""
    local = run(root, factory, **settings)
    shutil.rmtree(root / "dataset")
    ray = run(root, factory, **RAY, **settings)
    return local, ray


def test_split_cuts_between_batches_at_keyframes():
    from autolabel.engines.ray_engine import split_kept

    kept = list(range(0, 64, 2))  # stride 2: a batch of 4 kept frames spans 8 frames
    parts = split_kept(kept, set(range(0, 64, 16)), size=4, batch=4)
    assert [i for p in parts for i in p] == kept  # every frame once, in order
    assert [p[0] for p in parts] == [0, 16, 32, 48]  # each part starts at a keyframe, on a batch boundary
    parts = split_kept(kept, {0}, size=8, batch=4)  # no keyframe to cut at: cut at twice the size
    assert parts == [kept[:16], kept[16:]]
    assert split_kept([], {0}, size=4, batch=4) == []


@needs_ray
@pytest.mark.parametrize(
    "settings",
    [{}, {"sampling.dedup": 0.98, "sampling.max_frames": 12}, {"tracking.enabled": True, "tracking.stride": 3}],
    ids=["stride+errors", "dedup+max-frames", "track"],
)
def test_ray_writes_the_local_dataset(ray_session, tmp_path, settings):
    from autolabel.datasets.dataset import Dataset
    from autolabel.datasets.journal import read_journal
    from autolabel.datasets.state import State
    from autolabel.engines.ray_engine import plan_items
    from autolabel.resume import plan
    from autolabel.sources import discover_products

    make_input(tmp_path, broken=not settings)
    if "sampling.dedup" in settings:  # a product held still, then turned: near-duplicates to journal, never label
        make_turning_product(tmp_path, {"clip.mp4": FROZEN + TURNING})
    (local, expected), (ray, files) = both(tmp_path, **settings)
    assert [r.errors for r in ray] == [r.errors for r in local]
    assert files == expected
    assert [r.new_frames for r in ray] == [r.new_frames for r in local]
    if not settings:  # one product refused, one with two failed sources, one whole; the good ones written
        assert [len(r.errors) for r in ray] == [1, 2, 0] and ray[1].new_frames and ray[2].new_frames
        assert "cut.avi: video ends at frame" in ray[1].errors[1] and any(
            k.startswith("cup/images/cut_") for k in files
        )
    journal = [r.name for r in read_journal(tmp_path / "dataset" / "mug")]
    assert len(journal) == len(set(journal))
    if "tracking.enabled" in settings:
        assert sum(r.new_probes for r in ray) > 0
        return
    if settings:
        assert sum(r.duplicate_frames for r in ray) > 0
        return
    # The long video went out as several items, each from a keyframe, and came back in order.
    config = run_config(tmp_path, output=str(tmp_path / "fresh"), **RAY)
    mug = next(p for p in discover_products(tmp_path / "videos") if p.name == "mug")
    job = plan(Dataset(tmp_path / "fresh" / mug.slug), mug, config, False, {})
    items = [i for i in plan_items(0, job, config, State("product"), 4) if i.source.path.name == "a.mp4"]
    assert len(items) > 3 and [i.last for i in items] == [False] * (len(items) - 1) + [True]
    assert all(i.indices[0] % 8 == 0 for i in items)
    assert [n for n in journal if n.startswith("a_")] == [f"a_{i:06d}" for i in range(0, 60, 2)]


class KillingLabeler(FakeLabeler):
    """Planted boxes; the first actor to reach its second batch is killed (ray.kill) while labeling it."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def label(self, images, ontology):
        if self.calls == 1:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))  # once in the whole run
            except FileExistsError:
                pass
            else:
                import ray

                ray.kill(ray.get_runtime_context().current_actor, no_restart=False)
                time.sleep(60)
        return super().label(images, ontology)


@needs_ray
def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(ray_session, tmp_path):
    from autolabel.datasets.journal import read_journal

    make_input(tmp_path)
    _, expected = run(tmp_path)
    shutil.rmtree(tmp_path / "dataset")
    marker = tmp_path / "killed"
    results, files = run(tmp_path, functools.partial(KillingLabeler, str(marker)), **RAY, **{"engine.actors": 2})
    assert marker.exists()  # an actor was killed holding a batch: Ray restarted it and ran the batch again
    assert all(r.ok for r in results) and files == expected
    names = [r.name for r in read_journal(tmp_path / "dataset" / "mug")]
    assert len(names) == len(set(names))


@needs_ray
def test_a_killed_ray_driver_resumes_to_the_same_files(ray_session, tmp_path):
    make_input(tmp_path)
    args = ("run", "-i", "../videos", "-o", "dataset", "--frame-rate", "2", "--no-report", "-q")
    on_ray = (*args, "--engine", "ray", "--ray-address", ray_session)
    (tmp_path / "local").mkdir()
    assert cli(tmp_path / "local", *args).returncode == 0
    expected = dataset_files(tmp_path / "local" / "dataset")
    (tmp_path / "clean").mkdir()
    done = cli(tmp_path / "clean", *on_ray, count=tmp_path / "points")
    assert done.returncode == 0, done.stderr
    assert dataset_files(tmp_path / "clean" / "dataset") == expected
    points = int((tmp_path / "points").read_text())
    # Killed half-way, resumed with Ray; killed later, resumed by the local engine: the engine is no setting.
    for fraction, resume in ((0.5, on_ray), (0.8, args)):
        work = tmp_path / f"killed-{fraction}"
        work.mkdir()
        died = cli(work, *on_ray, crash_at=round(points * fraction))
        assert died.returncode == 137, died.stderr
        assert (work / "dataset" / "mug").is_dir() and dataset_files(work / "dataset") != expected
        again = cli(work, *resume)
        assert again.returncode == 0, again.stderr
        assert dataset_files(work / "dataset") == expected


@needs_ray
def test_tiny_grounding_dino_on_ray_writes_the_local_dataset(ray_session, tmp_path, tiny_flags):
    from typer.testing import CliRunner

    from autolabel.cli import app

    make_product(tmp_path / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {})
    make_h264(tmp_path / "videos" / "mug" / "a.mp4", frames=24, gop=8)
    files = []
    for engine in ("local", "ray"):
        shutil.rmtree(tmp_path / "dataset", ignore_errors=True)
        args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "dataset"), "--frame-rate", "3"]
        done = CliRunner().invoke(app, [*args, *tiny_flags, "--engine", engine])
        assert done.exit_code == 0, done.output
        files.append(dataset_files(tmp_path / "dataset"))
    assert files[0] == files[1] and any(name.endswith(".jpg") for name in files[0])


@needs_ray
def test_discovered_classes_on_ray_number_as_in_the_local_dataset(ray_session, tmp_path, tiny_discover):
    """Open-ended classes (discover, no ontology) come back by name and are numbered by the driver's writer."""
    from typer.testing import CliRunner

    from autolabel.cli import app

    make_product(tmp_path / "videos", "mug", None, {})
    make_h264(tmp_path / "videos" / "mug" / "a.mp4", frames=24, gop=8)
    files = []
    for engine in ("local", "ray"):
        shutil.rmtree(tmp_path / "dataset", ignore_errors=True)
        args = discover_args(tiny_discover, tmp_path / "videos", tmp_path / "dataset")
        done = CliRunner().invoke(app, [*args, "--engine", engine, "--batch-size", "2", "--no-report"])
        assert done.exit_code == 0, done.output
        files.append(dataset_files(tmp_path / "dataset"))
    differ = sorted(k for k in set(files[0]) | set(files[1]) if files[0].get(k) != files[1].get(k))
    assert not differ, differ
    names = yaml.safe_load(files[0]["mug/data.yaml"])["names"]
    assert len(names) >= 2  # several classes discovered, numbered in the same order by both engines


def test_engine_ray_without_ray_says_how_to_install_it(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 3})
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(fake.parent), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "autolabel", "run", "-i", "videos", "-o", "dataset", "--engine", "ray", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "autolabel: error: --engine ray needs Ray, which is not installed: pip install 'autolabel[ray]' "
        "(or pip install 'ray[data]')"
    ]
    assert not (tmp_path / "dataset").exists()


def test_stream_passes_over_a_failed_source_and_an_abandoned_product():
    from autolabel.datasets.records import FrameRecord
    from autolabel.engines.ray_engine import Done, RayStream
    from autolabel.events import Labeled, SourceEnd, SourceFailed
    from autolabel.sources import Source

    a, b = Source(Path("a.mp4"), "a", True), Source(Path("b.mp4"), "b", True)

    def frame(source: Source, i: int) -> Labeled:
        return Labeled(FrameRecord(f"{source.stem}_{i:06d}", source.stem, i, 0.0, 8, 8, []), b"jpeg")

    rows = [
        Done(0, [frame(a, 0), frame(b, 0)], "x"),
        Done(0, [SourceFailed(a, "a.mp4: cannot decode frame 2")], "x"),
        Done(0, [frame(a, 4), frame(b, 2), SourceEnd(a), SourceEnd(b)], "y"),  # a later part of the failed source
        Done(1, [frame(a, 0), frame(a, 2)], "x"),
        Done(1, [frame(a, 4), SourceEnd(a)], "y"),
        Done(2, [frame(b, 0), SourceEnd(b)], "x"),
    ]
    jobs = [object(), object(), object()]
    stream = RayStream(iter({"done": d} for d in rows), {id(job): k for k, job in enumerate(jobs)})
    names = [
        getattr(e, "record", e).name if isinstance(e, Labeled) else type(e).__name__ for e in stream.events(jobs[0])
    ]
    assert names == ["a_000000", "b_000000", "SourceFailed", "b_000002", "SourceEnd"]  # nothing of a after it failed
    first = stream.events(jobs[1])
    assert next(first).record.name == "a_000000"
    first.close()  # the product failed while writing: the rest of it is passed over
    assert [e.record.name for e in stream.events(jobs[2]) if isinstance(e, Labeled)] == ["b_000000"]
    assert stream.status() == {"actors": 2}


def test_cuda_on_a_cluster_without_gpus_is_one_clear_error(tmp_path):
    from types import SimpleNamespace

    from autolabel.engines.ray_engine import RayEngine
    from autolabel.errors import ConfigError

    engine = RayEngine.__new__(RayEngine)  # no Ray started: only the resource plan is under test
    engine.config = run_config(tmp_path, **{"model.device": "cuda"})
    engine.ray = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0})
    with pytest.raises(ConfigError, match="the Ray cluster has no GPU"):
        engine._resources()  # before the fix: one GPU asked per actor, and Ray waits forever
    engine.ray = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0, "GPU": 2.0})
    assert engine._resources() == (2, {"num_cpus": 1.0, "num_gpus": 1.0})
    engine.config = run_config(tmp_path, **{"model.device": "cuda", "engine.actors": 3})
    with pytest.raises(ConfigError, match="engine.actors is 3, but the Ray cluster's 2 GPU"):
        engine._resources()  # a third GPU actor would wait forever


def test_a_ray_address_where_nothing_answers_is_one_clear_error():
    import socket

    from autolabel.engines.ray_engine import check_reachable
    from autolabel.errors import ConfigError

    with socket.socket() as listener:  # a port that was free a moment ago: nothing listens there now
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConfigError, match="nothing answers there"):
            check_reachable(address, timeout=2)
    with pytest.raises(ConfigError, match="expected auto, HOST:PORT or ray://HOST:PORT"):
        check_reachable("my-cluster")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        check_reachable(f"127.0.0.1:{listener.getsockname()[1]}")  # something answers: left to Ray
    check_reachable(None)
    check_reachable("auto")
