"""The 3DMM recipe stages: one model, identity and camera per subject; expression and pose per clip.

"threedmm_identity" (subject stage) builds the morphable model (the open model's bases are learned
from the subject's training clips' landmarks, train first) and fits ONE global identity to those
clips under the subject's ONE camera (GeneFace++'s `id_mode="global"`, over a whole training video).
Outputs: id.npy (K_id,), model_mean.npy (V, 3), model_id_basis.npy (V, 3, K_id),
model_exp_basis.npy (V, 3, K_exp), model_landmark_vertex.npy (L,), model_landmark_valid.npy (L,),
intrinsics.npy (3, 3) float64 and meta.json (model, camera, clips, identity loss).

"threedmm" (clip stage) fits every frame's expression and pose of one clip with that identity,
model and camera fixed, so the train, val and test segments of a video share them exactly (the
identity is folded into the mean shape and the fit's identity step is skipped).

Outputs of "threedmm" (stage folder; T frames, L fitted landmarks, arrays float32 unless noted):
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
from bench.precision import Requested
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
    precision: "auto" (fp32: a landmark fit in pixels needs its mantissa) or an explicit "fp32" /
        "bf16" / "amp" for the loss evaluations (`bench.precision`; in the cache key). The fit runs on
        the run's device; torch's thread count is the prepare pool's (`bench.threads`);
    open_model / fit: see OpenModelConfig / FitConfig.
    """

    model: Literal["mediapipe", "bfm"] = "mediapipe"
    keypoint_mode: KeypointMode = "mediapipe"
    bfm_dir: str | None = None
    focal_224: float = GENEFACE_FOCAL_224
    camera_distance: float = GENEFACE_CAMERA_DISTANCE
    precision: Requested = "auto"
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


def fit_precision(config: ThreeDMMConfig, device: str, progress=None):
    """The fit's `bench.precision.Precision` on `device` (fp32 unless the config asks otherwise)."""
    from bench.precision import choose

    precision = choose(device, config.precision, faithful=True)
    if precision.slow and progress is not None:
        progress.log(f"warning: the 3DMM fit runs at {precision.name}: {precision.reason}")
    return precision


def fit_track(track, width: int, height: int, config: ThreeDMMConfig = ThreeDMMConfig(), progress=None,
              device: str = "cpu"):
    """Fit the configured model to a FaceTrack on `device`: returns (FitResult, MorphableModel)."""
    return _fit_track(track, width, height, config, progress, device)


def _fit_track(track, width: int, height: int, config: ThreeDMMConfig, progress, device: str = "cpu"):
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
                           progress=progress, device=device, precision=fit_precision(config, device, progress))
    return result, model


def _targets(track, model, config: ThreeDMMConfig) -> np.ndarray:
    """The landmarks the model is fitted to: the 468-point mesh or the 68 iBUG points."""
    if model.keypoint_mode == "mediapipe":
        if track.landmarks478.shape[1] < 468:
            raise ValueError("this 3DMM fits MediaPipe's 468 points and the face track has none (use the "
                             "mediapipe face backend, or model='bfm' with keypoint_mode='lm68')")
        return track.landmarks478[:, :468, :2]
    return track.landmarks68


def _open_init_rotation(track, width: int) -> np.ndarray:
    """(T, 3, 3) per-frame rotation estimates of the open model (NaN without a face)."""
    from data_recipes.threedmm.mediapipe_mesh import load_canonical_mesh
    from data_recipes.threedmm.open_model import _scatter, align_to_canonical, canonical_mean, screen_points

    present = np.asarray(track.present, bool)
    if not present.any() or track.landmarks478.shape[1] < 468:
        return np.full((len(present), 3, 3), np.nan)
    mesh = load_canonical_mesh()
    pts = screen_points(track.landmarks478[present], width)
    _, _, rot, _ = align_to_canonical(pts, canonical_mean(mesh), np.asarray(mesh.procrustes_ids),
                                      np.asarray(mesh.procrustes_weights, np.float64))
    return _scatter(rot, present)


def _concat_tracks(tracks):
    """One track-like object over several clips' face tracks (present, landmarks478, landmarks68)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        present=np.concatenate([np.asarray(t.present, bool) for t in tracks]),
        landmarks478=np.concatenate([t.landmarks478 for t in tracks]),
        landmarks68=np.concatenate([t.landmarks68 for t in tracks]))


def save_model(folder, model) -> None:
    from data_recipes.recipe import save_array

    save_array(folder, "model_mean", model.mean)
    save_array(folder, "model_id_basis", model.id_basis)
    save_array(folder, "model_exp_basis", model.exp_basis)
    save_array(folder, "model_landmark_vertex", model.landmark_vertex)
    save_array(folder, "model_landmark_valid", model.landmark_valid)


def load_model(output):
    """The subject's MorphableModel from a "threedmm_identity" stage output."""
    from data_recipes.threedmm.model import MorphableModel

    m = output.json()["model"]
    return MorphableModel(
        name=m["name"], mean=output.array("model_mean"), id_basis=output.array("model_id_basis"),
        exp_basis=output.array("model_exp_basis"), landmark_vertex=output.array("model_landmark_vertex"),
        landmark_valid=output.array("model_landmark_valid"), keypoint_mode=m["keypoint_mode"],
        source=m.get("source", ""), info=m.get("info", {}))


def with_identity(model, identity: np.ndarray):
    """The model with `identity` folded into its mean and no identity basis (fits keep it fixed)."""
    from dataclasses import replace

    mean = model.mean + np.einsum("vck,k->vc", model.id_basis, np.asarray(identity, np.float32))
    return replace(model, mean=mean.astype(np.float32), id_basis=model.id_basis[..., :0])


def threedmm_identity_stage(ctx) -> None:
    """Subject stage "threedmm_identity" (see the module docstring)."""
    from dataclasses import replace

    from data_recipes.faces import FaceTrack
    from data_recipes.recipe import StageUnavailable, save_array, save_json
    from data_recipes.threedmm.fit import fit_landmarks
    from data_recipes.threedmm.model import Camera

    cfg: ThreeDMMConfig = ctx.config
    avail = threedmm_availability(cfg)
    if not avail.ok:
        raise StageUnavailable(avail.reason)
    faces = ctx.clip_inputs["faces"]
    sizes = {(int(f.json()["width"]), int(f.json()["height"])) for f in faces}
    if len(sizes) != 1:
        raise ValueError(f"subject {ctx.subject!r}: clips of different frame sizes {sorted(sizes)} cannot share "
                         "one camera")
    width, height = sizes.pop()
    track = _concat_tracks([FaceTrack.load(f.folder) for f in faces])
    present = np.asarray(track.present, bool)
    if not present.any():
        raise ValueError(f"subject {ctx.subject!r}: no frame of its clips has a face")
    camera = Camera.geneface(width, height, cfg.focal_224, cfg.camera_distance)
    if cfg.model == "mediapipe":
        from data_recipes.threedmm.mediapipe_mesh import load_canonical_mesh
        from data_recipes.threedmm.open_model import build_open_model

        if track.landmarks478.shape[1] < 468:
            raise ValueError("the open 3DMM needs MediaPipe's 478-point mesh; this face track has none "
                             "(use the mediapipe face backend, or model='bfm' with keypoint_mode='lm68')")
        model, init = build_open_model(track.landmarks478, present, width, load_canonical_mesh(), cfg.open_model)
        init_rotation = init["rotation"]
    else:
        from pathlib import Path

        from data_recipes.threedmm.bfm import load_bfm

        model = load_bfm(Path(cfg.bfm_dir).expanduser() if cfg.bfm_dir else None, cfg.keypoint_mode)
        init_rotation = None
    # pose + identity only: every clip fits its own frames later with this identity fixed
    precision = fit_precision(cfg, ctx.device, ctx.progress)
    result = fit_landmarks(model, _targets(track, model, cfg), present, camera, replace(cfg.fit, frame_steps=0),
                           init_rotation=init_rotation, progress=ctx.progress, device=ctx.device, precision=precision)
    save_array(ctx.out_dir, "id", result.id)
    save_array(ctx.out_dir, "intrinsics", camera.intrinsics())
    save_model(ctx.out_dir, model)
    save_json(ctx.out_dir, "meta", {
        "model": _model_meta(model),
        "camera": {"focal": camera.focal, "cx": camera.cx, "cy": camera.cy, "camera_distance": camera.camera_distance,
                   "width": width, "height": height, "focal_224": cfg.focal_224},
        "subject": ctx.subject, "clips": [c.id for c in ctx.clips], "frames": int(len(present)),
        "frames_with_face": int(present.sum()), "loss_per_stage": result.loss_history,
        "device": ctx.device, "precision": precision.to_json(),
    })


def _model_meta(model) -> dict[str, Any]:
    return {"name": model.name, "source": model.source, "keypoint_mode": model.keypoint_mode,
            "num_id": model.num_id, "num_exp": model.num_exp, "num_landmarks": model.num_landmarks,
            "info": model.info, **model.info}


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
    """Recipe stage "threedmm" (see the module docstring for the outputs): this clip's expression
    and pose with the subject's model, identity and camera ("threedmm_identity") fixed."""
    from dataclasses import replace

    from data_recipes.faces import FaceTrack
    from data_recipes.faces.mapping import LM68_FROM_LM478
    from data_recipes.recipe import StageUnavailable, save_array, save_json
    from data_recipes.threedmm.fit import fit_landmarks
    from data_recipes.threedmm.model import Camera, opencv_extrinsics

    cfg: ThreeDMMConfig = ctx.config
    avail = threedmm_availability(cfg)
    if not avail.ok:
        raise StageUnavailable(avail.reason)
    faces = ctx.inputs["faces"]
    subject = ctx.inputs["threedmm_identity"]
    smeta = subject.json()
    track = FaceTrack.load(faces.folder)
    fmeta = faces.json()
    width, height = int(fmeta["width"]), int(fmeta["height"])
    if (width, height) != (int(smeta["camera"]["width"]), int(smeta["camera"]["height"])):
        raise ValueError(f"clip {ctx.clip.id!r} is {width}x{height}; its subject's camera was fitted for "
                         f"{smeta['camera']['width']}x{smeta['camera']['height']}")
    model = load_model(subject)
    identity = subject.array("id")
    cam = Camera.geneface(width, height, cfg.focal_224, cfg.camera_distance)
    init_rotation = _open_init_rotation(track, width) if cfg.model == "mediapipe" else None
    present = np.asarray(track.present, bool)
    precision = fit_precision(cfg, ctx.device, ctx.progress)
    result = fit_landmarks(with_identity(model, identity), _targets(track, model, cfg), present, cam,
                           replace(cfg.fit, id_steps=0), init_rotation=init_rotation, progress=ctx.progress,
                           device=ctx.device, precision=precision)
    result = replace(result, id=identity.astype(np.float32))
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
    loss = {k: v for k, v in result.loss_history.items() if k != "identity"}
    save_json(out, "meta", {
        "model": _model_meta(model),
        "camera": {"focal": cam.focal, "cx": cam.cx, "cy": cam.cy, "camera_distance": cam.camera_distance,
                   "width": width, "height": height, "focal_224": cfg.focal_224},
        "subject": {"name": smeta.get("subject"), "identity_key": subject.key, "clips": smeta.get("clips"),
                    "identity_loss": smeta.get("loss_per_stage", {}).get("identity")},
        "conventions": "model space decimetres, x right, y up, z to the viewer; X' = R X + t with R = Rz(roll) "
                       "Ry(yaw) Rx(pitch); u = cx + f X'x / (d - X'z), v = cy - f X'y / (d - X'z); "
                       "extrinsics/intrinsics: the same camera in OpenCV form",
        "reprojection_error_px": _summary(err),
        "error_px_per_frame": [None if not math.isfinite(e) else round(e, 4) for e in err.tolist()],
        "error_landmarks": "mean distance over the landmarks with non-zero fit weight",
        "num_frames": int(len(err)), "frames_without_face": int((~present).sum()),
        "loss_per_stage": loss, "fit": asdict(cfg.fit), "device": ctx.device, "precision": precision.to_json(),
    })
