"""The hardware fingerprint tells apart machines that run at different speeds."""

from __future__ import annotations

import dataclasses

from bench.hardware import ISA_KEYS, Readings, fingerprint, isa_summary, read

ZEN = dict(cpu_vendor="AuthenticAMD", cpu_family="25", cpu_name="AMD EPYC", cpu_cores=2, memory_gb=23.5,
           torch="2.13.0+cpu", platform="Linux x86_64", python="3.11.7")
AVX2 = {k: k == "avx2" for k in ISA_KEYS}
AVX512 = {**AVX2, "avx512_f": True, "avx512_bw": True, "avx512_vnni": True, "avx512_bf16": True}


def test_cpus_that_differ_only_in_avx512_get_different_ids():
    """'AMD EPYC' names a Zen 3 (AVX2) and a Zen 4 (AVX-512) machine alike: the ISA tells them apart."""
    zen3 = fingerprint(Readings(**ZEN, cpu_model_number="1", isa=AVX2))
    zen4_same_model_field = fingerprint(Readings(**ZEN, cpu_model_number="1", isa=AVX512))
    assert zen3["cpu_model"] == zen4_same_model_field["cpu_model"] == "AMD EPYC"
    assert zen3["id"] != zen4_same_model_field["id"]
    assert "AVX2" in zen3["label"] and "AVX-512 + BF16" in zen4_same_model_field["label"]
    # the same readings give the same id (the id is a pure function of the readings)
    assert fingerprint(Readings(**ZEN, cpu_model_number="1", isa=dict(AVX2)))["id"] == zen3["id"]


def test_every_speed_reading_moves_the_id_and_platform_does_not():
    base = Readings(**ZEN, cpu_model_number="17", isa=AVX512)
    ident = fingerprint(base)["id"]
    changes = dict(cpu_vendor="GenuineIntel", cpu_family="6", cpu_model_number="143", cpu_name="Intel Xeon",
                   isa={**AVX512, "amx_bf16": True}, cpu_cores=4, memory_gb=64.0, gpus=("NVIDIA H200",),
                   gpu_driver="550.54", cuda="12.4", torch="2.5.0")
    for key, value in changes.items():
        assert fingerprint(dataclasses.replace(base, **{key: value}))["id"] != ident, key
    # a driver or CUDA change on a GPU machine moves it too; the OS release and Python do not
    gpu = dataclasses.replace(base, gpus=("NVIDIA H200",), gpu_driver="550.54", cuda="12.4")
    assert fingerprint(dataclasses.replace(gpu, gpu_driver="560.28"))["id"] != fingerprint(gpu)["id"]
    assert fingerprint(dataclasses.replace(base, platform="Linux 6.1", python="3.12.1"))["id"] == ident
    # two GPUs are not one
    two = fingerprint(dataclasses.replace(gpu, gpus=("NVIDIA H200", "NVIDIA H200")))
    assert two["gpu"]["count"] == 2 and two["id"] != fingerprint(gpu)["id"]


def test_this_machine_is_read_completely():
    r = read()
    hw = fingerprint(r)
    assert hw["cpu_cores"] >= 1 and hw["cpu_model"] and hw["torch"] and len(hw["id"]) == 12
    assert set(hw["cpu_isa"]) == set(ISA_KEYS) or hw["cpu_isa"] == {}  # torch without the report
    assert hw["fingerprint_version"] == 2 and hw["label"].startswith(hw["cpu_model"])


def test_isa_summary_names_the_widest_vector_unit():
    assert isa_summary({}) == "ISA unknown"
    assert isa_summary(AVX2) == "AVX2"
    assert isa_summary(AVX512) == "AVX-512 + BF16"
    assert isa_summary({**AVX512, "amx_tile": True}) == "AMX + BF16"
