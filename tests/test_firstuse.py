"""First use and daily use as a new user meets them: the repository, locks, other tools' files (issue 25)."""

from __future__ import annotations

import multiprocessing
import stat
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autolabel.errors import OutputError
from autolabel.fileio import LOCK_SUFFIX, FolderLock, lock_path, waiting_lock
from tests.conftest import FakeLabeler, make_h264, make_product

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_has_the_license_its_metadata_names():
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_cvat_zip_unzips_readable_to_everyone(tmp_path):
    from autolabel.datasets.formats.cvat import CVAT_XML, cvat_zip

    (tmp_path / "a.zip").write_bytes(cvat_zip("<annotations/>"))
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        (info,) = zf.infolist()
        assert info.filename == CVAT_XML and stat.S_IMODE(info.external_attr >> 16) == 0o644
    assert cvat_zip("<annotations/>") == cvat_zip("<annotations/>")  # still the same bytes each time


def test_a_lock_file_is_removed_when_its_command_ends(tmp_path):
    folder = tmp_path / "dataset" / "mug"
    with FolderLock(folder, "run"):
        assert lock_path(folder).is_file()
        with pytest.raises(OutputError, match=r"in use by autolabel run \(PID"):
            FolderLock(folder, "merge").acquire()
    assert not lock_path(folder).exists()
    with waiting_lock(tmp_path / f"model.pth{LOCK_SUFFIX}"):
        assert (tmp_path / f"model.pth{LOCK_SUFFIX}").is_file()
    assert list(tmp_path.iterdir()) == [tmp_path / "dataset"]
    assert not list((tmp_path / "dataset").iterdir())


def _count(path: str, times: int) -> None:
    lock = Path(path + LOCK_SUFFIX)
    for _ in range(times):
        with waiting_lock(lock):
            n = int(Path(path).read_text())
            time.sleep(0.001)
            Path(path).write_text(str(n + 1))


def test_removing_lock_files_keeps_the_lock_exclusive(tmp_path):
    """Processes that open the lock file just before its holder removes it never hold a lock beside another."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_count, args=(str(counter), 40)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    assert counter.read_text() == "120"  # no lost update: one holder at a time
    assert not Path(str(counter) + LOCK_SUFFIX).exists()


# --- the CLI as a new user meets it ---------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch):
    """run labels with FakeLabeler (two planted boxes a frame), as the crash tests do."""
    import autolabel.labelers

    monkeypatch.setattr(autolabel.labelers, "create_labeler", lambda *a, **k: FakeLabeler())


def run_args(tmp_path: Path, *more: str) -> list[str]:
    return ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--no-report", *more]


def test_help_shows_defaults_plain_metavars_one_spelling_and_a_version():
    from autolabel import __version__
    from autolabel.cli import app

    shown = runner.invoke(app, ["run", "--help"], terminal_width=100)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())  # wrapped lines joined
    for expected in (
        "--frame-rate INTEGER Keep every Nth frame (0, N, 2N, ...). [default: 30]",
        "--val-fraction FLOAT Share of frames in the validation split. [default: 0.2]",
        "--box-threshold FLOAT Keep a box scoring above this. [default: 0.35]",
        "--report / --no-report Write report.html per dataset. [default: --report]",
        "--epochs INTEGER With --train: training epochs. [default: 100",
        "--dedup FLOAT Drop a frame this similar (0-1) to the last kept one, e.g. 0.98; 0: off. [default: off]",
    ):
        assert expected in text, expected
    assert "<bool>" not in text and "--frame_rate" not in text and "(30)" not in text
    train = " ".join(runner.invoke(app, ["train", "--help"], terminal_width=100).output.split())
    assert "--imgsz INTEGER Training image size. [default: 640" in train
    assert "--batch INTEGER Training batch size. [default: 16" in train
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"autolabel {__version__}"


def test_every_option_of_every_command_says_what_it_does():
    import typer

    from autolabel.cli import app

    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        for param in sub.params:
            if getattr(param, "hidden", False):
                continue
            assert (param.help or "").strip(), f"{name} {param.opts} has no description"


def test_the_seeds_frame_rate_spelling_still_works(tmp_path, fake):
    from autolabel.cli import app

    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 9})
    result = runner.invoke(app, [*run_args(tmp_path), "--frame_rate", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert "frames 3 (" in result.stdout


def test_max_frames_says_what_it_left_out_and_a_rerun_says_up_to_date(tmp_path, fake):
    from autolabel.cli import app

    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 20, "b.mp4": 10})
    args = [*run_args(tmp_path), "--frame-rate", "2", "--max-frames", "3", "-q"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "--max-frames: 6 of the videos' 15 sampled frames chosen; 9 left out (not labeled)" in first.stdout
    assert "frames/s" in first.stdout
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "up to date: nothing new to label" in again.stdout and "frames/s" not in again.stdout


def test_a_failed_product_says_its_error_once(tmp_path, fake):
    from autolabel.cli import app

    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 4})
    make_product(tmp_path / "videos", "bad", '{"mug": ', {"a.mp4": 4})
    result = runner.invoke(app, [*run_args(tmp_path), "-q"])
    assert result.exit_code == 1
    assert result.stderr.count("ontology.json") == 1 and "ontology.json" not in result.stdout
    assert "  bad: FAILED, see the error above" in result.stdout


def test_closest_names_are_shared_words_or_near_spellings_never_shared_letters():
    from autolabel.ontology import closest_names

    coco = ["person", "surfboard", "carrot", "skateboard", "keyboard", "cell phone", "cup", "dining table", "tv"]
    assert closest_names("cardboard box", coco) == []
    assert closest_names("dark tumbler", coco) == []
    assert closest_names("mobile phone", coco) == ["cell phone"]
    assert closest_names("persn", coco) == ["person"]
    assert closest_names("TV monitor", coco) == ["tv"]
    assert closest_names("coffee cup", coco)[0] == "cup"


def test_a_caption_a_closed_set_yolo_does_not_know_lists_its_classes(tmp_path):
    """yolo11n.yaml: the real architecture with random weights, classes named 0..79 (built offline).

    With the real checkpoint's names: tests/test_ultralytics_labeler.py.
    """
    from autolabel.cli import app

    make_product(tmp_path / "videos", "box", {"cardboard box": "box"}, {"a.mp4": 2})
    args = [*run_args(tmp_path), "--base-model", "ultralytics", "--base-weights", "yolo11n.yaml", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--image-size", "64"])
    assert result.exit_code == 1
    line = result.stderr
    assert "caption 'cardboard box' names none of yolo11n.yaml's 80 classes (its classes: 0, 1, 2, 3," in line
    assert "78, 79); a closed-set checkpoint finds only its own classes" in line
    assert "labeling on the CPU, slower than on a GPU" in line and "several seconds" not in line  # a small model


def test_merge_names_root_writes_its_report_and_says_when_a_product_is_in_use(tmp_path, fake, monkeypatch):
    from autolabel.cli import app

    missing = runner.invoke(app, ["merge", "--root", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "give the folder that holds the product datasets with --root" in missing.stderr
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 4})
    assert runner.invoke(app, [*run_args(tmp_path), "-q"]).exit_code == 0
    merged = runner.invoke(app, ["merge", "--root", str(tmp_path / "ds"), "-q"])
    assert merged.exit_code == 0, merged.output
    assert (tmp_path / "ds" / "merged" / "report.html").is_file() and "report: " in merged.stdout
    state = tmp_path / "ds" / "mug" / ".autolabel" / "state.json"
    state.write_text(state.read_text().replace('"complete": true', '"complete": false'))  # as while it is labeled
    with FolderLock(tmp_path / "ds" / "mug", "run"):
        busy = runner.invoke(app, ["merge", "--root", str(tmp_path / "ds"), "--no-report"])
    assert busy.exit_code == 1 and "in use by autolabel run (PID" in busy.stderr, busy.stderr


def test_ray_flags_without_the_ray_engine_are_an_error(tmp_path):
    from autolabel.cli import app

    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2})
    for flag, value in (("--actors", "2"), ("--ray-address", "auto")):
        result = runner.invoke(app, [*run_args(tmp_path), flag, value])
        assert result.exit_code == 2 and f"{flag} is for --engine ray (engine: local)" in result.stderr


def test_a_truncated_recording_says_so(tmp_path):
    from autolabel.errors import InputError
    from autolabel.sampling import probe_video

    video = make_h264(tmp_path / "clip.mp4", frames=30)  # the index (moov) at the end, as phones write it
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(InputError, match=r"clip.mp4: cannot open video \(.*\): truncated \(a copy or recording"):
        probe_video(video)


def test_hand_edits_of_dataset_files_are_kept_and_named_and_a_second_label_edit_keeps_the_first(tmp_path, fake):
    from autolabel.cli import app

    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 10})
    args = [*run_args(tmp_path), "--frame-rate", "2", "--format", "yolo,voc,coco", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    ds = tmp_path / "ds" / "mug"
    made = {name: (ds / name).read_bytes() for name in ("train.txt", "data.yaml", "coco_val.json")}
    for name in made:
        (ds / name).write_text("edited by hand\n")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    text = " ".join(again.stdout.split())
    assert "rewrote 3 dataset files edited by hand since autolabel wrote them" in text
    assert "coco_val.json, data.yaml, train.txt" in text
    for name, data in made.items():
        assert (ds / name).read_bytes() == data
        assert (ds / ".autolabel" / "edited" / name).read_text() == "edited by hand\n"
    quiet = runner.invoke(app, args)
    assert "edited by hand" not in quiet.stdout  # nothing was edited since: nothing said
    # A label file edited twice: the first edit is kept too, not overwritten by the second.
    label = ds / "labels" / "a_000000.txt"
    for edit in ("0 0.5 0.5 0.1 0.1\n", "0 0.4 0.4 0.2 0.2\n"):
        label.write_text(edit)
        assert runner.invoke(app, args).exit_code == 0
    assert (ds / ".autolabel" / "edited" / "labels" / "a_000000.txt").read_text() == "0 0.4 0.4 0.2 0.2\n"
    assert (ds / ".autolabel" / "edited" / "earlier" / "1" / "labels" / "a_000000.txt").read_text() == (
        "0 0.5 0.5 0.1 0.1\n"
    )


def test_exporting_again_keeps_what_the_user_put_into_the_export(tmp_path, fake):
    import json

    from autolabel.cli import app
    from autolabel.export import MARK

    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 6})
    assert runner.invoke(app, [*run_args(tmp_path), "--frame-rate", "2", "-q"]).exit_code == 0
    out = tmp_path / "exports" / "yolo"
    args = ["export", str(tmp_path / "ds" / "mug"), "--to", "yolo", "-o", str(out), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    written = json.loads((out / MARK).read_text())["files"]
    assert "classes.txt" in written and MARK not in written
    (out / "NOTES.txt").write_text("mine\n")
    (out / "runs" / "exp" / "weights").mkdir(parents=True)
    (out / "runs" / "exp" / "weights" / "best.pt").write_bytes(b"trained")
    (out / "runs" / "empty").mkdir()
    (out / "classes.txt").write_text("edited\n")  # the export's own file: written again
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "kept 2 files of yours from the earlier export (e.g. NOTES.txt)" in again.stdout
    assert (out / "NOTES.txt").read_text() == "mine\n"
    assert (out / "runs" / "exp" / "weights" / "best.pt").read_bytes() == b"trained"
    assert (out / "runs" / "empty").is_dir()
    assert (out / "classes.txt").read_text() == "mug\n"
    mark = json.loads((out / MARK).read_text())
    assert "NOTES.txt" not in mark["files"]  # still the user's on the next export
    mark["files"].remove("classes.txt")  # as if the user had put a file where the export now writes one
    (out / MARK).write_text(json.dumps(mark))
    clash = runner.invoke(app, args)
    assert clash.exit_code == 1 and "classes.txt: was not written by the earlier export" in clash.stderr
    assert (out / "NOTES.txt").read_text() == "mine\n"  # nothing changed


def test_run_finishes_the_whole_flow_with_train_flags_quietly(tmp_path, fake, monkeypatch):
    """run --merge --train takes train's flags; -q training prints a few lines, no colour codes, no Ray Tune noise."""
    import warnings

    import yaml

    from autolabel.cli import app

    monkeypatch.chdir(tmp_path)
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 12})
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.yaml").write_text("workers: 0\nplots: false\ndevice: cpu\nproject: runs\n")
    refused = runner.invoke(app, ["run", "--epochs", "1"])
    assert refused.exit_code == 2 and "--epochs is for --train" in refused.stderr
    args = ["run", "--frame-rate", "2", "--no-report", "--merge", "--train", "-q", "--model", "yolo11n.yaml"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, [*args, "--epochs", "1", "--imgsz", "64", "--batch", "4"])
    assert result.exit_code == 0, result.output
    trained = yaml.safe_load((tmp_path / "runs" / "autolabel" / "args.yaml").read_text())
    assert (trained["model"], trained["epochs"], trained["imgsz"], trained["batch"]) == ("yolo11n.yaml", 1, 64, 4)
    assert "best weights: " in result.stdout and "\x1b[" not in result.output
    assert len(result.output.splitlines()) < 25, result.output  # Ultralytics' argument and layer tables: 88 lines
    assert not [w for w in caught if "get_trial_id" in str(w.message)]


RAY_DRIVER = """
import importlib.abc, importlib.machinery, importlib.util, json, os, sys
from pathlib import Path

repo = Path(sys.argv[1])


class EditableHook(importlib.abc.MetaPathFinder):
    # As an editable install (pip install -e) finds autolabel: a finder after every path entry.
    def find_spec(self, name, path=None, target=None):
        if name == "autolabel":
            init = repo / "autolabel" / "__init__.py"
            return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        return None


sys.path = [p for p in sys.path if Path(p or ".").resolve() != repo]
sys.meta_path.insert(sys.meta_path.index(importlib.machinery.PathFinder) + 1, EditableHook())
import ray

from autolabel.engines.ray_engine import worker_env

ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", runtime_env=worker_env())


@ray.remote
def where():
    import autolabel

    return getattr(autolabel, "__file__", None)


print(json.dumps(ray.get(where.remote())))
ray.shutdown()
"""


def test_ray_workers_import_autolabel_when_run_beside_a_folder_named_autolabel(tmp_path):
    """Item 3: from the clone's parent (it holds ``autolabel/``), Ray's workers used to import that folder."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("ray")
    (tmp_path / "parent" / "autolabel" / "videos").mkdir(parents=True)  # a clone: no __init__.py at its root
    (tmp_path / "driver.py").write_text(RAY_DRIVER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(REPO)],
        cwd=tmp_path / "parent", env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == str(REPO / "autolabel" / "__init__.py")


def test_a_missing_hub_file_says_where_hf_is_when_it_is_not_on_path(monkeypatch, tmp_path):
    import sys

    from autolabel.fetch import Hub, ModelFile, _missing

    f = ModelFile("w", "weights", "--w", hub=Hub("org/repo", "model.safetensors"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no hf there
    line = _missing([f], tmp_path, "offline")
    assert "run `hf download org/repo model.safetensors`, or pass --w FILE" in line
    if (Path(sys.executable).parent / "hf").is_file():
        assert line.endswith(f" (`hf` is not on PATH: it is {Path(sys.executable).parent / 'hf'})")
    (tmp_path / "hf").write_text("#!/bin/sh\n")
    (tmp_path / "hf").chmod(0o755)
    assert "not on PATH" not in _missing([f], tmp_path, "offline")  # activated: plain `hf download`


def test_make_says_how_to_reach_the_command():
    text = (REPO / "Makefile").read_text()
    assert "'source $(BIN)/activate' puts autolabel (and hf) on PATH" in text
    assert "autolabel --help' (or run $(BIN)/autolabel directly)" in text


def test_the_quickstart_products_are_the_bundled_clips_with_captions_yolo_knows():
    import json

    import yaml
    from ultralytics.utils import ROOT

    from autolabel.sources import discover_products

    coco = set(yaml.safe_load((ROOT / "cfg" / "datasets" / "coco.yaml").read_text())["names"].values())
    for product in discover_products(REPO / "examples" / "quickstart"):
        clip = product.folder / f"{product.name}.mp4"
        assert clip.resolve() == (REPO / "videos" / product.name / f"{product.name}.mp4").resolve()
        assert set(json.loads(product.ontology_path.read_text())) <= coco
