"""Hardware and software fingerprint recorded with every run (and next to every fps figure)."""

from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# Packages whose versions can move the numbers; recorded in every manifest.
TRACKED_PACKAGES = (
    "torch", "numpy", "scipy", "opencv-python-headless", "av", "librosa", "soundfile", "mediapipe",
    "transformers", "python_speech_features", "praat-parselmouth", "scikit-image", "pandas",
    "pyarrow", "imageio-ffmpeg", "tinycudann", "face-alignment", "lpips", "talkbench",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _gpu() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gb": round(props.total_memory / 1024**3, 1),
            "count": torch.cuda.device_count()}


def fingerprint() -> dict[str, Any]:
    """CPU model and cores, memory, GPU name and memory, torch and CUDA versions, platform."""
    try:
        import torch

        torch_version = torch.__version__
        cuda = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        torch_version, cuda = None, None
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores": _cores(),
        "memory_gb": _memory_gb(),
        "gpu": _gpu(),
        "torch": torch_version,
        "cuda": cuda,
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
    }
    ident = "|".join(str(info[k]) for k in ("cpu_model", "cpu_cores", "gpu", "cuda"))
    info["id"] = hashlib.sha256(ident.encode()).hexdigest()[:10]
    gpu = info["gpu"]
    info["label"] = f"{info['cpu_model']} x{info['cpu_cores']} cores, " + (
        f"{gpu['name']} ({gpu['memory_gb']} GB)" if gpu else "no GPU")
    return info


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out
