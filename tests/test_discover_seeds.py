"""Seed 002's discovery method (``model.discover.method: seeds``), each step on planted keys, and the mode."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from autolabel.cli import app
from autolabel.labelers import lost
from tests.conftest import make_product, read_state
from tests.test_discover import BOX, MUG, boxes, check_dataset, discover_args, planted

GRID = (10, 12)
# A 3x3 mug at rows 1-3, cols 2-4 (9 patches) and a 2x4 box at rows 6-7, cols 7-10 (8 patches).
SCENE = [(slice(1, 4), slice(2, 5), MUG), (slice(6, 8), slice(7, 11), BOX)]
runner = CliRunner()


def patches(ys: slice, xs: slice) -> set[int]:
    return {y * GRID[1] + x for y in range(ys.start, ys.stop) for x in range(xs.start, xs.stop)}


def test_step1_degree_counts_positive_correlations_without_the_patch_itself():
    keys, affinity = planted(GRID, SCENE)
    degree = lost.degrees(affinity)
    mug, box = patches(*SCENE[0][:2]), patches(*SCENE[1][:2])
    assert {int(degree[p]) for p in mug} == {8} and {int(degree[p]) for p in box} == {7}
    background = set(range(120)) - mug - box
    assert {int(degree[p]) for p in background} == {102}  # 120 - 17 object patches - itself


def test_step2_seeds_are_the_n_lowest_degree_patches_in_a_stable_order():
    _, affinity = planted(GRID, SCENE)
    seeds = lost.lowest_degree_seeds(lost.degrees(affinity), 10)
    box, mug = sorted(patches(*SCENE[1][:2])), sorted(patches(*SCENE[0][:2]))
    assert list(seeds) == box + mug[:2]  # all 8 box patches (degree 7), then the first 2 mug patches


def test_step3_adjacent_seeds_are_one_cluster_that_keeps_its_lowest_degree_seed():
    degree = np.array([5, 3, 9, 9, 2, 9, 9, 4, 9], dtype=int)  # a 3x3 grid
    # Seeds 4 (degree 2), 1 (3) and 7 (4) touch: one cluster, 4 kept; 0 touches 1: the same cluster.
    assert lost.cluster_seeds(np.array([4, 1, 7, 0]), degree, (3, 3)) == [4]
    # Corners do not touch (4-connected): two clusters, each its own seed, lowest degree first.
    assert lost.cluster_seeds(np.array([8, 0]), np.array([5, 9, 9, 9, 9, 9, 9, 9, 1]), (3, 3)) == [8, 0]
    _, affinity = planted(GRID, SCENE)
    degree = lost.degrees(affinity)
    seeds = lost.lowest_degree_seeds(degree, 10)
    assert lost.cluster_seeds(seeds, degree, GRID) == [int(seeds[0]), int(seeds[8])]  # one box seed, one mug seed


def test_step4_a_seeds_object_is_its_component_of_raw_products_above_the_threshold():
    _, affinity = planted(GRID, SCENE)
    seed = min(patches(*SCENE[1][:2]))
    found = lost.seed_box(affinity[seed], seed, GRID, correlation=0.5, score=0.9)
    assert (found.x0, found.y0, found.x1, found.y1, found.seed, found.score) == (7, 6, 11, 8, seed, 0.9)
    # Above the seed's own product (about 1.5 here) nothing is left: the seed's code returns [0, 0, 0, 0].
    assert lost.seed_box(affinity[seed], seed, GRID, correlation=5.0) is None


def test_step4_an_empty_component_takes_losts_expansion_of_that_seed():
    _, affinity = planted(GRID, SCENE)
    degree = lost.degrees(affinity)
    seed = min(patches(*SCENE[0][:2]))
    expanded = lost.expand(affinity, degree, seed, GRID, k_patches=100)
    assert (expanded.x0, expanded.y0, expanded.x1, expanded.y1) == (2, 1, 5, 4)
    found = lost.discover_seeds(affinity, GRID, n_seeds=10, correlation=5.0)  # no seed above: every one expanded
    assert boxes(found) == [(7, 6, 11, 8), (2, 1, 5, 4)]


def test_step5_nms_by_score_drops_low_scores_but_never_the_first_seeds_object():
    d = lost.Discovery
    first = d(0, 0, 4, 4, seed=0, score=0.2)  # under the score threshold, and kept: LOST's guarantee
    overlapping = d(1, 1, 4, 4, seed=13, score=0.9)  # IoU 9/16 with the first: suppressed
    beside = d(6, 0, 9, 3, seed=6, score=0.7)
    low = d(6, 6, 9, 9, seed=66, score=0.3)  # under 0.4
    better = d(6, 0, 9, 4, seed=7, score=0.8)  # overlaps `beside`, scores higher: kept in its place
    kept = lost.suppress([first, overlapping, beside, low, better], iou=0.5, score_th=0.4)
    assert kept == [first, better]


def test_the_whole_method_finds_both_objects_and_always_the_first_seeds():
    _, affinity = planted(GRID, SCENE)
    found = lost.discover_seeds(affinity, GRID, n_seeds=10, correlation=0.5)
    assert boxes(found) == [(7, 6, 11, 8), (2, 1, 5, 4)]
    assert found[0].score == pytest.approx(1 - 7 / 120) and found[1].score == pytest.approx(1 - 8 / 120)
    # Every patch positively correlated (a shared component, as random weights give): LOST's own
    # rule stops at the first seed and finds nothing; seed 002's method still yields the first seed's object.
    keys, _ = planted(GRID, SCENE)
    shared = keys + np.array([0, 0, 0, 2.0], np.float32)
    affinity = shared @ shared.T
    assert lost.discover(shared, affinity, GRID, number_seeds=3) == []
    found = lost.discover_seeds(affinity, GRID, n_seeds=10, correlation=4.5)
    assert len(found) == 1 and found[0].seed == 0  # every degree ties: the first patch is the first seed


def test_the_default_is_seed_002s_method_and_lost_stays_an_option(tmp_path, tiny_discover):
    from autolabel.config import load_config

    dc = load_config(None, {}).model.discover
    assert (dc.method, dc.n_seeds, dc.seed_correlation, dc.seed_score, dc.seed_nms, dc.seed_confidence) == (
        "seeds", 10, None, 0.4, 0.5, 0.25,
    )  # fmt: skip
    make_product(tmp_path / "videos", "mug", {"Coffee Mug": "mug"}, {"a.mp4": 9})
    for method in ("seeds", "lost"):
        out = tmp_path / method
        args = [*discover_args(tiny_discover, tmp_path / "videos", out, "mug"), "--discover-method", method]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        classes, records = check_dataset(out / "mug")
        assert classes == ["mug"] and all(r.boxes for r in records)  # every frame: at least the first seed's
        assert read_state(out / "mug")["fingerprint"]["model"]["discover"]["method"] == method
    bad = runner.invoke(
        app, [*discover_args(tiny_discover, tmp_path / "videos", tmp_path / "x"), "--discover-method", "x"]
    )
    assert bad.exit_code == 2 and "model.discover.method must be one of seeds, lost" in bad.stderr
