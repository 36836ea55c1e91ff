"""The labeler contract: every registered base model (the example plug-in's included) through the same checks.

Each is a tiny random model of its real architecture (Grounding DINO, a Hugging Face Grounding
DINO and OWLv2, YOLO11n, DINO ViT + ConvNeXt), made by the registry's own factory from a
``model:`` config on the CPU, with thresholds low enough that it finds boxes. The contract
(:class:`autolabel.labelers.base.Labeler`): BGR uint8 frames in, one ``sv.Detections`` per
frame, in order, with finite pixel boxes inside the frame, the ontology's class ids (or class
names, for open-ended classes) and confidences in [0, 1]; a frame's labels do not depend on
its batch or its batch-mates' sizes; ``describe()`` names the model and the precision used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv

from autolabel.config import load_config
from autolabel.labelers import registry
from autolabel.labelers.base import CLASS_NAME
from autolabel.ontology import Ontology
from tests.conftest import PLUGIN_LABELERS, random_yolo11n

BUILTIN = [spec.name for spec in registry.BUILTIN]
# Every base model, and hf twice: a Grounding DINO and an OWLv2 (their outputs are decoded apart).
# Base models of other plug-ins installed where the tests run, each with its settings (docs/PLUGINS.md):
# {"name": {"settings": {"model.box_threshold": 0.05, ...}, "synonyms": {...}, "distinct": {...}}}.
OTHERS: dict[str, dict] = json.loads(os.environ.get("AUTOLABEL_CONTRACT_LABELERS") or "{}")
CASES = ["grounding-dino", "ultralytics", "hf", "hf:owlv2", "discover", *PLUGIN_LABELERS, *OTHERS]
# Three captions, the third a synonym of the first: its boxes must take class 0, never its caption index 2 ...
TEXT_SYNONYMS = {"box": "box", "cup": "cup", "cardboard box": "box"}
# ... which they take when it names a class of its own (the same captions: the model sees the same prompt).
TEXT_DISTINCT = {"box": "box", "cup": "cup", "cardboard box": "carton"}
ATOL_PX, ATOL_SCORE = 1e-2, 1e-3


# The example plug-in registered for the whole module (tests/conftest.py: ``plugin``).
pytestmark = pytest.mark.usefixtures("plugin")


def scene(seed: int, height: int = 64, width: int = 96) -> np.ndarray:
    """A BGR frame: a gray gradient with a little noise, two saturated red squares and one of another colour."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(60, 180, width)[None, :, None] + rng.normal(0, 8, (height, width, 3))
    image = np.clip(ramp, 0, 255).astype(np.uint8)
    for color in [(30, 30, 230), (30, 30, 230), tuple(int(c) for c in rng.integers(0, 255, 3))]:
        side = int(rng.integers(max(2, min(height, width) // 6), max(3, min(height, width) // 3)))
        y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        image[y : y + side, x : x + side] = color
    return image


FRAMES = [scene(0), scene(1), scene(2)]
TALL = scene(3, 80, 60)


def slivers() -> list[np.ndarray]:
    """Thin frames, a blank one, and one with red blobs a pixel wide (boxes of next to no size)."""
    dots = np.full((64, 96, 3), 120, np.uint8)
    dots[10, 20] = (0, 0, 255)
    dots[30:50, 70] = (0, 0, 255)
    return [scene(5, 24, 300), scene(6, 300, 24), scene(7, 3, 120), np.zeros((64, 96, 3), np.uint8), dots]


@dataclass
class Case:
    """One base model under test: how it is configured, its labeler, and what the contract checks feed it."""

    name: str
    overrides: dict[str, Any]
    synonyms: dict[str, str]
    distinct: dict[str, str]
    reads_captions: bool = True
    labeler: Any = None
    alone: dict[int, sv.Detections] = field(default_factory=dict)
    _strict: Any = None

    def create(self, **more: Any):
        """The labeler the registry's factory makes from this ``model:`` config (plus ``more``)."""
        settings = {"model.base_model": self.name, "model.device": "cpu", **self.overrides, **more}
        mc = load_config(None, settings).model
        return registry.get(self.name).create(mc, None, False)

    def strict(self):
        """A second labeler, thresholds 1 (the journal keeps no box either) and fp16 asked for (the CPU runs fp32)."""
        if self._strict is None:
            more = {"model.box_threshold": 1.0, "model.keep_threshold": 1.0, "model.text_threshold": 1.0}
            more["model.precision"] = "fp16"
            self._strict = self.create(**more)
        return self._strict

    def label_alone(self, index: int, image: np.ndarray, ontology: Ontology) -> sv.Detections:
        """``image`` labeled in a batch of its own (remembered by ``index``)."""
        if index not in self.alone:
            (self.alone[index],) = self.labeler.label([image], ontology)
        return self.alone[index]


def random_yolo(folder: Path) -> Path:
    """conftest's random YOLO11n, saved as a checkpoint."""
    model = random_yolo11n()
    folder.mkdir(parents=True, exist_ok=True)
    model.save(str(folder / "random-yolo11n.pt"))
    return folder / "random-yolo11n.pt"


def make_case(name: str, request, tmp_path_factory) -> Case:
    if name == "grounding-dino":
        files = request.getfixturevalue("tiny_gdino")
        paths = {"weights": files.weights, "model_config": files.model_config, "text_encoder": files.text_encoder}
        overrides = {f"model.{k}": str(v) for k, v in paths.items()}
        overrides |= {"model.image_size": 64, "model.max_size": 200}
        return Case(name, overrides | {"model.box_threshold": 0.0, "model.text_threshold": 0.0}, *_text())
    if name.startswith("hf"):
        from tests.test_hf import _grounding, _owlv2

        folder = tmp_path_factory.mktemp("hf")
        model = _owlv2(folder / "owlv2") if name == "hf:owlv2" else _grounding(folder / "gdino")
        overrides = {"model.hf_model": str(model), "model.box_threshold": 0.0, "model.text_threshold": 0.0}
        return Case("hf", overrides, *_text())
    if name == "ultralytics":
        weights = random_yolo(tmp_path_factory.mktemp("yolo"))
        overrides = {"model.base_weights": str(weights), "model.image_size": 160, "model.box_threshold": 0.3}
        # A random model's classes are named "0" ... "79": each caption names one, three captions a class.
        synonyms = {str(i): f"class {i % 3}" for i in range(80)}
        return Case(name, overrides, synonyms, {str(i): f"class {i}" for i in range(80)})
    if name == "discover":
        models = request.getfixturevalue("tiny_discover")
        overrides = {
            "model.discover.backbone": "test_vit",
            "model.discover.backbone_weights": str(models["backbone"]),
            "model.discover.classifier": "test_convnext",
            "model.discover.classifier_weights": str(models["mug"]),  # most crops: "coffee mug", the third caption
            "model.image_size": 64,
            "model.max_size": 300,
        }
        synonyms = {"beer mug": "mug", "cup": "cup", "coffee mug": "mug"}
        return Case(name, overrides, synonyms, {"beer mug": "stein", "cup": "cup", "coffee mug": "coffee"})
    if name == "example-color":  # every box is the first class, whatever the captions say
        synonyms = {"red thing": "red", "blue thing": "blue", "crimson thing": "red"}
        distinct = {"red thing": "red", "blue thing": "blue", "crimson thing": "crimson"}
        return Case(name, {}, synonyms, distinct, reads_captions=False)
    if name in OTHERS:
        other = OTHERS[name]
        synonyms, distinct = other.get("synonyms", TEXT_SYNONYMS), other.get("distinct", TEXT_DISTINCT)
        return Case(name, other.get("settings", {}), synonyms, distinct, other.get("reads_captions", True))
    raise AssertionError(f"no contract case for base model {name!r}: add one to make_case")


def _text() -> tuple[dict[str, str], dict[str, str]]:
    return TEXT_SYNONYMS, TEXT_DISTINCT


@pytest.fixture(scope="module", params=CASES)
def case(request, plugin, tmp_path_factory) -> Case:
    name = request.param
    if name in PLUGIN_LABELERS and not plugin:
        pytest.skip("the example plug-in could not be installed")
    made = make_case(name, request, tmp_path_factory)
    made.labeler = made.create()
    return made


def assert_valid(detections: sv.Detections, image: np.ndarray, ontology: Ontology, open_classes: bool) -> None:
    """One frame's output as the pipeline needs it."""
    assert isinstance(detections, sv.Detections)
    height, width = image.shape[:2]
    n = len(detections)
    xyxy = detections.xyxy
    assert xyxy.shape == (n, 4) and np.isfinite(xyxy).all()
    assert (xyxy[:, 0] <= xyxy[:, 2]).all() and (xyxy[:, 1] <= xyxy[:, 3]).all(), xyxy
    assert (xyxy >= 0).all() and (xyxy[:, [0, 2]] <= width).all() and (xyxy[:, [1, 3]] <= height).all(), xyxy
    assert detections.confidence is not None and detections.confidence.shape == (n,)
    assert ((detections.confidence >= 0) & (detections.confidence <= 1)).all()
    assert detections.class_id is not None and detections.class_id.shape == (n,)
    names = detections.data.get(CLASS_NAME)
    if names is not None:  # open-ended classes: each box names its class
        assert open_classes and len(names) == n
        assert set(names) <= set(ontology.classes), (set(names), ontology.classes)
    else:
        assert ((detections.class_id >= 0) & (detections.class_id < len(ontology.classes))).all()


def classes_of(detections: sv.Detections, ontology: Ontology) -> list[str]:
    """Each box's class name (from its id, or its own name for open-ended classes)."""
    names = detections.data.get(CLASS_NAME)
    if names is not None:
        return [str(x) for x in names]
    return [ontology.classes[int(i)] for i in detections.class_id]


def assert_same(a: sv.Detections, b: sv.Detections, ontology: Ontology, what: str) -> None:
    assert len(a) == len(b), what
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=ATOL_PX, err_msg=what)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=ATOL_SCORE, err_msg=what)
    assert classes_of(a, ontology) == classes_of(b, ontology), what


def open_classes(case: Case) -> bool:
    return registry.get(case.name).open_classes


def test_the_registry_holds_exactly_the_base_models_tested(plugin):
    if not plugin:
        pytest.skip("the example plug-in could not be installed")
    expected = sorted([*BUILTIN, *PLUGIN_LABELERS, *OTHERS])
    untested = sorted(set(registry.names()) - set(expected))
    assert not untested, f"base models outside the contract: {untested} (add a case, or AUTOLABEL_CONTRACT_LABELERS)"
    assert sorted(registry.names()) == sorted({c.split(":")[0] for c in CASES}) == expected


def test_reading_every_spec_imports_nothing_heavy(request, plugin):
    """The CLI builds its flags from the specs: reading them (plug-ins' included) must not import the models."""
    import subprocess
    import sys

    code = (
        "import sys; from autolabel.labelers import registry; print(*registry.registry()); "
        "print(*[m for m in ('numpy', 'cv2', 'torch', 'supervision') if m in sys.modules])"
    )
    paths = [str(Path(__file__).resolve().parents[1])]
    if plugin:
        paths.append(str(request.getfixturevalue("example_plugin_target")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    names, heavy = done.stdout.split("\n")[:2]
    assert {*BUILTIN, *(PLUGIN_LABELERS if plugin else ())} <= set(names.split()) and heavy == "", done.stdout


def test_batched_equals_one_by_one(case):
    ontology = Ontology.from_mapping(case.synonyms)
    case.labeler.prepare(ontology)
    case.labeler.batch_size = len(FRAMES)
    batched = case.labeler.label(FRAMES, ontology)
    assert len(batched) == len(FRAMES)
    assert sum(len(d) for d in batched) > 0, "no boxes: the contract checks would see nothing"
    for i, (image, together) in enumerate(zip(FRAMES, batched, strict=True)):
        assert_valid(together, image, ontology, open_classes(case))
        assert_same(together, case.label_alone(i, image, ontology), ontology, f"{case.name}: frame {i}")


def test_labels_do_not_depend_on_batch_mates_or_their_sizes(case):
    ontology = Ontology.from_mapping(case.synonyms)
    case.labeler.batch_size = 4
    mixed = case.labeler.label([FRAMES[1], TALL, FRAMES[0]], ontology)
    alone = [case.label_alone(1, FRAMES[1], ontology), case.label_alone(-1, TALL, ontology)]
    alone.append(case.label_alone(0, FRAMES[0], ontology))
    for image, together, single in zip([FRAMES[1], TALL, FRAMES[0]], mixed, alone, strict=True):
        assert_valid(together, image, ontology, open_classes(case))
        assert_same(together, single, ontology, f"{case.name}: a {image.shape[1]}x{image.shape[0]} frame")
    assert len(alone[1]) > 0 or len(alone[0]) > 0


def test_slivers_and_blank_frames_give_valid_output(case):
    ontology = Ontology.from_mapping(case.synonyms)
    case.labeler.batch_size = 2
    frames = slivers()
    out = case.labeler.label(frames, ontology)
    assert len(out) == len(frames)
    for image, detections in zip(frames, out, strict=True):
        assert_valid(detections, image, ontology, open_classes(case))
    if case.name == "example-color":  # what it must find: nothing on the blank frame, the two thin blobs
        assert len(out[3]) == 0
        np.testing.assert_array_equal(out[4].xyxy[np.argsort(out[4].xyxy[:, 0])], [[20, 10, 21, 11], [70, 30, 71, 50]])


def test_a_synonym_takes_its_class_id_never_its_caption_index(case):
    synonyms, distinct = Ontology.from_mapping(case.synonyms), Ontology.from_mapping(case.distinct)
    assert synonyms.captions == distinct.captions and len(synonyms.classes) < len(distinct.classes)
    # Each caption's class in the ontology with synonyms, by its class in the one without.
    to_synonym = {
        distinct.classes[d]: synonyms.classes[s]
        for d, s in zip(distinct.caption_class, synonyms.caption_class, strict=True)
    }
    case.labeler.batch_size = 2
    with_synonyms = case.labeler.label(FRAMES[:2], synonyms)
    without = case.labeler.label(FRAMES[:2], distinct)
    renamed = []
    for image, a, b in zip(FRAMES[:2], with_synonyms, without, strict=True):
        assert_valid(a, image, synonyms, open_classes(case))
        assert_valid(b, image, distinct, open_classes(case))
        assert len(a) == len(b)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=ATOL_PX)
        assert classes_of(a, synonyms) == [to_synonym[c] for c in classes_of(b, distinct)]
        renamed += [c for c in classes_of(b, distinct) if to_synonym[c] != c]
    if case.reads_captions:  # boxes of a synonym whose caption index is not its class id were seen
        assert renamed, f"{case.name}: no box came from a synonym caption; the check saw nothing"


def test_no_box_above_a_threshold_of_one_is_an_empty_valid_output(case):
    if "box_threshold" not in registry.get(case.name).thresholds:
        pytest.skip(f"{case.name} reads no box threshold")
    ontology = Ontology.from_mapping(case.synonyms)
    out = case.strict().label(FRAMES[:1], ontology)
    assert len(out) == 1 and len(out[0]) == 0
    assert_valid(out[0], FRAMES[0], ontology, open_classes(case))


def test_describe_names_the_model_and_the_precision_used(case):
    described = case.labeler.describe()
    assert described["base_model"] == case.name
    assert described["precision"] == "fp32"  # on the CPU
    # fp16 asked for on the CPU is not what runs: the labeler says what does.
    assert case.strict().describe()["precision"] == "fp32"


@dataclass
class _Section:
    red_min: int = 150


def test_a_plugin_section_the_config_leaves_unset_has_its_defaults(monkeypatch):
    """A plug-in's own config section (BaseModel.section_type) was a KeyError in the fingerprint unless set."""
    from autolabel.labelers.registry import BaseModel, Option, section_of
    from autolabel.resume import fingerprint

    spec = BaseModel(
        "sectioned",
        "a plug-in with settings of its own",
        "autolabel.labelers.registry",  # a light module without validate(); nothing is labeled here
        (Option("--sectioned-red-min", "sectioned.red_min", int, "red above this"),),
        section="sectioned",
        section_type=_Section,
    )
    builtins = registry.registry()
    monkeypatch.setattr(registry, "registry", lambda: {**builtins, spec.name: spec})
    ontology = Ontology.from_mapping({"red thing": "red"})
    unset = load_config(None, {"model.base_model": "sectioned"})
    assert section_of(unset.model, "sectioned") == _Section()
    assert fingerprint(unset, ontology)["model"]["sectioned"] == {"red_min": 150}
    given = load_config(None, {"model.base_model": "sectioned", "model.sectioned.red_min": 120})
    assert fingerprint(given, ontology)["model"]["sectioned"] == {"red_min": 120}
