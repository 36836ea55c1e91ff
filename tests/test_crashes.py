"""Fault injection: the CLI killed (as by kill -9) at its Nth file rename or fsync, then re-run, ends byte-identical."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_image, make_product, make_video
from tests.crashpoint import crash_cli as cli
from tests.crashpoint import dataset_files


def make_input(root: Path) -> None:
    """Three products with mixed frame sizes: videos of two sizes and a photo."""
    make_product(root / "videos", "mug", {"red mug": "mug", "hand": "hand"}, {"a.mp4": 9})
    make_video(root / "videos" / "mug" / "b.mp4", frames=6, size=(64, 48))
    make_product(root / "videos", "cup", {"cup": "cup"}, {"clip one.mp4": 9})
    make_image(root / "videos" / "cup" / "still.jpg", size=(120, 90))
    make_product(root / "videos", "盒子", {"box": "box", "Hand": "hand"}, {"正面.mp4": 6})


RUN = ("run", "-i", "../videos", "-o", "dataset", "--frame-rate", "3", "--merge", "--no-report", "-q")


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, dict[str, bytes], int]:
    root = tmp_path_factory.mktemp("crash")
    make_input(root)
    work = root / "clean"
    work.mkdir()
    done = cli(work, *RUN, count=root / "points")
    assert done.returncode == 0, done.stderr
    return root, dataset_files(work / "dataset"), int((root / "points").read_text())


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 0.97])
def test_killed_run_and_merge_resume_byte_identical(clean, fraction):
    root, expected, points = clean
    crash_at = max(1, round(points * fraction))
    work = root / f"trial-{crash_at}"
    work.mkdir()
    died = cli(work, *RUN, crash_at=crash_at)
    # Group commits make the count vary a little between runs: the last points may not be reached.
    assert died.returncode == 137 or (fraction > 0.95 and died.returncode == 0), died.stderr
    again = cli(work, *RUN)
    assert again.returncode == 0, again.stderr
    assert dataset_files(work / "dataset") == expected


OVERWRITE = (*RUN, "--box-threshold", "0.5", "--overwrite")
IMPORT = ("import", "../review.json", "--dataset", "dataset/mug", "-q")


@pytest.fixture(scope="module")
def reviewed(clean) -> tuple[Path, dict[str, bytes], dict[str, bytes], int, int]:
    """Expected trees after an --overwrite with other settings, and after an import; their crash points."""
    from tests.crashpoint import review_export

    root = clean[0]
    overwritten, overwrite_points = after_a_run(root, "overwrite", OVERWRITE)
    work = root / "import-clean"
    work.mkdir()
    assert cli(work, *RUN).returncode == 0
    review_export(work / "dataset" / "mug", root / "review.json")
    done = cli(work, *IMPORT, count=root / "import-points")
    assert done.returncode == 0, done.stderr
    imported = dataset_files(work / "dataset")
    return root, overwritten, imported, overwrite_points, int((root / "import-points").read_text())


def after_a_run(root: Path, name: str, args: tuple[str, ...]) -> tuple[dict[str, bytes], int]:
    """A labeled dataset, then ``args`` run to the end: the files it leaves, and how many crash points it passed."""
    work = root / f"{name}-clean"
    work.mkdir()
    assert cli(work, *RUN).returncode == 0
    done = cli(work, *args, count=root / f"{name}-points")
    assert done.returncode == 0, done.stderr
    return dataset_files(work / "dataset"), int((root / f"{name}-points").read_text())


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9])
@pytest.mark.parametrize("command", ["overwrite", "import"])
def test_killed_overwrite_and_import_finish_byte_identical(reviewed, command, fraction):
    root, overwritten, imported, overwrite_points, import_points = reviewed
    args, expected, points = (
        (OVERWRITE, overwritten, overwrite_points)
        if command == "overwrite"
        else (
            IMPORT,
            imported,
            import_points,
        )
    )
    killed_after_a_run(root / f"{command}-{fraction}", args, expected, max(1, round(points * fraction)))


def killed_after_a_run(work: Path, args: tuple[str, ...], expected: dict[str, bytes], crash_at: int) -> None:
    """A labeled dataset, then ``args`` killed at point ``crash_at`` and run again: ``expected``, byte for byte."""
    work.mkdir()
    assert cli(work, *RUN).returncode == 0
    died = cli(work, *args, crash_at=crash_at)
    assert died.returncode == 137, died.stderr
    again = cli(work, *args)
    assert again.returncode == 0, again.stderr
    assert dataset_files(work / "dataset") == expected


RETHRESHOLD = (*RUN, "--box-threshold", "0.7")  # drops each frame's 0.6 box: every frame derived again


@pytest.fixture(scope="module")
def rethresholded(clean) -> tuple[Path, dict[str, bytes], int]:
    return clean[0], *after_a_run(clean[0], "rethreshold", RETHRESHOLD)


@pytest.mark.parametrize("fraction", [0.03, 0.35, 0.85])
def test_a_killed_re_derivation_finishes_byte_identical(rethresholded, fraction):
    """New thresholds recorded only once the journal follows them: a kill before leaves the old ones, derived again."""
    root, expected, points = rethresholded
    killed_after_a_run(root / f"rethreshold-{fraction}", RETHRESHOLD, expected, max(1, round(points * fraction)))
