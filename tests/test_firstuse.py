"""First use and daily use as a new user meets them: the repository, locks, other tools' files (issue 25)."""

from __future__ import annotations

import multiprocessing
import stat
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from autolabel.errors import OutputError
from autolabel.fileio import LOCK_SUFFIX, FolderLock, lock_path, waiting_lock

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_has_the_license_its_metadata_names():
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_cvat_zip_unzips_readable_to_everyone(tmp_path):
    from autolabel.datasets.formats.cvat import CVAT_XML, cvat_zip

    (tmp_path / "a.zip").write_bytes(cvat_zip("<annotations/>"))
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        (info,) = zf.infolist()
        assert info.filename == CVAT_XML and stat.S_IMODE(info.external_attr >> 16) == 0o644
    assert cvat_zip("<annotations/>") == cvat_zip("<annotations/>")  # still the same bytes each time


def test_a_lock_file_is_removed_when_its_command_ends(tmp_path):
    folder = tmp_path / "dataset" / "mug"
    with FolderLock(folder, "run"):
        assert lock_path(folder).is_file()
        with pytest.raises(OutputError, match=r"in use by autolabel run \(PID"):
            FolderLock(folder, "merge").acquire()
    assert not lock_path(folder).exists()
    with waiting_lock(tmp_path / f"model.pth{LOCK_SUFFIX}"):
        assert (tmp_path / f"model.pth{LOCK_SUFFIX}").is_file()
    assert list(tmp_path.iterdir()) == [tmp_path / "dataset"]
    assert not list((tmp_path / "dataset").iterdir())


def _count(path: str, times: int) -> None:
    lock = Path(path + LOCK_SUFFIX)
    for _ in range(times):
        with waiting_lock(lock):
            n = int(Path(path).read_text())
            time.sleep(0.001)
            Path(path).write_text(str(n + 1))


def test_removing_lock_files_keeps_the_lock_exclusive(tmp_path):
    """Processes that open the lock file just before its holder removes it never hold a lock beside another."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_count, args=(str(counter), 40)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    assert counter.read_text() == "120"  # no lost update: one holder at a time
    assert not Path(str(counter) + LOCK_SUFFIX).exists()
