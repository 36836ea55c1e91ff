import math

import pytest

from autolabel.errors import InputError
from autolabel.naming import short_hash
from autolabel.sampling import expected_count, iter_frames
from autolabel.sources import Product, Source, list_sources
from tests.conftest import make_h264, make_image, make_video


@pytest.mark.parametrize("stride", [1, 3, 7, 40])
def test_stride_keeps_frames_0_n_2n(tmp_path, stride):
    video = make_video(tmp_path / "a.mp4", frames=25)
    frames = list(iter_frames(Source(video, "a", True), frame_rate=stride))
    assert [f.index for f in frames] == list(range(0, 25, stride))
    assert len(frames) == math.ceil(25 / stride) == expected_count(Source(video, "a", True), stride, None)
    assert frames[-1].name == f"a_{frames[-1].index:06d}"


def test_fps_keeps_f_frames_per_second(tmp_path):
    video = make_video(tmp_path / "a.mp4", frames=40, fps=10)  # 4 s of video
    frames = list(iter_frames(Source(video, "a", True), fps=2.5))
    assert [f.index for f in frames] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert frames[1].t == pytest.approx(0.4)


def test_skip_set_is_not_yielded(tmp_path):
    video = make_video(tmp_path / "a.mp4", frames=10)
    frames = list(iter_frames(Source(video, "a", True), frame_rate=2, skip={0, 4}))
    assert [f.index for f in frames] == [2, 6, 8]


def test_frames_are_decoded_images(tmp_path):
    video = make_video(tmp_path / "a.mp4", frames=5, size=(96, 64))
    frame = next(iter_frames(Source(video, "a", True), frame_rate=1))
    assert frame.image.shape == (64, 96, 3)
    assert frame.image.dtype.name == "uint8"


def test_unreadable_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(InputError, match="cannot open video"):
        list(iter_frames(Source(bad, "bad", True)))


def test_truncated_video_yields_the_readable_frames_then_fails_clearly(tmp_path):
    import cv2
    import numpy as np

    video = tmp_path / "a.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(40):
        writer.write(np.full((64, 96, 3), i * 5, np.uint8))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    frames = []
    with pytest.raises(InputError, match=r"cut.avi: video ends at frame \d+ of the 40 its header announces"):
        for frame in iter_frames(Source(cut, "cut", True), frame_rate=2):
            frames.append(frame.index)
    assert frames and frames == list(range(0, 2 * len(frames), 2)) and len(frames) < 20


def test_video_cut_before_its_index_cannot_be_opened(tmp_path):
    video = make_video(tmp_path / "a.mp4", frames=60)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.mp4: cannot open video"):
        list(iter_frames(Source(cut, "cut", True)))


def test_images_are_one_frame_and_stems_stay_unique(tmp_path):
    folder = tmp_path / "p"
    make_image(folder / "shot.PNG")
    make_image(folder / "shot.jpg")
    make_video(folder / "Clip One.MOV", frames=3)
    (folder / "notes.txt").write_text("x")
    sources = list_sources(Product("p", "p", folder, folder / "ontology.json"))
    # A changed name and two files sharing a stem each get a hash suffix: readable, never equal.
    assert [(s.path.name, s.stem, s.is_video) for s in sources] == [
        ("Clip One.MOV", f"Clip_One-{short_hash('Clip One')}", True),
        ("shot.PNG", f"shot-{short_hash('shotshot.PNG')}", False),
        ("shot.jpg", f"shot-{short_hash('shotshot.jpg')}", False),
    ]
    frames = list(iter_frames(sources[1]))
    assert len(frames) == 1 and frames[0].index == 0 and frames[0].name == f"{sources[1].stem}_000000"


def _read_all_with_opencv(path) -> list:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            return frames
        frames.append(image)


@pytest.mark.parametrize(
    ("stride", "container"), [(1, "mp4"), (3, "mp4"), (25, "mp4"), (40, "mp4"), (25, "mkv"), (40, "mov")]
)
def test_sparse_sampling_seeks_and_gives_the_frames_of_a_full_read(tmp_path, stride, container):
    """H.264 with B-frames, a keyframe every 10 frames: seeking gives the same pixels as reading every frame."""
    import numpy as np

    from autolabel.sampling import DecodeStats

    video = make_h264(tmp_path / f"phone.{container}", frames=120, gop=10)
    reference = _read_all_with_opencv(video)
    assert len(reference) == 120
    stats = DecodeStats()
    frames = list(iter_frames(Source(video, "phone", True), frame_rate=stride, stats=stats))
    assert [f.index for f in frames] == list(range(0, 120, stride))
    for f in frames:
        np.testing.assert_array_equal(f.image, reference[f.index])
        assert f.t == pytest.approx(f.index / 30, abs=1e-3)  # Matroska counts milliseconds
    if stride >= 10:  # a keyframe lies between kept frames: seek, decode at most a GOP per kept frame
        assert stats.seeks == len(frames) - 1
        assert stats.decoded <= 10 * len(frames) + 3
    else:
        assert stats.seeks == 0 and stats.decoded == frames[-1].index + 1  # up to the last kept frame


def test_resume_skips_by_seeking_and_fps_mode_keeps_time(tmp_path):
    import numpy as np

    from autolabel.sampling import DecodeStats

    video = make_h264(tmp_path / "phone.mp4", frames=120, gop=10)
    reference = _read_all_with_opencv(video)
    stats = DecodeStats()
    done = set(range(0, 100, 2))  # the first 100 frames were labeled before a crash
    frames = list(iter_frames(Source(video, "phone", True), frame_rate=2, skip=done, stats=stats))
    assert [f.index for f in frames] == list(range(100, 120, 2))
    assert stats.seeks == 1 and stats.decoded <= 20 + 3  # straight to the keyframe at 100
    for f in frames:
        np.testing.assert_array_equal(f.image, reference[f.index])
    kept = list(iter_frames(Source(video, "phone", True), fps=3))  # 30 fps video: every 10th frame
    assert [f.index for f in kept] == list(range(0, 120, 10))
    assert [round(f.t, 3) for f in kept] == [round(i / 3, 3) for i in range(12)]


def test_truncated_mp4_with_its_index_in_front(tmp_path):
    """moov before the data (faststart): the index lists frames the file no longer holds."""
    video = make_h264(tmp_path / "a.mp4", frames=90, gop=10, movflags="faststart")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size * 2 // 3])
    frames = []
    with pytest.raises(InputError, match=r"cut.mp4: (video ends at frame \d+ of the 90|cannot decode frame)"):
        for frame in iter_frames(Source(cut, "cut", True), frame_rate=5):
            frames.append(frame.index)
    assert frames and frames == list(range(0, 5 * len(frames), 5)) and len(frames) < 18


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_portrait_phone_videos_come_out_upright(tmp_path, rotation):
    """The display matrix is applied, as OpenCV does: a portrait clip gives portrait frames."""
    import numpy as np

    video = make_h264(tmp_path / "portrait.mp4", frames=40, gop=10, size=(96, 64), rotation=rotation)
    reference = _read_all_with_opencv(video)  # OpenCV turns frames upright by default
    frames = list(iter_frames(Source(video, "portrait", True), frame_rate=13))
    assert [f.index for f in frames] == [0, 13, 26, 39]
    for f in frames:
        assert f.image.shape == ((64, 96, 3) if rotation == 180 else (96, 64, 3))
        assert f.image.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(f.image, reference[f.index])


def test_a_sound_file_named_mp4_is_one_clear_error(tmp_path):
    import av
    import numpy as np

    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(InputError, match="voice.mp4: has no video stream"):
        list(iter_frames(Source(path, "voice", True)))
    with pytest.raises(InputError, match="voice.mp4: has no video stream"):
        expected_count(Source(path, "voice", True), 10, None)


def test_the_bundled_clip_counts_the_frames_its_decoder_gives():
    """box.mp4's last packet is cut by its edit list (flagged discard): the index leaves it out, as the decoder does."""
    from pathlib import Path

    from autolabel.sampling import index_video

    video = Path(__file__).resolve().parents[1] / "videos" / "box" / "box.mp4"
    assert index_video(video).frames == len(_read_all_with_opencv(video)) == 455


@pytest.mark.parametrize("live", [True, False])
def test_a_header_without_a_frame_count_says_unknown_and_is_read_to_its_end(tmp_path, live):
    """Matroska states no frame count; written live (as a recorder does) not even a duration. Resumed after 5 of 20."""
    from autolabel.sampling import estimated_count

    video = make_h264(tmp_path / "live.mkv", frames=20, gop=5, **({"live": "1"} if live else {}))
    source = Source(video, "live", True)
    assert expected_count(source, 1, None) is None
    assert expected_count(source, 3, None) is None
    assert estimated_count(source, 1, None) == (0 if live else 20)  # duration times rate, when there is one
    assert [f.index for f in iter_frames(source, frame_rate=1, skip=set(range(5)))] == list(range(5, 20))
    assert [f.index for f in iter_frames(source, frame_rate=3, skip={0, 3})] == [6, 9, 12, 15, 18]


def test_a_header_count_is_exact_under_a_stride_and_unknown_under_fps(tmp_path):
    from autolabel.sampling import estimated_count

    source = Source(make_h264(tmp_path / "a.mp4", frames=30, gop=10), "a", True)  # 1 s at 30 fps
    assert expected_count(source, 4, None) == 8 == len(list(iter_frames(source, frame_rate=4)))
    assert expected_count(source, 4, 3.0) is None  # which frames fps keeps depends on every timestamp
    assert estimated_count(source, 4, 3.0) == 3 == len(list(iter_frames(source, fps=3.0)))
    image = Source(make_image(tmp_path / "b.png"), "b", False)
    assert expected_count(image, 4, None) == estimated_count(image, 4, 3.0) == 1


def _make_vfr(path, times_ms: list[int]):
    """H.264 with B-frames whose frame i is shown at ``times_ms[i]`` (a variable frame rate, as phones record)."""
    from fractions import Fraction

    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"preset": "ultrafast", "bf": "2", "g": "10"}
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 2 * i, np.uint8), format="bgr24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_fps_samples_variable_frame_rate_video_by_timestamp(tmp_path, container):
    """2 s at 25 fps, 2 s at 5 fps, 1 s at 50 fps: --fps 2 keeps the first frame at or after every 0.5 s."""
    import numpy as np

    times = [*range(0, 2000, 40), *range(2000, 4000, 200), *range(4000, 5000, 20)]
    video = _make_vfr(tmp_path / f"vfr.{container}", times)
    frames = list(iter_frames(Source(video, "vfr", True), fps=2))
    kept = [round(f.t * 1000) for f in frames]
    assert kept == [min(t for t in times if t >= g) for g in range(0, 5000, 500)]
    assert kept == [0, 520, 1000, 1520, 2000, 2600, 3000, 3600, 4000, 4500]
    assert np.diff(kept).max() <= 500 + 200 and np.diff(kept).min() >= 500 - 200  # never more than a frame off
    reference = _read_all_with_opencv(video)
    assert len(reference) == len(times)
    for f, t in zip(frames, kept, strict=True):
        assert f.index == times.index(t)  # still the display index...
        np.testing.assert_array_equal(f.image, reference[f.index])  # ...and the picture shown then
    resumed = list(iter_frames(Source(video, "vfr", True), fps=2, skip={f.index for f in frames[:4]}))
    assert [f.index for f in resumed] == [f.index for f in frames[4:]]
    # The stride stays a stride by index.
    assert [f.index for f in iter_frames(Source(video, "vfr", True), frame_rate=40)] == [0, 40, 80]


def _png_header(path, width: int, height: int, rows: int = 4):
    """An RGB PNG whose header says ``width`` x ``height``, holding only ``rows`` rows of zeros (a cheap bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes((1 + 3 * width) * rows), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (40000, 40000, r"image is 40000x40000 \(1600 megapixels\)"),
        (12000, 10000, r"image is 12000x10000 \(120 megapixels\)"),
    ],
)
def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(tmp_path, width, height, message):
    import warnings

    from autolabel.sampling import MAX_IMAGE_PIXELS, read_image

    assert width * height > MAX_IMAGE_PIXELS
    bomb = _png_header(tmp_path / "bomb.png", width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even Pillow's DecompressionBombWarning
        with pytest.raises(InputError, match=rf"bomb.png: {message}; autolabel reads at most 100 megapixels"):
            read_image(bomb)
        with pytest.raises(InputError, match="bomb.png: "):
            list(iter_frames(Source(bomb, "bomb", False)))


def test_unreadable_images_are_one_clear_error(tmp_path):
    import os

    from autolabel.sampling import read_image

    good = make_image(tmp_path / "good.png")
    assert read_image(good).shape == (60, 80, 3)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    header_only = tmp_path / "header.png"
    header_only.write_bytes(good.read_bytes()[:20])
    cases = {
        folder: "cannot read image",
        text: "cannot decode image",
        cut: "cannot decode image",
        header_only: "cannot (read|decode) image",
    }
    if os.geteuid() != 0:  # root reads anything
        locked = make_image(tmp_path / "locked.png")
        locked.chmod(0)
        cases[locked] = r"cannot read image \(Permission denied\)"
    for path, message in cases.items():
        with pytest.raises(InputError, match=rf"{path.name}: {message}"):
            read_image(path)


def test_not_an_image_is_one_clear_error_after_ultralytics_patched_pillow(tmp_path):
    """Ultralytics replaces PIL.Image.open with one that installs pi-heif when a file is not an image."""
    from autolabel.sampling import read_image
    from autolabel.yolo import ultralytics_env

    ultralytics_env()
    import ultralytics  # noqa: F401

    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(InputError, match="notes.jpg: cannot decode image"):
        read_image(text)
    for ext in (".jpg", ".png", ".bmp", ".webp"):
        assert read_image(make_image(tmp_path / f"ok{ext}")).shape == (60, 80, 3)
