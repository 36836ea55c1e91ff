import random

from autolabel.datasets.records import FrameRecord
from autolabel.datasets.split import assign_splits


def records(sources: dict[str, int], stride: int = 5) -> list[FrameRecord]:
    out = []
    for src, n in sources.items():
        for k in range(n):
            out.append(FrameRecord(f"{src}_{k * stride:06d}", src, k * stride, k * stride / 30, 64, 48))
    return out


def test_fraction_is_exact_and_split_is_deterministic():
    recs = records({"a": 37, "b": 12, "c": 51})
    first = assign_splits(recs, 0.2, seed=3)
    assert sum(v == "val" for v in first.values()) == 20
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(shuffled, 0.2, seed=3) == first
    assert assign_splits(recs, 0.2, seed=4) != first


def test_neighbouring_frames_do_not_straddle_the_split():
    recs = records({"a": 40, "b": 25, "c": 9})
    split = assign_splits(recs, 0.25, seed=0)
    for src in "abc":
        seq = [split[r.name] for r in sorted((r for r in recs if r.source == src), key=lambda r: r.index)]
        changes = sum(1 for x, y in zip(seq, seq[1:], strict=False) if x != y)
        assert changes <= 2, f"{src}: val is not one contiguous run: {seq}"
        assert "".join("v" if s == "val" else "t" for s in seq).count("v") == seq.count("val")


def test_tiny_datasets_keep_a_training_frame():
    assert assign_splits(records({"a": 1}), 0.2, 0) == {"a_000000": "train"}
    two = assign_splits(records({"a": 2}), 0.5, 0)
    assert sorted(two.values()) == ["train", "val"]
    assert set(assign_splits(records({"a": 5}), 0.0, 0).values()) == {"train"}
