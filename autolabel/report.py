"""``autolabel report``: a static, offline HTML review page for a dataset.

``report.html`` sits in the dataset folder and loads only files beside it: annotated
thumbnails under ``report/thumbs/`` (drawn with supervision's annotators) and the
dataset's own images for the full-size view, where the boxes are drawn over the image
from the page's data. A thumbnail's file name carries a digest of what it draws (the
frame's boxes and labels, the image's size and mtime), so it is reused exactly while
that holds, redrawn after an import changes the boxes, and deleted with its frame.
Frames whose image is missing or unreadable are listed, not fatal. No CDN, no server. Every name is data: escaped in
the HTML, embedded JSON is script-safe, and the page's script writes text only through
``textContent``.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import math
import os
import statistics
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autolabel import queue
from autolabel.datasets.dataset import Dataset
from autolabel.datasets.records import FrameRecord, boxes_per_class, dataset_warnings
from autolabel.errors import InputError
from autolabel.fileio import atomic_write_bytes, atomic_write_text, output_errors, sync_dir
from autolabel.postprocess import relative_area, to_detections
from autolabel.selection import DUPLICATE

REPORT_HTML = "report.html"
THUMBS = "report/thumbs"
THUMB_STYLE = 1  # bump when the drawing changes, so every thumbnail is redrawn

FLAGS = {
    "no_boxes": "No boxes",
    "low_confidence": "Low confidence",
    "many_boxes": "Many boxes",
    "at_border": "Boxes at the image border",
    "odd_size": "A class far off its usual size",
    "flicker": "Classes differ from both neighbouring frames (flicker)",
    "missing_image": "Image missing or unreadable",
}
# Thumbnails drawn per chunk of frames read from the journal (a segmentation dataset's masks are never all held).
THUMB_CHUNK = 256
# Facts of a segmentation dataset (run --masks) only.
MASK_FLAGS = {
    "box_polygon": "Boxes written as their box polygon: the mask came out empty, or none was made yet (no mask "
    "model at hand, or a box a reviewer drew or moved: the next run with --masks makes it)",
}


@dataclass
class ReportOptions:
    """What the facts about the frames count, and how the page is built."""

    low_confidence: float = 0.5
    many_boxes: int = 5
    border_margin: float = 0.01
    size_ratio: float = 4.0
    flicker_gap: float = 1.0  # seconds: neighbouring kept frames this close are compared for flicker
    thumb_size: int = 256
    page_size: int = 200
    workers: int = max(1, min(8, os.cpu_count() or 1))


@dataclass
class Analysis:
    """Counts, histograms and flagged frames of a dataset."""

    frames: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    boxes_per_frame: dict[int, int] = field(default_factory=dict)
    confidence_hist: list[int] = field(default_factory=list)
    flags: dict[str, list[str]] = field(default_factory=dict)  # facts about frames: information, not a queue
    duplicates: int = 0  # frames left out as near-duplicates (--dedup)
    filtered: int = 0  # frames dropped by filters
    queue: list = field(default_factory=list)  # autolabel.queue.Entry: unreviewed frames, most worth a review first
    warnings: list[str] = field(default_factory=list)
    evaluation: dict | None = None  # eval.json, when ``autolabel eval`` wrote one
    masks: Any = None  # a segmentation dataset's mask counts (autolabel.masks.step.MaskCounts)


@dataclass
class ReportResult:
    """Where the report went and what it found."""

    path: Path
    frames: int
    facts: dict[str, int]  # frames per fact (no boxes, at the border, ...): information
    queue: int  # unreviewed frames with some reason to review them
    reviewed: int
    thumbnails_made: int
    seconds: float
    bytes: int
    top: str = ""  # the queue's first frame and why
    warnings: list[str] = field(default_factory=list)


def analyse(records: list[FrameRecord], classes: list[str], opts: ReportOptions) -> Analysis:
    """Counts and flags, from the records alone."""
    a = Analysis(frames=len(records))
    a.boxes_per_class = boxes_per_class(records, classes)
    a.boxes_per_frame = dict(sorted(Counter(len(r.boxes) for r in records).items()))
    bins = [0] * 20
    for r in records:
        for b in r.boxes:
            if b.confidence is not None:
                bins[min(19, int(b.confidence * 20))] += 1
    a.confidence_hist = bins
    areas: dict[int, list[float]] = defaultdict(list)
    for r in records:
        for b in r.boxes:
            areas[b.class_id].append(relative_area(r, b))
    median = {c: statistics.median(v) for c, v in areas.items() if len(v) >= 5}
    flags: dict[str, list[str]] = {k: [] for k in FLAGS}
    for r in sorted(records, key=lambda r: r.name):
        if not r.boxes:
            flags["no_boxes"].append(r.name)
            continue
        if any(b.confidence is not None and b.confidence < opts.low_confidence for b in r.boxes):
            flags["low_confidence"].append(r.name)
        if len(r.boxes) > opts.many_boxes:
            flags["many_boxes"].append(r.name)
        mx, my = opts.border_margin * r.width, opts.border_margin * r.height
        if any(b.x1 <= mx or b.y1 <= my or b.x2 >= r.width - mx or b.y2 >= r.height - my for b in r.boxes):
            flags["at_border"].append(r.name)
        for b in r.boxes:
            m = median.get(b.class_id)
            if m and m > 0 and abs(math.log(max(relative_area(r, b), 1e-9) / m)) > math.log(opts.size_ratio):
                flags["odd_size"].append(r.name)
                break
    flags["flicker"] = flicker(records, opts.flicker_gap)
    a.flags = flags
    return a


def flicker(records: list[FrameRecord], gap: float) -> list[str]:
    """Frames whose set of classes differs from both neighbours while the neighbours agree.

    Neighbours are the kept frames of the same source before and after it (by frame
    index), each at most ``gap`` seconds away (:func:`autolabel.queue.neighbours`): a class
    seen in that frame only, or missing from it only, is more often the model flickering
    than the scene changing.
    """
    by_name = {r.name: r for r in records}

    def classes(r: FrameRecord) -> frozenset[int]:
        return frozenset(b.class_id for b in r.boxes)

    return sorted(
        name
        for name, (before, after) in queue.neighbours(records, gap).items()
        if classes(before) == classes(after) != classes(by_name[name])
    )


def _box_labels(record: FrameRecord, classes: list[str]) -> list[str]:
    return [
        f"{classes[b.class_id] if b.class_id < len(classes) else b.class_id}"
        + (f" #{b.track_id}" if b.track_id is not None else "")
        + (f" {b.confidence:.2f}" if b.confidence is not None else "")
        for b in record.boxes
    ]


def thumbnail_name(
    record: FrameRecord, labels: list[str], size: int, image: os.stat_result, masks: bool = False
) -> str:
    """The thumbnail's file name: the frame's name and a digest of everything it draws."""
    drawn = [
        THUMB_STYLE,
        size,
        record.width,
        record.height,
        [[b.x1, b.y1, b.x2, b.y2] for b in record.boxes],
        labels,
        image.st_size,
        image.st_mtime_ns,
    ]
    if masks:
        drawn.append([b.mask for b in record.boxes])
    digest = hashlib.sha256(json.dumps(drawn).encode()).hexdigest()[:16]
    return f"{record.name}.{digest}.jpg"


def make_thumbnail(
    root: Path, record: FrameRecord, classes: list[str], size: int, masks: bool = False
) -> tuple[str | None, bool]:
    """Draws one annotated thumbnail (supervision annotators; ``masks``: each box's mask too) unless one exists.

    Returns:
        The thumbnail's file name under ``report/thumbs`` (None when the frame's image is
        missing or unreadable), and whether it was drawn now.
    """
    import cv2
    import supervision as sv

    src = root / record.image
    try:
        st = src.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None, False
    labels = _box_labels(record, classes)
    name = thumbnail_name(record, labels, size, st, masks)
    dst = root / THUMBS / name
    if dst.exists():
        return name, False
    image = cv2.imread(str(src), cv2.IMREAD_REDUCED_COLOR_2 if max(record.width, record.height) > 2 * size else 1)
    if image is None:
        return None, False
    scale = size / max(image.shape[:2])
    # Each side at least one pixel: a 4000x1 frame makes a 256x1 thumbnail.
    width, height = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    det = to_detections(record.boxes)
    if len(det):
        sx, sy = width / record.width, height / record.height
        det.xyxy = det.xyxy * np.array([sx, sy, sx, sy], np.float32)
        if masks:
            det.mask = _thumb_masks(record, width, height, sx, sy)
            image = sv.MaskAnnotator(opacity=0.45).annotate(image, det)
        image = sv.BoxAnnotator(thickness=1).annotate(image, det)
        image = sv.LabelAnnotator(text_scale=0.35, text_thickness=1, text_padding=2).annotate(image, det, labels)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise InputError(f"{src}: cannot encode thumbnail")
    atomic_write_bytes(dst, buf.tobytes(), sync_parent=False)
    return name, True


def _thumb_masks(record: FrameRecord, width: int, height: int, sx: float, sy: float) -> np.ndarray:
    """Each box's mask drawn at the thumbnail's size (empty where the box has none)."""
    from autolabel.masks.geometry import rings_to_mask

    out = np.zeros((len(record.boxes), height, width), bool)
    for i, b in enumerate(record.boxes):
        if b.mask:
            rings = [[v * (sx if k % 2 == 0 else sy) for k, v in enumerate(ring)] for ring in b.mask]
            out[i] = rings_to_mask(rings, width, height).astype(bool)
    return out


def _svg_bars(values: list[int], labels: list[str], title: str) -> str:
    width, height, pad = 480, 160, 24
    top = max(values) if values and max(values) > 0 else 1
    n = max(1, len(values))
    bar = (width - 2 * pad) / n
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">']
    for i, (v, lab) in enumerate(zip(values, labels, strict=True)):
        h = (height - 2 * pad) * v / top
        x = pad + i * bar
        parts.append(
            f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{max(1.0, bar - 1):.1f}" height="{h:.1f}">'
            f"<title>{html.escape(lab)}: {v}</title></rect>"
        )
    parts.append(f'<text x="{pad}" y="{height - 6}">{html.escape(labels[0] if labels else "")}</text>')
    parts.append(
        f'<text x="{width - pad}" y="{height - 6}" text-anchor="end">{html.escape(labels[-1] if labels else "")}</text>'
    )
    parts.append(f'<text x="{pad}" y="14">max {top}</text></svg>')
    return "".join(parts)


def _script_json(data) -> str:
    """JSON that is safe inside a <script> element."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render(
    title: str,
    classes: list[str],
    records: list[FrameRecord],
    splits: dict[str, str],
    a: Analysis,
    opts,
    thumbs: dict[str, str | None] | None = None,
) -> str:
    """The report page; ``thumbs`` maps frame names to their thumbnail's file name (None: no image)."""
    thumbs = thumbs or {}
    e = html.escape
    class_rows = "".join(
        f'<tr><td class="cls">{e(name)}</td><td class="num">{n}</td></tr>' for name, n in a.boxes_per_class.items()
    )
    bpf_labels = [str(k) for k in range(0, max(a.boxes_per_frame, default=0) + 1)]
    bpf_values = [a.boxes_per_frame.get(int(k), 0) for k in bpf_labels]
    conf_labels = [f"{i / 20:.2f}-{(i + 1) / 20:.2f}" for i in range(20)]
    facts = FLAGS | {k: v for k, v in MASK_FLAGS.items() if k in a.flags}
    flag_blocks = []
    for key, label in facts.items():
        names = a.flags.get(key, [])
        shown = names[:500]
        items = "".join(f'<li><a href="#" data-frame="{e(n)}">{e(n)}</a></li>' for n in shown)
        more = (
            f"<li>... and {len(names) - len(shown)} more (use the filter above)</li>" if len(names) > len(shown) else ""
        )
        flag_blocks.append(
            f'<details class="flag" id="flag-{key}"><summary>{e(label)}: <b class="count">{len(names)}</b></summary>'
            f'<ul class="frames">{items}{more}</ul></details>'
        )
    options = f'<option value="__queue">review queue, most worth a review first ({len(a.queue)})</option>'
    options += "".join(f'<option value="{k}">{e(v)} ({len(a.flags.get(k, []))})</option>' for k, v in facts.items())
    data = {
        "classes": classes,
        "pageSize": opts.page_size,
        "thumbs": THUMBS,
        "flags": a.flags | {"__queue": [q.name for q in a.queue]},
        "frames": [
            [
                r.name,
                r.width,
                r.height,
                splits.get(r.name, ""),
                [[b.class_id, b.x1, b.y1, b.x2, b.y2, b.confidence, b.track_id] for b in r.boxes],
                thumbs.get(r.name),
            ]
            for r in sorted(records, key=lambda r: r.name)
        ],
    }
    return _TEMPLATE.format(
        title=e(title),
        frames=a.frames,
        boxes=sum(a.boxes_per_class.values()),
        n_classes=len(classes),
        dropped=(
            f'<span>near-duplicates dropped <b id="n-duplicates">{a.duplicates}</b></span>'
            f'<span>dropped by filters <b id="n-filtered">{a.filtered}</b></span>'
            + (_masks_html(a.masks) if a.masks is not None else "")
        ),
        class_rows=class_rows,
        bpf=_svg_bars(bpf_values, bpf_labels, "boxes per frame"),
        conf=_svg_bars(a.confidence_hist, conf_labels, "confidence"),
        flags="".join(flag_blocks),
        queue=_queue_html(a.queue),
        evaluation=_evaluation_html(a.evaluation),
        warnings="".join(f"<li>{e(w)}</li>" for w in a.warnings) or "<li>none</li>",
        options=options,
        data=_script_json(data),
    )


def _masks_html(m) -> str:
    """The header's mask counts: how many boxes have a mask, and which have their box polygon and why."""
    return (
        f'<span>masks <b id="n-masks">{m.masked}</b> of {m.boxes} boxes; box polygons: '
        f'<b id="n-empty-masks">{m.empty}</b> empty, <b id="n-no-masks">{m.missing}</b> not made yet</span>'
    )


def _queue_html(entries: list) -> str:
    """The review queue in order: the first 100 frames, each with its priority and reasons."""
    e = html.escape
    rows = "".join(
        f'<tr><td class="num">{i}</td><td><a href="#" data-frame="{e(q.name)}">{e(q.name)}</a></td>'
        f'<td class="num">{q.priority:.2f}</td><td>{e(q.reasons())}</td></tr>'
        for i, q in enumerate(entries[:100], start=1)
    )
    more = (
        f"<p>... and {len(entries) - 100} more (the contact sheet shows them all, in order)</p>"
        if len(entries) > 100
        else ""
    )
    signals = "".join(
        f"<li><b>{e(k.replace('_', ' '))}</b> (x{w:g}): {e(what)}</li>" for k, (w, what) in queue.SIGNALS.items()
    )
    head = "<tr><th>#</th><th>frame</th><th>priority</th><th>why</th></tr>"
    return (
        f'<table id="queue">{head}{rows}</table>{more}<details><summary>signals</summary><ul>{signals}</ul></details>'
    )


def _evaluation_html(ev: dict | None) -> str:
    """``autolabel eval``'s scores, per class and overall."""
    if not ev:
        return "<p>No scores yet: review some frames, import them, then run <code>autolabel eval</code>.</p>"
    e = html.escape
    keys = ("frames", "boxes", "tp", "fp", "fn", "precision", "recall", "f1", "ap50", "ap50_95", "missed",
            "spurious", "wrong_class", "misplaced")  # fmt: skip

    def cell(v) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else e(str(v))

    head = "<tr><th>class</th>" + "".join(f"<th>{k.replace('_', ' ')}</th>" for k in keys) + "</tr>"
    parts = [*((n, s) for n, s in (ev.get("classes") or {}).items()), ("all", ev.get("overall") or {})]
    rows = "".join(
        f'<tr><td class="cls">{e(str(n))}</td>'
        + "".join(f'<td class="num">{cell(s.get(k))}</td>' for k in keys)
        + "</tr>"
        for n, s in parts
        if isinstance(s, dict)
    )
    warnings = "".join(f"<li>{e(str(w))}</li>" for w in ev.get("warnings") or [])
    return f'<p>{cell(ev.get("frames"))} reviewed frames, IoU {cell(ev.get("iou"))}.</p><table id="eval">{head}{rows}</table><ul>{warnings}</ul>'


def write_report(root: Path, opts: ReportOptions | None = None) -> ReportResult:
    """Writes ``report.html`` and its thumbnails for the dataset at ``root`` (holding the dataset's lock)."""
    opts = opts or ReportOptions()
    start = time.perf_counter()
    Dataset.peek(root)  # not a dataset: said before anything is locked
    with output_errors(root), Dataset.open(root, "report") as ds:
        classes = list(ds.classes)
        journal = list(ds.records(masks=False))  # the masks are read as a stream, a chunk of frames at a time
        records = [r for r in journal if r.dropped is None]
        splits = ds.splits()
        a = analyse(records, classes, opts)
        a.duplicates = sum(1 for r in journal if r.dropped == DUPLICATE)
        a.filtered = len(journal) - len(records) - a.duplicates
        a.queue = queue.for_dataset(ds, records, opts.flicker_gap)
        split = {k: sum(1 for r in records if splits.get(r.name) == k) for k in ("train", "val")}
        a.warnings = dataset_warnings(a.boxes_per_class, split)
        a.evaluation = _evaluation(root)
        masks = ds.segmented
        folder = root / THUMBS
        folder.mkdir(parents=True, exist_ok=True)
        # One pass over the frames with their masks: the thumbnails, the mask counts, the box polygons.
        full = (r for r in ds.records() if r.dropped is None) if masks else iter(records)
        drawn, polygons = [], []
        if masks:
            from autolabel.masks.step import MaskCounts

            a.masks = MaskCounts()
        with ThreadPoolExecutor(max_workers=opts.workers) as pool:
            while chunk := list(itertools.islice(full, THUMB_CHUNK)):
                if masks:
                    for r in chunk:
                        a.masks.add(r)
                    polygons += [r.name for r in chunk if any(not b.mask for b in r.boxes)]
                drawn += pool.map(lambda r: make_thumbnail(root, r, classes, opts.thumb_size, masks), chunk)
        if masks:
            a.flags["box_polygon"] = sorted(polygons)
        thumbs = {r.name: name for r, (name, _) in zip(records, drawn, strict=True)}
        a.flags["missing_image"] = sorted(n for n, name in thumbs.items() if name is None)
        # Thumbnails of frames no longer in the journal, or of boxes since changed, go.
        wanted = set(thumbs.values())
        for path in folder.iterdir():
            if path.name not in wanted and (path.is_file() or path.is_symlink()):
                path.unlink()
        sync_dir(folder)
        title = str(ds.state.product or root.name)
        page = render(title, classes, records, splits, a, opts, thumbs)
        path = root / REPORT_HTML
        atomic_write_text(path, page)
        size = path.stat().st_size
    ranked = [e for e in a.queue if e.priority > 0]
    return ReportResult(
        path=path,
        frames=len(records),
        facts={k: len(v) for k, v in a.flags.items()},
        queue=len(ranked),
        reviewed=sum(1 for r in records if r.reviewed),
        thumbnails_made=sum(made for _, made in drawn),
        seconds=time.perf_counter() - start,
        bytes=size,
        top=f"{ranked[0].name} ({ranked[0].reasons()})" if ranked else "",
        warnings=a.warnings,
    )


def _evaluation(root: Path) -> dict | None:
    """``eval.json`` when there is a readable one."""
    import json

    try:
        data = json.loads((root / "eval.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>autolabel review: {title}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f6f8;color:#222}}
header,section{{padding:12px 20px}} header{{background:#222;color:#fff}} h1{{margin:0;font-size:20px}}
h2{{font-size:16px;margin:8px 0}} .stats{{display:flex;gap:24px;flex-wrap:wrap}}
table{{border-collapse:collapse}} td{{padding:2px 10px;border-bottom:1px solid #ddd}} .num{{text-align:right}}
.chart{{width:480px;height:160px;background:#fff;border:1px solid #ddd}} .chart rect{{fill:#4a6cf7}}
.chart text{{font-size:10px;fill:#555}} details.flag{{margin:4px 0}} ul.frames{{columns:4;font-size:12px}}
#controls{{display:flex;gap:12px;align-items:center;margin:8px 0}}
#grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:8px}}
figure{{margin:0;background:#fff;border:1px solid #ddd;cursor:pointer}} figure img{{width:100%;display:block}}
.noimage{{padding:40px 4px;text-align:center;color:#a00}}
figcaption{{font-size:11px;padding:2px 4px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}}
#modal{{position:fixed;inset:0;background:rgba(0,0,0,.85);display:none;align-items:center;justify-content:center}}
#modal.open{{display:flex}} #stage{{position:relative;max-width:95vw;max-height:90vh}}
#stage img{{max-width:95vw;max-height:90vh;display:block}} #stage svg{{position:absolute;inset:0;width:100%;height:100%}}
#stage rect{{fill:none;stroke:#ff0;stroke-width:2;vector-effect:non-scaling-stroke}}
#stage text{{fill:#ff0;font-size:14px;paint-order:stroke;stroke:#000;stroke-width:3px}}
#caption{{position:fixed;bottom:8px;left:0;right:0;text-align:center;color:#fff}}
</style></head><body>
<header><h1>Review: {title}</h1>
<div class="stats"><span>frames <b id="n-frames">{frames}</b></span><span>boxes <b id="n-boxes">{boxes}</b></span>
<span>classes <b id="n-classes">{n_classes}</b></span>{dropped}</div></header>
<section><h2>Boxes per class</h2><table id="class-counts">{class_rows}</table></section>
<section class="stats"><div><h2>Boxes per frame</h2>{bpf}</div><div><h2>Confidence</h2>{conf}</div></section>
<section><h2>Warnings</h2><ul id="warnings">{warnings}</ul></section>
<section><h2>Review queue</h2><p>Unreviewed frames, most worth a review first
(<code>autolabel export DATASET --to label-studio --review N</code> sends the first N to Label Studio).</p>{queue}</section>
<section><h2>How good the labels are</h2>{evaluation}</section>
<section><h2>Facts about the frames</h2><p>Information, not reasons to review: good frames have them too.</p>{flags}</section>
<section><h2>Contact sheet</h2>
<div id="controls"><label>Show <select id="filter"><option value="">all frames</option>{options}</select></label>
<label>Track <input id="track" size="10" placeholder="id"></label>
<button id="prev">&larr; previous</button><span id="page"></span><button id="next">next &rarr;</button></div>
<div id="grid"></div></section>
<div id="modal"><div id="stage"><img id="full" alt=""><svg id="boxes"></svg></div><div id="caption"></div></div>
<script id="data" type="application/json">{data}</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const byName = new Map(D.frames.map(f => [f[0], f]));
let list = D.frames, page = 0;
const grid = document.getElementById("grid"), modal = document.getElementById("modal");
const NS = "http://www.w3.org/2000/svg";
function label(b) {{
  const c = (D.classes[b[0]] ?? String(b[0])) + (b[6] == null ? "" : " #" + b[6]);
  return b[5] === null ? c : c + " " + b[5].toFixed(2);
}}
function show() {{
  const pages = Math.max(1, Math.ceil(list.length / D.pageSize));
  page = Math.min(Math.max(page, 0), pages - 1);
  grid.replaceChildren();
  for (const f of list.slice(page * D.pageSize, (page + 1) * D.pageSize)) {{
    const fig = document.createElement("figure"), cap = document.createElement("figcaption");
    cap.textContent = f[0] + " (" + f[4].length + " boxes, " + f[3] + ")";
    if (f[5] === null) {{
      const none = document.createElement("div"); none.className = "noimage"; none.textContent = "image missing";
      fig.append(none, cap);
    }} else {{
      const img = document.createElement("img");
      img.className = "thumb"; img.loading = "lazy"; img.alt = f[0];
      img.src = D.thumbs + "/" + encodeURIComponent(f[5]);
      fig.append(img, cap); fig.addEventListener("click", () => open(f[0]));
    }}
    grid.append(fig);
  }}
  document.getElementById("page").textContent = "page " + (page + 1) + " of " + pages + " (" + list.length + " frames)";
}}
function open(name) {{
  const f = byName.get(name); if (!f) return;
  const img = document.getElementById("full"), svg = document.getElementById("boxes");
  img.src = "images/" + encodeURIComponent(name) + ".jpg"; img.alt = name;
  svg.setAttribute("viewBox", "0 0 " + f[1] + " " + f[2]); svg.replaceChildren();
  for (const b of f[4]) {{
    const r = document.createElementNS(NS, "rect");
    r.setAttribute("x", b[1]); r.setAttribute("y", b[2]); r.setAttribute("width", b[3] - b[1]); r.setAttribute("height", b[4] - b[2]);
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", b[1] + 2); t.setAttribute("y", Math.max(14, b[2] - 3)); t.textContent = label(b);
    svg.append(r, t);
  }}
  document.getElementById("caption").textContent = name + ": " + (f[4].length ? f[4].map(label).join(", ") : "no boxes");
  modal.classList.add("open");
}}
modal.addEventListener("click", () => modal.classList.remove("open"));
document.addEventListener("keydown", e => {{ if (e.key === "Escape") modal.classList.remove("open"); }});
document.getElementById("track").addEventListener("input", e => {{
  const id = e.target.value.trim();  // a track's frames side by side, in frame order
  list = id ? D.frames.filter(f => f[4].some(b => String(b[6]) === id)) : D.frames; page = 0; show();
}});
document.getElementById("filter").addEventListener("change", e => {{
  const key = e.target.value, names = key ? new Set(D.flags[key]) : null;
  list = names ? D.frames.filter(f => names.has(f[0])) : D.frames; page = 0; show();
}});
document.getElementById("prev").addEventListener("click", () => {{ page--; show(); }});
document.getElementById("next").addEventListener("click", () => {{ page++; show(); }});
for (const a of document.querySelectorAll("a[data-frame]")) a.addEventListener("click", e => {{ e.preventDefault(); open(a.dataset.frame); }});
show();
</script></body></html>
"""
