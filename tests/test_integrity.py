"""Never lose or mix a label: names, locks, content identity, --overwrite, divergence, permissions (issue 10)."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.datasets.journal import read_journal
from autolabel.datasets.layout import JOURNAL, STATE
from autolabel.datasets.records import FrameRecord
from autolabel.errors import InputError, OutputError
from autolabel.fileio import FolderLock
from autolabel.merge import merge_datasets
from autolabel.naming import safe_name
from autolabel.pipeline import run
from tests.conftest import FakeLabeler, make_image, make_product, make_video, read_state, run_config


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_consistent(out: Path) -> list[FrameRecord]:
    """Every journal line has its own image and labels; names unique; lists without duplicates."""
    records = list(read_journal(out))
    names = [r.name for r in records]
    assert len(names) == len(set(names)) == len({n.lower() for n in names})
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(names)
    assert sorted(p.stem for p in (out / "labels").iterdir()) == sorted(names)
    listed = (out / "train.txt").read_text().split() + (out / "val.txt").read_text().split()
    assert len(listed) == len(set(listed)) == len(records)
    return records


# 1. Source names that clean to the same text.
def test_source_names_that_clean_alike_never_share_files(tmp_path):
    long_a, long_b = "x" * 90 + "a.mp4", "x" * 90 + "b.mp4"
    videos = {
        "a b.mp4": 6,
        "a_b.mp4": 4,
        "正面.mp4": 6,
        "背面.mp4": 4,
        long_a: 2,
        long_b: 4,
        "box.mp4": 2,
        "box.mov": 4,
    }
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, videos)
    (r,) = run(run_config(tmp_path), FakeLabeler)
    records = assert_consistent(r.output)
    assert r.frames == len(records) == 3 + 2 + 3 + 2 + 1 + 2 + 1 + 2
    stems = {info["stem"] for info in read_state(r.output)["sources"].values()}
    assert len(stems) == len(videos) and {"正面", "背面", "a_b"} <= stems  # readable where the name allows
    # Each source's frames carry its own content: frame counts per stem match each video.
    per_stem: dict[str, int] = {}
    for rec in records:
        per_stem[rec.source] = per_stem.get(rec.source, 0) + 1
    state = read_state(r.output)["sources"]
    assert per_stem[state["a b.mp4"]["stem"]] == 3 and per_stem[state["a_b.mp4"]["stem"]] == 2


def test_stems_are_allocated_once_and_kept_when_files_are_added(tmp_path):
    folder = make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"box.mp4": 4})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    before = {p.name for p in (r.output / "images").iterdir()}
    assert before == {"box_000000.jpg", "box_000002.jpg"}
    make_video(folder / "box.mov", frames=2)  # would clash with box.mp4's stem on a fresh run
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert r.ok and before <= {p.name for p in (r.output / "images").iterdir()}
    assert_consistent(r.output)


def test_all_cjk_product_folders_each_get_a_dataset(tmp_path):
    make_product(tmp_path / "videos", "杯子", {"cup": "cup"}, {"1.mp4": 2})
    make_product(tmp_path / "videos", "盒子", {"box": "box"}, {"1.mp4": 2})
    results = run(run_config(tmp_path), FakeLabeler)
    assert [r.output.name for r in results] == ["杯子", "盒子"] and all(r.ok for r in results)


# 2. Merge prefixes.
def test_merge_names_cannot_collide(tmp_path):
    make_product(tmp_path / "videos", "red", {"cup": "cup"}, {"cup_front.mp4": 6})
    make_product(tmp_path / "videos", "red_cup", {"cup": "cup"}, {"front.mp4": 4})
    run(run_config(tmp_path), FakeLabeler)
    result = merge_datasets([tmp_path / "dataset" / "red", tmp_path / "dataset" / "red_cup"], tmp_path / "merged")
    assert result.frames == 5
    assert_consistent(result.output)


# 3. One writer per dataset.
def test_a_second_process_on_a_product_is_refused_naming_the_holder(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 4})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    journal = (r.output / JOURNAL).read_bytes()
    with FolderLock(r.output, "run"):
        (again,) = run(run_config(tmp_path), FakeLabeler)
        assert f"in use by autolabel run (PID {os.getpid()})" in again.errors[0]
        with pytest.raises(OutputError, match="in use by autolabel run"):
            merge_datasets([r.output], tmp_path / "merged")
    assert (r.output / JOURNAL).read_bytes() == journal
    with FolderLock(tmp_path / "merged", "merge"), pytest.raises(OutputError, match=r"in use by autolabel merge"):
        merge_datasets([r.output], tmp_path / "merged")
    # Released when the holder is gone: a later run goes through.
    (again,) = run(run_config(tmp_path), FakeLabeler)
    assert again.ok


def test_lock_held_by_another_process_is_reported_at_once(tmp_path):
    import subprocess
    import sys
    import time

    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2})
    target = tmp_path / "dataset" / "mug"
    code = (
        "import sys, time; from pathlib import Path; from autolabel.fileio import FolderLock; "
        f"lock = FolderLock(Path({str(target)!r}), 'run').acquire(); print('held', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path.cwd())
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        (r,) = run(run_config(tmp_path), FakeLabeler)
        assert time.perf_counter() - start < 5
        assert f"PID {holder.pid}" in r.errors[0]
    finally:
        holder.kill()
        holder.wait()
    (r,) = run(run_config(tmp_path), FakeLabeler)  # the OS released the killed holder's lock
    assert r.ok


# 4. --overwrite relabels only what changed, never a review silently.
def _mark_reviewed(out: Path, count: int = 1) -> None:
    records = list(read_journal(out))
    for r in records[:count]:
        r.reviewed = True
    (out / JOURNAL).write_text("".join(r.to_json() + "\n" for r in records))


def test_overwrite_relabels_only_changed_products_and_protects_reviews(tmp_path):
    videos = tmp_path / "videos"
    make_product(videos, "mug", {"mug": "mug"}, {"a.mp4": 4})
    make_product(videos, "cup", {"cup": "cup"}, {"a.mp4": 4})
    run(run_config(tmp_path), FakeLabeler)
    _mark_reviewed(tmp_path / "dataset" / "mug")
    _mark_reviewed(tmp_path / "dataset" / "cup")
    mug_before = files(tmp_path / "dataset" / "mug")
    (videos / "cup" / "ontology.json").write_text(json.dumps({"a cup": "cup"}))
    labeler = FakeLabeler()
    results = {r.product: r for r in run(run_config(tmp_path), lambda: labeler, overwrite=True)}
    assert results["mug"].ok and results["mug"].new_frames == 0
    assert files(tmp_path / "dataset" / "mug") == mug_before  # unchanged product untouched, review kept
    assert "holds 1 reviewed frames" in results["cup"].errors[0] and "--product 'cup'" in results["cup"].errors[0]
    assert labeler.frames == 0
    # Named, it is relabeled, and the reviewed journal is backed up first.
    (r,) = run(run_config(tmp_path, products=["cup"]), FakeLabeler, overwrite=True)
    assert r.ok and r.new_frames == 2 and not any(x.reviewed for x in read_journal(r.output))
    (backup,) = (tmp_path / "dataset" / ".autolabel-backups").iterdir()
    assert any(json.loads(line).get("reviewed") for line in (backup / JOURNAL).read_text().splitlines())


# 5. A crash during --overwrite's delete.
def test_crash_while_overwrite_deletes_leaves_no_trusted_dataset(tmp_path, monkeypatch):
    import shutil

    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 6})
    run(run_config(tmp_path), FakeLabeler)
    real_rmtree = shutil.rmtree

    def dying_rmtree(path, *args, **kwargs):
        if "overwritten" in str(path):
            (Path(path) / "images" / "a_000000.jpg").unlink()  # half deleted
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", dying_rmtree)
    with pytest.raises(KeyboardInterrupt):
        run(run_config(tmp_path, **{"model.nms_iou": 0.6}), FakeLabeler, overwrite=True)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert read_state(tmp_path / "dataset" / "mug") is None  # nothing a later run would trust
    (r,) = run(run_config(tmp_path, **{"model.nms_iou": 0.6}), FakeLabeler)
    assert r.ok and r.frames == 3
    assert_consistent(r.output)
    assert not [p for p in (tmp_path / "dataset").iterdir() if "autolabel-tmp" in p.name]


# 6. A video replaced after an unfinished run; a touched one is the same.
def test_replaced_video_after_unfinished_run_is_refused_and_touch_is_not_a_change(tmp_path):
    folder = make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 20})
    with pytest.raises(KeyboardInterrupt):
        run(run_config(tmp_path), lambda: FakeLabeler(fail_after_batches=1))
    out = tmp_path / "dataset" / "mug"
    assert len(list(read_journal(out))) == 4 and not read_state(out)["complete"]
    os.utime(folder / "a.mp4", (1, 1))  # touched: same bytes
    with pytest.raises(KeyboardInterrupt):
        run(run_config(tmp_path), lambda: FakeLabeler(fail_after_batches=1))
    assert len(list(read_journal(out))) == 8
    make_video(folder / "a.mp4", frames=30, size=(96, 64))  # other content, same name
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert "a.mp4 was replaced since its frames were labeled" in r.errors[0]
    assert len(list(read_journal(out))) == 8


# 7. Two checkpoints under one file name.
def test_model_files_are_identified_by_content(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 4})
    a, b = tmp_path / "runsA" / "weights" / "best.pt", tmp_path / "runsB" / "weights" / "best.pt"
    for path, content in ((a, b"model A"), (b, b"model B")):
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    (r,) = run(run_config(tmp_path, **{"model.weights": str(a)}), FakeLabeler)
    assert r.ok
    import hashlib

    import yaml

    files_digest = yaml.safe_load((r.output / "run.yaml").read_text())["model"]["files"]
    assert files_digest["weights"] == hashlib.sha256(b"model A").hexdigest()
    (r,) = run(run_config(tmp_path, **{"model.weights": str(b)}), FakeLabeler)
    assert "model file weights has other content" in r.errors[0]
    # The same bytes under another path are the same model.
    c = tmp_path / "copy.pt"
    c.write_bytes(b"model A")
    (r,) = run(run_config(tmp_path, **{"model.weights": str(c)}), FakeLabeler)
    assert r.ok


# 8. A video whose header gives no frame count.
def test_source_is_complete_only_when_read_to_its_end(tmp_path):
    import av

    folder = tmp_path / "videos" / "mug"
    folder.mkdir(parents=True)
    (folder / "ontology.json").write_text('{"mug": "mug"}')
    with av.open(str(folder / "live.mkv"), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(40):
            img = np.full((64, 96, 3), i * 5, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(KeyboardInterrupt):
        run(run_config(tmp_path), lambda: FakeLabeler(fail_after_batches=1))
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert r.ok and r.frames == 20 and r.new_frames == 16


# 9. Edited or deleted files: the journal is the source of truth.
def test_edited_and_deleted_files_are_restored_from_the_journal(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 6})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    clean = files(r.output)
    out = r.output
    (out / "labels" / "a_000000.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # a hand edit
    (out / "labels" / "a_000002.txt").unlink()
    with pytest.raises(InputError, match="a_000000.txt: differs from"):
        merge_datasets([out], tmp_path / "merged")
    (out / "images" / "a_000004.jpg").unlink()
    labeler = FakeLabeler()
    (r,) = run(run_config(tmp_path), lambda: labeler)
    assert r.ok and labeler.frames == 1  # the deleted image's frame was labeled again
    assert sorted(r.repaired) == [("labels/a_000000.txt", True), ("labels/a_000002.txt", False)]
    assert (out / ".autolabel" / "edited" / "labels" / "a_000000.txt").read_text() == "0 0.5 0.5 0.1 0.1\n"
    restored = {k: v for k, v in files(out).items() if not k.startswith(".autolabel/edited")}
    assert {k for k in restored if k != JOURNAL} == {k for k in clean if k != JOURNAL}
    for name in ("labels/a_000000.txt", "labels/a_000002.txt", "images/a_000004.jpg", "train.txt", "val.txt"):
        assert restored[name] == clean[name]
    assert merge_datasets([out], tmp_path / "merged").frames == 3


# 11. Mixed frame sizes: a frame's labels never depend on its batch-mates.
class PaddingLabeler(FakeLabeler):
    """Like a real detector that pads a batch to its largest frame: boxes scale with the padded size."""

    def label(self, images, ontology):
        if self.fail_after_batches is not None and self.calls >= self.fail_after_batches:
            raise KeyboardInterrupt
        self.calls += 1
        self.frames += len(images)
        h = max(i.shape[0] for i in images)
        w = max(i.shape[1] for i in images)
        box = np.array([[w * 0.1, h * 0.1, w * 0.4, h * 0.4]], np.float32)
        return [sv.Detections(xyxy=box.copy(), class_id=np.array([0]), confidence=np.array([0.9])) for _ in images]


def test_mixed_frame_sizes_resume_identically(tmp_path):
    folder = make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 8})
    make_image(folder / "b.jpg", size=(160, 120))
    make_video(folder / "c.mp4", frames=8, size=(64, 48))
    (clean,) = run(run_config(tmp_path, output=str(tmp_path / "clean")), PaddingLabeler)
    for r in read_journal(clean.output):
        assert r.boxes[0].x2 == pytest.approx(r.width * 0.4, abs=0.01)
    with pytest.raises(KeyboardInterrupt):
        run(run_config(tmp_path, output=str(tmp_path / "partial")), lambda: PaddingLabeler(fail_after_batches=2))
    (resumed,) = run(run_config(tmp_path, output=str(tmp_path / "partial")), PaddingLabeler)
    assert {r.name: r.boxes for r in read_journal(resumed.output)} == {
        r.name: r.boxes for r in read_journal(clean.output)
    }


# 12. run --merge and merge follow one rule.
def test_run_merge_includes_a_finished_product_with_a_bad_file_and_names_what_it_left_out(tmp_path):
    videos = tmp_path / "videos"
    make_product(videos, "mug", {"mug": "mug"}, {"a.mp4": 4})
    (videos / "mug" / "z.mp4").write_bytes(b"\x00" * 1000)
    make_product(videos, "cup", {"cup": "cup"}, {"a.mp4": 4})
    (tmp_path / "dataset" / "junk").mkdir(parents=True)
    labels = FakeLabeler()
    from unittest import mock

    with mock.patch("autolabel.labelers.create_labeler", return_value=labels):
        result = CliRunner().invoke(
            app, ["run", "-i", str(videos), "-o", str(tmp_path / "dataset"), "--frame-rate", "2", "--merge", "-q"]
        )
    assert result.exit_code == 1  # the bad file is an error...
    assert "merged cup, mug" in result.stdout  # ...but its finished product is merged, as `merge` would
    assert "left out:" in result.stdout and "junk" in result.stdout


# 13. Derived files follow what they derive from.
def test_coco_follows_a_changed_split_without_asking_for_coco_again(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 20})
    run(run_config(tmp_path, **{"dataset.formats": "yolo,coco"}), FakeLabeler)
    (r,) = run(run_config(tmp_path, **{"dataset.seed": 7}), FakeLabeler)
    for split in ("train", "val"):
        coco = json.loads((r.output / f"coco_{split}.json").read_text())
        listed = {Path(x).name for x in (r.output / f"{split}.txt").read_text().split()}
        assert {Path(i["file_name"]).name for i in coco["images"]} == listed


# 14. Class names differing only in case.
def test_classes_differing_in_case_warn_and_can_be_united(tmp_path, caplog):
    make_product(tmp_path / "videos", "mug", {"hand": "hand"}, {"a.mp4": 2})
    make_product(tmp_path / "videos", "cup", {"Hand": "Hand"}, {"a.mp4": 2})
    run(run_config(tmp_path), FakeLabeler)
    inputs = [tmp_path / "dataset" / "mug", tmp_path / "dataset" / "cup"]
    r = merge_datasets(inputs, tmp_path / "m1")
    assert r.classes == ["hand", "Hand"] and "differ only in case" in caplog.text
    r = merge_datasets(inputs, tmp_path / "m2", unite_case=True)
    assert r.classes == ["Hand"] or r.classes == ["hand"]
    assert r.boxes_per_class[r.classes[0]] == 4


# 15. Permissions follow the umask.
def test_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2})
        (r,) = run(run_config(tmp_path, **{"dataset.formats": "yolo,voc,coco"}), FakeLabeler)
        merged = merge_datasets([r.output], tmp_path / "merged")
    finally:
        os.umask(old)
    for root in (r.output, merged.output):
        assert stat.S_IMODE(root.stat().st_mode) == 0o755
        for p in root.rglob("*"):
            if p.is_file() and "lock" not in p.name:
                assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
            elif p.is_dir():
                assert stat.S_IMODE(p.stat().st_mode) == 0o755, p


# Tracebacks that must be one line.
def test_disk_full_is_one_line_and_recovers(tmp_path, monkeypatch):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 8})
    real_fsync, calls = os.fsync, [0]

    def full(fd):
        calls[0] += 1
        if calls[0] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert "cannot write: No space left on device; free some space" in r.errors[0]
    monkeypatch.setattr(os, "fsync", real_fsync)
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert r.ok and r.frames == 4
    assert_consistent(r.output)


def test_unusable_outputs_and_states_are_one_line(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2})
    runner = CliRunner()
    result = runner.invoke(app, ["run", "-i", str(tmp_path / "videos"), "-o", "/proc/self", "-q"])
    assert result.exit_code != 0 and "autolabel: error:" in result.stderr and "Traceback" not in result.stderr
    result = runner.invoke(app, ["run", "-i", str(tmp_path / "videos"), "-o", str(tmp_path / "videos" / "out")])
    assert result.exit_code != 0 and "inside the input folder" in result.stderr
    (r,) = run(run_config(tmp_path), FakeLabeler)
    (r.output / STATE).write_text("[1, 2]")
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert "not an autolabel dataset state" in r.errors[0]


def test_out_of_range_class_id_in_a_journal_is_one_line(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    lines = (r.output / JOURNAL).read_text().splitlines()
    data = json.loads(lines[0])
    data["boxes"][0][0] = 7
    (r.output / JOURNAL).write_text(json.dumps(data) + "\n")
    with pytest.raises(InputError, match=r"detections.jsonl:1: corrupt journal line: class id 7 outside"):
        merge_datasets([r.output], tmp_path / "merged")


def test_nothing_left_is_an_error_and_unsupported_files_are_named(tmp_path):
    folder = make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2})
    (folder / "clip.webm").write_bytes(b"x")
    (folder / "more").mkdir()
    from unittest import mock

    with mock.patch("autolabel.labelers.create_labeler", return_value=FakeLabeler()):
        result = CliRunner().invoke(
            app,
            [
                "run",
                "-i",
                str(tmp_path / "videos"),
                "-o",
                str(tmp_path / "ds"),
                "--drop-empty",
                "--min-box-size",
                "0.99",
                "--merge",
            ],
        )
    assert result.exit_code != 0
    assert "skipped clip.webm, more/" in result.stderr
    assert "no frames" in result.stderr


def test_deleted_source_is_named_in_the_summary(tmp_path):
    folder = make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2, "b.mp4": 2})
    run(run_config(tmp_path), FakeLabeler)
    (folder / "b.mp4").unlink()
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert r.ok and r.frames == 2 and "b.mp4 is gone; its 1 frames are kept" in r.notes[0]
    (r,) = run(run_config(tmp_path), FakeLabeler, overwrite=True)
    assert r.ok and r.frames == 1


def test_safe_names_keep_scripts_and_never_collide():
    names = ["a b", "a_b", "a__b", "正面", "背面", "con", "CON", "é", "e\u0301", "", ".", "x" * 300]
    cleaned = [safe_name(n) for n in names]
    assert len({c.lower() for c in cleaned}) == len(names)
    assert safe_name("正面") == "正面" and safe_name("a_b") == "a_b"
    assert all("__" not in c and "/" not in c and not c.startswith(".") for c in cleaned)
    assert all(len(c.encode()) <= 200 for c in cleaned)


# Found by trying the tool as a hostile user.
def test_the_lock_holds_through_a_symlink_and_dot(tmp_path, monkeypatch):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    (tmp_path / "link").symlink_to(r.output)
    with FolderLock(tmp_path / "link", "import"):
        (again,) = run(run_config(tmp_path), FakeLabeler)
        assert "in use by autolabel import" in again.errors[0]
        monkeypatch.chdir(r.output)
        with pytest.raises(OutputError, match="in use"):
            FolderLock(Path("."), "report").acquire()


def test_a_source_named_like_a_temporary_file_survives_cleanup(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"x.autolabel-tmp-y.mp4": 4, "z.autolabel-lock.mp4": 2})
    run(run_config(tmp_path), FakeLabeler)
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert r.ok and r.frames == 3 and not r.repaired
    assert_consistent(r.output)


def test_a_run_killed_before_its_first_state_write_does_not_block_the_folder(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2})
    leftover = tmp_path / "dataset" / "mug" / ".autolabel" / ".state.json.autolabel-tmp-abc"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("{")
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert r.ok and r.frames == 1 and not leftover.exists()


def test_long_names_merge_within_file_name_limits(tmp_path):
    make_product(tmp_path / "videos", "产品" * 25, {"mug": "mug"}, {"视频" * 25 + ".mp4": 2})
    make_product(tmp_path / "videos", "p" * 150, {"mug": "mug"}, {"v" * 150 + ".mp4": 2})
    results = run(run_config(tmp_path), FakeLabeler)
    merged = merge_datasets([r.output for r in results], tmp_path / "merged")
    assert merged.frames == 2
    assert all(len(p.name.encode()) < 200 for p in (merged.output / "images").iterdir())


def test_a_failed_merge_keeps_the_previous_output(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 4})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    merge_datasets([r.output], tmp_path / "merged")
    before = files(tmp_path / "merged")
    from autolabel.config import FilterConfig

    with pytest.raises(OutputError, match="would have no frames"):
        merge_datasets([r.output], tmp_path / "merged", FilterConfig(drop_multi=True))
    assert files(tmp_path / "merged") == before


def test_import_into_a_merge_output_goes_to_its_products_then_merges_again(tmp_path):
    from autolabel.imports import import_label_studio
    from autolabel.review import export_label_studio

    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 4})
    make_product(tmp_path / "videos", "cup", {"cup": "cup", "mug": "mug"}, {"a.mp4": 4})
    mug, cup = sorted(run(run_config(tmp_path), FakeLabeler), key=lambda r: r.product, reverse=True)
    merged = merge_datasets([mug.output, cup.output], tmp_path / "merged").output
    tasks_path, _, _ = export_label_studio(merged)
    tasks = json.loads(tasks_path.read_text())
    reviewed = [{**t, "annotations": [{"result": []}]} for t in tasks if t["data"]["frame"].startswith("cup__")][:1]
    (tmp_path / "export.json").write_text(json.dumps(reviewed))
    result = import_label_studio(merged, tmp_path / "export.json")
    assert result.products == ["cup"] and result.frames_changed == 1
    name = reviewed[0]["data"]["frame"].split("__", 1)[1]
    assert {r.name: r for r in read_journal(cup.output)}[name].reviewed  # the product holds the review
    assert not any(r.reviewed for r in read_journal(mug.output))
    assert {r.name: r for r in read_journal(merged)}[f"cup__{name}"].boxes == []  # and the merge, made again


def test_a_renamed_source_keeps_its_frames(tmp_path):
    folder = make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"front.mp4": 6})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    before = files(r.output)
    (folder / "front.mp4").rename(folder / "Front view.mp4")
    labeler = FakeLabeler()
    (r,) = run(run_config(tmp_path), lambda: labeler)
    assert r.ok and r.frames == 3 and labeler.frames == 0 and not r.notes
    assert {k for k in files(r.output) if k.startswith("images/")} == {k for k in before if k.startswith("images/")}
    assert "Front view.mp4" in read_state(r.output)["sources"]


def test_a_frame_listed_twice_in_the_journal_is_one_error(tmp_path):
    make_product(tmp_path / "videos", "mug", {"mug": "mug"}, {"a.mp4": 2})
    (r,) = run(run_config(tmp_path), FakeLabeler)
    line = (r.output / JOURNAL).read_text()
    (r.output / JOURNAL).write_text(line + line)
    (r,) = run(run_config(tmp_path), FakeLabeler)
    assert "detections.jsonl:2: corrupt journal line: frame 'a_000000' listed twice" in r.errors[0]
