"""Visual comparison: frame strips with mouth zooms, and side-by-side preview videos.

Inputs are the runner's samples (bench.layout): `samples/<method>/<key>/sample.json` with the same
frame indices for every method, full-frame PNGs and a browser-playable `video.mp4`, and the real
video under `samples/ground_truth/<key>/`. Everything the page shows is copied or derived into the
report's `assets/` folder so the report folder is self-contained.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from bench.layout import GROUND_TRUTH, request_key
from bench.results import method_label
from reports.load import Bundle

GT_LABEL = "ground truth (real video)"


@dataclass(frozen=True)
class MediaConfig:
    """How much of the samples a report shows.

    max_requests: requests with frame strips / videos (self-driven first, at least one cross-driven);
    thumb_height: height of a strip frame in pixels; mouth_width: width of a mouth zoom;
    video_height: height of each tile of the side-by-side video (even); videos: build them at all.
    """

    max_requests: int = 4
    thumb_height: int = 144
    mouth_width: int = 120
    video_height: int = 192
    videos: bool = True


@dataclass(frozen=True)
class Image:
    src: str          # path relative to report.html
    alt: str
    width: int
    height: int


@dataclass(frozen=True)
class StripRow:
    method: str
    label: str
    is_ground_truth: bool
    frames: tuple[Image | None, ...]
    mouths: tuple[Image | None, ...]


@dataclass(frozen=True)
class Video:
    src: str
    labels: tuple[str, ...]     # left to right
    width: int
    height: int
    poster: str = ""            # PNG of the first frame, shown before playing


@dataclass(frozen=True)
class Strip:
    request_id: str
    kind: str
    clip_id: str
    audio_clip: str
    frame_indices: tuple[int, ...]
    rows: tuple[StripRow, ...]
    video: Video | None = None
    singles: tuple[tuple[str, str], ...] = ()   # (label, src) of each method's own preview
    notes: tuple[str, ...] = field(default=())

    @property
    def has_mouths(self) -> bool:
        return any(m is not None for row in self.rows for m in row.mouths)


@dataclass(frozen=True)
class Sample:
    folder: Path
    info: Mapping[str, Any]

    @property
    def request_id(self) -> str:
        return str(self.info.get("request_id", ""))

    def frame_file(self, index: int) -> Path | None:
        idx = [int(i) for i in self.info.get("frame_indices") or []]
        files = list(self.info.get("files") or [])
        if index in idx and idx.index(index) < len(files):
            p = self.folder / str(files[idx.index(index)])
            return p if p.is_file() and _inside(p, self.folder) else None
        p = self.folder / f"frame_{index}.png"
        return p if p.is_file() else None

    def mouth_box(self, index: int) -> tuple[int, int, int, int] | None:
        boxes = self.info.get("mouth_boxes") or {}
        box = boxes.get(str(index)) if isinstance(boxes, Mapping) else None
        if isinstance(box, Sequence) and len(box) == 4:
            try:
                return tuple(int(round(float(v))) for v in box)  # type: ignore[return-value]
            except (TypeError, ValueError):
                return None
        return None

    @property
    def video(self) -> Path | None:
        name = self.info.get("video")
        if not name:
            return None
        p = self.folder / str(name)
        return p if p.is_file() and _inside(p, self.folder) else None


def _inside(path: Path, folder: Path) -> bool:
    """sample.json names files; never follow one out of its sample folder."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def slug(name: str) -> str:
    """A file-safe name for a method (user data): kept readable, made unique by a short hash if changed."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:40] or "x"
    return s if s == name else f"{s}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def collect_samples(bundle: Bundle) -> dict[str, dict[str, Sample]]:
    """request id -> {method or GROUND_TRUTH: sample}; the first run that has one wins."""
    out: dict[str, dict[str, Sample]] = {}
    for run in bundle.runs:
        for meta in sorted((run.root / "samples").glob("*/*/sample.json")):
            try:
                info = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(info, dict) or not info.get("request_id"):
                continue
            method = meta.parent.parent.name if meta.parent.parent.name == GROUND_TRUTH else method_label(
                str(info.get("method") or meta.parent.parent.name), str(info.get("variant") or ""))
            out.setdefault(str(info["request_id"]), {}).setdefault(method, Sample(meta.parent, info))
    return out


def choose_requests(samples: Mapping[str, Mapping[str, Sample]], max_requests: int) -> list[str]:
    """Self-driven requests first (they have ground truth), then at least one cross-driven one."""
    def kind(r: str) -> str:
        any_sample = next(iter(samples[r].values()))
        return str(any_sample.info.get("kind", "self"))

    with_methods = [r for r in samples if any(m != GROUND_TRUTH for m in samples[r])]
    selfs = sorted(r for r in with_methods if kind(r) == "self")
    cross = sorted(r for r in with_methods if kind(r) != "self")
    n_cross = min(len(cross), max(1, max_requests // 4)) if cross else 0
    chosen = selfs[: max_requests - n_cross] + cross[:n_cross]
    if len(chosen) < max_requests:
        chosen += [r for r in cross[n_cross:]][: max_requests - len(chosen)]
    return chosen


def _read_rgb(path: Path):
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _write_png(path: Path, rgb) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def thumbnail(rgb, height: int):
    """Downscale (area filter) to `height` keeping the aspect ratio; never upscale."""
    import cv2

    h, w = rgb.shape[:2]
    if h <= height:
        return rgb
    new_w = max(1, round(w * height / h))
    return cv2.resize(rgb, (new_w, height), interpolation=cv2.INTER_AREA)


def mouth_zoom(rgb, box: tuple[int, int, int, int], width: int):
    """Crop the box (clamped to the frame) and scale to `width`; nearest-neighbour when enlarging
    so the zoom shows the generated pixels (blur, seams, artefacts) instead of smoothing them away."""
    import cv2

    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box
    x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w))
    y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    crop = rgb[y1:y2, x1:x2]
    new_h = max(1, round((y2 - y1) * width / (x2 - x1)))
    interp = cv2.INTER_NEAREST if width > (x2 - x1) else cv2.INTER_AREA
    return cv2.resize(crop, (width, new_h), interpolation=interp)


def build_strips(bundle: Bundle, methods: Sequence[str], out_dir: Path, cfg: MediaConfig,
                 progress) -> tuple[list[Strip], list[str]]:
    """Frame strips (and videos) for the chosen requests; returns strips and notes for the page."""
    samples = collect_samples(bundle)
    if not samples:
        return [], ["no samples in these runs (the runner writes them under samples/)"]
    chosen = choose_requests(samples, cfg.max_requests)
    strips: list[Strip] = []
    n_images = sum(len(_indices(samples[r])) * len(samples[r]) for r in chosen)
    with progress.task("report: frame strips", total=n_images) as task:
        for rid in chosen:
            strips.append(_strip(rid, samples[rid], methods, out_dir, cfg, task))
    notes = []
    if len(samples) > len(chosen):
        notes.append(f"{len(chosen)} of {len(samples)} sampled requests shown")
    if cfg.videos:
        strips = _add_videos(strips, samples, methods, out_dir, cfg, progress)
    return strips, notes


def _indices(by_method: Mapping[str, Sample]) -> list[int]:
    ref = by_method.get(GROUND_TRUTH) or next(iter(by_method.values()))
    return [int(i) for i in ref.info.get("frame_indices") or []]


def _ordered(by_method: Mapping[str, Sample], methods: Sequence[str]) -> list[str]:
    rest = sorted(m for m in by_method if m not in methods and m != GROUND_TRUTH)
    return ([GROUND_TRUTH] if GROUND_TRUTH in by_method else []) + [m for m in methods if m in by_method] + rest


def _strip(rid: str, by_method: Mapping[str, Sample], methods: Sequence[str], out_dir: Path,
           cfg: MediaConfig, task) -> Strip:
    indices = _indices(by_method)
    key = request_key(rid)
    gt = by_method.get(GROUND_TRUTH)
    rows = []
    for m in _ordered(by_method, methods):
        sample = by_method[m]
        label = GT_LABEL if m == GROUND_TRUTH else m
        frames, mouths = [], []
        for idx in indices:
            frames_img, mouth_img = None, None
            path = sample.frame_file(idx)
            rgb = _read_rgb(path) if path else None
            if rgb is not None:
                thumb = thumbnail(rgb, cfg.thumb_height)
                rel = f"assets/frames/{key}/{slug(m)}_{idx}.png"
                _write_png(out_dir / rel, thumb)
                frames_img = Image(rel, f"{label}, frame {idx}", thumb.shape[1], thumb.shape[0])
                box = sample.mouth_box(idx) or (gt.mouth_box(idx) if gt else None)
                zoom = mouth_zoom(rgb, box, cfg.mouth_width) if box else None
                if zoom is not None:
                    rel = f"assets/frames/{key}/{slug(m)}_{idx}_mouth.png"
                    _write_png(out_dir / rel, zoom)
                    mouth_img = Image(rel, f"{label}, mouth, frame {idx}", zoom.shape[1], zoom.shape[0])
            frames.append(frames_img)
            mouths.append(mouth_img)
            task.advance()
        rows.append(StripRow(m, label, m == GROUND_TRUTH, tuple(frames), tuple(mouths)))
    info = next(iter(by_method.values())).info
    return Strip(rid, str(info.get("kind", "")), str(info.get("clip_id", "")), str(info.get("audio_clip", "")),
                 tuple(indices), tuple(rows))


def _add_videos(strips: list[Strip], samples, methods: Sequence[str], out_dir: Path, cfg: MediaConfig,
                progress) -> list[Strip]:
    from dataclasses import replace

    out = []
    with progress.task("report: side-by-side videos", total=len(strips)) as task:
        for strip in strips:
            by_method = samples[strip.request_id]
            key = request_key(strip.request_id)
            inputs, singles = [], []
            for m in _ordered(by_method, methods):
                video = by_method[m].video
                if video is None:
                    continue
                label = GT_LABEL if m == GROUND_TRUTH else m
                rel = f"assets/videos/{key}/{slug(m)}.mp4"
                (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(video, out_dir / rel)
                singles.append((label, rel))
                inputs.append((label, video))
            notes = list(strip.notes)
            composite = None
            if len(inputs) >= 2:
                rel = f"assets/videos/{key}/side_by_side.mp4"
                poster = f"assets/videos/{key}/side_by_side.png"
                try:
                    w, h = side_by_side(inputs, out_dir / rel, cfg.video_height, poster=out_dir / poster)
                    composite = Video(rel, tuple(lbl for lbl, _ in inputs), w, h, poster)
                except Exception as e:  # a broken preview must not sink the whole report
                    notes.append(f"side-by-side video not built: {type(e).__name__}: {e}")
            out.append(replace(strip, video=composite, singles=tuple(singles), notes=tuple(notes)))
            task.advance()
    return out


def _frames(path: Path) -> Iterator[Any]:
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _audio_frames(path: Path):
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return
        for frame in c.decode(audio=0):
            yield frame


def _has_audio(path: Path) -> tuple[bool, int]:
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return False, 0
        return True, int(c.streams.audio[0].codec_context.sample_rate or 16000)


def _tile(rgb, height: int, label: str):
    import cv2
    import numpy as np

    h, w = rgb.shape[:2]
    width = max(2, int(round(w * height / h / 2)) * 2)
    tile = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR)
    tile = np.ascontiguousarray(tile)
    text = label.encode("ascii", "replace").decode()[:28]
    cv2.rectangle(tile, (0, height - 20), (width, height), (0, 0, 0), thickness=-1)
    cv2.putText(tile, text, (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def side_by_side(inputs: Sequence[tuple[str, Path]], out: Path, height: int = 192,
                 fps: int = 25, poster: Path | None = None) -> tuple[int, int]:
    """Tiles of each input video (same height, labelled) left to right, h264 + AAC, as long as the
    shortest input; the audio comes from the first input that has one. Streams: constant memory.
    `poster`: also write the first composite frame there as PNG. Returns (width, height)."""
    import av
    import numpy as np

    height = max(2, height // 2 * 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    audio_src = next((p for _, p in inputs if _has_audio(p)[0]), None)
    tmp = out.with_name(f".{out.name}.tmp.mp4")
    size = (0, 0)
    n_frames = 0
    with av.open(str(tmp), "w") as oc:
        vs = None
        for tiles in zip(*(_frames(p) for _, p in inputs)):
            row = np.concatenate([_tile(t, height, lbl) for t, (lbl, _) in zip(tiles, inputs)], axis=1)
            if vs is None:
                vs = oc.add_stream("libx264", rate=fps)
                vs.width, vs.height = row.shape[1], row.shape[0]
                vs.pix_fmt = "yuv420p"
                vs.options = {"crf": "23", "preset": "veryfast"}
                size = (row.shape[1], row.shape[0])
                if poster is not None:
                    _write_png(poster, row)
                a_stream = None
                if audio_src is not None:
                    rate = _has_audio(audio_src)[1]
                    a_stream = oc.add_stream("aac", rate=rate)
                    a_stream.layout = "mono"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(row), format="rgb24")
            for packet in vs.encode(frame):
                oc.mux(packet)
            n_frames += 1
        if vs is None:
            raise ValueError("no frames decoded from the preview videos")
        for packet in vs.encode():
            oc.mux(packet)
        if a_stream is not None:
            _copy_audio(audio_src, oc, a_stream, n_frames / fps)
    tmp.replace(out)
    return size


def _copy_audio(src: Path, oc, stream, seconds: float) -> None:
    import av

    rate = stream.codec_context.sample_rate
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
    limit = int(round(seconds * rate))
    written = 0
    for frame in _audio_frames(src):
        for out in resampler.resample(frame):
            if written >= limit:
                break
            out.pts = None
            written += out.samples
            for packet in stream.encode(out):
                oc.mux(packet)
    for packet in stream.encode(None):
        oc.mux(packet)
