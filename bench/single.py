"""`bench score` and `bench generate`: one existing file scored, or one video lip-synced, without a dataset.

    bench score out.mp4 --metrics lse --json
    bench score out.mp4 --audio speech.wav --metrics lse,psnr,ssim --reference real.mp4
    bench generate --method wav2lip --face face.mp4 --audio speech.wav --out out.mp4 \
        --set wav2lip.checkpoint=wav2lip_gan.pth

`bench score` scores with the same metric classes and the same file path as `bench run` (LSE reads
the file as syncnet_python does), so a run's row equals `bench score` on the file the run stored.
`bench generate` does what the method's official inference script does on files (for Wav2Lip:
methods.wav2lip.inference.generate_files).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

GENERATE_METHODS = ("wav2lip",)


def add_parsers(sub: Any, set_pair: Any, csv: Any, add_progress: Any) -> None:
    """Register `score` and `generate` on the CLI's subparsers (helpers passed in to avoid a cycle)."""
    p = sub.add_parser("score", help="score one existing video file (e.g. LSE of any mp4)",
                       description="Score one video file with the suite's metrics, reading it as the original "
                                   "scripts do (LSE: ffmpeg JPEGs and 16 kHz int16 audio of the file).")
    p.add_argument("video", type=Path, help="the video file to score")
    p.add_argument("--audio", type=Path, default=None,
                   help="score against this file's audio instead of the video's own track")
    p.add_argument("--metrics", type=csv, default=("lse",), metavar="A,B", help="metric families (default: lse)")
    p.add_argument("--reference", type=Path, default=None, metavar="VIDEO",
                   help="the real video, for metrics that need ground truth (PSNR, SSIM, LPIPS, LMD)")
    p.add_argument("--protocol", choices=("lrs", "tracked"), default="lrs",
                   help="sync protocol: lrs = whole frame (Wav2Lip's calculate_scores_LRS.py, face crops), "
                        "tracked = face tracked and cropped first (run_pipeline.py) (default: lrs)")
    p.add_argument("--set", dest="overrides", type=set_pair, action="append", default=[],
                   metavar="NAME.KEY=VALUE", help="metric option, e.g. --set lse.checkpoint=/w/syncnet.model")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: {value name: number, ..., 'not_scored': {name: {status, reason}}}")
    add_progress(p)

    p = sub.add_parser("generate", help="run a method on a face video and an audio file (e.g. Wav2Lip)",
                       description="What the method's official inference script does on files. .mkv output is "
                                   "lossless; other names get the suite's delivered mp4 (libx264 CRF 23 + AAC).")
    p.add_argument("--method", required=True, choices=GENERATE_METHODS, help="the method")
    p.add_argument("--face", required=True, type=Path, help="video (or still image) with the face")
    p.add_argument("--audio", required=True, type=Path, help="driving audio (a .wav, or any file ffmpeg reads)")
    p.add_argument("--out", required=True, type=Path, help="output video (.mp4, or .mkv for lossless frames)")
    p.add_argument("--resize-factor", type=int, default=1, metavar="F",
                   help="divide the face video's width and height by F first (inference.py --resize_factor)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate for a still image (default: 25)")
    p.add_argument("--set", dest="overrides", type=set_pair, action="append", default=[],
                   metavar="NAME.KEY=VALUE",
                   help="method option, e.g. --set wav2lip.checkpoint=/w/wav2lip_gan.pth --set wav2lip.box=0,200,10,210")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    add_progress(p)


# ------------------------------------------------------------------------------------------- score


def _spec(resolved: Any) -> Any:
    cls = resolved.cls
    return cls.spec_for(resolved.config) if hasattr(cls, "spec_for") else cls.spec


def _sample(video: Path, audio: Path | None, reference: Path | None, protocol: str) -> Any:
    """A Sample for the metrics that need frames (LSE reads the file itself). The videos are lazy and
    metrics read them in blocks, so memory does not grow with the files' length (as in `bench run`)."""
    import numpy as np

    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.frames import open_video
    from data_recipes.media import read_audio
    from data_recipes.recipe import Recipe
    from metrics.base import Sample

    generated = open_video(video)
    gt = None
    target_file = video
    if reference is not None:
        gt = open_video(reference)
        n = min(len(gt), len(generated))
        generated, gt = generated[:n], gt[:n]
        target_file = reference
    wav = read_audio(audio or video)
    need = len(generated) * 640
    wav = np.concatenate([wav, np.zeros(max(0, need - len(wav)), np.float32)])[:need]
    target = Recipe(Cache()).prepare(Clip(Path(target_file).stem, Path(target_file), "", "test"))
    return Sample("file", "self" if gt is not None else "cross", generated, gt, wav, target, protocol,  # type: ignore[arg-type]
                  video_file=None if audio is not None else Path(video))


def score_file(video: Path, metrics: tuple[str, ...], overrides: list[tuple[str, str]], audio: Path | None = None,
               reference: Path | None = None, protocol: str = "lrs", device: str = "cpu",
               progress: Any = None) -> dict[str, Any]:
    """{value name: Score} for one file, with the same metric classes `bench run` uses."""
    from bench.cache import Cache
    from bench.config import split_overrides
    from bench.progress import Progress
    from bench.runner import RunError, resolve_metrics
    from metrics.base import MetricContext, Score

    progress = progress or Progress.off()
    by_owner = split_overrides(overrides)
    resolved = resolve_metrics(list(metrics), by_owner)
    unknown = set(by_owner) - {r.name for r in resolved}
    if unknown:
        raise RunError(f"--set {sorted(unknown)[0]}.*: no metric of that name among --metrics")
    out: dict[str, Any] = {}
    sample = None
    with tempfile.TemporaryDirectory(prefix="talkbench-score-") as tmp:
        for r in resolved:
            if r.cls is None:
                out[r.name] = Score.missing("unavailable", r.availability.reason)
                continue
            spec = _spec(r)
            names = [v.name for v in spec.values]
            if not r.availability.ok:
                out.update({n: Score.missing("unavailable", r.availability.reason) for n in names})
                continue
            if spec.fit_scope != "none":
                why = f"{r.name} trains its scorer on a dataset's training clips; use bench run"
                out.update({n: Score.missing("not_applicable", why) for n in names})
                continue
            if spec.needs_ground_truth and reference is None:
                out.update({n: Score.missing("not_applicable", f"{r.name} needs --reference VIDEO") for n in names})
                continue
            ctx = MetricContext(work_dir=Path(tmp) / r.name, cache=Cache(), progress=progress, device=device)
            metric = r.cls(r.config, ctx)
            try:
                if hasattr(metric, "score_file"):
                    scores = metric.score_file(Path(video), protocol, audio)
                else:
                    if sample is None:
                        sample = _sample(Path(video), audio, reference, protocol)
                    scores = metric.score(sample)
            except Exception as e:
                scores = {n: Score.missing("failed", f"{type(e).__name__}: {e}") for n in names}
            out.update({n: scores.get(n) or Score.missing("failed", f"no value for {n}") for n in names})
    return out


def _as_json(scores: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    missing: dict[str, dict[str, str]] = {}
    for name, s in scores.items():
        if s.status == "ok" and not math.isnan(s.value):
            data[name] = s.value
        else:
            missing[name] = {"status": s.status, "reason": s.reason}
    if missing:
        data["not_scored"] = missing
    return data


def cmd_score(args: argparse.Namespace) -> int:
    from bench.progress import Progress
    from bench.runner import resolve_device

    if not args.video.is_file():
        print(f"error: {args.video}: file not found", file=sys.stderr)
        return 1
    from bench import malloc

    malloc.apply(malloc.STREAMING)   # frame blocks go back to the system when freed, as in `bench run`
    progress = Progress("off" if args.json else args.progress)
    with progress:
        scores = score_file(args.video, tuple(args.metrics), list(args.overrides), args.audio, args.reference,
                            args.protocol, resolve_device(args.device), progress)
    if args.json:
        print(json.dumps(_as_json(scores)))
        return 0
    width = max((len(n) for n in scores), default=0)
    for name, s in scores.items():
        text = f"{s.value:.4f}" if s.status == "ok" else f"{s.status}: {s.reason}"
        print(f"{name.ljust(width)}  {text}")
    about = next((s.extra for s in scores.values() if s.status == "ok" and "ffmpeg" in s.extra), None)
    if about:
        print(f"(weights: {about.get('weights')}; ffmpeg {about.get('ffmpeg')})")
    return 0


# ---------------------------------------------------------------------------------------- generate


def cmd_generate(args: argparse.Namespace) -> int:
    from bench.config import apply_overrides, split_overrides
    from bench.progress import Progress
    from bench.runner import RunError, resolve_device

    by_owner = split_overrides(list(args.overrides))
    other = set(by_owner) - {args.method}
    if other:
        raise RunError(f"--set {sorted(other)[0]}.*: bench generate takes options of --method {args.method} only")
    if args.resize_factor < 1:
        raise RunError("--resize-factor must be 1 or more")
    from methods.wav2lip.method import Wav2LipConfig

    config = apply_overrides(Wav2LipConfig(), by_owner.get(args.method, {}), f"method {args.method}")
    device = resolve_device(args.device)
    model, weights = load_wav2lip(config, device)
    from methods.wav2lip.inference import InferenceOptions, generate_files

    precision = "fp32" if config.precision == "context" else config.precision
    options = InferenceOptions(pads=tuple(config.pads), smooth=not config.nosmooth, box=config.box,  # type: ignore[arg-type]
                               batch_size=config.batch_size, precision=precision,  # type: ignore[arg-type]
                               blend=config.blend, paste_resize=config.paste_resize,
                               round_prediction=config.round_prediction)
    progress = Progress(args.progress)
    with progress:
        result = generate_files(model, args.face, args.audio, args.out, options, config.mel_padding,
                                args.resize_factor, device, args.fps, progress)
    info = result.info
    print(f"wrote {result.out}: {info['frames']} frames at {info['fps']:g} fps ({info['boxes']} boxes, "
          f"mel padding {info['mel_padding']}, {'lossless' if info['lossless'] else 'libx264 CRF 23 + AAC'})")
    print(f"weights: {weights}")
    if info["frames_without_face"]:
        print(f"note: {info['frames_without_face']} frames had no face and were passed through unchanged")
    return 0


def load_wav2lip(config: Any, device: str) -> tuple[Any, str]:
    """The generator in eval mode, and a line naming its file and sha256."""
    from bench import weights as W
    from bench.runner import RunError
    from methods.wav2lip.checkpoint import load_into, read_checkpoint
    from methods.wav2lip.models import Wav2Lip
    from methods.wav2lip.weights import generator_spec

    if config.checkpoint is not None:
        path = Path(config.checkpoint)
        if not path.is_file():
            raise RunError(f"wav2lip.checkpoint {path} does not exist")
    elif config.pretrained:
        try:
            path = W.locate(generator_spec(config.gan))
        except (W.WeightsMissing, W.WeightsMismatch) as e:
            raise RunError(str(e)) from e
    else:
        raise RunError("bench generate needs weights: --set wav2lip.checkpoint=FILE or --set wav2lip.pretrained=true")
    model = Wav2Lip()
    load_into(model, read_checkpoint(path))
    return model.to(device).eval(), f"{path} (sha256 {W.sha256_file(path)})"
