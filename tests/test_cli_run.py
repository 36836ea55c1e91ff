"""``autolabel run`` end to end through the CLI, with a tiny random Grounding DINO."""

import os
import shutil
import xml.etree.ElementTree as ET

import pytest
import yaml
from typer.testing import CliRunner

from autolabel.cli import app
from tests.conftest import make_product

runner = CliRunner()


def invoke(args):
    return runner.invoke(app, args)


def test_run_writes_a_dataset_ultralytics_accepts_after_a_move(tmp_path, tiny_flags, monkeypatch):
    videos = tmp_path / "videos"
    make_product(videos, "box", {"cardboard box": "box", "a hand": "hand"}, {"one.mp4": 20, "two.MKV": 7})
    make_product(videos, "cup", {"dark tumbler": "cup"}, {"one.mp4": 9})
    out = tmp_path / "dataset"
    result = invoke(["run", "-i", str(videos), "-o", str(out), "--frame-rate", "3", *tiny_flags])
    assert result.exit_code == 0, result.stderr
    assert "Summary" in result.stdout and "box ->" in result.stdout and "frames/s" in result.stdout
    box = out / "box"
    names = sorted(p.name for p in (box / "images").iterdir())
    assert names == [f"one_{i:06d}.jpg" for i in range(0, 20, 3)] + [f"two_{i:06d}.jpg" for i in (0, 3, 6)]
    assert len(list((out / "cup" / "images").iterdir())) == 3
    for label in (box / "labels").iterdir():
        for line in label.read_text().splitlines():
            cls, *xywh = line.split()
            assert cls in {"0", "1"}
            assert all(0.0 <= float(v) <= 1.0 for v in xywh)
    for xml in (box / "annotations").iterdir():
        assert ET.parse(xml).getroot().find("size/width").text == "96"

    # Move the dataset elsewhere and check it from yet another working directory.
    moved = tmp_path / "elsewhere" / "box_copy"
    shutil.copytree(box, moved)
    shutil.rmtree(out)
    monkeypatch.chdir(tmp_path)
    os.makedirs("cwd", exist_ok=True)
    monkeypatch.chdir("cwd")
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(str(moved / "data.yaml"))
    assert info["names"] == {0: "box", 1: "hand"} and info["nc"] == 2
    for split in ("train", "val"):
        listed = (moved / f"{split}.txt").read_text().split()
        assert listed and all((moved / line).is_file() for line in listed)
    assert yaml.safe_load((moved / "run.yaml").read_text())["model"]["base_model"] == "grounding-dino"


def test_rerun_skips_finished_work(tmp_path, tiny_flags):
    videos = tmp_path / "videos"
    make_product(videos, "box", {"box": "box"}, {"a.mp4": 6})
    args = ["run", "-i", str(videos), "-o", str(tmp_path / "ds"), "--frame-rate", "2", *tiny_flags]
    assert invoke(args).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds" / "box" / "images").iterdir()}
    again = invoke(args)
    assert again.exit_code == 0 and "new this run 0" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ds" / "box" / "images").iterdir()} == before


@pytest.mark.parametrize(("flag", "message"), [("0", "must be >= 1, got 0"), ("-3", "must be >= 1, got -3")])
def test_bad_frame_rate(tmp_path, flag, message):
    result = invoke(["run", "-i", str(tmp_path), "--frame-rate", flag])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"autolabel: error: sampling.frame_rate (--frame-rate) {message}"


def test_missing_weights_is_one_line_exit_2(tmp_path):
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 2})
    result = invoke(["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--quiet"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "missing Grounding DINO weights groundingdino_swint_ogc.pth" in lines[0]
    assert "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/" in lines[0]
    assert os.environ["AUTOLABEL_CACHE"] in lines[0] and "--weights" in lines[0]


def test_weights_flag_to_a_missing_file(tmp_path):
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 2})
    result = invoke(["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--weights", "nope.pth", "-q"])
    assert result.exit_code == 2 and "nope.pth does not exist (given by --weights)" in result.stderr


def test_not_a_checkpoint(tmp_path, tiny_gdino):
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 2})
    fake = tmp_path / "fake.pth"
    fake.write_bytes(b"not a checkpoint")
    result = invoke(
        [
            "run",
            "-i",
            str(tmp_path / "videos"),
            "-o",
            str(tmp_path / "ds"),
            "--weights",
            str(fake),
            "--model-config",
            str(tiny_gdino.model_config),
            "--text-encoder",
            str(tiny_gdino.text_encoder),
            "-q",
        ]
    )
    assert result.exit_code == 1 and "fake.pth: not a loadable PyTorch checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_product_fails_the_run_but_not_the_others(tmp_path, tiny_flags):
    videos = tmp_path / "videos"
    make_product(videos, "good", {"box": "box"}, {"a.mp4": 4})
    make_product(videos, "bad", '{\n "box": "box"\n "cup": 1}', {"a.mp4": 4})
    result = invoke(["run", "-i", str(videos), "-o", str(tmp_path / "ds"), "--frame-rate", "2", *tiny_flags])
    assert result.exit_code == 1
    assert "bad/ontology.json:3:2: invalid JSON: Expecting ',' delimiter" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(list((tmp_path / "ds" / "good" / "images").iterdir())) == 2


def test_output_path_is_a_file(tmp_path, tiny_flags):
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 2})
    (tmp_path / "out").write_text("x")
    result = invoke(["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "out"), *tiny_flags])
    assert result.exit_code == 1 and "output path exists and is a file" in result.stderr


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sampling:\n  frame_rat: 3\n")
    result = invoke(["run", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "unknown key 'sampling.frame_rat' (did you mean 'frame_rate'?)" in result.stderr


def test_no_product_folders(tmp_path):
    result = invoke(["run", "-i", str(tmp_path)])
    assert result.exit_code == 1 and "no product folders" in result.stderr
    result = invoke(["run", "-i", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "input folder does not exist" in result.stderr


def test_whole_flow_run_merge_train(tmp_path, tiny_flags, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 8})
    make_product(tmp_path / "videos", "cup", {"cup": "cup"}, {"a.mp4": 8})
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.yaml").write_text(
        "model: yolo11n.yaml\nepochs: 1\nimgsz: 64\nbatch: 4\nworkers: 0\nplots: false\ndevice: cpu\nproject: runs\n"
    )
    result = invoke(["run", "--frame-rate", "2", "--merge", "--train", *tiny_flags])
    assert result.exit_code == 0, result.stderr
    merged = tmp_path / "dataset" / "merged"
    assert len(list((merged / "images").iterdir())) == 8
    assert "merged box, cup -> dataset/merged" in result.stdout
    assert f"best weights: {tmp_path / 'runs' / 'autolabel' / 'weights' / 'best.pt'}" in result.stdout
    assert (tmp_path / "runs" / "autolabel" / "weights" / "best.pt").is_file()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_fps_must_be_finite(tmp_path, value):
    result = invoke(["run", "-i", str(tmp_path), "--fps", value])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"autolabel: error: flags: sampling.fps: expected a finite number, got {value}"


@pytest.mark.parametrize("base_model", ["grounding-dino", "ultralytics"])
def test_unknown_device_is_one_line_before_any_model_loads(tmp_path, base_model):
    make_product(tmp_path / "videos", "box", {"box": "box"}, {"a.mp4": 2})
    args = ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "ds"), "--base-model", base_model]
    result = invoke([*args, "--base-weights", "yolo11n.yaml", "--device", "banana", "-q"])
    assert result.exit_code == 2
    expected = "model.device (--device) must be auto, cpu, cuda, cuda:N or mps, got 'banana'"
    assert result.stderr.strip() == f"autolabel: error: {expected}"
    assert not (tmp_path / "ds").exists()


def test_sigterm_is_an_interrupt_with_exit_143(tmp_path):
    """SIGTERM (docker stop, a batch scheduler) during a command: the Ctrl-C path, one line, exit 143."""
    import errno
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # the command blocks reading it until we write: a slow command that needs no model
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autolabel", "run", "--config", str(fifo), "-i", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = None
    try:
        deadline = time.monotonic() + 10
        while writer is None:  # opening the write end succeeds once the command has the fifo open
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO and time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=1)
        except subprocess.TimeoutExpired:
            # The kernel may hand SIGTERM to one of the child's helper threads (OpenBLAS starts some), which
            # leaves the main thread asleep in read(): end the read, and Python runs the handler right after it.
            os.close(writer)
            writer = None
            _, stderr = proc.communicate(timeout=10)
    finally:
        if writer is not None:
            os.close(writer)
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, stderr
    assert stderr == "autolabel: terminated (SIGTERM); finished frames are kept, re-run the same command to resume\n"


def test_the_sigterm_handler_lives_only_while_a_command_runs(tmp_path):
    import signal

    before = signal.getsignal(signal.SIGTERM)
    assert invoke(["run", "-i", str(tmp_path / "missing")]).exit_code == 1
    assert signal.getsignal(signal.SIGTERM) is before
