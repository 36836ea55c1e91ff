"""Runs the autolabel CLI with the planted-box labeler, dying like kill -9 at a chosen point.

Usage: ``python -m tests.crashpoint run -i videos -o dataset ...`` (any autolabel command).
The planted-box labeler replaces the model unless ``AUTOLABEL_CRASH_REAL_LABELER=1``.

``AUTOLABEL_CRASH_AT=N`` ends the process with ``os._exit(137)`` (no cleanup, no
flush, as kill -9) just before its Nth file rename or fsync, the moments that decide
what a later run finds on disk. ``AUTOLABEL_CRASH_COUNT=FILE`` writes how many such
points the run passed (to pick N). Tests and the soak benchmark use it; the product
code knows nothing of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file a later command or a user reads under ``root`` (lock files aside), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "autolabel-lock" not in p.name
    }


def crash_cli(
    cwd: Path, *args: str, crash_at: int = 0, count: Path | None = None, real_labeler: bool = False, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Runs ``autolabel ARGS`` in ``cwd`` through this module in a child process, killed at point ``crash_at``.

    ``count``: a file to write the number of points passed; ``real_labeler``: keep the configured model.
    """
    env = os.environ | {"PYTHONPATH": str(REPO), "AUTOLABEL_CRASH_AT": str(crash_at)}
    if count is not None:
        env["AUTOLABEL_CRASH_COUNT"] = str(count)
    if real_labeler:
        env["AUTOLABEL_CRASH_REAL_LABELER"] = "1"
    command = [sys.executable, "-m", "tests.crashpoint", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _install(crash_at: int, count_file: str | None) -> None:
    seen = [0]

    def point() -> None:
        seen[0] += 1
        if count_file:
            Path(count_file).write_text(str(seen[0]))
        if seen[0] == crash_at:
            os._exit(137)

    def wrap(fn):
        def wrapped(*args, **kwargs):
            point()
            return fn(*args, **kwargs)

        return wrapped

    os.replace = wrap(os.replace)
    os.fsync = wrap(os.fsync)


def review_export(dataset: Path, out: Path) -> None:
    """A Label Studio export that moves one box and deletes another in every third frame of ``mug``."""
    import json

    from autolabel.datasets.journal import read_journal
    from autolabel.review import export_label_studio

    tasks_path, _, _ = export_label_studio(dataset)
    tasks = json.loads(tasks_path.read_text())
    names = {r.name for r in read_journal(dataset)}
    reviewed = []
    for i, task in enumerate(tasks):
        if i % 3 or task["data"]["frame"] not in names:
            continue
        result = task["predictions"][0]["result"]
        result[0]["value"]["x"] = round(result[0]["value"]["x"] + 1.5, 3)
        task["annotations"] = [{"id": i, "result": result[:1]}]
        reviewed.append(task)
    out.write_text(json.dumps(reviewed))
    tasks_path.unlink()
    (dataset / "label_studio_config.xml").unlink()


def main(argv: list[str]) -> None:
    crash_at = int(os.environ.get("AUTOLABEL_CRASH_AT", "0"))
    count_file = os.environ.get("AUTOLABEL_CRASH_COUNT")
    if crash_at or count_file:
        _install(crash_at, count_file)
    import autolabel.labelers
    from autolabel.cli import app
    from tests.conftest import FakeLabeler

    if os.environ.get("AUTOLABEL_CRASH_REAL_LABELER") != "1":  # the model the flags name (tiny test weights)
        autolabel.labelers.create_labeler = lambda *args, **kwargs: FakeLabeler()
    app(argv, prog_name="autolabel")


if __name__ == "__main__":
    main(sys.argv[1:])
