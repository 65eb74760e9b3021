"""Head / neck+torso / background segmentation in head-crop space, and a clean background plate.

GeneFace++ splits each frame into head, torso, neck and background with MediaPipe's multiclass
selfie segmenter, estimates one background image over the clip and trains a head NeRF and a torso
NeRF on the split. That segmenter's weights are not available here, so this stage builds the split
from what is: the 478-point face mesh (the "faces" stage), colour, and the static background.

1. Priors from landmarks (crop space): the face-oval hull is certainly head; a region above and
   around it (an ellipse 1.5 face widths wide, reaching 0.55 face heights above the mesh top) is
   probably head (hair); the region under the jawline, widening downwards, is probably neck and
   torso; far above / beside the head is certainly background.
2. Person masks on a few sampled frames (`plate_samples`) by GrabCut (cv2) initialised with those
   priors, at `grabcut_size` pixels.
3. Background plate: per-pixel temporal median over the sampled frames where the pixel was
   background, in a frame-aligned "plate space" (the frame scaled to crop resolution, so it works
   for moving crops too); pixels never seen uncovered are inpainted (cv2 Telea).
4. Every frame: person = pixels that differ from the plate by more than `diff_high` (or by more
   than `diff_low` inside the probable-person priors), plus the face hull, minus the certain
   background; where the plate had to be inpainted the sampled GrabCut masks vote instead. The mask
   is cleaned (morphology, only components connected to the face or the bottom edge, holes filled).
5. Split: person pixels above the jawline (extended sideways at chin height, rising back to ear
   level further out) are head (label 1),
   the rest neck+torso (label 2); background 0.

Steps 2-3 are the subject stage "plate" (`plate_stage`): one plate per subject, from frames sampled
over its training clips (train first; see `data_recipes.recipe`), so the train, val and test
segments of one video are segmented against, and composited over, the same background. Steps 4-5
are the clip stage "segmentation", which reads that plate. The plate stage writes `plate.png`,
`plate_known.png`, `plate_transform.npy`, `person_freq.npy` (plate space) and meta.json.

Outputs of the clip stage (head-crop space, `size` x `size`): `labels.npz` (one uint8 array per frame,
members "f000000" ..., zip-deflated: 0 background, 1 head, 2 neck+torso), `background.png` (the plate
seen through the clip's median crop transform; exact for a fixed crop), `plate.png` and
`plate_transform.npy` (the frame-aligned plate and its (2, 3) frame -> plate matrix, for moving
crops: `background_for(transform)` warps it into any frame's crop), `plate_known.png` (255 where the
plate was observed, 0 where inpainted) and meta.json (label counts, plate coverage, samples used).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from data_recipes.faces.mapping import CHIN_478, FACE_OVAL_478

BACKGROUND, HEAD, TORSO = 0, 1, 2
# Lower half of the face oval from the image-left ear (234) through the chin (152) to the right (454).
JAW_478 = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
FOREHEAD_TOP_478 = 10


@dataclass(frozen=True)
class SegmentationConfig:
    """plate_samples: frames sampled for GrabCut and the background median;
    grabcut_size / grabcut_iters: resolution and iterations of those GrabCut runs;
    diff_low / diff_high: colour distance to the plate (0-255 RGB Euclidean, on lightly blurred
    images) above which a pixel is person inside / anywhere outside the priors;
    hair_height: how far above the mesh top hair may reach, in face heights;
    head_width: width of the probable-head ellipse, in face widths;
    plate_memory_mb: cap on the memory of the sampled frames kept for the median."""

    plate_samples: int = 16
    grabcut_size: int = 192
    grabcut_iters: int = 3
    diff_low: float = 18.0
    diff_high: float = 40.0
    hair_height: float = 0.55
    head_width: float = 1.5
    plate_memory_mb: float = 160.0


# ------------------------------------------------------------------------------------------ priors


@dataclass(frozen=True)
class Priors:
    """Prior regions for one frame in crop space (bool (S, S) each) and the head/torso split."""

    face: np.ndarray          # face-oval hull: certainly head
    head: np.ndarray          # probably head (hair, ears)
    torso: np.ndarray         # probably neck / torso
    background: np.ndarray    # certainly background
    above_jaw: np.ndarray     # split line: True above the jaw (head side)
    torso_core: np.ndarray    # certainly neck / torso (below the neck, centred)


def priors_from_landmarks(lm: np.ndarray, size: int, config: SegmentationConfig = SegmentationConfig()) -> Priors:
    """Landmark priors. lm: (478, 2+) mesh in crop pixel coordinates; size: crop side."""
    import cv2

    lm = np.asarray(lm, dtype=np.float64)[:, :2]
    oval = lm[list(FACE_OVAL_478)]
    fw = float(np.ptp(oval[:, 0]))
    top_y = float(lm[FOREHEAD_TOP_478, 1])
    chin = lm[CHIN_478]
    fh = float(chin[1] - top_y)
    cx = float(oval[:, 0].mean())
    # broadcast a column of y and a row of x instead of full grids (this runs for every frame)
    yy = np.arange(size, dtype=np.float32)[:, None]
    xx = np.arange(size, dtype=np.float32)[None, :]

    face = np.zeros((size, size), np.uint8)
    cv2.fillPoly(face, [np.round(oval).astype(np.int32)], 1)
    face = face.astype(bool)

    # split line: jaw polyline inside its x range, chin height outside it (hair beside the neck is head)
    jaw = lm[list(JAW_478)]
    order = np.argsort(jaw[:, 0])
    jx, jy = jaw[order, 0], jaw[order, 1]
    cols = np.arange(size, dtype=np.float64)
    boundary = np.interp(cols, jx, jy)
    # beyond the jaw ends: chin height for 0.15 face widths (ears and hair beside the jaw are head),
    # then rising to ear level over 0.3 face widths (shoulders of a tilted or tight crop are torso)
    left, right = cols < jx[0], cols > jx[-1]
    ramp_l = np.clip((jx[0] - cols[left] - 0.15 * fw) / (0.3 * fw), 0, 1)
    ramp_r = np.clip((cols[right] - jx[-1] - 0.15 * fw) / (0.3 * fw), 0, 1)
    boundary[left] = chin[1] + (jy[0] - chin[1]) * ramp_l
    boundary[right] = chin[1] + (jy[-1] - chin[1]) * ramp_r
    above_jaw = yy < boundary[None, :].astype(np.float32)

    # hair ellipse: from the jaw-ear level up to hair_height face heights above the mesh top
    head_top = top_y - config.hair_height * fh
    ey0, ey1 = head_top, float(chin[1])
    ecx, ecy = cx, 0.5 * (ey0 + ey1)
    a, b = 0.5 * config.head_width * fw, 0.5 * (ey1 - ey0)
    ell = ((xx - ecx) / a) ** 2 + ((yy - ecy) / b) ** 2
    head = (ell <= 1.0) & above_jaw | face

    # neck and torso: below the jaw, within a cone widening fast from the neck to the shoulders
    dy = np.clip(yy - chin[1], 0, None)
    torso = ~above_jaw & (np.abs(xx - cx) <= 0.4 * fw + 2.0 * dy)
    # the body under the neck and shoulders is person in a talking-head crop. It is a
    # certain seed because colour alone cannot separate a dark suit from a dark studio background
    # (GrabCut gave such suits to the background on the news clips); what lies outside the cone is
    # still decided by colour and the background plate
    # Its top is a shallow V: 0.15 face heights under the chin at the neck, sinking by another 0.15
    # face heights per face width sideways (shoulders fall gently from the neck).
    shoulder = chin[1] + 0.15 * fh + 0.15 * fh * np.abs(xx - cx) / fw
    torso_core = yy > shoulder

    # certain background: outside a margin around the hair ellipse, above the chin (the top
    # corners of a head crop); below the chin shoulders may reach any width
    margin = 1.3
    outside_head = ell > margin ** 2
    background = outside_head & (yy < chin[1] - 0.1 * fh) & ~face
    head &= ~background
    return Priors(face, head, torso & ~background & ~head, background, above_jaw, torso_core & ~background & ~face)


def grabcut_person(image: np.ndarray, priors: Priors, size: int, iters: int) -> np.ndarray:
    """Person mask (bool, image size) by GrabCut at `size` px, initialised from the priors."""
    import cv2

    full = image.shape[0]
    img = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)

    def small(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)

    mask = np.full((size, size), cv2.GC_PR_BGD, np.uint8)
    mask[small(priors.head) | small(priors.torso)] = cv2.GC_PR_FGD
    core = cv2.erode(small(priors.face).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    mask[core | small(priors.torso_core)] = cv2.GC_FGD
    mask[small(priors.background)] = cv2.GC_BGD
    if not (mask == cv2.GC_BGD).any() or not (mask == cv2.GC_FGD).any():
        return priors.face | priors.head | priors.torso
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(img[..., ::-1]), mask, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    person = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    return cv2.resize(person, (full, full), interpolation=cv2.INTER_LINEAR).astype(bool)


# ------------------------------------------------------------------------------------------- plate


@dataclass(frozen=True)
class Plate:
    """Background in plate space (the frame scaled by `scale`): image uint8 RGB, known bool."""

    image: np.ndarray
    known: np.ndarray
    transform: np.ndarray     # (2, 3) frame -> plate

    def for_crop(self, crop_transform: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(plate image, known mask) seen through a frame -> crop transform, both size x size."""
        import cv2

        m = _compose(np.asarray(crop_transform, np.float64), _invert(self.transform))
        img = cv2.warpAffine(self.image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        known = cv2.warpAffine(self.known.astype(np.uint8) * 255, m, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 127
        return img, known


def _invert(a: np.ndarray) -> np.ndarray:
    from data_recipes.crops.head import invert

    return invert(a)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a after b, both (2, 3)."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def push_pull_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill unknown pixels smoothly from the known ones (push-pull: a weighted image pyramid down to
    1 px, then each level's holes taken from the coarser level). Large holes (the background behind
    a speaker who never moves away) get a soft blend of the surrounding background instead of the
    streaks of diffusion inpainting; known pixels are kept exactly."""
    import cv2

    img = image.astype(np.float32) * known[..., None]
    wts = known.astype(np.float32)
    levels = [(img, wts)]
    while min(img.shape[:2]) > 1:
        h2, w2 = (img.shape[0] + 1) // 2, (img.shape[1] + 1) // 2
        img = cv2.resize(img, (w2, h2), interpolation=cv2.INTER_AREA)
        wts = cv2.resize(wts, (w2, h2), interpolation=cv2.INTER_AREA)
        levels.append((img, wts))
    est = levels[-1][0] / np.maximum(levels[-1][1], 1e-8)[..., None]
    for img, wts in reversed(levels[:-1]):
        up = cv2.resize(est, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        if up.ndim == 2:
            up = up[..., None]
        mean = img / np.maximum(wts, 1e-8)[..., None]
        alpha = np.clip(wts, 0.0, 1.0)[..., None]
        est = alpha * mean + (1.0 - alpha) * up
    out = np.where(known[..., None], image.astype(np.float32), est)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _masked_median(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-pixel median over axis 0 of uint8 (K, H, W, C) values where valid (K, H, W); 0 where none.

    Invalid entries are replaced by a sentinel above 255 and sorted to the end, so the median of
    the c valid values is the mean of sorted entries (c - 1) // 2 and c // 2 (numpy's convention).
    """
    v = np.where(valid[..., None], values.astype(np.int16), np.int16(1000))
    v.sort(axis=0)
    c = valid.sum(axis=0)
    lo = np.take_along_axis(v, np.maximum((c - 1) // 2, 0)[None, ..., None].repeat(v.shape[-1], -1), 0)[0]
    hi = np.take_along_axis(v, np.maximum(c // 2, 0)[None, ..., None].repeat(v.shape[-1], -1), 0)[0]
    med = (lo.astype(np.float32) + hi.astype(np.float32)) / 2
    med[c == 0] = 0
    return np.clip(np.round(med), 0, 255).astype(np.uint8)


def estimate_plate(samples: list[np.ndarray], person_masks: list[np.ndarray], transforms: list[np.ndarray],
                   frame_hw: tuple[int, int], size: int, moving_spread: float = 12.0) -> tuple[Plate, np.ndarray]:
    """Median background over sampled frames where their person mask says background.

    samples: frames (H, W, 3); person_masks: bool (size, size) in each frame's crop space;
    transforms: each frame's (2, 3) frame -> crop matrix. Returns the plate and the per-pixel
    fraction of samples in which the pixel was person (plate space, for voting where unknown).
    moving_spread: temporal colour std (0-255 levels) above which a pixel counts as having had
    something move across it.
    """
    import cv2

    h, w = frame_hw
    scale = float(np.median([np.sqrt(abs(np.linalg.det(np.asarray(a, np.float64)[:, :2]))) for a in transforms]))
    hp, wp = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    to_plate = np.array([[scale, 0, 0], [0, scale, 0]], np.float64)
    stack = np.empty((len(samples), hp, wp, 3), np.uint8)
    state = np.empty((len(samples), hp, wp), np.uint8)      # 0 background, 1 person, 2 not seen
    votes = np.empty((len(samples), hp, wp), bool)          # person (not grown)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    for k, (frame, person, a) in enumerate(zip(samples, person_masks, transforms)):
        stack[k] = cv2.resize(frame, (wp, hp), interpolation=interp)
        m = _compose(to_plate, _invert(np.asarray(a, np.float64)))      # crop -> plate
        code = np.where(person, 1, 0).astype(np.uint8)
        warped = cv2.warpAffine(code, m, (wp, hp), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=2)
        votes[k] = warped == 1
        # for the plate, grow the person a little: its colour bleeds into the boundary pixels
        grown = cv2.dilate((warped == 1).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        state[k] = np.where(warped == 2, 2, np.where(grown, 1, 0))
    image = np.zeros((hp, wp, 3), np.uint8)
    known = np.zeros((hp, wp), bool)
    rows = max(1, int(4e6 // max(1, len(samples) * wp * 3)))
    for r0 in range(0, hp, rows):
        bg = state[:, r0:r0 + rows] == 0
        # A few samples that wrongly call a pixel background must not make the plate "known" there:
        # the plate would copy the person's clothes and every frame would lose them (a dark suit on
        # anchor_71s). So the background must win the majority of the samples that saw the pixel,
        # unless the pixel's colour changes over the samples (something moved across it: then its
        # background-labelled samples are real glimpses of the background).
        seen = (state[:, r0:r0 + rows] != 2).sum(axis=0)
        n_bg = bg.sum(axis=0)
        spread = stack[:, r0:r0 + rows].astype(np.float32).std(axis=0).mean(axis=-1)
        if len(samples) > 2:
            ok = (n_bg >= 2) & ((n_bg >= 0.5 * seen) | (spread > moving_spread))
        else:
            ok = n_bg > 0
        image[r0:r0 + rows] = _masked_median(stack[:, r0:r0 + rows], bg)
        known[r0:r0 + rows] = ok
    if not known.all():
        image = push_pull_fill(image, known) if known.any() else np.median(stack, axis=0).astype(np.uint8)
    person_freq = votes.sum(0) / np.maximum((state != 2).sum(0), 1)
    return Plate(image, known, to_plate), person_freq.astype(np.float32)


# ------------------------------------------------------------------------------------ per frame


def segment_frame(crop: np.ndarray, lm_crop: np.ndarray, plate_img: np.ndarray, plate_known: np.ndarray,
                  person_vote: np.ndarray, config: SegmentationConfig = SegmentationConfig()) -> np.ndarray:
    """(S, S) uint8 labels for one crop. plate_img/known/vote: the plate and the sampled person
    frequency seen through this frame's crop transform; lm_crop: (478, 2+) mesh in crop pixels."""
    import cv2

    size = crop.shape[0]
    pri = priors_from_landmarks(lm_crop, size, config)
    a = cv2.GaussianBlur(crop, (5, 5), 1.0).astype(np.float32)
    b = cv2.GaussianBlur(plate_img, (5, 5), 1.0).astype(np.float32)
    d = a - b
    diff = np.sqrt(np.einsum("ijk,ijk->ij", d, d))
    near_person = pri.head | pri.torso
    person = (diff > config.diff_high) | ((diff > config.diff_low) & near_person)
    person = np.where(plate_known, person, person_vote > 0.5)
    person |= pri.face | pri.torso_core
    person &= ~pri.background
    person = _clean(person, pri.face)
    labels = np.zeros((size, size), np.uint8)
    labels[person & (pri.above_jaw | pri.face)] = HEAD
    labels[person & ~(pri.above_jaw | pri.face)] = TORSO
    return labels


def _clean(mask: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Close small gaps, drop specks, keep components touching the face or the bottom edge, fill holes."""
    import cv2

    m = mask.astype(np.uint8)
    k = max(3, (mask.shape[0] // 100) | 1)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    n, comp = cv2.connectedComponents(m, connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(comp[face & (m > 0)])] = True
    bottom = comp[-1][m[-1] > 0]
    sizes = np.bincount(comp.ravel(), minlength=n)
    for c in np.unique(bottom):
        if sizes[c] > 0.01 * m.size:
            keep[c] = True
    keep[0] = False
    m = keep[comp].astype(np.uint8)
    # fill holes: background regions not connected to the border
    inv = (1 - m).astype(np.uint8)
    n2, comp2 = cv2.connectedComponents(inv, connectivity=4)
    border = np.unique(np.concatenate([comp2[0], comp2[-1], comp2[:, 0], comp2[:, -1]]))
    hole = np.ones(n2, bool)
    hole[border] = False
    hole[0] = hole[0] and inv.ravel()[0] == 0
    m[hole[comp2] & (inv > 0)] = 1
    return m.astype(bool)


# ------------------------------------------------------------------------------------------ storage


class LabelWriter:
    """Appends per-frame label maps to a zip-deflated .npz (members f000000, f000001, ...)."""

    def __init__(self, path: Path):
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6)
        self.count = 0

    def add(self, labels: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(labels, dtype=np.uint8), allow_pickle=False)
        self._zip.writestr(f"f{self.count:06d}.npy", buf.getvalue())
        self.count += 1

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "LabelWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_labels(path: Path, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Label maps [start, stop) from a labels.npz, one (S, S) uint8 array at a time."""
    with np.load(path, allow_pickle=False) as z:
        n = len(z.files)
        for i in range(start, n if stop is None else min(stop, n)):
            yield z[f"f{i:06d}"]


def read_labels(path: Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    """(T, S, S) uint8 label maps (0 background, 1 head, 2 neck+torso)."""
    return np.stack(list(iter_labels(path, start, stop)))


def background_for(stage_output, transform: np.ndarray, size: int | None = None) -> np.ndarray:
    """The clip's background plate seen through a frame's crop transform (uint8 RGB size x size)."""
    import cv2

    plate = cv2.cvtColor(cv2.imread(str(stage_output.path("plate.png"))), cv2.COLOR_BGR2RGB)
    known = cv2.imread(str(stage_output.path("plate_known.png")), cv2.IMREAD_GRAYSCALE) > 127
    size = size or int(stage_output.json()["size"])
    return Plate(plate, known, stage_output.array("plate_transform")).for_crop(transform, size)[0]


# -------------------------------------------------------------------------------------------- stage


def _hold_nearest(lm: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = lm.copy()
    idx = np.flatnonzero(present)
    for i in np.flatnonzero(~present):
        out[i] = lm[idx[np.argmin(np.abs(idx - i))]]
    return out


def _sample_plan(n_frames: list[int], k: int) -> list[tuple[int, int]]:
    """(clip index, frame index) of k frames spread evenly over the concatenated clips."""
    total = sum(n_frames)
    if total == 0:
        return []
    flat = np.unique(np.linspace(0, total - 1, min(k, total)).round().astype(int))
    starts = np.cumsum([0, *n_frames])
    out = []
    for g in flat.tolist():
        c = int(np.searchsorted(starts, g, side="right") - 1)
        out.append((c, g - int(starts[c])))
    return out


def plate_stage(ctx) -> None:
    """Subject stage "plate": GrabCut on frames sampled over the subject's source clips, then the
    median background (see the module docstring). Writes plate.png, plate_known.png,
    plate_transform.npy, person_freq.npy and meta.json."""
    import cv2

    from data_recipes.crops.head import apply, crop_frame
    from data_recipes.recipe import save_array, save_json

    cfg: SegmentationConfig = ctx.config
    clips = ctx.clips
    sizes = {tuple(c.size) for c in clips}
    if len(sizes) != 1:
        raise ValueError(f"subject {ctx.subject!r}: clips of different frame sizes {sorted(sizes)} cannot share a plate")
    h, w = clips[0].size
    faces, crops = ctx.clip_inputs["faces"], ctx.clip_inputs["head_crops"]
    size = int(crops[0].json()["size"])
    usable = []
    for i, (f, c) in enumerate(zip(faces, crops)):
        present = f.array("present")
        lm478 = f.array("landmarks478")
        if len(present) and present.any() and lm478.shape[1] == 478:
            lm = _hold_nearest(lm478[..., :2].astype(np.float64), present)
            usable.append((i, apply(c.array("transforms").astype(np.float64), lm),
                           c.array("transforms").astype(np.float64)))
    meta = {"size": size, "subject": ctx.subject, "clips": [c.id for c in clips], "frame_hw": [h, w]}
    if not usable:
        cv2.imwrite(str(ctx.out_dir / "plate.png"), np.zeros((h, w, 3), np.uint8))
        cv2.imwrite(str(ctx.out_dir / "plate_known.png"), np.zeros((h, w), np.uint8))
        save_array(ctx.out_dir, "plate_transform", np.array([[1.0, 0, 0], [0, 1.0, 0]]))
        save_array(ctx.out_dir, "person_freq", np.zeros((h, w), np.float32))
        save_json(ctx.out_dir, "meta", {**meta, "skipped": "no face mesh in the subject's clips"})
        return
    mem_frames = int(cfg.plate_memory_mb * 1e6 // max(1, 4 * h * w))
    lengths = [len(t) for _, _, t in usable]
    k = int(np.clip(min(cfg.plate_samples, mem_frames), 4, max(4, sum(lengths))))
    picks = _sample_plan(lengths, k)
    samples, masks, transforms = [], [], []
    with ctx.progress.task(f"background plate {ctx.subject}", len(picks)) as bar:
        for u, (ci, lm_crop, tr) in enumerate(usable):
            wanted = sorted(f for c, f in picks if c == u)
            if not wanted:
                continue
            want = set(wanted)
            for i, frame in enumerate(clips[ci].iter_frames(0, wanted[-1] + 1)):
                if i not in want:
                    continue
                crop = crop_frame(frame, tr[i], size)
                pri = priors_from_landmarks(lm_crop[i], size, cfg)
                masks.append(grabcut_person(crop, pri, cfg.grabcut_size, cfg.grabcut_iters))
                samples.append(frame.copy())
                transforms.append(tr[i])
                bar.advance()
    plate, person_freq = estimate_plate(samples, masks, transforms, (h, w), size)
    del samples
    cv2.imwrite(str(ctx.out_dir / "plate.png"), cv2.cvtColor(plate.image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(ctx.out_dir / "plate_known.png"), plate.known.astype(np.uint8) * 255)
    save_array(ctx.out_dir, "plate_transform", plate.transform)
    save_array(ctx.out_dir, "person_freq", person_freq)
    save_json(ctx.out_dir, "meta", {
        **meta, "plate_samples": [[clips[usable[c][0]].id, int(f)] for c, f in picks],
        "plate_known_fraction": float(plate.known.mean())})


def load_plate(stage_output) -> tuple[Plate, np.ndarray]:
    """(Plate, person_freq) from a "plate" (or "segmentation") stage output."""
    import cv2

    image = cv2.cvtColor(cv2.imread(str(stage_output.path("plate.png"))), cv2.COLOR_BGR2RGB)
    known = cv2.imread(str(stage_output.path("plate_known.png")), cv2.IMREAD_GRAYSCALE) > 127
    freq_path = stage_output.path("person_freq.npy")
    freq = np.load(freq_path, allow_pickle=False) if freq_path.is_file() else np.zeros(known.shape, np.float32)
    return Plate(image, known, stage_output.array("plate_transform")), freq


def segmentation_stage(ctx) -> None:
    """Recipe stage "segmentation" (see the module docstring for outputs)."""
    import cv2
    import shutil

    from data_recipes.crops.head import apply, crop_frame
    from data_recipes.recipe import save_json

    cfg: SegmentationConfig = ctx.config
    prepared = ctx.prepared
    faces, crops, plate_out = ctx.inputs["faces"], ctx.inputs["head_crops"], ctx.inputs["plate"]
    transforms = crops.array("transforms").astype(np.float64)
    size = int(crops.json()["size"])
    present = faces.array("present")
    lm478 = faces.array("landmarks478")
    n = len(transforms)
    label_path = ctx.out_dir / "labels.npz"
    pmeta = plate_out.json()
    if n == 0 or not present.any() or lm478.shape[1] != 478 or "skipped" in pmeta:
        with LabelWriter(label_path) as lw:
            for _ in range(n):
                lw.add(np.zeros((size, size), np.uint8))
        save_json(ctx.out_dir, "meta", {"size": size, "num_frames": n, "skipped": "no face mesh in the clip"
                                        if "skipped" not in pmeta else pmeta["skipped"]})
        return
    if tuple(pmeta["frame_hw"]) != tuple(prepared.size):
        raise ValueError(f"clip {prepared.id!r} is {prepared.size}; its subject's plate is {tuple(pmeta['frame_hw'])}")
    lm = _hold_nearest(lm478[..., :2].astype(np.float64), present)
    lm_crop = apply(transforms, lm)
    plate, person_freq = load_plate(plate_out)

    counts = np.zeros(3, np.int64)
    m_ref = transforms[n // 2]
    with LabelWriter(label_path) as lw, ctx.progress.task(f"segmentation {prepared.id}", n) as bar:
        for i, frame in enumerate(prepared.iter_frames()):
            crop = crop_frame(frame, transforms[i], size)
            pimg, pknown = plate.for_crop(transforms[i], size)
            m = _compose(transforms[i], _invert(plate.transform))
            vote = cv2.warpAffine(person_freq, m, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            labels = segment_frame(crop, lm_crop[i], pimg, pknown, vote, cfg)
            counts += np.bincount(labels.ravel(), minlength=3)[:3]
            lw.add(labels)
            bar.advance()
    if lw.count != n:
        raise RuntimeError(f"clip {prepared.id!r}: segmented {lw.count} frames, expected {n}")
    bg_img, bg_known = plate.for_crop(m_ref, size)
    cv2.imwrite(str(ctx.out_dir / "background.png"), cv2.cvtColor(bg_img, cv2.COLOR_RGB2BGR))
    # the subject's plate, copied so that `background_for(segmentation output, ...)` keeps working
    for name in ("plate.png", "plate_known.png", "plate_transform.npy", "person_freq.npy"):
        shutil.copyfile(plate_out.path(name), ctx.out_dir / name)
    total = max(int(counts.sum()), 1)
    save_json(ctx.out_dir, "meta", {
        "size": size, "num_frames": n, "labels": {"0": "background", "1": "head", "2": "neck+torso"},
        "fractions": {"background": counts[0] / total, "head": counts[1] / total, "torso": counts[2] / total},
        "plate_subject": pmeta.get("subject"), "plate_key": plate_out.key,
        "plate_samples": pmeta.get("plate_samples"), "plate_known_fraction": float(plate.known.mean()),
        "background_known_fraction": float(bg_known.mean()), "background_transform_frame": n // 2,
        "frames_without_face": int((~present).sum()),
    })
