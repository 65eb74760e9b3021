"""Baselines every report needs: the real video (`reference`) and the floor (`frozen`).

`reference` returns the ground-truth frames, so its row is what published tables call "real videos"
(sync metrics of real footage scored by the same pipeline). `frozen` repeats the target's first frame
for the whole audio: any method worth using must beat it on sync.

Both return lazy videos (`data_recipes.frames`): the reference decodes the target clip when it is
read, the frozen baseline holds one frame, so neither grows with the clip's length or resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        from data_recipes.frames import ClipFrames

        return GenerateResult(frames=ClipFrames(request.target, 0, request.num_frames))


class Frozen(Method):
    spec = MethodSpec(
        name="frozen",
        description="the target's first frame repeated for the whole audio: the floor every method must beat",
        config=NoOptions,
        kind="baseline",
        per_subject_data="one frame",
    )

    def generate(self, request: GenerateRequest) -> GenerateResult:
        from data_recipes.frames import RepeatFrames

        first = request.target.frames(0, 1)[0]
        return GenerateResult(frames=RepeatFrames(first, request.num_frames))
