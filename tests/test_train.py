"""Training with Ultralytics, offline: from an architecture yaml, and from the real yolo11n.pt."""

import time

import onnx
import pytest
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.errors import ConfigError
from autolabel.train import load_train_settings
from tests.conftest import YOLO11N
from tests.test_merge import label

runner = CliRunner()


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    ds = label(tmp)
    assert runner.invoke(app, ["merge", "--root", str(ds), "-q"]).exit_code == 0
    return ds / "merged" / "data.yaml"


def train_args(data, tmp_path, model):
    return [
        "train",
        "--data",
        str(data),
        "--model",
        model,
        "--epochs",
        "1",
        "--imgsz",
        "64",
        "--batch",
        "4",
        "--device",
        "cpu",
        "--name",
        "t",
        "--config",
        str(tmp_path / "train.yaml"),
        "-q",
    ]


def test_one_epoch_from_scratch_and_onnx_export(merged, tmp_path):
    (tmp_path / "train.yaml").write_text(f"project: {tmp_path / 'runs'}\nworkers: 0\nplots: false\n")
    start = time.perf_counter()
    result = runner.invoke(app, [*train_args(merged, tmp_path, "yolo11n.yaml"), "--export", "onnx"])
    print(f"train from yolo11n.yaml: {time.perf_counter() - start:.1f} s")
    assert result.exit_code == 0, result.stderr
    best = tmp_path / "runs" / "t" / "weights" / "best.pt"
    assert f"best weights: {best}" in result.stdout
    assert "validation mAP50 " in result.stdout and "mAP50-95" in result.stdout
    exported = best.with_suffix(".onnx")
    assert f"exported: {exported}" in result.stdout
    onnx.checker.check_model(onnx.load(str(exported)))


@pytest.mark.skipif(not YOLO11N.is_file(), reason="../shared/data/weights/yolo11n.pt not present")
def test_one_epoch_from_the_real_checkpoint(merged, tmp_path):
    (tmp_path / "train.yaml").write_text(f"project: {tmp_path / 'runs'}\nworkers: 0\nplots: false\n")
    start = time.perf_counter()
    result = runner.invoke(app, train_args(merged, tmp_path, str(YOLO11N)))
    print(f"train from yolo11n.pt: {time.perf_counter() - start:.1f} s")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "runs" / "t" / "weights" / "best.pt").is_file()


def test_missing_checkpoint_name_is_one_line(merged, tmp_path):
    (tmp_path / "train.yaml").write_text("epochs: 1\n")
    result = runner.invoke(app, train_args(merged, tmp_path, "yolo11s.pt"))
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "yolo11s.pt: checkpoint not found locally" in result.stderr
    assert "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11s.pt" in result.stderr


def test_unknown_train_setting(merged, tmp_path):
    (tmp_path / "train.yaml").write_text("epoch: 1\n")
    result = runner.invoke(app, train_args(merged, tmp_path, "yolo11n.yaml"))
    assert (
        result.exit_code == 2 and "unknown Ultralytics train setting 'epoch' (did you mean 'epochs'?)" in result.stderr
    )


def test_not_a_checkpoint(merged, tmp_path):
    (tmp_path / "train.yaml").write_text("epochs: 1\n")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    result = runner.invoke(app, train_args(merged, tmp_path, str(bad)))
    assert result.exit_code == 1 and "bad.pt: not an Ultralytics checkpoint" in result.stderr, result.stderr


def test_a_train_config_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_bytes(b"epochs: 1\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"train.yaml:2:10: not UTF-8 text \(byte 0xe9\)"):
        load_train_settings(path, {})
