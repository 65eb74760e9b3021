"""Baselines every report needs: the real video (`reference`) and the floor (`frozen`).

`reference` returns the ground-truth frames, so its row is what published tables call "real videos"
(sync metrics of real footage scored by the same pipeline). `frozen` repeats the target's first frame
for the whole audio: any method worth using must beat it on sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.method import GenerateRequest, GenerateResult, Method, MethodSpec


@dataclass(frozen=True)
class NoOptions:
    pass


class Reference(Method):
    spec = MethodSpec(
        name="reference",
        description="the real video (ground truth): the 'real videos' row of published tables",
        config=NoOptions,
        kind="baseline",
        per_subject_data="none",
        cross_driven=False,
    )

    def generate(self, request: GenerateRequest) -> GenerateResult:
        if request.kind != "self":
            raise ValueError("the reference has no real video for cross-driven audio")
        return GenerateResult(frames=request.target.frames(0, request.num_frames))


class Frozen(Method):
    spec = MethodSpec(
        name="frozen",
        description="the target's first frame repeated for the whole audio: the floor every method must beat",
        config=NoOptions,
        kind="baseline",
        per_subject_data="one frame",
    )

    def generate(self, request: GenerateRequest) -> GenerateResult:
        first = request.target.frames(0, 1)
        return GenerateResult(frames=np.repeat(first, request.num_frames, axis=0))
