"""Training with Ultralytics, offline: from an architecture yaml, and from the real yolo11n.pt."""

import logging
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.errors import ConfigError
from autolabel.train import load_train_settings, pick_train_device
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
    assert "missing Ultralytics checkpoint yolo11s.pt (AUTOLABEL_OFFLINE=1)" in result.stderr
    assert "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11s.pt and put it at" in result.stderr
    assert "or pass --model FILE, or start from an architecture yaml such as yolo11n.yaml" in result.stderr


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


@pytest.fixture
def checked(tmp_path):
    """Train args whose data and settings pass every check: a run that is refused never starts training."""
    (tmp_path / "images").mkdir()
    (tmp_path / "data.yaml").write_text("train: images\nval: images\nnames: {0: box}\n")
    (tmp_path / "train.yaml").write_text(f"project: {tmp_path / 'runs'}\nworkers: 0\nplots: false\n")
    args = ["train", "--data", str(tmp_path / "data.yaml"), "--model", "yolo11n.yaml", "--device", "cpu"]
    return [*args, "--config", str(tmp_path / "train.yaml"), "-q"]


def _flag(args, flag, value):
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
        return args
    return [*args, flag, value]


def refused(args, message, code=2):
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert result.stderr.startswith("autolabel: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr
    return result


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--imgsz", "0", "imgsz (--imgsz) must be an int >= 32, got 0"),
        ("--imgsz", "-640", "imgsz (--imgsz) must be an int >= 32, got -640"),
        ("--epochs", "0", "'epochs' must be >= 1"),
        ("--epochs", "-1", "'epochs' must be >= 1"),
        ("--batch", "0", "batch (--batch) must be an int >= 1, -1 (automatic) or a fraction of GPU memory in (0, 1)"),
        ("--batch", "-2", "batch (--batch) must be an int >= 1, -1"),
        ("--device", "banana", "--device must be cpu, mps, a CUDA index list (0 or 0,1), cuda, cuda:N or -1, got"),
        ("--device", "cuda:x", "--device must be cpu, mps"),
    ],
)
def test_bad_train_flags_are_refused_before_training(checked, tmp_path, flag, value, message):
    refused(_flag(checked, flag, value), message)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("degrees: .nan\n", "train.yaml: degrees must be a finite number, got nan"),
        ("lr0: .inf\n", "train.yaml: lr0 must be a finite number, got inf"),
        ("lr0: 2.0\n", "train.yaml: 'lr0=2.0' is an invalid value. Valid 'lr0' values are between 0.0 and 1.0."),
        ("epochs: many\n", "train.yaml: 'epochs=many' is of invalid type str"),
        ("batch: 1.5\n", "train.yaml: batch (--batch) must be an int >= 1"),
        ("imgsz: [640, 480]\n", "train.yaml: imgsz (--imgsz) must be an int >= 32, got [640, 480]"),
    ],
)
def test_bad_train_settings_are_refused_before_training(checked, tmp_path, text, message):
    (tmp_path / "train.yaml").write_text(f"project: {tmp_path / 'runs'}\n{text}")
    refused(checked, message)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("batch", [-1, 1, 64, 0.7])
def test_valid_batches(batch):
    assert load_train_settings(None, {"batch": batch})["batch"] == batch


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "data.yaml: not a dataset yaml: expected a mapping with train, val and names, got a list"),
        ("train: images\nnames: {0: box}\n", "data.yaml: not a dataset yaml: no 'val' key"),
        ("train: images\nval: images\n", "data.yaml: not a dataset yaml: no 'names' (or 'nc') key"),
        ("train: [images\n", "data.yaml:2:1: invalid YAML"),
    ],
)
def test_bad_data_yaml_is_refused_before_training(checked, tmp_path, text, message):
    (tmp_path / "data.yaml").write_text(text)
    refused(checked, message)
    assert not (tmp_path / "runs").exists()


def test_unknown_export_format_is_refused_before_training(checked, tmp_path):
    result = refused([*checked, "--export", "onnx", "--export", "nonsense"], "--export 'nonsense': not an ")
    assert "onnx, openvino" in result.stderr  # the formats come from Ultralytics
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [b"hello world\n", np.random.default_rng(0).bytes(5000)])
@pytest.mark.parametrize("name", ["x.pt", "x.jpg"])
def test_a_model_that_is_not_a_checkpoint_is_refused(checked, tmp_path, content, name):
    bad = tmp_path / name
    bad.write_bytes(content)
    refused(_flag(checked, "--model", str(bad)), f"{bad}: not an Ultralytics checkpoint", code=1)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("device", ["0", "0,1", "cuda", "cuda:0", "-1", 0, [0, 1]])
def test_ultralytics_device_forms_pass_the_format_check(device):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the message on a machine without CUDA")
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        pick_train_device(device)
    assert pick_train_device("cpu") == "cpu"


ROOT = Path(__file__).resolve().parents[1]


def test_the_packaged_train_defaults_equal_configs_train_yaml():
    packaged = ROOT / "autolabel" / "configs" / "train.yaml"
    assert packaged.read_text() == (ROOT / "configs" / "train.yaml").read_text()


def _info_logs(caplog):
    log = logging.getLogger("autolabel")
    log.addHandler(caplog.handler)  # the CLI's set-up may have stopped propagation to the root
    return log


def test_train_settings_come_from_the_cwd_else_the_package(tmp_path, monkeypatch, caplog):
    expected = yaml.safe_load((ROOT / "configs" / "train.yaml").read_text())
    monkeypatch.chdir(tmp_path)  # outside the project folder: the packaged defaults
    log = _info_logs(caplog)
    try:
        with caplog.at_level("INFO", logger="autolabel"):
            settings = load_train_settings(None, {"epochs": 3})
        packaged = ROOT / "autolabel" / "configs" / "train.yaml"
        assert f"train settings from {packaged}" in caplog.text
        assert settings["epochs"] == 3 and settings["degrees"] == expected["degrees"] == 10.0
        assert settings["mosaic"] == expected["mosaic"] and settings["close_mosaic"] == expected["close_mosaic"]

        (tmp_path / "configs").mkdir()  # a project folder's own configs/train.yaml comes first
        (tmp_path / "configs" / "train.yaml").write_text("degrees: 5.0\n")
        caplog.clear()
        with caplog.at_level("INFO", logger="autolabel"):
            settings = load_train_settings(None, {})
        assert "train settings from configs/train.yaml" in caplog.text
        assert settings["degrees"] == 5.0 and "mosaic" not in settings
    finally:
        log.removeHandler(caplog.handler)
