"""A deterministic, seeded train/val split without neighbour leakage.

Each video's validation frames are one contiguous run of its sampled frames, so
neighbouring frames straddle train and val at most at the run's two ends, never
throughout the video. The run's length follows ``val_fraction`` (quotas spread over
the sources by largest remainder, so the total is exact) and its place in the video
is drawn from the seed. Still images are single-frame sources.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

from autolabel.datasets.records import FrameRecord


def assign_splits(records: list[FrameRecord], val_fraction: float, seed: int) -> dict[str, str]:
    """Maps each record's name to ``train`` or ``val``.

    Depends only on the set of records (not their order), the fraction and the seed,
    so a resumed run splits exactly as an uninterrupted one.
    """
    split = {r.name: "train" for r in records}
    total = len(records)
    want = min(int(round(val_fraction * total)), total - 1) if total >= 2 else 0
    if want <= 0:
        return split
    groups: dict[str, list[FrameRecord]] = defaultdict(list)
    for r in records:
        groups[r.source].append(r)
    sources = sorted(groups)
    exact = {s: val_fraction * len(groups[s]) for s in sources}
    quota = {s: min(len(groups[s]), math.floor(exact[s])) for s in sources}
    rng = random.Random(seed)
    tiebreak = {s: rng.random() for s in sources}
    by_remainder = sorted(sources, key=lambda s: (-(exact[s] - quota[s]), tiebreak[s]))
    missing = want - sum(quota.values())
    while missing > 0:
        progressed = False
        for s in by_remainder:
            if missing and quota[s] < len(groups[s]):
                quota[s] += 1
                missing -= 1
                progressed = True
        if not progressed:
            break
    for s in sources:
        k = quota[s]
        if k == 0:
            continue
        ordered = sorted(groups[s], key=lambda r: r.index)
        start = random.Random(f"{seed}:{s}").randint(0, len(ordered) - k)
        for r in ordered[start : start + k]:
            split[r.name] = "val"
    return split
