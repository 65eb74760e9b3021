"""Pieces of the Wav2Lip inference: box smoothing quirks, windows, face-less frames, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_recipes.crops.wav2lip import Wav2LipCropConfig, official_boxes
from methods.wav2lip.inference import (InferenceOptions, face_batch, fixed_boxes, frame_boxes, lipsync, mel_chunks,
                                       paste, source_indices)


def _official_smooth(boxes, T=5):
    """inference.py get_smoothened_boxes, transcribed (in place on an int array)."""
    for i in range(len(boxes)):
        window = boxes[len(boxes) - T:] if i + T > len(boxes) else boxes[i: i + T]
        boxes[i] = np.mean(window, axis=0)
    return boxes


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 9])
def test_smoothing_matches_the_original_for_any_length(n):
    """Including fewer than 5 boxes, where the original's window is a negative slice (last 2 of 3)."""
    rng = np.random.default_rng(n)
    det = rng.uniform(50, 300, (n, 4))
    det[:, 2:] += 100
    ours = official_boxes(det, (450, 450), Wav2LipCropConfig())
    raw = [[max(0, int(b[0])), max(0, int(b[1])), min(450, int(b[2])), min(450, int(b[3]) + 10)] for b in det]
    assert ours.tolist() == _official_smooth(np.array(raw)).tolist()


def test_frame_boxes_smooth_only_the_used_frames():
    det = np.array([[100, 100, 200, 200]] * 8 + [[140, 100, 240, 200]] * 4)
    used = frame_boxes(det, 8, (450, 450))
    assert used.shape == (8, 4)
    # over the first 8 frames only, the last window holds no shifted box; over all 12 it would
    assert (used[:, 0] == 100).all()
    assert official_boxes(det.astype(float), (450, 450))[7, 0] > 100


def test_fixed_box_is_y1_y2_x1_x2_like_the_command_line():
    assert fixed_boxes((10, 90, 20, 80), 2).tolist() == [[20, 10, 80, 90]] * 2


def test_mel_chunks_and_cyclic_frames():
    mel = np.arange(80 * 241, dtype=np.float32).reshape(80, 241)
    chunks = mel_chunks(mel)
    assert chunks.shape == (72, 80, 16)
    np.testing.assert_array_equal(chunks[3], mel[:, 9:25])       # int(3 * 3.2) = 9
    np.testing.assert_array_equal(chunks[-1], mel[:, 225:241])   # the last 16 frames
    assert source_indices(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_face_batch_layout():
    crops = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    x = face_batch(crops)
    assert x.shape == (2, 6, 96, 96) and x.dtype == np.float32
    assert not x[:, :3, 48:].any()                                         # masked lower half
    np.testing.assert_array_equal(x[:, :3, :48], (crops[:, :48] / 255.0).transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(x[:, 3:], (crops / 255.0).transpose(0, 3, 1, 2).astype(np.float32))


def test_paste_faithful_truncates_and_improvements_differ():
    frame = np.full((100, 100, 3), 50, np.uint8)
    pred = np.full((96, 96, 3), 200.9, np.float32)
    pred[..., 0] = 10.7  # blue in BGR
    out = paste(frame, pred, (10, 20, 58, 68))
    assert (out[20:68, 10:58] == [200, 200, 10]).all() and (out[:20] == 50).all()  # RGB, truncated
    rounded = paste(frame, pred, (10, 20, 58, 68), InferenceOptions(round_prediction=True))
    assert (rounded[20:68, 10:58] == [201, 201, 11]).all()
    feather = paste(frame, pred, (10, 20, 58, 68), InferenceOptions(blend="feather"))
    assert (feather[20:40, 10:58] == 50).all() and feather[60, 34, 0] > 150  # upper half kept, mouth pasted
    assert InferenceOptions().faithful and not InferenceOptions(blend="feather").faithful


class _Half(torch.nn.Module):
    """Stands in for the generator: returns 0.5 everywhere (the pipeline around it is under test)."""

    def forward(self, mel, faces):
        return torch.full((faces.shape[0], 3, 96, 96), 0.5)


def test_frames_without_a_face_pass_through_and_are_counted():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (10, 120, 120, 3), dtype=np.uint8)
    det = np.tile([[20, 20, 100, 100]], (10, 1))
    has_face = np.ones(10, bool)
    has_face[[2, 3, 7]] = False
    mel = rng.uniform(-4, 4, (80, 1 + 14 * 640 // 200)).astype(np.float32)  # 14 frames of audio -> 11 windows
    out = lipsync(_Half(), frames, mel, det, has_face)
    n = len(out.frames)
    assert n == 11
    src = np.arange(n) % 10
    no_face = ~has_face[src]
    assert out.frames_without_face == int(no_face.sum()) == 3         # output 10 reuses frame 0 (has a face)
    for i in range(n):
        if no_face[i]:
            np.testing.assert_array_equal(out.frames[i], frames[src[i]])
        else:
            assert (out.frames[i][20:110, 20:100] == 127).all()       # 0.5 * 255 truncated


class _PerFrame(torch.nn.Module):
    """Output = the unmasked input crop (per frame, independent of the batch); records batch sizes."""

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, mel, faces):
        self.batches.append(int(faces.shape[0]))
        return faces[:, 3:].clone()


@pytest.mark.parametrize("pending_frames", [1000, 3])
def test_streamed_lipsync_equals_the_array_one_and_holds_a_bounded_window(pending_frames):
    """lipsync_stream reads the target frames as a stream and hands out each output frame in order; it
    holds at most the batch being filled (official batches while they fit the cap, early ones after)."""
    from methods.wav2lip.inference import lipsync_stream

    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (9, 120, 120, 3), dtype=np.uint8)
    det = np.tile([[20, 20, 100, 100]], (9, 1))
    has_face = np.ones(9, bool)
    has_face[[1, 5, 6]] = False
    mel = rng.uniform(-4, 4, (80, 1 + 24 * 640 // 200)).astype(np.float32)   # 21 windows: the video loops
    options = InferenceOptions(batch_size=4)
    reference = lipsync(_PerFrame(), frames, mel, det, has_face, options)
    n = len(reference.frames)
    held, max_held, out = 0, 0, []

    def source():
        nonlocal held, max_held
        for i in range(n):
            held += 1
            max_held = max(max_held, held)
            yield frames[i % 9]

    def sink(i, frame):
        nonlocal held
        held -= 1
        out.append((i, frame.copy()))

    model = _PerFrame()
    got = lipsync_stream(model, source(), 9, (120, 120), mel, sink, det, has_face, options,
                         pending_bytes=pending_frames * 120 * 120 * 3)
    assert [i for i, _ in out] == list(range(n)) and got.count == n
    np.testing.assert_array_equal(np.stack([f for _, f in out]), reference.frames)
    assert got.frames_without_face == reference.frames_without_face
    np.testing.assert_array_equal(got.boxes, reference.boxes)
    faces = int(has_face[np.arange(n) % 9].sum())
    assert sum(model.batches) == faces
    if pending_frames >= 1000:
        # the official batches: consecutive frames with a face, 4 at a time
        assert model.batches == [4] * (faces // 4) + ([faces % 4] if faces % 4 else [])
        assert max_held <= 4 + 3          # a batch of faces plus the faceless frames between them
    else:
        assert max_held <= pending_frames
