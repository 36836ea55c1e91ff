"""Shared fixtures: offline environment, synthetic media, a fake and a tiny real labeler."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
YOLO11N = SHARED / "weights" / "yolo11n.pt"


@pytest.fixture(autouse=True, scope="session")
def _offline_env(tmp_path_factory):
    """No network, no writes into the user's home: as on CI."""
    home = tmp_path_factory.mktemp("home")
    os.environ["AUTOLABEL_OFFLINE"] = "1"
    os.environ["AUTOLABEL_CACHE"] = str(home / "cache")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ["YOLO_CONFIG_DIR"] = str(home / "ultralytics")
    os.environ["HF_HOME"] = str(home / "huggingface")  # read when huggingface_hub is imported: lazily, after this
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    yield


def make_video(path: Path, frames: int = 30, fps: float = 10.0, size: tuple[int, int] = (96, 64)) -> Path:
    """Writes an mp4v video of a square moving across a gradient; frame i carries i in its colour."""
    import cv2

    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, :, 1] = np.linspace(0, 120, w, dtype=np.uint8)[None, :]
        x = (i * 3) % max(1, w - 20)
        img[10:30, x : x + 20] = (255, 255, 255)
        writer.write(img)
    writer.release()
    return path


def make_h264(
    path: Path, frames: int = 120, gop: int = 10, size: tuple[int, int] = (96, 64), rotation: int = 0, **options
) -> Path:
    """Writes an H.264 video with B-frames and a keyframe every ``gop`` frames (as phones do, about 1 s).

    Frame i shows a different pattern each (its index in binary as blocks), so frames can be told apart.
    ``rotation`` (degrees counterclockwise) goes into the display matrix, as phones filming in portrait do.
    """
    import av

    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "2", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            img = np.full((h, w, 3), 40, np.uint8)
            for bit in range(8):
                if i >> bit & 1:
                    img[(bit // 4) * 24 : (bit // 4) * 24 + 20, (bit % 4) * 24 : (bit % 4) * 24 + 20] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_image(path: Path, size: tuple[int, int] = (80, 60)) -> Path:
    """Writes a small still image."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), 90, np.uint8)
    img[5:25, 5:35] = (0, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def make_product(root: Path, name: str, ontology: dict | str | None = None, videos: dict | None = None) -> Path:
    """A product folder with videos ``{file name: frame count}`` and an ontology."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, frames in (videos if videos is not None else {"clip.mp4": 20}).items():
        make_video(folder / file_name, frames=frames)
    if ontology is not None:
        text = ontology if isinstance(ontology, str) else json.dumps(ontology)
        (folder / "ontology.json").write_text(text, encoding="utf-8")
    return folder


def run_config(tmp_path: Path, **overrides):
    """A run config over ``tmp_path/videos`` into ``tmp_path/dataset``: stride 2, no report; dotted overrides."""
    from autolabel.config import load_config

    base = {
        "input": str(tmp_path / "videos"),
        "output": str(tmp_path / "dataset"),
        "sampling.frame_rate": 2,
        "report": False,
    }
    base.update(overrides)
    return load_config(None, base)


class FakeLabeler:
    """Planted boxes: two per frame, one per class 0 and 1 (when present), fixed confidences."""

    batch_size = 4

    def __init__(self, fail_after_batches: int | None = None) -> None:
        self.calls = 0
        self.frames = 0
        self.fail_after_batches = fail_after_batches

    def prepare(self, ontology) -> None:
        pass

    def label(self, images: Sequence[np.ndarray], ontology) -> list[sv.Detections]:
        if self.fail_after_batches is not None and self.calls >= self.fail_after_batches:
            raise KeyboardInterrupt
        self.calls += 1
        self.frames += len(images)
        out = []
        n_classes = len(ontology.classes)
        for image in images:
            h, w = image.shape[:2]
            xyxy = np.array([[w * 0.1, h * 0.2, w * 0.5, h * 0.6], [w * 0.6, h * 0.1, w * 0.9, h * 0.9]], np.float32)
            class_id = np.array([0, min(1, n_classes - 1)])
            out.append(sv.Detections(xyxy=xyxy, class_id=class_id, confidence=np.array([0.9, 0.6], np.float32)))
        return out

    def describe(self) -> dict:
        return {"base_model": "fake"}


@pytest.fixture(scope="session")
def tiny_gdino(tmp_path_factory):
    """A tiny random Grounding DINO of the real architecture, written once per session."""
    from autolabel.labelers.gdino_random import write_random_grounding_dino

    return write_random_grounding_dino(tmp_path_factory.mktemp("tiny_gdino"))


@pytest.fixture
def tiny_flags(tiny_gdino) -> list[str]:
    """CLI flags that run the tiny model at a small input size."""
    return [
        "--weights",
        str(tiny_gdino.weights),
        "--model-config",
        str(tiny_gdino.model_config),
        "--text-encoder",
        str(tiny_gdino.text_encoder),
        "--image-size",
        "128",
        "--batch-size",
        "4",
        "--no-report",
        "--quiet",
    ]


@pytest.fixture(scope="session")
def tiny_discover(tmp_path_factory) -> dict[str, Path]:
    """Random tiny timm models: a ViT backbone (safetensors) and 21,841-class classifiers (PyTorch files).

    ``classifier``: random; ``mug_classifier``: the same with its head biased to "coffee mug".
    """
    import timm
    import torch
    from safetensors.torch import save_file

    from autolabel.labelers.discover import imagenet_names

    root = tmp_path_factory.mktemp("tiny_discover")
    torch.manual_seed(0)
    backbone = timm.create_model("test_vit", pretrained=False, num_classes=0)
    save_file(backbone.state_dict(), str(root / "backbone.safetensors"))
    classifier = timm.create_model("test_convnext", pretrained=False, num_classes=21841)
    torch.save(classifier.state_dict(), root / "classifier.pth")
    state = classifier.state_dict()
    state["head.fc.bias"][imagenet_names(21841).index("coffee mug")] += 50.0
    torch.save(state, root / "mug_classifier.pth")
    return {
        "backbone": root / "backbone.safetensors",
        "classifier": root / "classifier.pth",
        "mug": root / "mug_classifier.pth",
    }


def read_state(root: Path) -> dict | None:
    """A dataset's state file as the JSON object on disk (None when there is none)."""
    from autolabel.datasets.layout import STATE

    path = root / STATE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_state(root: Path, state: dict) -> None:
    """Writes a state file (tests that plant a dataset by hand)."""
    from autolabel.datasets.layout import STATE

    (root / STATE).parent.mkdir(parents=True, exist_ok=True)
    (root / STATE).write_text(json.dumps(state), encoding="utf-8")


class Served:
    """Files served over HTTP on 127.0.0.1 (a release page stand-in), with every request recorded.

    ``hold`` (when set) pauses each response after its first half until the test sets it,
    so a test can act while a download is in progress; ``started`` is set at that point.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.hold: threading.Event | None = None
        self.started = threading.Event()
        self.base = ""

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture
def served():
    """A local HTTP server for download tests (no network needed); 404 for a name it does not hold."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = Served()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            state.requests.append(name)
            data = state.files.get(name)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            half = len(data) // 2
            self.wfile.write(data[:half])
            self.wfile.flush()
            state.started.set()
            if state.hold is not None:
                state.hold.wait(10)
            self.wfile.write(data[half:])

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed: no offline variables, and a reachability probe that always answers (no network)."""
    from autolabel import fetch

    monkeypatch.delenv("AUTOLABEL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(fetch, "probe", lambda hosts, timeout=fetch.PROBE_TIMEOUT: None)
    fetch.reset_offline()
    yield
    fetch.reset_offline()


# --- the example plug-in (examples/plugin), installed beside the environment, never into it ----------------

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin"
PLUGIN_LABELERS = ("example-color",)
PLUGIN_FORMATS = ("example-csv",)


def clear_registries() -> None:
    """Forgets the base models, formats and entry points read so far (they are read again when next asked for)."""
    from autolabel import plugins
    from autolabel.datasets import formats
    from autolabel.labelers import registry

    registry.registry.cache_clear()
    formats.registry.cache_clear()
    plugins._entry_points.cache_clear()


@pytest.fixture(scope="session")
def example_plugin_target(tmp_path_factory) -> Path:
    """examples/plugin installed with pip into a folder of its own (``--target``), from a copy of its source.

    Skipped (with the reason) where pip or setuptools cannot build it.
    """
    import importlib.util
    import shutil
    import subprocess
    import sys

    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
        pytest.skip("pip and setuptools are needed to install examples/plugin")
    root = tmp_path_factory.mktemp("example_plugin")
    source = shutil.copytree(EXAMPLE_PLUGIN, root / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = root / "target"
    args = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "--quiet"]
    done = subprocess.run([*args, "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"pip could not install examples/plugin: {(done.stderr or done.stdout).strip()[-300:]}")
    return target


@contextlib.contextmanager
def plugin_installed(target: Path) -> Iterator[None]:
    """The plug-in importable and registered while inside; sys.path, modules and registries restored after."""
    import sys

    path = list(sys.path)
    modules = set(sys.modules)
    sys.path.insert(0, str(target))
    clear_registries()
    try:
        yield
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name.split(".")[0] == "autolabel_example_plugin":
                del sys.modules[name]
        clear_registries()


@pytest.fixture(scope="module")
def plugin(request) -> Iterator[bool]:
    """The example plug-in registered for a module (False, and its cases skipped, where it cannot be built)."""
    try:
        target = request.getfixturevalue("example_plugin_target")
    except pytest.skip.Exception:
        yield False
        return
    with plugin_installed(target):
        yield True


def random_yolo11n():
    """A YOLO11n of random weights from its yaml, its head spread so that its boxes follow the picture."""
    import torch

    from autolabel.yolo import ultralytics_env

    ultralytics_env()
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolo11n.yaml")
    with torch.no_grad():
        for name, weight in model.model.model[-1].named_parameters():
            if "dfl" not in name:  # the fixed box-distribution decoder stays as built
                weight.normal_(0, 0.05)
    return model
