"""Wav2Lip inference as small pure pieces, faithful to the official inference.py (Rudrabha/Wav2Lip @ 5c90fa9).

The official data flow, and where each step lives here:
1. mel of the driving audio; windows start at int(i * 80 / fps), the first window that would run
   past the end is replaced by the last 16 mel frames and ends the loop: `mel_chunks` (the count N is
   the number of output frames);
2. video frames are cut to the first N (`frames[:N]`) or reused cyclically (frame i % T) when shorter;
3. face boxes: the detector's box per used frame, padded (top, bottom, left, right), smoothed in place
   by a truncating 5-frame forward mean over the *used* frames (`frame_boxes`), or one fixed box
   (y1, y2, x1, x2) without pads or smoothing like `--box`;
4. crop frame[y1:y2, x1:x2] -> 96x96 (cv2 INTER_LINEAR, aspect not kept), BGR: `crop_faces`;
5. model input: [crop with rows 48..95 zeroed, crop] on channels / 255.: `face_batch`; mel (B,1,80,16);
6. batches of 128, prediction * 255 in BGR: `predict`;
7. `astype(uint8)` (truncation), cv2.resize back to the box (INTER_LINEAR), hard paste: `paste`.

Colour: the suite's frames are RGB; the model sees BGR. Crops and resizes act per channel, so we crop
the RGB frame and flip the channel axis of the 96x96 crop (and flip the prediction back), which is
bit-identical to working on BGR frames. Frames without a face (the official script aborts on them)
pass through unchanged and are counted.

Non-faithful improvements exist only behind options that are off by default (`blend`,
`paste_resize`, `round_prediction`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, Iterable, Literal

import numpy as np

from data_recipes.audio.mel import WINDOW_FRAMES, inference_windows, wav2lip_mel
from data_recipes.crops.wav2lip import CROP_SIZE, OFFICIAL_PADS, Wav2LipCropConfig, official_boxes

if TYPE_CHECKING:
    import torch

    from bench.progress import Progress

OFFICIAL_BATCH_SIZE = 128
Precision = Literal["fp32", "bf16", "amp"]


@dataclass(frozen=True)
class InferenceOptions:
    """How to run the generator on a video.

    pads: (top, bottom, left, right) added to detector boxes; smooth: the official 5-frame box mean
    (--nosmooth turns it off); box: a fixed (y1, y2, x1, x2) box used for every frame instead of
    detection (--box); batch_size: frames per forward pass (official 128); precision: "fp32"
    (faithful), "bf16" (autocast, CPU or CUDA) or "amp" (fp16 autocast on CUDA, bf16 on CPU).
    Improvements, all off in the faithful mode: blend="feather" blends the lower half of the box with
    a feathered mask instead of pasting the whole box; paste_resize="lanczos" resizes the 96x96
    prediction back with Lanczos instead of bilinear; round_prediction rounds instead of truncating.
    """

    pads: tuple[int, int, int, int] = OFFICIAL_PADS
    smooth: bool = True
    box: tuple[int, int, int, int] | None = None
    batch_size: int = OFFICIAL_BATCH_SIZE
    precision: Precision = "fp32"
    blend: Literal["hard", "feather"] = "hard"
    paste_resize: Literal["linear", "lanczos"] = "linear"
    round_prediction: bool = False

    @property
    def faithful(self) -> bool:
        return self.blend == "hard" and self.paste_resize == "linear" and not self.round_prediction \
            and self.precision == "fp32"


def mel_chunks(mel: np.ndarray, fps: float = 25.0) -> np.ndarray:
    """(N, 80, 16) float32 mel windows of the official loop; N is the number of output frames."""
    starts = inference_windows(mel, fps)
    return np.stack([mel[:, s:s + WINDOW_FRAMES] for s in starts]).astype(np.float32, copy=False)


def source_indices(num_out: int, num_frames: int) -> np.ndarray:
    """Video frame used for each output frame: i for i < T, then cyclic (i % T) as the original."""
    if num_frames <= 0:
        raise ValueError("the target video has no frames")
    return np.arange(num_out) % num_frames


def frame_boxes(detector_boxes: np.ndarray, num_used: int, frame_hw: tuple[int, int],
                pads: tuple[int, int, int, int] = OFFICIAL_PADS, smooth: bool = True) -> np.ndarray:
    """(num_used, 4) int x1, y1, x2, y2 boxes for the frames the official script keeps.

    `detector_boxes` (T, 4) are the detector's boxes as its API returns them (clipped at 0, int).
    The script pads and smooths only `frames[:num_used]` (num_used = min(N, T)), so the last windows of
    the smoothing depend on how many frames the audio uses; this reproduces that.
    """
    used = np.asarray(detector_boxes, dtype=np.float64)[:num_used]
    return official_boxes(used, frame_hw, Wav2LipCropConfig(pads=tuple(pads), smooth=smooth))


def fixed_boxes(box_y1y2x1x2: tuple[int, int, int, int], num_used: int) -> np.ndarray:
    """The `--box` path: the same (y1, y2, x1, x2) box for every frame, as x1, y1, x2, y2 rows."""
    y1, y2, x1, x2 = (int(v) for v in box_y1y2x1x2)
    return np.tile(np.array([[x1, y1, x2, y2]], dtype=np.int64), (num_used, 1))


def crop_faces(frames_rgb: np.ndarray, boxes_xyxy: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """(B, size, size, 3) uint8 BGR crops: frame[y1:y2, x1:x2] resized with cv2 INTER_LINEAR."""
    import cv2

    out = np.empty((len(frames_rgb), size, size, 3), dtype=np.uint8)
    for j, (frame, (x1, y1, x2, y2)) in enumerate(zip(frames_rgb, boxes_xyxy)):
        out[j] = cv2.resize(frame[int(y1):int(y2), int(x1):int(x2)], (size, size),
                            interpolation=cv2.INTER_LINEAR)[..., ::-1]
    return out


def face_batch(crops_bgr: np.ndarray) -> np.ndarray:
    """(B, 6, 96, 96) float32 model input: [crop with rows 48..95 zeroed, crop] / 255.

    The division is done in float64 and then cast, exactly as the original's `/ 255.` followed by
    torch.FloatTensor.
    """
    masked = crops_bgr.copy()
    masked[:, crops_bgr.shape[1] // 2:] = 0
    both = np.concatenate((masked, crops_bgr), axis=3) / 255.0
    return np.ascontiguousarray(both.transpose(0, 3, 1, 2), dtype=np.float32)


def autocast_context(device: str, precision: Precision) -> ContextManager:
    """The autocast region for a precision: nothing (fp32), bf16 autocast, or fp16 AMP on CUDA."""
    import torch

    dev = "cuda" if str(device).startswith("cuda") else "cpu"
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "amp" and dev == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(dev, dtype=torch.bfloat16)


def official_tensor(channels_last: np.ndarray) -> "torch.Tensor":
    """(B, H, W, C) array -> (B, C, H, W) float32 tensor laid out as inference.py's is.

    The official script runs `torch.FloatTensor(np.transpose(batch, (0, 3, 1, 2)))`: a float32 copy
    in torch-allocated memory that keeps the transposed strides, i.e. a channels-last tensor. CPU
    convolutions take a different kernel for channels-last input, so an NCHW copy of the same values
    gives frames up to one grey level apart; this construction gives the official frames exactly.
    """
    import torch

    # a fresh C-order array: canonical strides even for size-1 axes (a [..., None] view has stride 0
    # there, which torch keeps and which sends the mel's convolution down another kernel)
    nhwc = np.empty(np.shape(channels_last), dtype=np.asarray(channels_last).dtype)
    nhwc[...] = channels_last
    return torch.from_numpy(nhwc).permute(0, 3, 1, 2).to(torch.float32, copy=True)


def predict(model: "torch.nn.Module", faces: np.ndarray, mels: np.ndarray, device: str = "cpu",
            precision: Precision = "fp32") -> np.ndarray:
    """(B, 96, 96, 3) float32 BGR predictions in [0, 255] (sigmoid * 255), for an eval-mode model.

    faces: (B, 6, 96, 96) as `face_batch` makes them; mels: (B, 80, 16). Both reach the model as
    the official script builds them (`official_tensor`)."""
    import torch

    f = official_tensor(np.asarray(faces).transpose(0, 2, 3, 1)).to(device)
    m = official_tensor(np.asarray(mels)[..., None]).to(device)   # (B, 80, 16, 1) as np.reshape makes it
    with torch.no_grad(), autocast_context(device, precision):
        pred = model(m, f)
    return pred.float().cpu().numpy().transpose(0, 2, 3, 1) * np.float32(255.0)


def _feather_mask(h: int, w: int) -> np.ndarray:
    """(h, w, 1) float32 weights: 0 in the upper half, ramping to 1 over a margin, 0 at the box edges."""
    margin_y, margin_x = max(1, h // 10), max(1, w // 10)
    ys = np.clip((np.arange(h) - h / 2.0) / margin_y, 0.0, 1.0)
    ys = np.minimum(ys, np.clip((h - 1 - np.arange(h)) / margin_y, 0.0, 1.0))
    xs = np.minimum(np.clip(np.arange(w) / margin_x, 0.0, 1.0), np.clip((w - 1 - np.arange(w)) / margin_x, 0.0, 1.0))
    return (ys[:, None] * xs[None, :])[..., None].astype(np.float32)


def paste(frame_rgb: np.ndarray, pred_bgr: np.ndarray, box_xyxy, options: InferenceOptions = InferenceOptions()) -> np.ndarray:
    """The frame with the prediction pasted into the box; faithful mode = truncate, bilinear, hard paste."""
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box_xyxy)
    if options.round_prediction:
        patch = np.clip(np.rint(pred_bgr), 0, 255).astype(np.uint8)
    else:
        patch = pred_bgr.astype(np.uint8)
    interp = cv2.INTER_LANCZOS4 if options.paste_resize == "lanczos" else cv2.INTER_LINEAR
    patch = cv2.resize(np.ascontiguousarray(patch[..., ::-1]), (x2 - x1, y2 - y1), interpolation=interp)
    out = frame_rgb.copy()
    if options.blend == "feather":
        alpha = _feather_mask(y2 - y1, x2 - x1)
        region = out[y1:y2, x1:x2].astype(np.float32)
        out[y1:y2, x1:x2] = np.clip(np.rint(alpha * patch + (1.0 - alpha) * region), 0, 255).astype(np.uint8)
    else:
        out[y1:y2, x1:x2] = patch
    return out


@dataclass
class InferenceOutput:
    frames: np.ndarray           # (N, H, W, 3) uint8 RGB
    frames_without_face: int
    boxes: np.ndarray            # (N, 4) int x1, y1, x2, y2 used for each output frame
    has_face: np.ndarray         # (N,) bool


def _null_timer(_stage: str) -> ContextManager:
    return contextlib.nullcontext()


# Full-resolution frames a streaming lipsync holds while a batch fills (issue 16): about 40 frames of
# 1080x1920, the official 128 of anything up to 720x540. Past it a batch runs early, smaller.
PENDING_BYTES = 256 * 1024 * 1024


@dataclass
class StreamOutput:
    frames_without_face: int
    boxes: np.ndarray            # (N, 4) int x1, y1, x2, y2 used for each output frame
    has_face: np.ndarray         # (N,) bool
    count: int                   # frames handed to the sink (N)


def lipsync(model: "torch.nn.Module", frames_rgb: np.ndarray, mel: np.ndarray,
            detector_boxes: np.ndarray | None = None, has_face: np.ndarray | None = None,
            options: InferenceOptions = InferenceOptions(), device: str = "cpu", fps: float = 25.0,
            timer: Callable[[str], ContextManager] | None = None,
            progress: "Progress | None" = None) -> InferenceOutput:
    """Run the whole official inference on decoded frames.

    frames_rgb: (T, H, W, 3) uint8 RGB target frames (at least the first min(N, T) are needed);
    mel: (80, M) float32 Wav2Lip mel of the driving audio; detector_boxes: (T, 4) int boxes as the
    detector API returns them (ignored when options.box is set); has_face: (T,) bool, frames without a
    face pass through unchanged. `timer(stage)` is a StageTimer-like context factory ("features",
    "model", "paste_back"). The model must be in eval mode. The frames come out as one array; the
    runner uses `lipsync_stream`, the same code with frames read and written as streams.
    """
    from data_recipes.frames import cyclic

    n_out = len(mel_chunks(mel, fps))
    n_used = min(n_out, len(frames_rgb))
    out = np.empty((n_out,) + frames_rgb.shape[1:], dtype=np.uint8)

    def keep(i: int, frame: np.ndarray) -> None:
        out[i] = frame

    got = lipsync_stream(model, cyclic(frames_rgb[:n_used], n_out), n_used, frames_rgb.shape[1:3], mel, keep,
                         detector_boxes, has_face, options, device, fps, timer, progress)
    return InferenceOutput(out, got.frames_without_face, got.boxes, got.has_face)


def lipsync_stream(model: "torch.nn.Module", source: "Iterable[np.ndarray]", num_used: int,
                   frame_hw: tuple[int, int], mel: np.ndarray, sink: Callable[[int, np.ndarray], None],
                   detector_boxes: np.ndarray | None = None, has_face: np.ndarray | None = None,
                   options: InferenceOptions = InferenceOptions(), device: str = "cpu", fps: float = 25.0,
                   timer: Callable[[str], ContextManager] | None = None,
                   progress: "Progress | None" = None, pending_bytes: int = PENDING_BYTES) -> StreamOutput:
    """`lipsync` on a stream: `source` yields the target frame of each output frame in order (frame
    i % num_used for output i: `data_recipes.frames.cyclic`), `sink(i, frame)` receives output frame
    i, in order. Held at any time: the frames of the batch being filled (at most
    `options.batch_size` with a face, and at most `pending_bytes` of frames, faceless ones included:
    a batch then runs early), so memory does not grow with the clip's length. Batches are the
    official ones (consecutive frames with a face) unless that cap cuts one short; in eval mode the
    network's per-frame output does not depend on the batch, up to float rounding. Decoding and
    the sink's writing are not timed (file IO)."""
    timer = timer or _null_timer
    with timer("features"):
        chunks = mel_chunks(mel, fps)
        n_out = len(chunks)
        n_used = min(n_out, int(num_used))
        if options.box is not None:
            boxes = fixed_boxes(options.box, n_used)
            present = np.ones(n_used, bool)
        else:
            if detector_boxes is None:
                raise ValueError("lipsync needs detector_boxes or a fixed options.box")
            boxes = frame_boxes(detector_boxes, n_used, tuple(frame_hw), options.pads, options.smooth)
            present = np.ones(n_used, bool) if has_face is None else np.asarray(has_face, bool)[:n_used].copy()
        src = source_indices(n_out, n_used)
    frame_bytes = int(np.prod(frame_hw)) * 3
    max_pending = max(1, int(pending_bytes) // max(frame_bytes, 1))
    pending: list[tuple[int, np.ndarray]] = []   # (output index, target frame) not yet handed out
    faces = 0                                     # of them with a face
    missing = 0
    task = progress.task("wav2lip: generate", total=n_out) if progress is not None else None

    def flush() -> None:
        nonlocal faces, missing
        idx = [i for i, _ in pending if present[src[i]]]
        frames = {i: f for i, f in pending}
        pred = None
        if idx:
            with timer("features"):
                crops = crop_faces(np.stack([frames[i] for i in idx]), boxes[src[idx]])
                batch = face_batch(crops)
                mels = chunks[idx]
            with timer("model"):
                pred = predict(model, batch, mels, device, options.precision)
        row = {i: j for j, i in enumerate(idx)}
        for i, frame in pending:
            if i in row:
                with timer("paste_back"):
                    frame = paste(frame, pred[row[i]], boxes[src[i]], options)
            else:
                missing += 1
            sink(i, frame)
        if task is not None:
            task.advance(len(pending))
        pending.clear()
        faces = 0

    try:
        count = 0
        for i, frame in zip(range(n_out), source):
            count += 1
            if not present[src[i]] and not pending:
                missing += 1
                sink(i, frame)          # no batch waiting: a faceless frame passes straight through
                if task is not None:
                    task.advance(1)
                continue
            pending.append((i, frame))
            if present[src[i]]:
                faces += 1
            if faces == options.batch_size or len(pending) >= max_pending:
                flush()
        if pending:
            flush()
        if count != n_out:
            raise ValueError(f"the frame source gave {count} frames for {n_out} output frames")
    finally:
        if task is not None:
            task.__exit__(None, None, None)
    return StreamOutput(missing, boxes[src], present[src], count)


# ------------------------------------------------------------------------------ from files (bench generate)

IMAGE_SUFFIXES = ("jpg", "png", "jpeg")   # inference.py: `args.face.split('.')[1] in [...]` -> a still image


def read_face(path: Path, resize_factor: int = 1, still_fps: float = 25.0) -> tuple[np.ndarray, float]:
    """(T, H, W, 3) uint8 RGB frames and fps of `--face`, read as inference.py reads them.

    Video: cv2.VideoCapture (its BGR frames; fps from CAP_PROP_FPS), each frame resized to
    (w // f, h // f) with cv2's default INTER_LINEAR when resize_factor f > 1. A still image:
    cv2.imread, one frame, `still_fps` (the official --fps). The BGR -> RGB flip is exact.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--face {path}: not a file")
    if path.suffix.lower().lstrip(".") in IMAGE_SUFFIXES:
        img = cv2.imread(str(path))
        if img is None:
            raise ValueError(f"--face {path}: cv2 cannot read this image")
        frames, fps = [img], float(still_fps)
    else:
        cap = cv2.VideoCapture(str(path))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        frames = []
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame)
        finally:
            cap.release()
        if not frames:
            raise ValueError(f"--face {path}: cv2 decoded no frames")
    if resize_factor > 1:
        frames = [cv2.resize(f, (f.shape[1] // resize_factor, f.shape[0] // resize_factor)) for f in frames]
    return np.ascontiguousarray(np.stack(frames)[..., ::-1]), fps


def read_driving_audio(path: Path, folder: Path) -> tuple[np.ndarray, Path]:
    """16 kHz float32 audio as inference.py loads it, and the file it muxes into the output.

    A non-.wav file is first converted by `ffmpeg -y -i <audio> -strict -2 temp.wav` (the chosen
    ffmpeg, see metrics.sync.inputs), then `librosa.load(wav, sr=16000)` (mono; resampled by this
    librosa's default resampler when the file is not at 16 kHz - librosa 0.7 used resampy).
    """
    import librosa

    from metrics.sync import inputs

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--audio {path}: not a file")
    wav = path
    if not str(path).endswith(".wav"):
        wav = Path(folder) / "temp.wav"
        inputs.run_ffmpeg(["-y", "-i", str(path), "-strict", "-2", str(wav)])
    audio, _ = librosa.load(str(wav), sr=16000)
    return np.asarray(audio, dtype=np.float32), wav


def detector_boxes_for(frames_rgb: np.ndarray, progress: "Progress | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """(T, 4) int boxes as the detector API returns them, and a has-face mask, from the suite's face
    backend (S3FD weights are not available; see docs/wav2lip.md). Frames without a face get the
    nearest frame's box for the smoothing and are passed through unchanged (the original aborts)."""
    from data_recipes.crops.wav2lip import detector_box_to_int, fill_missing_boxes
    from data_recipes.faces import detect

    track = detect(frames_rgb, None, progress)
    filled, present = fill_missing_boxes(track.boxes)
    if not present.any():
        raise ValueError("no face found in any frame; give a fixed box with --set wav2lip.box=y1,y2,x1,x2")
    return np.array([detector_box_to_int(b) for b in filled], dtype=np.int64).reshape(-1, 4), present


@dataclass
class FileResult:
    out: Path
    frames: np.ndarray       # (N, H, W, 3) uint8 RGB, what was written
    fps: float
    info: dict


def generate_files(model: "torch.nn.Module", face: Path, audio: Path, out: Path,
                   options: InferenceOptions = InferenceOptions(), mel_padding: str = "reflect",
                   resize_factor: int = 1, device: str = "cpu", still_fps: float = 25.0,
                   progress: "Progress | None" = None) -> FileResult:
    """inference.py on files: read the face video and the audio as it does, run `lipsync`, write `out`.

    `out` ending in .mkv is written lossless (libx264rgb qp 0 + FLAC, bit-exact frames); anything
    else as the suite's delivered mp4 (libx264 CRF 23 yuv420p + AAC of the driving wav, see
    metrics.sync.delivery) - what the official final ffmpeg call produces, minus its DIVX avi step.
    """
    import tempfile

    from data_recipes.media import write_video
    from metrics.sync import delivery

    out = Path(out)
    frames, fps = read_face(face, resize_factor, still_fps)
    with tempfile.TemporaryDirectory(prefix="talkbench-generate-") as tmp:
        wav, wav_file = read_driving_audio(audio, Path(tmp))
        mel = wav2lip_mel(wav, mel_padding)
        if np.isnan(mel).any():
            raise ValueError("the mel contains NaN (silent or synthetic audio?): add a little noise to the audio")
        n_out = len(mel_chunks(mel, fps))
        frames = frames[:n_out]
        det = has_face = None
        if options.box is None:
            det, has_face = detector_boxes_for(frames, progress)
        result = lipsync(model, frames, mel, det, has_face, options, device, fps=fps, progress=progress)
        if out.suffix.lower() == ".mkv":
            write_video(out, result.frames, fps=fps, audio=wav, sample_rate=16000, lossless=True)
        else:
            delivery.write_delivered(out, result.frames, wav_file, fps=fps)
    info = {"frames": len(result.frames), "fps": fps, "frames_without_face": result.frames_without_face,
            "boxes": "fixed" if options.box is not None else "detected (suite face backend)",
            "mel_padding": mel_padding, "resize_factor": resize_factor, "faithful": options.faithful,
            "lossless": out.suffix.lower() == ".mkv"}
    return FileResult(out, result.frames, fps, info)
