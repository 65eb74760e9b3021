"""`detect(frames) -> FaceTrack`: run a face backend over a stream of frames.

Backends are expensive to build (MediaPipe's landmarker: about 0.5 s), so a caller that tracks many
clips or generated videos passes its `ModelPool` (`models=`): each worker then borrows one opened
backend per face config and reuses it. Without a pool, a backend is built for the call and closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from bench.progress import Progress
from data_recipes.faces import FaceTrack
from data_recipes.faces.backends import FaceBackend, FrameFace
from data_recipes.faces.stage import FacesConfig
from data_recipes.faces.track import GapReport, build_track

if TYPE_CHECKING:
    from data_recipes.models import ModelPool


def make_backend(config: FacesConfig, device: str = "cpu") -> tuple[FaceBackend, dict[str, Any]]:
    """The configured backend (not yet opened) and manifest info: backend, model path and sha256.

    `device` is where the torch model of the FAN backend runs (MediaPipe runs on the CPU).
    """
    from bench import weights
    from data_recipes.faces.weights import FACE_LANDMARKER, FAN_2D

    mp_path = weights.locate(FACE_LANDMARKER)
    info: dict[str, Any] = {"backend": config.backend, "model": str(mp_path),
                            "model_sha256": weights.sha256_file(mp_path)}
    mediapipe = _mediapipe(config, mp_path)
    if config.backend == "mediapipe":
        info["mode"] = config.mode
        info["timestamp_stretch"] = config.timestamp_stretch
        return mediapipe, info
    if config.backend == "fan":
        from data_recipes.faces.fan import FanBackend

        from bench.precision import choose

        fan_path = weights.locate(FAN_2D)
        # face-alignment runs FAN in fp32; its integer landmark decoding is sensitive to heatmap peaks
        precision = choose(device, "auto", faithful=True)
        info.update(fan_model=str(fan_path), fan_sha256=weights.sha256_file(fan_path), device=device,
                    precision=precision.to_json())
        return FanBackend(fan_path, box_source=mediapipe, device=device), info
    raise ValueError(f"unknown face backend {config.backend!r} (mediapipe | fan)")


def _mediapipe(config: FacesConfig, path):
    from data_recipes.faces.backends import MediaPipeBackend

    return MediaPipeBackend(path, mode=config.mode, fps=config.fps, timestamp_stretch=config.timestamp_stretch,
                            num_faces=config.num_faces, min_detection_confidence=config.min_detection_confidence,
                            min_presence_confidence=config.min_presence_confidence,
                            min_tracking_confidence=config.min_tracking_confidence)


def detect(frames: Iterable[np.ndarray], config: FacesConfig | None = None,
           progress: Progress | None = None, models: "ModelPool | None" = None) -> FaceTrack:
    """Track the most prominent face in `frames` (uint8 RGB (H, W, 3) each, or one (T, H, W, 3) array).

    Frames are consumed as a stream (a generator works; memory grows only by the landmarks). Frames
    without a face never raise: short gaps are interpolated, long ones are NaN with present False.
    `models`: the pool to borrow the backend from (see the module docstring).
    """
    return detect_with_report(frames, config, progress, models=models)[0]


def _open_backend(config: FacesConfig, device: str) -> tuple[FaceBackend, dict[str, Any]]:
    backend, info = make_backend(config, device)
    backend.open()
    return backend, info


def detect_with_report(frames: Iterable[np.ndarray], config: FacesConfig | None = None,
                       progress: Progress | None = None, total: int | None = None,
                       label: str = "faces", models: "ModelPool | None" = None,
                       ) -> tuple[FaceTrack, GapReport, dict[str, Any]]:
    """`detect` plus the gap report and backend info that the stage writes into meta.json."""
    from data_recipes.models import ModelPool

    config = config or FacesConfig()
    progress = progress or Progress.off()
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)  # type: ignore[arg-type]
    pool = models if models is not None else ModelPool()
    try:
        with pool.lease(("face-backend", config, pool.device), lambda: _open_backend(config, pool.device),
                        close=lambda opened: opened[0].close()) as (backend, info):
            backend.start_clip()
            results: list[FrameFace | None] = []
            with progress.task(label, total) as bar:
                for i, frame in enumerate(frames):
                    results.append(backend.process(i, frame))
                    bar.advance()
    finally:
        if models is None:  # the backend was built for this call only
            pool.close()
    return (*_track(results, backend.has_mesh, config), dict(info))


def _track(results: list[FrameFace | None], has_mesh: bool, config: FacesConfig) -> tuple[FaceTrack, GapReport]:
    """The FaceTrack and gap report of per-frame backend results."""
    from data_recipes.faces.boxes import box_from_landmarks68, box_from_landmarks478

    n = len(results)
    detected = np.array([r is not None for r in results], dtype=bool)
    lm478 = _stack([r.landmarks478 if r else None for r in results], (478, 3)) if has_mesh else None
    own68 = any(r is not None and r.landmarks68 is not None for r in results) or not has_mesh
    # a 68-point backend (FAN) gives its own points; otherwise they are mapped from the mesh later
    lm68 = _stack([r.landmarks68 if r else None for r in results], (68, 2)) if own68 else None
    pose = _stack([r.pose if r else None for r in results], (4, 4))
    blend_dim = next((len(r.blendshapes) for r in results if r and r.blendshapes is not None), 0)
    blend = _stack([r.blendshapes if r else None for r in results], (blend_dim,))
    if n == 0:
        boxes = np.zeros((0, 4), np.float32)
    elif lm68 is not None:  # boxes follow the backend's own points (same rule on the 68 convention)
        boxes = box_from_landmarks68(lm68, config.forehead)
    else:
        boxes = box_from_landmarks478(lm478, config.forehead)
    return build_track(lm478, lm68, boxes, pose, blend, detected, config.max_gap)


def _stack(items: list[np.ndarray | None], shape: tuple[int, ...]) -> np.ndarray:
    """(T, *shape) float32 with NaN rows where an item is None."""
    out = np.full((len(items),) + shape, np.nan, dtype=np.float32)
    for i, v in enumerate(items):
        if v is not None:
            out[i] = v
    return out
