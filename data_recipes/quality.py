"""Quality gates: per-clip input checks run after the recipe stages, so that what will silently ruin
a result is said before any training or scoring starts.

Each gate reads outputs the recipe already computed (nothing is recomputed) and says "ok",
"warning" or "failed" with a one-line reason:

- media      the source file decodes to its whole length: fewer seconds readable than its header
             claims (`MediaInfo.truncation()`) fails the clip for every method;
- audio      RMS level of the clip's 16 kHz mono audio in dBFS (20 log10 RMS, full-scale square wave
             = 0 dBFS): below `QualityConfig.quiet_dbfs` (-50 dBFS) it is a warning (near-silent;
             digital silence says so); lip sync learnt from, or scored on, such audio means nothing;
- faces      fraction of frames with a detected face (interpolated gap frames do not count): none at
             all fails the clip for every method or metric whose stages need faces; below
             `min_face_fraction` (90 %) it is a warning (those frames are passed through or skipped);
- face_size  median side of the face box in pixels ((width + height) / 2 of the tracker's box,
             forehead included): below `min_face_px` (96 px, Wav2Lip's crop side) a warning: the
             mouth is upsampled and blurry, sync and image scores are unreliable;
- length     frames (and frames with a face) against each consumer's minimum (`MINIMUMS`: Wav2Lip
             needs one 5-frame window of faces to generate and more than 15 face frames in a
             training clip; SyncNet needs one 5-frame window plus one frame, and a second's worth
             for an offset search that means something): under a hard minimum the gate fails for
             that consumer only; under a recommended one it is a warning.

Warnings never stop anything. A failed gate's `scope` says whom it stops: "clip" (every method:
the clip counts as failed in `PrepareReport`), "faces" (methods whose recipe stages include
"faces"), or "consumers" (the named methods / metrics). The runner asks `blocking()` before a
method fits or generates for a clip, so the request fails with the gate's reason instead of a
traceback from deep inside the method.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

class InputUnusable(ValueError):
    """A method or metric cannot work on a clip (no face, too short): the message is the reason that
    goes into the results, and the runner prints no traceback for it (the input is at fault, not code)."""


GateStatus = Literal["ok", "warning", "failed"]
Scope = Literal["", "clip", "faces", "consumers"]
_RANK = {"ok": 0, "warning": 1, "failed": 2}


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the gates (documented in docs/RELIABILITY.md)."""

    quiet_dbfs: float = -50.0        # RMS below this: near-silent warning (speech is about -30 to -15)
    min_face_fraction: float = 0.9   # frames with a detected face; below: warning; zero: failed
    min_face_px: float = 96.0        # median face box side; below: warning (Wav2Lip's crop is 96 px)


@dataclass(frozen=True)
class Minimum:
    """What one method or metric needs of a clip. frames: frames of the clip; face_frames: frames
    with a face (a target clip); train_face_frames: frames with a face for a training clip to be
    used at all (warning: that clip is skipped); recommended_frames: below this a warning."""

    frames: int = 0
    face_frames: int = 0
    train_face_frames: int = 0
    recommended_frames: int = 0
    why: str = ""


# Built-in minimums, by method or metric family name. A plugin may declare its own by giving its
# spec a `min_frames` / `min_face_frames` attribute (read with getattr, see `minimum_for`).
MINIMUMS: dict[str, Minimum] = {
    # inference: mel windows of 16 mel frames go with 5-frame face windows; training: the official
    # samplers skip clips with <= 3 * 5 frames with a face (methods/wav2lip/data.py `usable`)
    "wav2lip": Minimum(face_frames=5, train_face_frames=16,
                       why="Wav2Lip works on 5-frame windows of face crops"),
    # syncnet_python: windows = usable frames - 5, at least one (metrics/sync/pipeline.py); the
    # offset search shifts by up to 15 frames, so under a second the minimum rests on few windows
    "lse": Minimum(frames=6, recommended_frames=25,
                   why="SyncNet scores 5-frame windows (one needs 6 frames; a second for a stable offset)"),
    "sync_suite": Minimum(frames=6, recommended_frames=25,
                          why="SyncNet scores 5-frame windows (one needs 6 frames; a second for a stable offset)"),
    "lmd": Minimum(frames=1, why="landmark distance needs a frame"),
}


@dataclass(frozen=True)
class Consumer:
    """A method or metric that will read the clip: its name, whether its stages need faces, and
    what length it needs."""

    name: str
    needs_faces: bool
    minimum: Minimum = field(default_factory=Minimum)


@dataclass(frozen=True)
class Gate:
    name: str
    status: GateStatus
    reason: str
    value: float | None = None
    scope: Scope = ""
    consumers: tuple[str, ...] = ()

    def stops(self, consumer: str, needs_faces: bool) -> bool:
        """True when this failed gate makes the clip unusable for `consumer`."""
        if self.status != "failed":
            return False
        return (self.scope == "clip" or (self.scope == "faces" and needs_faces)
                or (self.scope == "consumers" and consumer in self.consumers))

    def line(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class ClipChecks:
    """Every gate of one clip."""

    clip_id: str
    gates: tuple[Gate, ...]

    @property
    def status(self) -> GateStatus:
        return max((g.status for g in self.gates), key=_RANK.__getitem__, default="ok")

    def not_ok(self) -> list[Gate]:
        return [g for g in self.gates if g.status != "ok"]

    def failed(self) -> list[Gate]:
        return [g for g in self.gates if g.status == "failed"]

    def clip_failure(self) -> str | None:
        """The reason the clip is unusable for everything, or None."""
        for g in self.gates:
            if g.status == "failed" and g.scope == "clip":
                return g.line()
        return None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status,
                "gates": [{k: v for k, v in asdict(g).items() if v not in ((), "", None)} for g in self.gates]}


def blocking(checks: ClipChecks | Mapping[str, Any] | None, consumer: str, needs_faces: bool) -> str | None:
    """Why `consumer` cannot use the clip (the failed gates' lines, joined), or None.

    Accepts a `ClipChecks` or its JSON form (as stored in a manifest)."""
    if checks is None:
        return None
    gates = checks.gates if isinstance(checks, ClipChecks) else tuple(
        Gate(**{k: (tuple(v) if k == "consumers" else v) for k, v in g.items()})
        for g in checks.get("gates", []) if isinstance(g, Mapping))
    stop = [g.line() for g in gates if g.stops(consumer, needs_faces)]
    return "; ".join(stop) or None


def needs_faces(stages: Iterable[str]) -> bool:
    """Whether a method or metric with these recipe stages reads the "faces" stage (directly or not)."""
    from data_recipes.recipe import stage_order

    return "faces" in stage_order(list(stages))


def minimum_for(name: str, spec: Any = None) -> Minimum:
    """The built-in minimum of `name`, or one declared on its spec (`min_frames`, `min_face_frames`)."""
    if name in MINIMUMS:
        return MINIMUMS[name]
    frames, faces = getattr(spec, "min_frames", 0) or 0, getattr(spec, "min_face_frames", 0) or 0
    return Minimum(frames=int(frames), face_frames=int(faces), why=f"{name} declares it") if frames or faces \
        else Minimum()


def consumer(name: str, spec: Any) -> Consumer:
    """A method's or metric's `Consumer` from its spec (its `stages` and optional minimums)."""
    stages = tuple(getattr(spec, "stages", ()) or ())
    return Consumer(name, needs_faces(stages) if stages else False, minimum_for(name, spec))


# ------------------------------------------------------------------------------------------- gates


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dBFS (0 dBFS = a full-scale square wave); -inf for digital silence."""
    a = np.asarray(audio, dtype=np.float64)
    if a.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(a * a)))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def audio_gate(audio: np.ndarray, config: QualityConfig) -> Gate:
    db = rms_dbfs(audio)
    if db == -math.inf or db < -120.0:
        return Gate("audio", "warning", "digital silence (every sample is zero): lip sync cannot be learnt "
                    "or scored", None)
    if db < config.quiet_dbfs:
        return Gate("audio", "warning", f"near-silent: RMS {db:.1f} dBFS < {config.quiet_dbfs:g} dBFS "
                    "(speech is usually -30 to -15); lip sync will not mean much", round(db, 2))
    return Gate("audio", "ok", f"RMS {db:.1f} dBFS", round(db, 2))


def face_gates(detected: np.ndarray, boxes: np.ndarray, config: QualityConfig) -> tuple[Gate, ...]:
    """The faces and face_size gates from per-frame detections (bool) and boxes (T, 4) x1 y1 x2 y2."""
    detected = np.asarray(detected, dtype=bool)
    n = len(detected)
    k = int(detected.sum())
    if n == 0 or k == 0:
        return (Gate("faces", "failed", f"no face in any of {n} frames: methods that need a face cannot use this "
                     "clip", 0.0, scope="faces"),)
    frac = k / n
    if frac < config.min_face_fraction:
        faces = Gate("faces", "warning", f"a face in only {k} of {n} frames ({frac:.0%} < "
                     f"{config.min_face_fraction:.0%}): the others are passed through or skipped", round(frac, 4))
    else:
        faces = Gate("faces", "ok", f"a face in {k} of {n} frames ({frac:.0%})", round(frac, 4))
    b = np.asarray(boxes, dtype=np.float64)[detected]
    sides = ((b[:, 2] - b[:, 0]) + (b[:, 3] - b[:, 1])) / 2.0
    sides = sides[np.isfinite(sides)]
    if not len(sides):
        return (faces,)
    px = float(np.median(sides))
    if px < config.min_face_px:
        size = Gate("face_size", "warning", f"small face: median box side {px:.0f} px < {config.min_face_px:g} px; "
                    "the mouth is upsampled, scores are unreliable", round(px, 1))
    else:
        size = Gate("face_size", "ok", f"median box side {px:.0f} px", round(px, 1))
    return (faces, size)


def length_gate(frames: int, face_frames: int | None, split: str, consumers: Sequence[Consumer]) -> Gate | None:
    """Frames against every consumer's minimum; None when no consumer declares one."""
    failed: list[tuple[str, str]] = []
    warned: list[str] = []
    for c in consumers:
        m = c.minimum
        if m.frames and frames < m.frames:
            failed.append((c.name, f"{c.name} needs >= {m.frames} frames ({m.why})"))
        # no face at all is the faces gate's failure; here only too few
        elif c.needs_faces and face_frames and m.face_frames and face_frames < m.face_frames:
            failed.append((c.name, f"{c.name} needs >= {m.face_frames} frames with a face ({m.why})"))
        elif m.recommended_frames and frames < m.recommended_frames:
            warned.append(f"{c.name} wants >= {m.recommended_frames} ({m.why})")
        elif (split == "train" and c.needs_faces and face_frames and m.train_face_frames
              and face_frames < m.train_face_frames):
            warned.append(f"{c.name} skips training clips with < {m.train_face_frames} frames with a face")
    if not any(c.minimum != Minimum() for c in consumers):
        return None
    have = f"{frames} frames" + (f", {face_frames} with a face" if face_frames is not None else "")
    if failed:
        return Gate("length", "failed", f"too short: {have}; " + "; ".join(w for _, w in failed), float(frames),
                    scope="consumers", consumers=tuple(n for n, _ in failed))
    if warned:
        return Gate("length", "warning", f"short: {have}; " + "; ".join(warned), float(frames))
    return Gate("length", "ok", have, float(frames))


class MediaProbes:
    """Truncation verdicts memoised per file: the clips of one video share one probe (it demuxes
    the whole file), and with a `cache` the verdict is kept under "media-checks/" keyed by the
    file's content hash, so a resumed prepare of a large dataset does not demux every file again.
    Thread-safe for prepare's workers."""

    VERSION = "1"   # bump when `MediaInfo.truncation()` changes its verdict

    def __init__(self, cache: Any = None) -> None:
        self._cache = cache
        self._done: dict[Path, str | None] = {}
        self._lock = threading.Lock()

    def truncation(self, path: Path) -> str | None:
        path = Path(path)
        with self._lock:
            if path in self._done:
                return self._done[path]
        why = self._stored(path) if self._cache is not None else self._probe(path)
        with self._lock:
            self._done[path] = why
        return why

    @staticmethod
    def _probe(path: Path) -> str | None:
        from data_recipes.media import MediaError, probe

        try:
            return probe(path).truncation()
        except MediaError as e:  # unreadable: the normalise stage already failed and said why
            return str(e)

    def _stored(self, path: Path) -> str | None:
        import json

        from bench.cache import content_key, file_sha256

        key = content_key("media-check", self.VERSION, file_sha256(path))
        found = self._cache.entry("media-checks", key) / "check.json"
        if found.is_file():
            stored = json.loads(found.read_text())
            why = stored.get("truncation")
            # the verdict names the file it was made for: the same content may sit elsewhere now
            return None if why is None else str(why).replace(str(stored.get("path", "")), str(path))
        why = self._probe(path)
        with self._cache.write("media-checks", key) as tmp:
            (tmp / "check.json").write_text(json.dumps({"truncation": why, "path": str(path)}))
        return why


def check_clip(recipe: "Recipe", clip: "Clip", consumers: Sequence[Consumer] = (),
               config: QualityConfig = QualityConfig(), probes: MediaProbes | None = None,
               stages: Sequence[str] | None = None) -> ClipChecks | None:
    """The gates of one clip from its cached stage outputs; None when it was not even normalised.

    stages: what was prepared; the face gates run only when it includes "faces" (None: whenever
    the faces stage is cached), so a clip prepared for audio only is not judged by its faces."""
    if not recipe.is_cached(clip, "normalise"):
        return None
    norm = recipe.output(clip, "normalise")
    meta = norm.json("meta")
    frames = int(meta.get("num_frames", 0))
    gates: list[Gate] = []
    if not clip.audio_only:
        why = (probes or MediaProbes(recipe.cache)).truncation(clip.video)
        gates.append(Gate("media", "failed", why, scope="clip") if why else
                      Gate("media", "ok", "decodes to the length its header claims"))
    gates.append(audio_gate(norm.array("audio", mmap=True), config))
    face_frames = None
    if not clip.audio_only and (stages is None or "faces" in stages) and recipe.is_cached(clip, "faces"):
        faces = recipe.output(clip, "faces")
        present = faces.array("present").astype(bool)
        interpolated = faces.array("interpolated").astype(bool) if faces.path("interpolated.npy").is_file() \
            else np.zeros_like(present)
        gates.extend(face_gates(present & ~interpolated, faces.array("boxes"), config))
        face_frames = int(present.sum())
    usable = [c for c in consumers if not c.needs_faces or face_frames is not None]
    length = length_gate(frames, face_frames, clip.split, usable)
    if length is not None:
        gates.append(length)
    return ClipChecks(clip.id, tuple(gates))
