"""Hardware and software fingerprint recorded with every run (and next to every fps figure).

The fingerprint id hashes what decides speed, so that two machines a reader must not compare never
share an id: CPU vendor, family, model number and name string (a name such as "AMD EPYC" covers
several generations), the instruction-set features torch's CPU kernels dispatch on (AVX2, AVX-512,
AVX-512-BF16/FP16, AMX), usable cores, memory, GPU names and count, NVIDIA driver, CUDA and torch
versions. Readings are gathered by `read()` and hashed by `from_readings()`, so tests can inject
the readings of machines they do not have.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

# Bumped when the id's recipe changes (an older manifest's id is then not comparable).
FINGERPRINT_VERSION = 2

# Packages whose versions can move the numbers; recorded in every manifest.
TRACKED_PACKAGES = (
    "torch", "numpy", "scipy", "opencv-python-headless", "av", "librosa", "soundfile", "mediapipe",
    "transformers", "python_speech_features", "praat-parselmouth", "scikit-image", "pandas",
    "pyarrow", "imageio-ffmpeg", "tinycudann", "face-alignment", "lpips", "talkbench",
)

# The ISA features named in the fingerprint (torch._C._cpu._get_cpu_capability keys).
ISA_KEYS = ("avx2", "avx512_f", "avx512_bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
            "amx_tile", "amx_int8", "amx_bf16", "amx_fp16")


@dataclass(frozen=True)
class Readings:
    """Everything the fingerprint is made of, as read on one machine (or injected by a test)."""

    cpu_vendor: str = ""                 # "AuthenticAMD", "GenuineIntel", "ARM" ...
    cpu_family: str = ""                 # /proc/cpuinfo "cpu family" (25 = AMD Zen 3 / Zen 4)
    cpu_model_number: str = ""           # /proc/cpuinfo "model" (17 = Zen 4 Genoa, 1 = Zen 3 Milan)
    cpu_name: str = ""                   # "model name" string
    isa: dict[str, bool] = field(default_factory=dict)
    cpu_cores: int = 1                   # cores this process may use (affinity)
    memory_gb: float | None = None
    gpus: tuple[str, ...] = ()           # one name per visible CUDA device
    gpu_memory_gb: float | None = None   # of device 0
    gpu_driver: str | None = None
    cuda: str | None = None
    torch: str | None = None
    platform: str = ""
    python: str = ""


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} elsewhere)."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if out:
                    break
                continue
            key, sep, value = line.partition(":")
            if sep:
                out.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return out


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def cores() -> int:
    """Cores this process may run on (CPU affinity where the platform has it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _nvidia_driver() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        for word in text.split():
            if word.count(".") >= 1 and word.replace(".", "").isdigit():
                return word
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return out.strip().splitlines()[0] if out.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _isa() -> dict[str, bool]:
    from bench.precision import cpu_isa

    caps = cpu_isa()
    try:  # cpu_isa names the features precision decisions need; the fingerprint names a few more
        import torch

        raw = torch._C._cpu._get_cpu_capability()
        caps = {**caps, **{k: bool(raw.get(k, False)) for k in ISA_KEYS}}
    except Exception:
        pass
    return {k: bool(caps.get(k, False)) for k in ISA_KEYS} if caps else {}


def read() -> Readings:
    """The readings of this machine."""
    info = _cpuinfo()
    torch_version = cuda = None
    gpus: tuple[str, ...] = ()
    gpu_mem = None
    try:
        import torch

        torch_version = torch.__version__
        if torch.cuda.is_available():
            cuda = torch.version.cuda
            gpus = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            gpu_mem = round(torch.cuda.get_device_properties(0).total_memory / 1024**3, 1)
    except ImportError:
        pass
    return Readings(
        cpu_vendor=info.get("vendor_id", "") or info.get("cpu implementer", ""),
        cpu_family=info.get("cpu family", "") or info.get("cpu architecture", ""),
        cpu_model_number=info.get("model", "") or info.get("cpu part", ""),
        cpu_name=info.get("model name", "") or platform.processor() or platform.machine(),
        isa=_isa(), cpu_cores=cores(), memory_gb=_memory_gb(), gpus=gpus, gpu_memory_gb=gpu_mem,
        gpu_driver=_nvidia_driver() if gpus else None, cuda=cuda, torch=torch_version,
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=platform.python_version())


def isa_summary(isa: dict[str, bool]) -> str:
    """"AVX-512 + BF16" style summary of the features that change torch's CPU kernels."""
    if not isa:
        return "ISA unknown"
    if isa.get("amx_tile") or isa.get("amx_bf16"):
        base = "AMX"
    elif isa.get("avx512_f"):
        base = "AVX-512"
    elif isa.get("avx2"):
        base = "AVX2"
    else:
        base = "no AVX2"
    extras = [name for key, name in (("avx512_bf16", "BF16"), ("avx512_fp16", "FP16")) if isa.get(key)]
    return " + ".join([base, *extras])


def speed_identity(r: Readings) -> dict[str, Any]:
    """What the id hashes (platform and python are recorded but do not decide speed)."""
    return {"v": FINGERPRINT_VERSION, "cpu_vendor": r.cpu_vendor, "cpu_family": r.cpu_family,
            "cpu_model_number": r.cpu_model_number, "cpu_name": r.cpu_name,
            "isa": {k: bool(r.isa.get(k, False)) for k in sorted(r.isa)}, "cores": r.cpu_cores,
            # whole GiB: MemTotal moves by a few MB between kernels on the same machine
            "memory_gb": None if r.memory_gb is None else int(round(r.memory_gb)),
            "gpus": list(r.gpus), "gpu_driver": r.gpu_driver, "cuda": r.cuda, "torch": r.torch}


def from_readings(r: Readings) -> dict[str, Any]:
    """The fingerprint dict recorded in manifests (keys read by reports and `bench env`)."""
    ident = json.dumps(speed_identity(r), sort_keys=True)
    gpu = ({"name": r.gpus[0], "memory_gb": r.gpu_memory_gb, "count": len(r.gpus),
            "names": list(r.gpus)} if r.gpus else None)
    cpu = r.cpu_name or "unknown CPU"
    family = f"family {r.cpu_family} model {r.cpu_model_number}" if r.cpu_family or r.cpu_model_number else ""
    label = (f"{cpu} ({', '.join(p for p in (family, isa_summary(r.isa)) if p)}) x{r.cpu_cores} cores, "
             + (f"{len(r.gpus)}x {r.gpus[0]}" if r.gpus else "no GPU"))
    return {
        "id": hashlib.sha256(ident.encode()).hexdigest()[:12],
        "fingerprint_version": FINGERPRINT_VERSION,
        "label": label,
        "cpu_model": cpu,
        "cpu_vendor": r.cpu_vendor,
        "cpu_family": r.cpu_family,
        "cpu_model_number": r.cpu_model_number,
        "cpu_isa": dict(r.isa),
        "cpu_cores": r.cpu_cores,
        "memory_gb": r.memory_gb,
        "gpu": gpu,
        "gpu_driver": r.gpu_driver,
        "torch": r.torch,
        "cuda": r.cuda,
        "platform": r.platform,
        "python": r.python,
    }


def fingerprint(readings: Readings | None = None) -> dict[str, Any]:
    """The fingerprint of this machine (or of injected `readings`); see the module docstring."""
    return from_readings(readings if readings is not None else read())


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out
