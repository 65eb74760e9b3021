"""A small run folder made from real frames of the embedded demo clip, for report tests.

It follows bench/layout.py and bench/results.py exactly, but computes its own numbers so that it
runs in seconds and covers what the baselines alone cannot: a method with real, finite PSNR/SSIM and
a measured speed (`blur`: the ground truth through a Gaussian blur, timed), a degenerate method
(`grey`: the ground truth with a constant grey rectangle over the face, the fastest "method" of all),
an unavailable metric with its reason, a cross-driven request, and a clip whose name is markup
(`XSS_CLIP`). Every video also gets the real `output_check` metric (metrics/output_check.py), as a run
of the runner would.

PSNR here is over the whole clip (one MSE of all pixels, data range 255); SSIM is skimage's
structural_similarity on every 10th frame (RGB, data range 255), averaged. These are the fixture's
own definitions: the report only has to show what the results say.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from bench import manifest as mf
from bench.layout import GROUND_TRUTH, RunLayout
from bench.results import ResultRow, extra_json, to_frame, write_csv, write_parquet

XSS_CLIP = "<script>alert(1)</script>"
RUN_ID = "fixture-demo"
SYNC_REASON = ("SyncNet lip-sync network: file 'syncnet_v2.model' not found in the weights folder "
               "(the fixture has no weights)")
STRIP_FRAMES = 3


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    vals = [structural_similarity(x, y, channel_axis=2, data_range=255) for x, y in zip(a[::10], b[::10])]
    return float(np.mean(vals))


def _blur(frames: np.ndarray) -> tuple[np.ndarray, float]:
    import cv2

    t0 = time.perf_counter()
    out = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames])
    return out, time.perf_counter() - t0


def _grey(frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, float]:
    """A constant grey rectangle over the face box (grown by 20%: a pasted crop covers more than
    the face), timed like a method's compute."""
    out = frames.copy()
    h, w = frames.shape[1:3]
    t0 = time.perf_counter()
    for i, b in enumerate(boxes[: len(frames)]):
        if not np.all(np.isfinite(b)):
            continue
        gx, gy = 0.2 * (b[2] - b[0]), 0.2 * (b[3] - b[1])
        x1, y1 = max(int(b[0] - gx), 0), max(int(b[1] - gy), 0)
        x2, y2 = min(int(b[2] + gx) + 1, w), min(int(b[3] + gy) + 1, h)
        out[i, y1:y2, x1:x2] = 128
    return out, time.perf_counter() - t0


def _output_check(generated: np.ndarray, prepared, cache_dir: Path) -> dict:
    """The real output_check metric on one video: {value name: Score}."""
    from bench.cache import Cache
    from bench.progress import Progress
    from metrics.base import MetricContext, Sample
    from metrics.output_check import OutputCheck, OutputCheckConfig

    n = len(generated)
    sample = Sample("check", "self", generated, None, np.zeros(n * 640, np.float32), prepared)
    ctx = MetricContext(cache_dir, Cache(cache_dir), Progress.off())
    return OutputCheck(OutputCheckConfig(), ctx).score(sample)


def _mouth_boxes(prepared, indices: list[int]) -> dict[str, list[float]]:
    """Mouth box per strip frame from the faces stage's 68-point mouth (48..67), padded by 35%."""
    try:
        lm = prepared.stage("faces").array("landmarks68")
    except Exception:
        return {}
    out = {}
    for i in indices:
        pts = lm[i, 48:68]
        if np.isnan(pts).any():
            continue
        (x1, y1), (x2, y2) = pts.min(axis=0), pts.max(axis=0)
        pad = 0.35 * max(x2 - x1, y2 - y1)
        out[str(i)] = [float(x1 - pad), float(y1 - pad), float(x2 + pad), float(y2 + pad)]
    return out


def _write_sample(folder: Path, frames: np.ndarray, audio: np.ndarray, indices: list[int], info: dict) -> None:
    import cv2

    from data_recipes.media import write_video

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in indices:
        name = f"frame_{i:05d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(frames[i], cv2.COLOR_RGB2BGR))
        files.append(name)
    small = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in frames[:50]])
    write_video(folder / "video.mp4", small, fps=25, audio=audio[: 50 * 640], sample_rate=16000)
    (folder / "sample.json").write_text(json.dumps(
        {**info, "frame_indices": indices, "files": files, "video": "video.mp4"}, indent=1))


def build(root: Path, cache_dir: Path) -> Path:
    """Write the run folder `root/<RUN_ID>` and return it."""
    from bench.cache import Cache
    from bench.hardware import fingerprint, package_versions
    from data_recipes.clip import Clip
    from data_recipes.datasets.demo import demo_video
    from data_recipes.recipe import Recipe

    video = demo_video()
    recipe = Recipe(Cache(cache_dir))
    clips = {
        "obama/test": recipe.prepare(Clip("obama/test", video, "obama", "test", start=16.0, end=20.0)),
        XSS_CLIP: recipe.prepare(Clip(XSS_CLIP, video, "obama", "test", start=12.0, end=14.0)),
    }
    frames = {cid: p.frames() for cid, p in clips.items()}
    hw = fingerprint()
    layout = RunLayout(Path(root) / RUN_ID)
    rows: list[ResultRow] = []

    def base(request_id: str, kind: str, clip: str, audio: str, method: str) -> dict:
        return dict(run_id=RUN_ID, dataset="demo", split="test", request_id=request_id, kind=kind,
                    clip_id=clip, audio_clip=audio, subject="obama", method=method, hardware=hw["id"])

    def add(b: dict, metric: str, family: str, value: float, status: str = "ok", reason: str = "",
            unit: str = "", better: str = "higher", n: int = 0, extra: dict | None = None) -> None:
        rows.append(ResultRow(**b, metric=metric, family=family, value=value if status == "ok" else math.nan,
                              status=status, reason=reason, unit=unit, better=better, published=True,
                              n_frames=n, extra=extra_json(extra or {})))

    def sync_unavailable(b: dict) -> None:
        for metric, better in (("LSE-D", "lower"), ("LSE-C", "higher"), ("AV-offset", "zero")):
            add(b, metric, "lse", math.nan, "unavailable", SYNC_REASON, "frames" if metric == "AV-offset" else "",
                better)

    requests = [(cid, "self", cid) for cid in clips] + [("obama/test <- " + XSS_CLIP, "cross", "obama/test")]
    for rid, kind, target in requests:
        audio_clip = XSS_CLIP if kind == "cross" else target
        gt = frames[target]
        n = min(len(gt), clips[audio_clip].num_frames)
        gt = gt[:n]
        audio = clips[audio_clip].audio()[: n * 640]
        indices = sorted({int(round(x)) for x in np.linspace(0, n - 6, STRIP_FRAMES)})
        info = {"request_id": rid, "kind": kind, "clip_id": target, "audio_clip": audio_clip,
                "mouth_boxes": _mouth_boxes(clips[target], indices)}
        blurred, seconds = _blur(gt)
        greyed, grey_seconds = _grey(gt, clips[target].stage("faces").array("boxes"))
        generated = {"frozen": np.repeat(gt[:1], n, axis=0), "blur": blurred, "grey": greyed}
        timed = {"blur": seconds, "grey": grey_seconds}
        if kind == "self":
            generated = {"reference": gt, **generated}
            _write_sample(layout.samples(GROUND_TRUTH, rid), gt, audio, indices, {**info, "method": GROUND_TRUTH})
        for method, out in generated.items():
            b = base(rid, kind, target, audio_clip, method)
            if kind == "self":
                add(b, "PSNR", "psnr", _psnr(out, gt), unit="dB", n=n)
                add(b, "SSIM", "ssim", _ssim(out, gt), n=n)
            sync_unavailable(b)
            if method in timed:
                add(b, "fps", "fps", n / timed[method], unit="frames/s", n=n,
                    extra={"stages": {"model": timed[method]}, "frames": n})
            else:
                add(b, "fps", "fps", math.nan, "not_applicable", "method reported no timings", "frames/s", n=n)
            for name, score in _output_check(out, clips[target], Path(cache_dir)).items():
                add(b, name, "output_check", score.value, score.status, score.reason, better="", n=n,
                    extra=dict(score.extra))
            _write_sample(layout.samples(method, rid), out, audio, indices, {**info, "method": method})

    df = to_frame(rows)
    write_parquet(layout.results_parquet, df)
    write_csv(layout.results_csv, df)
    m = mf.new(RUN_ID, ["bench", "run", "--dataset", "demo"],
               {"dataset": "demo", "methods": ["reference", "frozen", "blur", "grey", "nerf_head"]},
               0, hw, package_versions())
    m.update(status="complete", finished=mf.now_iso(), phases={"prepare": 1.0, "generate": 1.0, "score": 1.0})
    m["dataset"] = {"name": "demo", "description": "fixture: two test clips of the demo video", "clips": 2,
                    "splits": {"test": 2}, "pairs": 1, "sync_protocol": "tracked", "source": "embedded demo"}
    spec = {"fit_scope": "none", "needs_gpu": False, "extra": None}
    m["methods"] = {
        "reference": {"available": True, "reason": "", "config": {}, "fits": [], "spec": {
            **spec, "kind": "baseline", "per_subject_data": "none", "description": "the real video"}},
        "frozen": {"available": True, "reason": "", "config": {}, "fits": [], "spec": {
            **spec, "kind": "baseline", "per_subject_data": "one frame", "description": "first frame repeated"}},
        "blur": {"available": True, "reason": "", "config": {"sigma": 2.0}, "fits": [], "spec": {
            **spec, "kind": "2d", "per_subject_data": "the video itself", "description": "ground truth blurred"}},
        "grey": {"available": True, "reason": "", "config": {}, "fits": [], "spec": {
            **spec, "kind": "2d", "per_subject_data": "the video itself",
            "description": "ground truth with a grey rectangle over the face (a broken output)"}},
        "nerf_head": {"available": False, "reason": "not implemented yet", "config": {}, "fits": [], "spec": {
            **spec, "kind": "3d", "fit_scope": "subject", "per_subject_data": "3-5 min video of the person",
            "description": "person-specific NeRF head"}},
    }
    m["metrics"] = {"lse": {"available": False, "reason": SYNC_REASON, "published": True, "values": []},
                    "psnr": {"available": True, "reason": "", "published": True, "values": []},
                    "output_check": {"available": True, "reason": "", "published": True, "values": []}}
    mf.write(layout.manifest, m)
    return layout.root

