"""Plug-ins through entry points: one failing to import is one warning and the rest works; a taken name is refused."""

from __future__ import annotations

import logging
import sys

import pytest
from typer.testing import CliRunner

ENTRY_POINTS = """\
[autolabel.formats]
broken-format = no_such_module_anywhere:Format
yolo = fake_autolabel_plugin:Yolo
[autolabel.labelers]
broken-model = fake_autolabel_plugin:missing_name
grounding-dino = fake_autolabel_plugin:SPEC
"""


def _clear() -> None:
    import autolabel.cli
    from autolabel import plugins
    from autolabel.datasets import formats
    from autolabel.labelers import registry

    plugins._entry_points.cache_clear()
    formats.registry.cache_clear()
    registry.registry.cache_clear()
    autolabel.cli._app.cache_clear()


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """A distribution whose entry points fail to load or take built-in names (found on sys.path, as pip leaves it)."""
    dist = tmp_path / "fake_autolabel_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-autolabel-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    (tmp_path / "fake_autolabel_plugin.py").write_text(
        "from autolabel.datasets.formats.yolo import Yolo\n"
        "from autolabel.labelers.registry import BUILTIN\n"
        "SPEC = BUILTIN[0]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _clear()
    yield
    monkeypatch.undo()
    sys.modules.pop("fake_autolabel_plugin", None)
    _clear()


def test_broken_and_clashing_plugins_are_one_warning_each_and_the_rest_works(broken_plugins, caplog):
    from autolabel.datasets import formats
    from autolabel.labelers import registry

    with caplog.at_level(logging.WARNING, logger="autolabel"):
        names = formats.names()
        models = registry.names()
    assert names[:6] == ["yolo", "voc", "coco", "cvat", "label-studio", "ultralytics"]
    assert "broken-format" not in names and "broken-model" not in models
    assert models[:4] == ["grounding-dino", "ultralytics", "hf", "discover"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert any("'broken-format'" in m and "cannot be loaded (ModuleNotFoundError" in m for m in lines)
    assert any("'broken-model'" in m and "cannot be loaded (AttributeError" in m for m in lines)
    assert any("'yolo'" in m and "is taken" in m and "refused" in m for m in lines)
    assert any("'grounding-dino'" in m and "is taken" in m for m in lines)
    assert all("fake-autolabel-plugin 0.1" in m for m in lines)  # each names the distribution


def test_help_works_with_a_broken_plugin(broken_plugins):
    from autolabel.cli import app

    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0, result.output
    assert "--base-model" in result.output and "broken-model" not in result.output
