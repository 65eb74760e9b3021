"""GeneFace++-style person-specific NeRF head (planned; not yet implemented).

Planned pipeline (see ../../docs/ARCHITECTURE.md): HuBERT + f0 -> audio-to-landmark model -> head and
torso radiance fields on a multiresolution hash grid (tiny-cuda-nn when present, pure PyTorch
otherwise) -> super-resolution to 512x512, trained per subject. Its recipe stages (hubert, f0,
head_crops, segmentation, threedmm) exist already. Until the backend lands it is listed as
unavailable with this reason, and never produces numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.availability import Availability
from bench.method import GenerateRequest, GenerateResult, Method, MethodSpec


@dataclass(frozen=True)
class NerfHeadConfig:
    pass


class NerfHeadMethod(Method):
    spec = MethodSpec(
        name="nerf_head",
        description="GeneFace++-style NeRF head: HuBERT+f0 -> landmarks -> head/torso hash-grid NeRF -> 512 SR",
        config=NerfHeadConfig,
        stages=("normalise", "faces", "head_crops", "segmentation", "hubert", "f0", "threedmm"),
        fit_scope="subject",
        kind="3d",
        per_subject_data="3-5 min video of the person (GeneFace++ recipe)",
    )

    @classmethod
    def availability(cls, config: NerfHeadConfig) -> Availability:
        return Availability.no("the NeRF head backend is not implemented yet (its data stages are); "
                               "tracked as a separate issue")

    def generate(self, request: GenerateRequest) -> GenerateResult:
        raise NotImplementedError("nerf_head is unavailable; see NerfHeadMethod.availability")
