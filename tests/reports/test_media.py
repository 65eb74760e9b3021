"""Frame strips and videos: thumbnails, mouth zooms, side-by-side h264, sample-folder safety."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from reports.media import MediaConfig, Sample, choose_requests, mouth_zoom, side_by_side, slug, thumbnail


@pytest.fixture(scope="module")
def real_frames(demo_video):
    """20 real frames (uint8 RGB) of the demo clip and 0.8 s of its audio at 16 kHz."""
    from data_recipes.media import read_audio
    from tests.conftest import first_frames

    return first_frames(demo_video, 20), read_audio(demo_video)[: 20 * 640]


def test_thumbnail_keeps_aspect_and_never_upscales(real_frames):
    frames, _ = real_frames
    t = thumbnail(frames[0], 150)
    h, w = frames.shape[1:3]
    assert t.shape[0] == 150 and t.shape[1] == round(w * 150 / h)
    big = thumbnail(frames[0], 10_000)
    assert big.shape == frames[0].shape and np.array_equal(big, frames[0])


def test_mouth_zoom_is_the_box_enlarged_pixel_for_pixel(real_frames):
    frames, _ = real_frames
    box = (200, 280, 260, 320)  # 60 x 40 pixels
    z = mouth_zoom(frames[0], box, 180)  # x3 exactly
    assert z.shape == (120, 180, 3)
    crop = frames[0][280:320, 200:260]
    assert np.array_equal(z[::3, ::3], crop)  # nearest neighbour: every 3rd pixel is the original


def test_mouth_zoom_clamps_and_rejects_degenerate_boxes(real_frames):
    frames, _ = real_frames
    h, w = frames.shape[1:3]
    assert mouth_zoom(frames[0], (-50, -50, 40, 30), 80) is not None
    assert mouth_zoom(frames[0], (w + 5, 10, w + 50, 40), 80) is None


def test_side_by_side_is_browser_playable_h264_with_audio(real_frames, tmp_path):
    from data_recipes.media import write_video

    frames, audio = real_frames
    a = write_video(tmp_path / "a.mp4", frames, audio=audio)
    b = write_video(tmp_path / "b.mp4", frames[:12, ::2, ::2].copy(), audio=audio[: 12 * 640])
    out = tmp_path / "sbs.mp4"
    w, h = side_by_side([("ground truth", a), ("<b>m</b>", b)], out, height=96, poster=tmp_path / "p.png")
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert (v.codec_context.width, v.codec_context.height) == (w, h) == (2 * 96, 96)  # square tiles
        n = sum(1 for _ in c.decode(video=0))
    assert n == 12  # as long as the shortest input
    with av.open(str(out)) as c:
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
    assert (tmp_path / "p.png").stat().st_size > 0


def test_sample_never_reads_outside_its_folder(tmp_path):
    folder = tmp_path / "runs" / "samples" / "m" / "k"
    folder.mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    (folder / "video.mp4").write_bytes(b"x")
    s = Sample(folder, {"frame_indices": [0], "files": ["../../../../secret.png"], "video": "../../../../secret.png"})
    assert s.frame_file(0) is None and s.video is None
    assert Sample(folder, {"video": "video.mp4"}).video == folder / "video.mp4"


def test_slug_is_file_safe_and_unique():
    assert slug("wav2lip") == "wav2lip"
    a, b = slug("../x y"), slug("../x_y")
    assert "/" not in a and " " not in a and a != b


def test_request_choice_prefers_self_and_keeps_one_cross(tmp_path):
    def s(kind):
        return {"m": Sample(tmp_path, {"kind": kind})}

    samples = {f"self{i}": s("self") for i in range(6)} | {"x1": s("cross"), "x2": s("cross")}
    chosen = choose_requests(samples, MediaConfig().max_requests)
    assert chosen == ["self0", "self1", "self2", "x1"]
    assert json.dumps(chosen)
