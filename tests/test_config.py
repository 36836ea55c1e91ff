from pathlib import Path

import pytest
import yaml

from autolabel.config import RunConfig, load_config, to_dict
from autolabel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_matches_the_code_defaults():
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert data == to_dict(RunConfig())


def test_default_yaml_comments_every_knob():
    for line in (ROOT / "configs" / "default.yaml").read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"uncommented setting: {line}"


def test_unknown_key_names_the_closest_valid_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  box_treshold: 0.3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model.box_treshold' \(did you mean 'box_threshold'\?\)"):
        load_config(path)


def test_types_and_ranges_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sampling:\n  frame_rate: fast\n")
    with pytest.raises(ConfigError, match="sampling.frame_rate: expected int, got 'fast'"):
        load_config(path)
    with pytest.raises(ConfigError, match="must be >= 1, got 0"):
        load_config(None, {"sampling.frame_rate": 0})
    with pytest.raises(ConfigError, match="dataset.formats"):
        load_config(None, {"dataset.formats": "yolo,pdf"})


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  box_threshold: 0.3\n  text_threshold: 0.2\n")
    cfg = load_config(path, {"model.box_threshold": 0.5, "model.device": None})
    assert cfg.model.box_threshold == 0.5
    assert cfg.model.text_threshold == 0.2
    assert cfg.model.device == "auto"


def test_bad_yaml_gives_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  box_threshold: [0.3\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+:\d+: invalid YAML"):
        load_config(path)


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    anchors = ", ".join(f"&a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 9))
    path = tmp_path / "bomb.yaml"
    path.write_text(f"input: [&a0 [x, x], {anchors}]\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml:1:9: invalid YAML: anchors and aliases") as err:
        load_config(path)
    assert len(str(err.value).replace(str(path), "")) < 120


def test_echoed_values_are_capped(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("input: [" + ", ".join(["abcdef"] * 2000) + "]\n")
    with pytest.raises(ConfigError, match="input: expected str, got") as err:
        load_config(path)
    assert len(str(err.value).replace(str(path), "")) < 120
    with pytest.raises(ConfigError, match="model.base_model must be one of") as err:
        load_config(None, {"model.base_model": "x" * 5000})
    assert len(str(err.value)) < 200
    path.write_text("x" * 1000 + ": 1\n")
    with pytest.raises(ConfigError, match="unknown key") as err:
        load_config(path)
    assert len(str(err.value).replace(str(path), "")) < 250


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("model:\n  box_threshold: 0.3\nmodel:\n  device: cpu\n", ":3:1: invalid YAML: key 'model' appears twice"),
        ("model:\n  device: cpu\n  device: cuda\n", ":3:3: invalid YAML: key 'device' appears twice (first on line 2)"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path, text, where):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}{where}")


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"output: out\ninput: caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:2:11: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_a_control_character_in_a_config_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: out\ninput: a\x07b\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    expected = "invalid YAML: unacceptable character #x0007: special characters are not allowed"
    assert str(err.value) == f"{path}:2:9: {expected}"


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("\ufeffinput: café\n".encode())
    assert load_config(path).input == "café"


FLOAT_KEYS = [
    "sampling.fps",
    "model.box_threshold",
    "model.text_threshold",
    "model.nms_iou",
    "dataset.val_fraction",
    "filters.min_box_size",
    "filters.max_box_size",
    "filters.overlap_iou",
]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_infinity_are_refused_in_files(tmp_path, key, value):
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: {value}\n")
    with pytest.raises(ConfigError, match=rf"c.yaml: {key}: expected a finite number, got -?(nan|inf)"):
        load_config(path)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_infinity_are_refused_in_flags(key, value):
    with pytest.raises(ConfigError, match=rf"flags: {key}: expected a finite number, got (nan|inf)"):
        load_config(None, {key: value})


def test_an_int_past_the_float_range_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"sampling:\n  fps: {10**400}\n")
    with pytest.raises(ConfigError, match=r"sampling.fps: expected a finite number, got 1000"):
        load_config(path)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_valid_devices(device):
    assert load_config(None, {"model.device": device}).model.device == device


@pytest.mark.parametrize("device", ["banana", "", "0", "cuda:", "cuda:x", "cuda:0,1", "CPU", "cpu "])
def test_invalid_devices_are_refused(device):
    with pytest.raises(ConfigError) as err:
        load_config(None, {"model.device": device})
    assert str(err.value) == f"model.device (--device) must be auto, cpu, cuda, cuda:N or mps, got {device!r}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  max_size: -10\n", "model.max_size must be >= 32, got -10"),
        ("model:\n  max_size: 31\n", "model.max_size must be >= 32, got 31"),
        ("model:\n  image_size: 0\n", "model.image_size must be >= 32 and <= model.max_size, got 0 / 1333"),
        ("model:\n  image_size: 2000\n", "model.image_size must be >= 32 and <= model.max_size, got 2000 / 1333"),
        ("model:\n  batch_size: 0\n", "model.batch_size must be >= 1 (or null for automatic), got 0"),
        ("dataset:\n  jpeg_quality: 0\n", "dataset.jpeg_quality must be in 1..100, got 0"),
        ("dataset:\n  jpeg_quality: 101\n", "dataset.jpeg_quality must be in 1..100, got 101"),
        ("sampling:\n  frame_rate: 0\n  fps: 2\n", "sampling.frame_rate (--frame-rate) must be >= 1, got 0"),
    ],
)
def test_int_settings_out_of_range_name_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input: 2024-13-45\n", ":1:8: invalid YAML: month must be in 1..12"),
        ("dataset:\n  seed: " + "9" * 5000 + "\n", ":2:9: invalid YAML: Exceeds the limit (4300 digits)"),
    ],
)
def test_values_yaml_cannot_build_are_one_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}{message}")


def test_huge_ints_are_capped_in_messages(tmp_path):
    for key in ("dataset.jpeg_quality", "model.image_size", "model.batch_size", "sampling.frame_rate"):
        value = 10**400 if key in ("dataset.jpeg_quality", "model.image_size") else -(10**400)
        with pytest.raises(ConfigError) as err:
            load_config(None, {key: value})
        assert key in str(err.value) and len(str(err.value)) < 160, str(err.value)
