"""The precision rule (bench.precision) and its use: bf16 only where the device does it natively,
never by a default on a CPU without it, and the manifest says what every component ran at.

Capabilities are injected (no timing, no dependence on this machine's CPU)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest

import bench.precision as P
from bench.method import FitReport, GenerateResult, Method, MethodSpec
from bench.precision import Capability, choose
from metrics.base import Metric, MetricSpec, Score, ValueSpec

NO_BF16 = Capability("cpu", False, "CPU without avx512_bf16 / amx_bf16")
CPU_BF16 = Capability("cpu", True, "CPU avx512_bf16")
CUDA_BF16 = Capability("cuda", True, "NVIDIA H200")
CUDA_NO_BF16 = Capability("cuda", False, "Tesla T4")


@pytest.fixture()
def no_bf16(monkeypatch):
    """Every device reports no native bf16 (an AVX2-only laptop / a pre-Ampere GPU)."""
    monkeypatch.setattr(P, "capability", lambda device: NO_BF16 if not str(device).startswith("cuda") else CUDA_NO_BF16)


@pytest.fixture()
def native_bf16(monkeypatch):
    monkeypatch.setattr(P, "capability", lambda device: CPU_BF16 if not str(device).startswith("cuda") else CUDA_BF16)


# ------------------------------------------------------------------------------------------- the rule


def test_auto_is_fp32_without_native_bf16_and_bf16_with_it():
    assert choose("cpu", "auto", cap=NO_BF16, faithful=False).name == "fp32"
    assert choose("cuda", "auto", cap=CUDA_NO_BF16, faithful=False).name == "fp32"
    got = choose("cpu", "auto", cap=CPU_BF16, faithful=False)
    assert got.name == "bf16" and not got.slow and "avx512_bf16" in got.reason
    assert choose("cuda", "auto", cap=CUDA_BF16, faithful=False).name == "bf16"
    # components whose faithful result needs fp32 never get bf16 from "auto"
    assert choose("cpu", "auto", cap=CPU_BF16, faithful=True).name == "fp32"
    assert choose("cuda", "auto", cap=CUDA_BF16, faithful=True).name == "fp32"


def test_explicit_choice_wins_and_says_when_it_is_slow():
    slow = choose("cpu", "bf16", cap=NO_BF16, faithful=False)
    assert slow.name == "bf16" and slow.slow and "emulated" in slow.reason
    assert not choose("cpu", "bf16", cap=CPU_BF16, faithful=False).slow
    assert choose("cpu", "fp32", cap=CPU_BF16, faithful=False).name == "fp32"
    assert choose("cuda", "amp", cap=CUDA_NO_BF16, faithful=False).name == "amp"     # fp16 AMP needs no bf16
    assert choose("cpu", "amp", cap=CPU_BF16, faithful=False).name == "bf16"         # CPU autocast is bf16
    with pytest.raises(ValueError, match="use one of"):
        choose("cpu", "fp16", faithful=False)


@pytest.mark.parametrize("isa, native", [({}, False), ({"avx2": True, "avx512_f": True}, False),
                                         ({"avx512_bf16": True}, True), ({"amx_bf16": True}, True)])
def test_cpu_capability_reads_torch_isa_report(monkeypatch, isa, native):
    monkeypatch.setattr(P, "cpu_isa", lambda: isa)
    monkeypatch.setattr(P, "cpu_dispatch_level", lambda: "AVX512")
    cap = P.capability("cpu")
    assert cap.device_type == "cpu" and cap.native_bf16 is native
    assert choose("cpu", "auto", faithful=False).name == ("bf16" if native else "fp32")


@pytest.mark.parametrize("level, native", [("AVX512", True), ("AVX2", False), ("DEFAULT", False)])
def test_avx512_bf16_counts_only_where_torch_kernels_run_at_avx512(monkeypatch, level, native):
    """ATEN_CPU_CAPABILITY=avx2 (or a build without AVX-512 kernels) emulates bf16 on such a CPU."""
    monkeypatch.setattr(P, "cpu_isa", lambda: {"avx2": True, "avx512_f": True, "avx512_bf16": True})
    monkeypatch.setattr(P, "cpu_dispatch_level", lambda: level)
    cap = P.capability("cpu")
    assert cap.native_bf16 is native and (native or level in cap.detail)
    monkeypatch.setattr(P, "cpu_isa", lambda: {"amx_bf16": True})      # AMX tiles do not go through ATen's dispatch
    assert P.capability("cpu").native_bf16


def test_the_real_dispatch_level_is_read_from_torch():
    import subprocess
    import sys

    code = "from bench.precision import cpu_dispatch_level as d; print(d())"
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "ATEN_CPU_CAPABILITY": "default"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "DEFAULT"


# ------------------------------------------------------------ no default path picks bf16 without it


def _configs():
    """(owner, default config instance) of the run, every registered method, metric and stage."""
    from bench.config import RunConfig
    from bench.registry import method_registry, metric_registry
    from data_recipes.recipe import STAGES, _load

    out = [("run", RunConfig())]
    for reg, kind in ((method_registry(), "method"), (metric_registry(), "metric")):
        for name in reg.names():
            out.append((f"{kind} {name}", reg.load(name).spec.config()))
    for name, spec in STAGES.items():
        out.append((f"stage {name}", _load(spec.config)()))
    return out


def _precision_fields(owner, cfg, path=""):
    """(where, value) of every field that chooses a precision, through nested configs."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        where = f"{owner}: {path}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _precision_fields(owner, value, f"{path}{f.name}.")
        elif "precision" in f.name or "bf16" in f.name or f.name in ("amp", "autocast"):
            yield where, value


def test_no_default_config_can_pick_bf16_on_a_cpu_without_it(no_bf16):
    from bench.config import RunConfig
    from bench.method import MethodContext

    run_default = RunConfig().precision
    found = list(_precision_fields("MethodContext", MethodContext(work_dir=None, cache=None, progress=None)))
    for owner, cfg in _configs():
        found += list(_precision_fields(owner, cfg))
    owners = {w.split(":")[0] for w, _ in found}
    # the scan must see the places that choose a precision, or it proves nothing
    assert {"run", "MethodContext", "method wav2lip", "metric lpips_alex", "stage hubert", "stage threedmm"} <= owners
    bad = []
    for where, value in found:
        if isinstance(value, bool):  # a bf16 switch must default to off
            if value:
                bad.append((where, value))
            continue
        requested = run_default if value == "context" else value
        # faithful=False: the most permissive way any component resolves its field
        if choose("cpu", requested, faithful=False).name != "fp32":
            bad.append((where, value))
    assert not bad, f"defaults that pick bf16 on a CPU without native bf16: {bad}"
    assert run_default == "auto"


def test_components_resolve_to_fp32_without_native_bf16(no_bf16, tmp_path):
    from bench.progress import Progress
    from metrics.base import MetricContext
    from metrics.lpips.metric import LPIPSAlex
    from methods.wav2lip.method import resolve_precision

    assert resolve_precision("context", "auto", "cpu", faithful=False).name == "fp32"     # training
    assert resolve_precision("context", "auto", "cpu", faithful=True).name == "fp32"    # inference
    assert resolve_precision("context", "auto", "cuda", faithful=False).name == "fp32"
    lp = LPIPSAlex(LPIPSAlex.spec.config(), MetricContext(tmp_path, None, Progress.off()))
    assert lp.precision_used()["lpips"]["name"] == "fp32"


def test_components_with_native_bf16(native_bf16, tmp_path):
    from bench.progress import Progress
    from metrics.base import MetricContext
    from metrics.lpips.metric import LPIPSAlex
    from methods.wav2lip.method import resolve_precision

    assert resolve_precision("context", "auto", "cpu", faithful=False).name == "bf16"     # training
    assert resolve_precision("context", "auto", "cpu", faithful=True).name == "fp32"    # faithful output
    assert resolve_precision("fp32", "auto", "cpu", faithful=False).name == "fp32"        # config wins
    lp = LPIPSAlex(LPIPSAlex.spec.config(), MetricContext(tmp_path, None, Progress.off()))
    assert lp.precision_used()["lpips"]["name"] == "fp32"  # a published metric stays fp32


# ------------------------------------------------------------------------------ the run's manifest


@dataclass(frozen=True)
class ProbeConfig:
    precision: str = "context"


class Probe(Method):
    """Resolves its network's precision the way methods do and returns the target frames."""

    spec = MethodSpec(name="probe", description="test method", config=ProbeConfig, kind="2d",
                      stages=("normalise", "hubert"))

    def fit(self, clips, budget):
        req = self.context.precision if self.config.precision == "context" else self.config.precision
        p = choose(self.context.device, req, faithful=False)
        return FitReport(precision={"generate": {**p.to_json(), "device": self.context.device}})

    def generate(self, request):
        frames = request.target.frames(0, min(request.num_frames, request.target.num_frames))
        return GenerateResult(frames, timings={"model": 0.1})


@dataclass(frozen=True)
class NoOptions:
    pass


class ProbeMetric(Metric):
    spec = MetricSpec(name="probe_metric", description="test metric", values=(ValueSpec("probe", "higher", "", ""),),
                      config=NoOptions)

    def __init__(self, config, context):
        super().__init__(config, context)
        self.precision = choose(context.device, "auto", faithful=True)

    def precision_used(self):
        return {"net": self.precision.to_json()}

    def score(self, sample):
        return {"probe": Score.ok(float(np.mean(sample.generated)))}


def test_manifest_records_every_components_precision(isolated_dirs, monkeypatch, no_bf16):
    import methods
    import metrics
    from bench.config import RunConfig
    from bench.progress import Progress
    from bench.runner import run
    from data_recipes.audio import hubert as hub
    from tests.recipes.test_hubert import _save_folder

    _save_folder(isolated_dirs / "weights" / hub.MODEL_FOLDER, seed=1)  # the default HuBERT folder
    monkeypatch.setitem(methods.BUILTIN_METHODS, "probe", f"{__name__}:Probe")
    monkeypatch.setitem(metrics.BUILTIN_METRICS, "probe_metric", f"{__name__}:ProbeMetric")
    cfg = RunConfig(dataset="demo", methods=("probe",), metrics=("probe_metric",), runs_dir=isolated_dirs / "runs",
                    report=False, preview_videos=False, device="cpu")
    outcome = run(cfg, progress=Progress.off())
    m = json.loads((outcome.run_dir / "manifest.json").read_text())
    run_p = m["precision"]
    assert run_p["requested"] == "auto" and run_p["capability"]["native_bf16"] is False
    assert run_p["auto"]["name"] == "fp32" and "no native bf16" in run_p["auto"]["reason"]
    assert m["methods"]["probe"]["precision"]["generate"]["name"] == "fp32"
    assert m["methods"]["probe"]["fits"][0]["precision"]["generate"]["device"] == "cpu"
    assert m["metrics"]["probe_metric"]["precision"]["net"]["name"] == "fp32"
    hubert = run_p["stages"]["hubert"]
    assert hubert and all(e["name"] == "fp32" and e["device"] == "cpu" for e in hubert)
    every = [run_p["auto"], *m["methods"]["probe"]["precision"].values(),
             *m["metrics"]["probe_metric"]["precision"].values(), *[e for v in run_p["stages"].values() for e in v]]
    assert {e["name"] for e in every} == {"fp32"}
