"""Basel Face Model 2009 in the Deep3DFaceRecon / GeneFace++ layout, for users who have it.

BFM is never shipped (its licence forbids redistribution). Put the files in `<weights>/BFM/`
($TALKBENCH_WEIGHTS, see bench.paths), either
- `BFM_model_front.mat` (Deep3DFaceRecon's converted model: meanshape (1, 3N), idBase (3N, 80),
  exBase (3N, 64), keypoints (68, 1) 1-based, ...), or
- the raw files it is converted from: `01_MorphableModel.mat` (BFM 2009: shapeMU, shapePC, shapeEV),
  `Exp_Pca.bin` (Guo et al.'s expression PCA: int32 k, float32 mean (3n), float32 k x 3n components),
  `std_exp.txt` (k standard deviations), `BFM_front_idx.mat` (idx), `BFM_exp_idx.mat` (trimIndex),
  `facemodel_info.mat` (keypoints), from which the same arrays are built in memory
  (sicxu/Deep3DFaceRecon_pytorch util/load_mats.py `transferBFM09`: bases scaled by their standard
  deviations and by 1e-5 to decimetres, 80 identity / 64 expression components, vertices cropped to
  the 35709-vertex front face);
and, for the MediaPipe keypoint mode GeneFace++ uses, `index_mp468_from_mesh35709.npy` (the 468
MediaPipe points' vertices on that mesh, -1 where there is none; from GeneFace++'s deep_3drecon/BFM
folder). Like GeneFace++'s `ParametricFaceModel(recenter=True)`, the mean shape is recentred on its
vertex centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.availability import Availability
from data_recipes.threedmm.model import KeypointMode, MorphableModel

FOLDER = "BFM"
FRONT_FILE = "BFM_model_front.mat"
MP_INDEX_FILE = "index_mp468_from_mesh35709.npy"
RAW_FILES = ("01_MorphableModel.mat", "Exp_Pca.bin", "std_exp.txt", "BFM_front_idx.mat", "BFM_exp_idx.mat",
             "facemodel_info.mat")
NUM_ID, NUM_EXP = 80, 64
SOURCE = ("BFM 2009 from https://faces.dmi.unibas.ch/bfm/ (01_MorphableModel.mat), Exp_Pca.bin from "
          "https://github.com/Juyong/3DFace, the other files from Deep3DFaceRecon_pytorch's BFM folder; "
          "index_mp468_from_mesh35709.npy from GeneFace++'s deep_3drecon/BFM")


@dataclass(frozen=True)
class BFMFiles:
    """Which BFM files a folder has."""

    folder: Path
    front: bool
    raw_missing: tuple[str, ...]
    mp_index: bool

    @property
    def model_ok(self) -> bool:
        return self.front or not self.raw_missing


def bfm_folder() -> Path:
    from bench.paths import weights_dir

    return weights_dir() / FOLDER


def inspect_folder(folder: Path) -> BFMFiles:
    folder = Path(folder)
    return BFMFiles(folder, (folder / FRONT_FILE).is_file(),
                    tuple(n for n in RAW_FILES if not (folder / n).is_file()), (folder / MP_INDEX_FILE).is_file())


def bfm_availability(folder: Path | None = None, keypoint_mode: KeypointMode = "mediapipe") -> Availability:
    """Available when the folder has the model (converted or raw) and, for MediaPipe points, the index."""
    files = inspect_folder(folder or bfm_folder())
    problems = []
    if not files.model_ok:
        problems.append(f"{FRONT_FILE}, or all of {', '.join(RAW_FILES)} (missing: {', '.join(files.raw_missing)})")
    if keypoint_mode == "mediapipe" and not files.mp_index:
        problems.append(f"{MP_INDEX_FILE} (MediaPipe-468 -> BFM vertex index; or use keypoint_mode='lm68')")
    if not problems:
        return Availability.yes()
    return Availability.no(f"Basel Face Model folder {files.folder} lacks " + "; and ".join(problems)
                           + f". Get them from: {SOURCE}. BFM is never shipped or downloaded")


def read_exp_pca(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Exp_Pca.bin -> (mean (3n,) float32, components (3n, k) float32); n follows from the file size."""
    raw = Path(path).read_bytes()
    k = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    floats = np.frombuffer(raw[4:], dtype="<f4")
    if k <= 0 or floats.size % (3 * (k + 1)):
        raise ValueError(f"{path}: {floats.size} floats do not hold a mean and {k} components of 3n values")
    n3 = floats.size // (k + 1)
    return floats[:n3].copy(), floats[n3:].reshape(k, n3).T.copy()


def _mat(path: Path) -> dict:
    from scipy.io import loadmat

    return loadmat(str(path))


def transfer_bfm09(folder: Path) -> dict[str, np.ndarray]:
    """Deep3DFaceRecon's conversion of the raw BFM 2009 files (shape part only, as the fit needs):
    {'meanshape' (1, 3N), 'idBase' (3N, 80), 'exBase' (3N, 64), 'keypoints' (68, 1) 1-based}."""
    folder = Path(folder)
    bfm = _mat(folder / RAW_FILES[0])
    shape_pc, shape_ev, shape_mu = bfm["shapePC"], bfm["shapeEV"], bfm["shapeMU"]
    _, exp_pc = read_exp_pca(folder / RAW_FILES[1])
    exp_ev = np.loadtxt(folder / RAW_FILES[2])
    id_base = (shape_pc * shape_ev.reshape(1, -1) / 1e5)[:, :NUM_ID]
    ex_base = (exp_pc * exp_ev.reshape(1, -1) / 1e5)[:, :NUM_EXP]
    # front-face vertices: idx selects from the 53215-vertex expression mesh, trimIndex maps that mesh
    # onto the 53490-vertex BFM mesh (both 1-based in the files)
    index_exp = np.asarray(_mat(folder / RAW_FILES[3])["idx"]).astype(np.int64).reshape(-1) - 1
    index_shape = np.asarray(_mat(folder / RAW_FILES[4])["trimIndex"]).astype(np.int64).reshape(-1) - 1
    index_shape = index_shape[index_exp]
    id_base = id_base.reshape(-1, 3, id_base.shape[1])[index_shape].reshape(-1, id_base.shape[1])
    ex_base = ex_base.reshape(-1, 3, ex_base.shape[1])[index_exp].reshape(-1, ex_base.shape[1])
    mean = (shape_mu.reshape(-1, 3) / 1e5)[index_shape].reshape(1, -1)
    keypoints = _mat(folder / RAW_FILES[5])["keypoints"]
    return {"meanshape": mean, "idBase": id_base, "exBase": ex_base, "keypoints": keypoints}


def model_from_arrays(arrays: dict, keypoint_mode: KeypointMode = "mediapipe", mp_index: np.ndarray | None = None,
                      source: str = "") -> MorphableModel:
    """A MorphableModel from BFM_model_front-style arrays (see `transfer_bfm09`)."""
    mean = np.asarray(arrays["meanshape"], np.float64).reshape(-1, 3)
    mean = mean - mean.mean(axis=0, keepdims=True)  # GeneFace++ recenter=True
    v = mean.shape[0]
    id_base = np.asarray(arrays["idBase"], np.float32).reshape(v, 3, -1)
    ex_base = np.asarray(arrays["exBase"], np.float32).reshape(v, 3, -1)
    if keypoint_mode == "mediapipe":
        if mp_index is None:
            raise ValueError(f"keypoint_mode 'mediapipe' needs {MP_INDEX_FILE}")
        idx = np.asarray(mp_index, np.int64).reshape(-1)
        if idx.shape != (468,):
            raise ValueError(f"{MP_INDEX_FILE} must hold 468 indices, got {idx.shape}")
        valid = idx >= 0
    elif keypoint_mode == "lm68":
        idx = np.asarray(arrays["keypoints"], np.int64).reshape(-1) - 1
        if idx.shape != (68,):
            raise ValueError(f"BFM keypoints must be 68 indices, got {idx.shape}")
        valid = np.ones(68, bool)
    else:
        raise ValueError(f"unknown keypoint mode {keypoint_mode!r}")
    return MorphableModel(name="bfm2009-front", mean=mean.astype(np.float32), id_basis=id_base, exp_basis=ex_base,
                          landmark_vertex=np.where(valid, idx, 0), landmark_valid=valid, keypoint_mode=keypoint_mode,
                          source=source or "Basel Face Model 2009 (Deep3DFaceRecon front-face layout)",
                          info={"vertices": int(v)})


def load_bfm(folder: Path | None = None, keypoint_mode: KeypointMode = "mediapipe") -> MorphableModel:
    """The BFM from `folder` (default <weights>/BFM): BFM_model_front.mat if present, else the raw files."""
    folder = Path(folder) if folder is not None else bfm_folder()
    avail = bfm_availability(folder, keypoint_mode)
    if not avail.ok:
        raise FileNotFoundError(avail.reason)
    files = inspect_folder(folder)
    if files.front:
        arrays, source = _mat(folder / FRONT_FILE), str(folder / FRONT_FILE)
    else:
        arrays, source = transfer_bfm09(folder), f"{folder} (converted from {', '.join(RAW_FILES)})"
    mp_index = np.load(folder / MP_INDEX_FILE, allow_pickle=False) if keypoint_mode == "mediapipe" else None
    return model_from_arrays(arrays, keypoint_mode, mp_index, source=source)
