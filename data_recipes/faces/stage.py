"""The "faces" recipe stage: a FaceTrack per clip, plus smoothed boxes and a gap report.

Outputs (folder of the stage): the `FaceTrack` arrays under their field names (`boxes.npy`,
`landmarks68.npy`, `landmarks478.npy`, `pose.npy`, `blendshapes.npy`, `present.npy`,
`interpolated.npy`), `boxes_smooth.npy` (T, 4) float32 (centred moving average, optional for
consumers; the raw per-frame boxes stay in `boxes.npy`), and `meta.json` (backend, model sha256,
frame size, counts and [start, stop) ranges of detected / interpolated / missing frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.availability import Availability, all_of, module_available


@dataclass(frozen=True)
class FacesConfig:
    """Face tracking.

    backend: "mediapipe" (default, bundled model) or "fan" (face-alignment 2D-FAN, local weights);
    mode: MediaPipe running mode "video" (tracking; default), "image" (per frame) or "hybrid"
        (GeneFace++'s combination: lips and eyes from IMAGE mode, the rest from VIDEO mode);
    timestamp_stretch: VIDEO-mode timestamps advance by this many frame periods per frame, which
        weakens MediaPipe's time-based landmark filter (GeneFace++ uses 20);
    num_faces: faces MediaPipe may return; the largest is kept;
    min_*_confidence: MediaPipe thresholds;
    max_gap: runs of at most this many frames without a face are interpolated (flagged);
        longer runs stay NaN with present False;
    smooth_window: frames of the centred moving average of `boxes_smooth`;
    forehead: how far the box top is raised above the brows, as a fraction of brow-to-chin height;
    fps: frame rate of the frames (for VIDEO-mode timestamps).
    """

    backend: Literal["mediapipe", "fan"] = "mediapipe"
    mode: Literal["video", "image", "hybrid"] = "video"
    timestamp_stretch: float = 20.0
    num_faces: int = 1
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    max_gap: int = 5
    smooth_window: int = 5
    forehead: float = 0.2
    fps: float = 25.0


def faces_availability(config: FacesConfig) -> Availability:
    from bench import weights
    from data_recipes.faces.weights import FACE_LANDMARKER, FAN_2D

    if config.backend == "mediapipe":
        return all_of(module_available("mediapipe", "pip install mediapipe"), weights.availability(FACE_LANDMARKER))
    if config.backend == "fan":
        return all_of(module_available("mediapipe", "pip install mediapipe (FAN uses its detector for boxes)"),
                      weights.availability(FACE_LANDMARKER), weights.availability(FAN_2D))
    return Availability.no(f"unknown face backend {config.backend!r} (mediapipe | fan)")


def faces_stage(ctx) -> None:
    """Recipe stage "faces": track the face over the normalised frames and save the FaceTrack."""
    from data_recipes.faces.boxes import smooth_boxes
    from data_recipes.faces.pipeline import detect_with_report
    from data_recipes.recipe import save_array, save_json

    cfg: FacesConfig = ctx.config
    prepared = ctx.prepared
    n = prepared.num_frames
    track, report, info = detect_with_report(prepared.iter_frames(), cfg, ctx.progress, total=n,
                                             label=f"faces {prepared.id}", models=ctx.models)
    if len(track) != n:
        raise RuntimeError(f"clip {prepared.id!r}: face tracking saw {len(track)} frames, expected {n}")
    track.save(ctx.out_dir)
    save_array(ctx.out_dir, "boxes_smooth", smooth_boxes(track.boxes, track.present, cfg.smooth_window))
    h, w = prepared.size
    save_json(ctx.out_dir, "meta", {
        **info, "num_frames": n, "height": h, "width": w,
        "frames": report.as_json(),
        "box_rule": f"x: face-oval extremes; y2: lowest oval point; y1: brow top - {cfg.forehead} x (y2 - brow top)",
        "smooth_window": cfg.smooth_window,
    })
    if report.missing:
        ctx.progress.log(f"faces {prepared.id}: no face in {report.missing} of {n} frames "
                         f"(ranges {report.missing_ranges[:5]}{'...' if len(report.missing_ranges) > 5 else ''})")
