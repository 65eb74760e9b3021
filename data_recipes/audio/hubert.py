"""HuBERT hidden states as GeneFace++ computes them, from a local model folder only.

Faithful to yerfor/GeneFacePlusPlus @ 6c35651, data_gen/utils/process_audio/extract_hubert.py:
- model `facebook/hubert-large-ls960-ft` (a HubertForCTC checkpoint) loaded into a bare `HubertModel`
  (transformers drops the `hubert.` key prefix and the unused `lm_head` itself); feature = the last
  hidden state, 1024-d at 50 Hz;
- input = the whole 16 kHz waveform through the checkpoint's feature extractor (zero mean / unit
  variance over the whole clip when `do_normalize`, as its preprocessor_config.json says), then cut
  into chunks of 1000 output frames: chunk k covers samples [320000 k, 320000 k + 320080) (the 80
  extra samples = receptive field 400 - stride 320, so chunk outputs abut without overlap); a tail
  shorter than the 400-sample receptive field is skipped; the result is trimmed to
  (n - 80) // 320 rows;
- alignment to 25 fps (this suite's rule, see `data_recipes.audio.align`): n = 640 T samples give
  2 T - 1 rows; the last row is repeated once so that frame i owns rows [2 i, 2 i + 2). GeneFace++'s
  inference-time zero padding to a multiple of 8 rows is `align.pad_rows_to_multiple` (not applied
  to the stored stream).

Deviations: the original's fallback for a too-short result indexes a 2-D tensor with three indices
(it would crash); it cannot trigger (the arithmetic above never leaves the result short), and here
the generic edge padding covers it. Kernel and stride are derived from the model config rather than
hard-coded, and equal 400 / 320 for every HuBERT/wav2vec2 base or large model.

Weights are never downloaded (`local_files_only=True`); without the folder the stage is unavailable
and says which files to put where.

Running: the model runs on the run's device (`StageContext.device`), is loaded once per recipe
(`StageContext.models`) and shared by every prepare worker (a module in eval mode under
`inference_mode` keeps no state between calls). Precision follows `bench.precision` with
`faithful=True`: GeneFace++ extracts these features in fp32 and its models are trained on them,
so "auto" is fp32 everywhere; an explicit `precision` in the config wins (and is in the cache key).
Torch's thread count is the prepare pool's business (`bench.threads`), never this stage's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.availability import Availability
from bench.precision import Requested
from bench.weights import WeightSpec

if TYPE_CHECKING:
    from bench.precision import Precision

MODEL_FOLDER = "hubert-large-ls960-ft"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CHUNK_FRAMES = 1000  # GeneFace++: clip_length = stride * 1000

HUBERT_LARGE = WeightSpec(
    name="hubert-large-ls960-ft",
    filename=f"{MODEL_FOLDER}/{WEIGHT_FILES[1]}",
    extra_names=(f"{MODEL_FOLDER}/{WEIGHT_FILES[0]}",),
    description="HuBERT-large fine-tuned on LibriSpeech 960h (audio features of GeneFace++)",
    source="https://huggingface.co/facebook/hubert-large-ls960-ft (folder with config.json, "
           "preprocessor_config.json and pytorch_model.bin or model.safetensors)",
    licence="Apache-2.0",
)
WEIGHTS = (HUBERT_LARGE,)


@dataclass(frozen=True)
class HubertConfig:
    """HuBERT feature stage.

    model_dir: folder in the `facebook/hubert-large-ls960-ft` layout; None = <weights>/hubert-large-ls960-ft
        (weights folder = $TALKBENCH_WEIGHTS, see bench.paths);
    chunk_frames: output frames per forward pass (GeneFace++: 1000 = 20 s); 0 = one pass;
    precision: "auto" (fp32: the features GeneFace++'s models were trained on), or an explicit
        "fp32" / "bf16" / "amp" (autocast; see `bench.precision`).
    """

    model_dir: str | None = None
    chunk_frames: int = CHUNK_FRAMES
    precision: Requested = "auto"


def model_dir(config: HubertConfig) -> Path:
    if config.model_dir:
        return Path(config.model_dir).expanduser()
    from bench.paths import weights_dir

    return weights_dir() / MODEL_FOLDER


def missing_files(folder: Path) -> list[str]:
    """Names of the files the folder lacks (a weight file counts once, in either format)."""
    missing = [n for n in (CONFIG_FILE, PREPROCESSOR_FILE) if not (folder / n).is_file()]
    if not any((folder / n).is_file() for n in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    return missing


def hubert_availability(config: HubertConfig | None = None) -> Availability:
    """Available when the local model folder has a config, a preprocessor config and weights."""
    config = config or HubertConfig()
    folder = model_dir(config)
    missing = missing_files(folder)
    if not missing:
        return Availability.yes()
    return Availability.no(
        f"HuBERT model folder {folder} lacks {', '.join(missing)}; put the files of "
        f"{HUBERT_LARGE.source} there (or set HubertConfig.model_dir); weights are never downloaded"
    )


def weight_file(folder: Path) -> Path:
    for n in WEIGHT_FILES:
        if (folder / n).is_file():
            return folder / n
    raise FileNotFoundError(f"no {' or '.join(WEIGHT_FILES)} in {folder}")


def load_hubert(folder: Path) -> tuple[Any, Any]:
    """(HubertModel in eval mode, Wav2Vec2FeatureExtractor) from a local folder, never the network.

    A HubertForCTC checkpoint (keys `hubert.*` + `lm_head.*`) loads into HubertModel: transformers
    strips the base-model prefix and ignores the head, as GeneFace++ relies on.
    """
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    folder = Path(folder)
    missing = missing_files(folder)
    if missing:
        raise FileNotFoundError(f"HuBERT folder {folder} lacks {', '.join(missing)}")
    model = HubertModel.from_pretrained(str(folder), local_files_only=True)
    model.eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    return model, extractor


def conv_geometry(model_config: Any) -> tuple[int, int]:
    """(receptive field, total stride) in samples of the conv feature encoder (400, 320 for HuBERT)."""
    kernel, stride = 1, 1
    for k, s in zip(model_config.conv_kernel, model_config.conv_stride):
        kernel += (k - 1) * stride
        stride *= s
    return kernel, stride


def chunk_bounds(num_samples: int, kernel: int, stride: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Sample ranges of the forward passes, GeneFace++'s rule (see the module docstring)."""
    if chunk_frames <= 0:
        return [(0, num_samples)] if num_samples >= kernel else []
    clip = stride * chunk_frames
    bounds = [(clip * i, clip * i + clip - stride + kernel) for i in range(num_samples // clip)]
    tail = clip * (num_samples // clip)
    if num_samples - tail >= kernel:
        bounds.append((tail, num_samples))
    return bounds


def expected_rows(num_samples: int, kernel: int = 400, stride: int = 320) -> int:
    """Rows GeneFace++ keeps for n samples: (n - (kernel - stride)) // stride."""
    return max((num_samples - (kernel - stride)) // stride, 0)


def hubert_features(wav: np.ndarray, model: Any, extractor: Any, chunk_frames: int = CHUNK_FRAMES,
                    progress: Any = None, precision: "Precision | None" = None) -> np.ndarray:
    """(rows, hidden) float32 last hidden states of 16 kHz mono audio, rows = (n - 80) // 320.

    `wav` is float mono at the extractor's sampling rate (16 kHz). `progress` is an optional
    `bench.progress.Progress`. The model runs where its parameters are; `precision` (a
    `bench.precision.Precision`, None = fp32) sets the autocast region.
    """
    import contextlib

    import torch

    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    rate = int(getattr(extractor, "sampling_rate", 16000))
    values = extractor(wav, sampling_rate=rate, return_tensors="pt").input_values  # (1, n) float32
    kernel, stride = conv_geometry(model.config)
    n = values.shape[1]
    want = expected_rows(n, kernel, stride)
    bounds = chunk_bounds(n, kernel, stride, chunk_frames)
    if want <= 0 or not bounds:
        raise ValueError(f"audio of {n} samples is shorter than HuBERT's {kernel}-sample receptive field")
    device = next(model.parameters()).device
    values = values.to(device)
    region = precision.autocast(str(device)) if precision is not None else contextlib.nullcontext()
    parts: list[np.ndarray] = []
    items = bounds if progress is None else progress.track(bounds, "hubert chunks")
    with torch.inference_mode(), region:
        for start, stop in items:
            hidden = model(values[:, start:stop]).last_hidden_state[0]
            parts.append(hidden.float().cpu().numpy())
    out = np.concatenate(parts, axis=0)
    from data_recipes.audio.align import fit_rows

    return np.ascontiguousarray(fit_rows(out, want), dtype=np.float32)


def load_on(folder: Path, device: str, progress: Any = None, precision: "Precision | None" = None) -> tuple[Any, Any]:
    """`load_hubert` moved to `device`; says once when an explicit precision will be slow there."""
    model, extractor = load_hubert(folder)
    if precision is not None and precision.slow and progress is not None:
        progress.log(f"warning: hubert runs at {precision.name}: {precision.reason}")
    return model.to(device), extractor


def hubert_stage(ctx) -> None:
    """Recipe stage "hubert": (2 T, hidden) float32 HuBERT states aligned to the clip's T frames."""
    from bench.precision import choose
    from bench.weights import sha256_file
    from data_recipes.audio.align import SAMPLES_PER_FRAME, expected_rows_50hz, fit_rows
    from data_recipes.recipe import StageUnavailable, save_array, save_json

    cfg: HubertConfig = ctx.config
    avail = hubert_availability(cfg)
    if not avail.ok:
        raise StageUnavailable(avail.reason)
    folder = model_dir(cfg)
    audio = ctx.prepared.audio()
    num_frames = len(audio) // SAMPLES_PER_FRAME
    precision = choose(ctx.device, cfg.precision, faithful=True)
    model, extractor = ctx.models.shared(
        ("hubert", str(folder.resolve()), ctx.device), lambda: load_on(folder, ctx.device, ctx.progress, precision))
    with ctx.timed("features"):  # what a deployed system pays per request: the model load is not in it
        raw = hubert_features(audio, model, extractor, cfg.chunk_frames, ctx.progress, precision)
    rows = expected_rows_50hz(num_frames)
    feats = fit_rows(raw, rows)
    save_array(ctx.out_dir, "hubert", feats)
    wfile = weight_file(folder)
    save_json(ctx.out_dir, "meta", {
        "shape": list(feats.shape), "rows_per_second": 50, "rows_per_frame": 2, "num_frames": num_frames,
        "raw_rows": int(raw.shape[0]), "edge_padded_rows": int(max(rows - raw.shape[0], 0)),
        "trimmed_rows": int(max(raw.shape[0] - rows, 0)),
        "chunk_frames": cfg.chunk_frames, "model_dir": str(folder), "weights": wfile.name,
        "weights_sha256": sha256_file(wfile), "hidden_size": int(feats.shape[1]),
        "normalised_input": bool(getattr(extractor, "do_normalize", False)),
        "device": ctx.device, "precision": precision.to_json(),
    })
