"""One rule for the numeric precision of every model the suite runs (methods, suite-trained scorers,
stage models).

bf16 pays only where the hardware does it natively: a CUDA device with bf16 support, or a CPU with
AVX-512-BF16 or AMX-BF16 as torch reports them. Elsewhere (AVX2-only CPUs: most laptops, AMD before
Zen 4, Apple silicon) PyTorch emulates bf16 and runs it tens of times slower than fp32, so "auto"
never picks it there. An explicit request still wins, with a warning where it will be slow.

Every choice carries its reason, so the manifest can say what each component ran at and why.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, ContextManager, Literal

Requested = Literal["auto", "fp32", "bf16", "amp"]
Name = Literal["fp32", "bf16", "amp"]
REQUESTS: tuple[str, ...] = ("auto", "fp32", "bf16", "amp")


@dataclass(frozen=True)
class Capability:
    """What a device does natively; built from torch's own report, or injected by tests."""

    device_type: str          # "cpu" or "cuda"
    native_bf16: bool
    detail: str               # e.g. "CPU avx512_bf16", "CPU without avx512_bf16 / amx_bf16", "NVIDIA H200"


@dataclass(frozen=True)
class Precision:
    """The precision a component runs at: `name`, what was asked, and why."""

    name: Name
    requested: str
    reason: str
    slow: bool = False        # an explicit request the hardware emulates

    def autocast(self, device: str) -> ContextManager:
        """The autocast region for this precision on `device` (nothing for fp32)."""
        import torch

        dev = "cuda" if str(device).startswith("cuda") else "cpu"
        if self.name == "fp32":
            return contextlib.nullcontext()
        if self.name == "amp" and dev == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast(dev, dtype=torch.bfloat16)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cpu_isa() -> dict[str, bool]:
    """The instruction-set features torch's CPU kernels dispatch on (empty where torch cannot tell)."""
    try:
        import torch

        caps = torch._C._cpu._get_cpu_capability()
    except Exception:  # older torch: no such report; the caller treats every feature as absent
        return {}
    keys = ("avx2", "avx512_f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")
    return {k: bool(caps.get(k, False)) for k in keys}


def capability(device: str) -> Capability:
    """What `device` ("cpu", "cuda", "cuda:1") does natively, read from torch."""
    if str(device).startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        name = torch.cuda.get_device_name(index)
        return Capability("cuda", bool(torch.cuda.is_bf16_supported()), name)
    isa = cpu_isa()
    # The CPU may have AVX-512-BF16 while torch's kernels are held to a lower level
    # (ATEN_CPU_CAPABILITY=avx2, or a build without AVX-512 kernels): bf16 is then emulated.
    dispatch = cpu_dispatch_level()
    avx512 = isa.get("avx512_bf16", False) and dispatch.startswith("AVX512")
    have = [k for k, on in (("avx512_bf16", avx512), ("amx_bf16", isa.get("amx_bf16", False))) if on]
    native = bool(have)
    if have:
        detail = "CPU " + " + ".join(have)
    elif isa.get("avx512_bf16"):
        detail = f"CPU with avx512_bf16, but torch's kernels run at {dispatch}"
    else:
        detail = "CPU without avx512_bf16 / amx_bf16"
    return Capability("cpu", native, detail)


def cpu_dispatch_level() -> str:
    """The instruction level torch's CPU kernels run at ("AVX512", "AVX2", "DEFAULT", ...)."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:
        return "DEFAULT"


def choose(device: str, requested: str = "auto", *, cap: Capability | None = None,
           faithful: bool) -> Precision:
    """The precision to run at on `device`.

    `requested`: "auto" (the rule above), or an explicit "fp32" / "bf16" / "amp" that wins.
    `faithful` has no default, so every caller says what "auto" means for it: True for components
    whose faithful result needs fp32 (published metrics, stage models, parity paths: "auto" is then
    always fp32), False for those that may use bf16 where the hardware does it natively (training).
    `cap` injects the capability (tests).
    """
    if requested not in REQUESTS:
        raise ValueError(f"precision {requested!r}: use one of {', '.join(REQUESTS)}")
    if requested == "fp32":
        return Precision("fp32", requested, "asked for fp32")
    cap = cap or capability(device)
    if requested == "auto":
        if faithful:
            return Precision("fp32", requested, "fp32 for a faithful result")
        if cap.native_bf16:
            return Precision("bf16", requested, f"native bf16 ({cap.detail})")
        return Precision("fp32", requested, f"no native bf16 ({cap.detail})")
    # An explicit bf16 / amp: honour it, say when the hardware emulates it.
    if requested == "amp" and cap.device_type == "cuda":
        return Precision("amp", requested, f"asked for fp16 AMP ({cap.detail})")
    name: Name = "bf16" if cap.device_type == "cpu" else requested  # type: ignore[assignment]
    if cap.native_bf16:
        return Precision(name, requested, f"asked for {requested} ({cap.detail})")
    return Precision(name, requested,
                     f"asked for {requested}, but {cap.detail}: bf16 is emulated and much slower than fp32",
                     slow=True)
