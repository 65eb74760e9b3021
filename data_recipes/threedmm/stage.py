"""The "threedmm" recipe stage: fit a morphable model to the clip's face track.

Outputs (stage folder; T frames, L fitted landmarks, arrays float32 unless noted):
- id.npy (K_id,), exp.npy (T, K_exp): coefficients;
- euler.npy (T, 3) radians (pitch, yaw, roll), rotation.npy (T, 3, 3) = Rz Ry Rx, trans.npy (T, 3)
  decimetres: GeneFace++'s pose convention (`data_recipes.threedmm.model`);
- intrinsics.npy (3, 3) and extrinsics.npy (T, 4, 4) float64: the same camera as an OpenCV
  K [R|t] (model space -> x right, y down, z forward), ready for ray generation;
- landmarks468.npy (T, 468, 2) or, in lm68 keypoint mode, landmarks68 only: projected model
  landmarks in pixels (NaN where the model has no vertex for a point); landmarks68.npy (T, 68, 2)
  always (the iBUG subset, `data_recipes.faces.mapping`);
- lm3d.npy (T, L, 3): the fitted shape (mean + identity + expression, no pose) at the landmarks, in
  model decimetres: what GeneFace++ conditions its renderer on (its idexp_lm3d, plus the mean);
- error_px.npy (T,): mean reprojection error per frame in pixels (NaN without a face);
- for the open model (it is learned per clip): model_mean.npy (468, 3), model_id_basis.npy
  (468, 3, K_id), model_exp_basis.npy (468, 3, K_exp);
- meta.json: model, camera, conventions, error summary and the per-frame error list, loss per stage.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from bench.availability import Availability
from data_recipes.threedmm.fit import FitConfig
from data_recipes.threedmm.model import GENEFACE_CAMERA_DISTANCE, GENEFACE_FOCAL_224, KeypointMode
from data_recipes.threedmm.open_model import OpenModelConfig


@dataclass(frozen=True)
class ThreeDMMConfig:
    """3DMM fit.

    model: "mediapipe" (open default: MediaPipe canonical face + bases learned from the clip, not BFM)
        or "bfm" (Basel Face Model 2009 from <weights>/BFM or `bfm_dir`; see data_recipes.threedmm.bfm);
    keypoint_mode: for "bfm", fit the 468 MediaPipe points (GeneFace++'s default; needs its index file)
        or the 68 iBUG points; the open model always uses the 468 points;
    focal_224 / camera_distance: GeneFace++'s camera (f = 1015 for a 224-pixel frame, scaled to the
        frame height; camera 10 dm from the model origin);
    num_threads: torch threads during the fit (1 is fastest for these small batched ops, and two
        threads on a busy 2-core machine were 30x slower);
    open_model / fit: see OpenModelConfig / FitConfig.
    """

    model: Literal["mediapipe", "bfm"] = "mediapipe"
    keypoint_mode: KeypointMode = "mediapipe"
    bfm_dir: str | None = None
    focal_224: float = GENEFACE_FOCAL_224
    camera_distance: float = GENEFACE_CAMERA_DISTANCE
    num_threads: int = 1
    open_model: OpenModelConfig = field(default_factory=OpenModelConfig)
    fit: FitConfig = field(default_factory=FitConfig)


def threedmm_availability(config: ThreeDMMConfig | None = None) -> Availability:
    config = config or ThreeDMMConfig()
    if config.model == "mediapipe":
        from bench import weights
        from data_recipes.faces.weights import FACE_LANDMARKER

        a = weights.availability(FACE_LANDMARKER)
        return a if a.ok else Availability.no(f"the open 3DMM reads MediaPipe's canonical mesh: {a.reason}")
    if config.model == "bfm":
        from pathlib import Path

        from data_recipes.threedmm.bfm import bfm_availability

        return bfm_availability(Path(config.bfm_dir).expanduser() if config.bfm_dir else None, config.keypoint_mode)
    return Availability.no(f"unknown 3DMM model {config.model!r} (mediapipe | bfm)")


def fit_track(track, width: int, height: int, config: ThreeDMMConfig = ThreeDMMConfig(), progress=None):
    """Fit the configured model to a FaceTrack: returns (FitResult, MorphableModel)."""
    from data_recipes.threedmm.fit import torch_threads

    with torch_threads(config.num_threads):
        return _fit_track(track, width, height, config, progress)


def _fit_track(track, width: int, height: int, config: ThreeDMMConfig, progress):
    from pathlib import Path

    from data_recipes.threedmm.fit import fit_landmarks
    from data_recipes.threedmm.model import Camera

    camera = Camera.geneface(width, height, config.focal_224, config.camera_distance)
    present = np.asarray(track.present, bool)
    has_mesh = track.landmarks478.shape[1] >= 468
    init_rotation = None
    if config.model == "mediapipe":
        from data_recipes.threedmm.mediapipe_mesh import load_canonical_mesh
        from data_recipes.threedmm.open_model import build_open_model

        if not has_mesh:
            raise ValueError("the open 3DMM needs MediaPipe's 478-point mesh; this face track has none "
                             "(use the mediapipe face backend, or model='bfm' with keypoint_mode='lm68')")
        model, init = build_open_model(track.landmarks478, present, width, load_canonical_mesh(), config.open_model)
        init_rotation = init["rotation"]
        targets = track.landmarks478[:, :468, :2]
    else:
        from data_recipes.threedmm.bfm import load_bfm

        model = load_bfm(Path(config.bfm_dir).expanduser() if config.bfm_dir else None, config.keypoint_mode)
        if config.keypoint_mode == "mediapipe":
            if not has_mesh:
                raise ValueError("keypoint_mode 'mediapipe' needs the 478-point mesh; use keypoint_mode='lm68'")
            targets = track.landmarks478[:, :468, :2]
        else:
            targets = track.landmarks68
    result = fit_landmarks(model, targets, present, camera, config.fit, init_rotation=init_rotation,
                           progress=progress, num_threads=config.num_threads)
    return result, model


def _fitted_shape(model, result) -> np.ndarray:
    mean, idb, exb = model.landmark_arrays()
    shape = mean[None] + np.einsum("lck,k->lc", idb, result.id)[None] + np.einsum("lck,tk->tlc", exb, result.exp)
    shape[:, ~model.landmark_valid] = np.nan
    return shape.astype(np.float32)


def _summary(err: np.ndarray) -> dict[str, Any]:
    ok = err[np.isfinite(err)]
    if not len(ok):
        return {"mean": None, "median": None, "p95": None, "max": None}
    return {"mean": float(ok.mean()), "median": float(np.median(ok)), "p95": float(np.percentile(ok, 95)),
            "max": float(ok.max())}


def threedmm_stage(ctx) -> None:
    """Recipe stage "threedmm" (see the module docstring for the outputs)."""
    from data_recipes.faces import FaceTrack
    from data_recipes.faces.mapping import LM68_FROM_LM478
    from data_recipes.recipe import StageUnavailable, save_array, save_json
    from data_recipes.threedmm.model import opencv_extrinsics

    cfg: ThreeDMMConfig = ctx.config
    avail = threedmm_availability(cfg)
    if not avail.ok:
        raise StageUnavailable(avail.reason)
    faces = ctx.inputs["faces"]
    track = FaceTrack.load(faces.folder)
    fmeta = faces.json()
    width, height = int(fmeta["width"]), int(fmeta["height"])
    result, model = fit_track(track, width, height, cfg, ctx.progress)
    cam = result.camera
    out = ctx.out_dir
    for name in ("id", "exp", "euler", "rotation", "trans", "error_px"):
        save_array(out, name, getattr(result, name))
    save_array(out, "intrinsics", cam.intrinsics())
    save_array(out, "extrinsics", opencv_extrinsics(result.rotation.astype(np.float64), result.trans, cam.camera_distance))
    if model.keypoint_mode == "mediapipe":
        save_array(out, "landmarks468", result.landmarks)
        save_array(out, "landmarks68", result.landmarks[:, list(LM68_FROM_LM478)])
    else:
        save_array(out, "landmarks68", result.landmarks)
    save_array(out, "lm3d", _fitted_shape(model, result))
    if model.name.startswith("mediapipe"):
        save_array(out, "model_mean", model.mean)
        save_array(out, "model_id_basis", model.id_basis)
        save_array(out, "model_exp_basis", model.exp_basis)
    err = result.error_px.astype(np.float64)
    save_json(out, "meta", {
        "model": {"name": model.name, "source": model.source, "keypoint_mode": model.keypoint_mode,
                  "num_id": model.num_id, "num_exp": model.num_exp, "num_landmarks": model.num_landmarks,
                  **model.info},
        "camera": {"focal": cam.focal, "cx": cam.cx, "cy": cam.cy, "camera_distance": cam.camera_distance,
                   "width": width, "height": height, "focal_224": cfg.focal_224},
        "conventions": "model space decimetres, x right, y up, z to the viewer; X' = R X + t with R = Rz(roll) "
                       "Ry(yaw) Rx(pitch); u = cx + f X'x / (d - X'z), v = cy - f X'y / (d - X'z); "
                       "extrinsics/intrinsics: the same camera in OpenCV form",
        "reprojection_error_px": _summary(err),
        "error_px_per_frame": [None if not math.isfinite(e) else round(e, 4) for e in err.tolist()],
        "error_landmarks": "mean distance over the landmarks with non-zero fit weight",
        "num_frames": int(len(err)), "frames_without_face": int((~np.asarray(track.present, bool)).sum()),
        "loss_per_stage": result.loss_history, "fit": asdict(cfg.fit),
    })
