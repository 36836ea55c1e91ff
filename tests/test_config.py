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
