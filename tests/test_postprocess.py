from autolabel.config import FilterConfig
from autolabel.datasets.records import Box, FrameRecord
from autolabel.postprocess import FilterStats, apply_filters, iou


def rec(*boxes):
    return FrameRecord("f", "s", 0, 0.0, 100, 100, list(boxes))


def test_iou_is_correct():
    a, b = Box(0, 0, 0, 10, 10), Box(0, 5, 0, 15, 10)
    assert iou(a, b) == 50 / 150
    assert iou(a, Box(0, 20, 20, 30, 30)) == 0.0
    assert iou(a, a) == 1.0


def test_size_filters_use_area_fraction():
    small, mid, big = Box(0, 0, 0, 10, 10, 0.9), Box(0, 0, 0, 50, 50, 0.9), Box(0, 0, 0, 90, 90, 0.9)
    r, stats = rec(small, mid, big), FilterStats()
    assert apply_filters(r, FilterConfig(min_box_size=0.05, max_box_size=0.5), stats) is None
    assert r.boxes == [mid]  # 0.01 < 0.05 removed; 0.25 kept; 0.81 > 0.5 removed
    assert stats.as_dict() == {"boxes_too_small": 1, "boxes_too_large": 1}


def test_overlap_keeps_the_more_confident_box_of_any_class():
    low, high, apart = Box(0, 0, 0, 10, 10, 0.4), Box(1, 1, 0, 11, 10, 0.8), Box(0, 50, 50, 60, 60, 0.1)
    r, stats = rec(low, high, apart), FilterStats()
    apply_filters(r, FilterConfig(overlap_iou=0.5), stats)
    assert r.boxes == [high, apart]
    assert stats.as_dict() == {"boxes_overlapping": 1}
    # IoU 9*10/(2*100-90) = 0.818: kept under a 0.9 threshold.
    r2 = rec(low, high)
    apply_filters(r2, FilterConfig(overlap_iou=0.9), FilterStats())
    assert len(r2.boxes) == 2


def test_frame_filters():
    stats = FilterStats()
    assert apply_filters(rec(), FilterConfig(drop_empty=True), stats) == "empty"
    two = rec(Box(0, 0, 0, 10, 10, 0.5), Box(0, 50, 50, 60, 60, 0.5))
    assert apply_filters(two, FilterConfig(drop_multi=True), stats) == "multi"
    assert apply_filters(rec(Box(0, 0, 0, 10, 10)), FilterConfig(drop_multi=True, drop_empty=True), stats) is None
    assert stats.as_dict() == {"frames_empty": 1, "frames_multi": 1}


def test_defaults_keep_everything():
    r = rec(Box(0, 0, 0, 1, 1, 0.1), Box(0, 0, 0, 100, 100, 0.1), Box(0, 0, 0, 100, 100, 0.2))
    assert apply_filters(r, FilterConfig(), FilterStats()) is None and len(r.boxes) == 3
