"""THE PARITY TEST: our Wav2Lip inference against a transcription of the official inference.py.

`official_*` below transcribe the data flow of Rudrabha/Wav2Lip @ 5c90fa9 inference.py (and audio.py
for the mel, face_detection/api.py for the detector's box conversion) step by step, on cv2-style BGR
frames, with nothing from methods.wav2lip.inference or data_recipes: mel chunking loop, frame
truncation / cyclic reuse, pads and in-place smoothing, --box, cv2.resize to 96, masking,
concatenation order, / 255., model call, * 255, astype(uint8), cv2.resize back, paste. Only the
network class is shared (its layout and forward are tested in test_wav2lip_models.py), and the
checkpoint is read by the reference with the official loader logic (str.replace of 'module.').
Two deviations from a literal copy, neither affecting the numbers: the S3FD detector is replaced by
given detections (the test feeds both sides the same boxes), and frames are returned instead of
being written to an AVI.

Inputs: real frames and audio of the embedded demo clip, a seeded generator saved in the official
checkpoint format with DataParallel's `module.` prefix. Acceptance: every output pixel within one
grey level.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

SR = 16000


# ------------------------------------------------------------------------- official transcription


def official_melspectrogram(wav: np.ndarray) -> np.ndarray:
    """audio.melspectrogram with hparams.py values, as run with the pinned librosa 0.7 (reflect-padded
    centred STFT, complex64 result, float32 Slaney mel basis)."""
    import librosa
    from scipy import signal

    y = signal.lfilter([1, -0.97], [1], wav)
    D = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect").astype(np.complex64)
    mel_basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    # numpy 1.17 (pinned by the original) kept float32 arrays float32 next to float64 scalars; numpy >= 2
    # promotes them, so the scalars are given as float32 to keep the original's float32 arithmetic
    f = np.float32
    min_level = f(np.exp(-100 / 20 * np.log(10)))
    S = f(20) * np.log10(np.maximum(min_level, np.dot(mel_basis, np.abs(D)))) - f(20)
    return np.clip((f(2) * f(4.0)) * ((S - f(-100)) / f(100)) - f(4.0), f(-4.0), f(4.0))


def official_get_detections(dets: list[np.ndarray]) -> list:
    """face_detection/api.py get_detections_for_batch: first box, clip at 0, int() of x1, y1, x2, y2."""
    results = []
    for d in dets:
        if len(d) == 0:
            results.append(None)
            continue
        d = d[0]
        d = np.clip(d, 0, None)
        x1, y1, x2, y2 = map(int, d[:-1])
        results.append((x1, y1, x2, y2))
    return results


def official_get_smoothened_boxes(boxes, T):
    for i in range(len(boxes)):
        if i + T > len(boxes):
            window = boxes[len(boxes) - T:]
        else:
            window = boxes[i: i + T]
        boxes[i] = np.mean(window, axis=0)
    return boxes


def official_face_detect(images, predictions, pads, nosmooth):
    results = []
    pady1, pady2, padx1, padx2 = pads
    for rect, image in zip(predictions, images):
        if rect is None:
            raise ValueError('Face not detected! Ensure the video contains a face in all the frames.')
        y1 = max(0, rect[1] - pady1)
        y2 = min(image.shape[0], rect[3] + pady2)
        x1 = max(0, rect[0] - padx1)
        x2 = min(image.shape[1], rect[2] + padx2)
        results.append([x1, y1, x2, y2])
    boxes = np.array(results)
    if not nosmooth:
        boxes = official_get_smoothened_boxes(boxes, T=5)
    results = [[image[y1: y2, x1:x2], (y1, y2, x1, x2)] for image, (x1, y1, x2, y2) in zip(images, boxes)]
    return results


def official_datagen(frames, mels, box, detections, pads, nosmooth, wav2lip_batch_size, img_size=96, static=False):
    img_batch, mel_batch, frame_batch, coords_batch = [], [], [], []
    if box[0] == -1:
        # the detector runs on exactly the frames it is given (already cut to len(mel_chunks))
        predictions = official_get_detections(detections[:len(frames)])
        face_det_results = official_face_detect(frames, predictions, pads, nosmooth)
    else:
        y1, y2, x1, x2 = box
        face_det_results = [[f[y1: y2, x1:x2], (y1, y2, x1, x2)] for f in frames]

    for i, m in enumerate(mels):
        idx = 0 if static else i % len(frames)
        frame_to_save = frames[idx].copy()
        face, coords = face_det_results[idx].copy()
        face = cv2_resize(face, (img_size, img_size))
        img_batch.append(face)
        mel_batch.append(m)
        frame_batch.append(frame_to_save)
        coords_batch.append(coords)
        if len(img_batch) >= wav2lip_batch_size:
            img_batch, mel_batch = np.asarray(img_batch), np.asarray(mel_batch)
            img_masked = img_batch.copy()
            img_masked[:, img_size // 2:] = 0
            img_batch = np.concatenate((img_masked, img_batch), axis=3) / 255.
            mel_batch = np.reshape(mel_batch, [len(mel_batch), mel_batch.shape[1], mel_batch.shape[2], 1])
            yield img_batch, mel_batch, frame_batch, coords_batch
            img_batch, mel_batch, frame_batch, coords_batch = [], [], [], []

    if len(img_batch) > 0:
        img_batch, mel_batch = np.asarray(img_batch), np.asarray(mel_batch)
        img_masked = img_batch.copy()
        img_masked[:, img_size // 2:] = 0
        img_batch = np.concatenate((img_masked, img_batch), axis=3) / 255.
        mel_batch = np.reshape(mel_batch, [len(mel_batch), mel_batch.shape[1], mel_batch.shape[2], 1])
        yield img_batch, mel_batch, frame_batch, coords_batch


def cv2_resize(img, size):
    import cv2

    return cv2.resize(img, size)  # the original passes no interpolation: cv2's default INTER_LINEAR


def official_load_model(path):
    from methods.wav2lip.models import Wav2Lip

    model = Wav2Lip()
    checkpoint = torch.load(path, map_location=lambda storage, loc: storage, weights_only=True)
    s = checkpoint["state_dict"]
    new_s = {}
    for k, v in s.items():
        new_s[k.replace('module.', '')] = v
    model.load_state_dict(new_s)
    return model.eval()


def official_inference(full_frames, wav, checkpoint_path, fps=25., box=(-1, -1, -1, -1), detections=None,
                       pads=(0, 10, 0, 0), nosmooth=False, wav2lip_batch_size=128):
    """main() of inference.py from the mel on; returns the BGR frames it would write to the video."""
    mel = official_melspectrogram(wav)
    if np.isnan(mel.reshape(-1)).sum() > 0:
        raise ValueError('Mel contains nan!')
    mel_step_size = 16
    mel_chunks = []
    mel_idx_multiplier = 80. / fps
    i = 0
    while 1:
        start_idx = int(i * mel_idx_multiplier)
        if start_idx + mel_step_size > len(mel[0]):
            mel_chunks.append(mel[:, len(mel[0]) - mel_step_size:])
            break
        mel_chunks.append(mel[:, start_idx: start_idx + mel_step_size])
        i += 1

    full_frames = full_frames[:len(mel_chunks)]
    gen = official_datagen(list(full_frames).copy(), mel_chunks, box, detections, pads, nosmooth, wav2lip_batch_size)
    written = []
    for i, (img_batch, mel_batch, frames, coords) in enumerate(gen):
        if i == 0:
            model = official_load_model(checkpoint_path)
        img_batch = torch.FloatTensor(np.transpose(img_batch, (0, 3, 1, 2)))
        mel_batch = torch.FloatTensor(np.transpose(mel_batch, (0, 3, 1, 2)))
        with torch.no_grad():
            pred = model(mel_batch, img_batch)
        pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.
        for p, f, c in zip(pred, frames, coords):
            y1, y2, x1, x2 = c
            p = cv2_resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
            f[y1:y2, x1:x2] = p
            written.append(f)
    return written, len(mel_chunks)


# ------------------------------------------------------------------------------- fixtures


def seeded_generator_state() -> dict[str, torch.Tensor]:
    """A seeded generator whose eval-mode output spans most of [0, 1] (so grey levels are informative):
    torch.manual_seed(0) initialisation, BatchNorm statistics / affine drawn from seed 1, and the
    final 1x1 convolution scaled by 40 (raw init gives sigmoid outputs within 0.46..0.53)."""
    from methods.wav2lip.models import Wav2Lip

    from tests.methods.wav2lip_common import randomise_batchnorm

    torch.manual_seed(0)
    model = randomise_batchnorm(Wav2Lip(), 1)
    with torch.no_grad():
        model.output_block[1].weight.mul_(40.0)
    return model.state_dict()


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    """The seeded generator in the official file format: DataParallel 'module.' keys, official dict keys."""
    path = tmp_path_factory.mktemp("w2l") / "checkpoint_step000000001.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in seeded_generator_state().items()},
                "optimizer": None, "global_step": 1, "global_epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def demo_media(demo_video):
    """First 60 frames (RGB uint8) and the 16 kHz audio of the embedded demo clip."""
    from data_recipes.media import read_audio
    from tests.conftest import first_frames

    return first_frames(demo_video, 60), read_audio(demo_video, SR)


@pytest.fixture(scope="module")
def our_model(official_checkpoint):
    from methods.wav2lip.checkpoint import load_into, read_checkpoint
    from methods.wav2lip.models import Wav2Lip

    model = Wav2Lip()
    load_into(model, read_checkpoint(official_checkpoint))
    return model.eval()


FACE_BOX = (120, 360, 110, 350)  # (y1, y2, x1, x2) around the face in the 450x450 demo frames


def _ours(model, frames_rgb, wav, **kw):
    from data_recipes.audio.mel import wav2lip_mel
    from methods.wav2lip.inference import InferenceOptions, lipsync

    det = kw.pop("detector_boxes", None)
    return lipsync(model, frames_rgb, wav2lip_mel(wav), det, None, InferenceOptions(**kw))


def _compare(ours_rgb: np.ndarray, ref_bgr: list, frames_rgb: np.ndarray) -> None:
    ref = np.stack(ref_bgr)[..., ::-1]
    assert ours_rgb.shape == ref.shape
    diff = np.abs(ours_rgb.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1, f"max difference {diff.max()} grey levels"
    # the comparison is informative: the generator changed the face region a lot
    src = frames_rgb[np.arange(len(ref)) % len(frames_rgb)]
    changed = np.abs(ref.astype(np.int16) - src.astype(np.int16)).max(axis=-1) > 8
    assert changed.mean() > 0.1


def test_parity_fixed_box_with_looping(official_checkpoint, our_model, demo_media):
    """--box path; 0.8 s of audio (17 windows) over 12 frames, so frames are reused cyclically."""
    frames, audio = demo_media
    frames = frames[:12]
    wav = audio[: int(0.8 * SR)]
    ref, n = official_inference(frames[..., ::-1], wav, official_checkpoint, box=FACE_BOX)
    assert n == 17  # 65 mel frames: int(i * 3.2) + 16 <= 65 for i <= 15, plus the final window
    out = _ours(our_model, frames, wav, box=FACE_BOX, batch_size=8)  # batching must not matter
    assert out.frames_without_face == 0
    _compare(out.frames, ref, frames)


def _detections(n: int, seed: int = 0) -> list[np.ndarray]:
    """S3FD-like float detections [x1, y1, x2, y2, score] jittering around the face; a few boxes run
    past the top / left edge so clipping at 0 is exercised."""
    rng = np.random.default_rng(seed)
    base = np.array([112.0, 128.0, 348.0, 352.0])
    out = []
    for i in range(n):
        b = base + rng.normal(0, 4.0, 4)
        if i % 9 == 4:
            b[1] = -3.7  # above the frame
            b[0] = -1.2
        out.append(np.array([np.concatenate([b, [0.99]])]))
    return out


@pytest.mark.parametrize("nosmooth", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_parity_detected_boxes_with_truncation(official_checkpoint, our_model, demo_media, nosmooth):
    """Detected-box path with pads and smoothing; 1.2 s of audio (27 windows) over 40 frames, so the
    official script keeps only the first 27 frames and smooths over those."""
    from data_recipes.crops.wav2lip import detector_box_to_int

    frames, audio = demo_media
    frames = frames[:40]
    wav = audio[: int(1.2 * SR)]
    dets = _detections(len(frames))
    pads = (0, 10, 0, 0)
    ref, n = official_inference(frames[..., ::-1], wav, official_checkpoint, detections=dets, pads=pads,
                                nosmooth=nosmooth)
    assert n == 27  # 97 mel frames: i <= 25, plus the final window
    ours_det = np.array([detector_box_to_int(d[0][:4]) for d in dets])
    out = _ours(our_model, frames, wav, detector_boxes=ours_det, pads=pads, smooth=not nosmooth)
    _compare(out.frames, ref, frames)
    if not nosmooth:
        # smoothing over the 27 used frames differs from smoothing over all 40 at the end: the
        # faithful result depends on the truncation (this is why detector_boxes are re-smoothed)
        from data_recipes.crops.wav2lip import Wav2LipCropConfig, official_boxes

        whole = official_boxes(ours_det.astype(float), frames.shape[1:3], Wav2LipCropConfig(pads=pads))
        assert (whole[:27] != out.boxes[:27]).any()


def test_parity_catches_a_colour_order_mistake(official_checkpoint, our_model, demo_media):
    """The check above can fail: feeding the model RGB instead of BGR moves pixels by many levels."""
    frames, audio = demo_media
    frames = frames[:7]
    wav = audio[: int(0.4 * SR)]
    ref, _ = official_inference(frames, wav, official_checkpoint, box=FACE_BOX)  # RGB passed as if BGR
    out = _ours(our_model, frames, wav, box=FACE_BOX)
    swapped = np.stack(ref)[..., ::-1]
    assert np.abs(out.frames.astype(np.int16) - swapped.astype(np.int16)).max() > 10


def test_mel_transcription_matches_the_recipe_mel(demo_media):
    """Our mel (data_recipes.audio.mel, what `bench run` and `bench generate` both feed Wav2Lip)
    equals the transcription above bit for bit on the demo's speech; the float64 formula does not."""
    from data_recipes.audio import mel as M

    _, audio = demo_media
    wav = audio[: 3 * SR]
    ref = official_melspectrogram(wav)
    ours = M.wav2lip_mel(wav)
    assert ours.shape == ref.shape == (80, 241) and ours.dtype == np.float32
    assert np.array_equal(ours, ref)
    import librosa
    from scipy import signal

    spec = np.abs(librosa.stft(y=signal.lfilter([1, -0.97], [1], wav), n_fft=800, hop_length=200, win_length=800,
                               pad_mode="reflect"))
    db = 20 * np.log10(np.maximum(1e-5, M._mel_basis().astype(np.float64) @ spec)) - 20
    f64 = np.clip(8 * ((db + 100) / 100) - 4, -4, 4).astype(np.float32)
    assert not np.array_equal(f64, ref)   # the test tells the two arithmetics apart


# ------------------------------------------------------- bench generate on files, bit for bit (CPU fp32)


def _cv2_frames(path, n: int) -> np.ndarray:
    """The face video's frames as inference.py reads them: cv2.VideoCapture, BGR."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return np.stack(frames)


@pytest.mark.parametrize("resize_factor", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_bench_generate_equals_the_official_frames_on_obama(official_checkpoint, shared_data, tmp_path, resize_factor):
    """`bench generate` (fixed box, official-format checkpoint, CPU fp32, lossless .mkv) against the
    transcription of inference.py on the shared Obama clip: the same frame count and 0 differing values."""
    import cv2
    import librosa

    from bench.cli import main
    from data_recipes.media import read_video_frames
    from metrics.sync import inputs

    face = tmp_path / "face.mp4"
    inputs.run_ffmpeg(["-y", "-i", str(shared_data / "clips/obama_20s.mp4"), "-t", "2", "-c", "copy", str(face)])
    speech = tmp_path / "speech.wav"
    inputs.run_ffmpeg(["-y", "-i", str(shared_data / "audio/english_60s.wav"), "-ss", "3", "-t", "2.5", str(speech)])
    box = (90, 360, 110, 350) if resize_factor == 1 else (45, 180, 55, 175)
    out = tmp_path / "out.mkv"
    assert main(["generate", "--method", "wav2lip", "--face", str(face), "--audio", str(speech), "--out", str(out),
                 "--set", f"wav2lip.checkpoint={official_checkpoint}", "--set", "wav2lip.box=" + ",".join(map(str, box)),
                 "--resize-factor", str(resize_factor), "--device", "cpu", "--progress", "off"]) == 0
    ours = read_video_frames(out)

    full = _cv2_frames(face, 10_000)
    if resize_factor > 1:
        full = np.stack([cv2.resize(f, (f.shape[1] // resize_factor, f.shape[0] // resize_factor)) for f in full])
    wav = librosa.load(str(speech), sr=16000)[0]
    ref, n = official_inference(full, wav, official_checkpoint, box=box)
    assert len(full) < n  # 2.5 s of audio over 2 s of video: frames are reused cyclically
    assert ours.shape == (n,) + full.shape[1:]
    ref_rgb = np.stack(ref)[..., ::-1]
    assert int((ours != ref_rgb).sum()) == 0
    # and the generator really changed the faces
    src = full[np.arange(n) % len(full)][..., ::-1]
    assert (np.abs(ref_rgb.astype(int) - src).max(axis=-1) > 8).mean() > 0.05
