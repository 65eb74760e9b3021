"""Both Wav2Lip training stages, data-parallel under torchrun (docs/wav2lip.md, "Data-parallel training").

    torchrun --nproc_per_node 2 -m methods.wav2lip.train_ddp --dataset demo --out runs/wav2lip-ddp
    torchrun --nproc_per_node 8 -m methods.wav2lip.train_ddp --device cuda --budget full \\
        --dataset lrs2:/data/LRS2 --out /shared/wav2lip-lrs2

CPU processes talk over gloo, CUDA ones over nccl (one GPU per process, LOCAL_RANK). The budget's
batch sizes stay the effective batches and are split over the W processes (batch / W each; the
official lr 1e-4 belongs to the official effective batches 64 and 16). Rank 0 prepares the clips
through the recipe cache (the other ranks then read the same cache entries), trains both stages
with bench.trainer and writes every file; the others follow it. `--out` (and the cache) must be on
a filesystem every rank sees. Rerunning the same command resumes both stages; a larger budget
continues them. The generator file it prints is loaded by `bench run --set wav2lip.checkpoint=...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchrun --nproc_per_node N -m methods.wav2lip.train_ddp",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--dataset", required=True, help="a dataset as `bench run --dataset` takes it (demo, lrs2:/path, ...)")
    p.add_argument("--out", type=Path, required=True, help="folder of both stages' checkpoints (expert/, generator/)")
    p.add_argument("--budget", default="quick", help="quick | standard | full | steps=N | minutes=M | "
                                                     "wav2lip.expert=N | wav2lip.generator=N (comma-joined)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="wav2lip.OPTION=VALUE",
                   help="a Wav2Lip option (e.g. wav2lip.generator_batch_size=32), repeatable")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, GPU = LOCAL_RANK)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "amp"), default="auto",
                   help="training precision, as `bench run --precision` (auto: bf16 where the device does it natively)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="at most this many test clips (and proportionally "
                                                           "few training clips), as `bench run --limit`")
    p.add_argument("--expert-lr", type=float, default=None, help="expert Adam lr (default: the official 1e-4)")
    p.add_argument("--generator-lr", type=float, default=None,
                   help="generator Adam lr (default: the budget's, official 1e-4)")
    p.add_argument("--workers", type=int, default=2, help="clips prepared at once by rank 0")
    p.add_argument("--progress", choices=("auto", "rich", "log", "off"), default="auto", help="rank 0's display")
    return p


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        owner, dot, name = key.partition(".")
        if not sep or owner != "wav2lip" or not dot or not name:
            raise SystemExit(f"--set expects wav2lip.<option>=<value>, got {text!r}")
        out[name] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bench.distributed import init_from_env, shutdown

    info, device = init_from_env(args.device)
    try:
        return _train(args, info, device)
    except KeyboardInterrupt:
        if info.leader:
            print("interrupted: the stage was checkpointed; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        shutdown(info)


def _train(args: argparse.Namespace, info, device: str) -> int:
    from bench.cache import Cache
    from bench.config import apply_overrides
    from bench.distributed import barrier
    from bench.method import Budget
    from bench.progress import Progress
    from bench.weights import locate
    from data_recipes.datasets import DatasetOptions, load
    from data_recipes.prepare import prepare_all
    from data_recipes.recipe import Recipe
    from methods.wav2lip.method import (SCHEDULES, Wav2LipConfig, Wav2LipMethod, resolve_precision, stage_settings,
                                        training_data)
    from methods.wav2lip.train import train_expert, train_generator
    from methods.wav2lip.weights import LIPSYNC_EXPERT

    config = apply_overrides(Wav2LipConfig(), _overrides(args.overrides), "method wav2lip")
    budget = Budget.parse(args.budget).for_method("wav2lip")
    progress = Progress(args.progress) if info.leader else Progress.off()
    with progress:
        dataset = load(args.dataset, DatasetOptions(limit=args.limit))
        recipe = Recipe(Cache(), progress, clips=dataset.clips, device=device)
        clips = [*dataset.split("train"), *dataset.split("val")]
        stages = list(Wav2LipMethod.spec.stages)
        # rank 0 computes the stages; then every other rank finds them in the cache (and the same failures)
        report = prepare_all(recipe, clips, stages, args.workers, progress) if info.leader else None
        barrier(info)
        if not info.leader:
            report = prepare_all(recipe, clips, stages, 1, progress)
        prepared = [recipe.prepare(c) for c in clips if c.id not in report]
        train, held_out, split_note = training_data(prepared, config, progress if info.leader else None)
        expert_settings, gen_settings = stage_settings(config, budget)
        if args.expert_lr is not None:
            expert_settings = dataclasses.replace(expert_settings, lr=args.expert_lr)
        if args.generator_lr is not None:
            gen_settings = dataclasses.replace(gen_settings, lr=args.generator_lr)
        precision = resolve_precision(config.train_precision, args.precision, device, faithful=False)
        out = Path(args.out)
        say = (lambda text: print(text, flush=True)) if info.leader else (lambda text: None)
        w = info.world_size
        say(f"wav2lip data-parallel: {w} process(es) ({info.backend or 'single process'}, {device}), "
            f"precision {precision.name}; {split_note}")
        start = time.monotonic()
        deadline = budget.deadline(start)
        if config.expert_checkpoint is not None or config.pretrained_expert:
            expert_path = config.expert_checkpoint or locate(LIPSYNC_EXPERT)
            say(f"expert: {expert_path} (not trained)")
        else:
            say(f"expert: effective batch {expert_settings.batch_size} = {w} x {expert_settings.batch_size // w}, "
                f"lr {expert_settings.lr:g}, {expert_settings.steps} steps")
            share = SCHEDULES[budget.preset].expert_time_share
            e_deadline = None if deadline is None else start + share * (deadline - start)
            er = train_expert(train, held_out, expert_settings, out / "expert", device, precision, args.seed,
                              e_deadline, progress if info.leader else None, dist=info)
            expert_path = er.checkpoint
            say(f"expert: {er.step} steps ({er.stopped}, resumed from {er.resumed_from}): {expert_path}")
        say(f"generator: effective batch {gen_settings.batch_size} = {w} x {gen_settings.batch_size // w}, "
            f"lr {gen_settings.lr:g}, {gen_settings.steps} steps")
        gr = train_generator(train, held_out, Path(expert_path), gen_settings, out / "generator", device, precision,
                             args.seed, deadline, progress if info.leader else None, dist=info)
        generator_file = gr.checkpoint
        n_bn = SCHEDULES[budget.preset].bn_recompute_batches
        if n_bn > 0 and info.leader:  # the quick budget's BatchNorm recomputation, as the method does
            from methods.wav2lip.batchnorm import recomputed_checkpoint

            generator_file = recomputed_checkpoint(gr.checkpoint, train, n_bn, gen_settings.batch_size, args.seed,
                                                   device)
        barrier(info)
        say(f"generator: {gr.step} steps ({gr.stopped}, resumed from {gr.resumed_from}), syncnet_wt {gr.syncnet_wt}: "
            f"{generator_file}\nuse it with: bench run --methods wav2lip --set wav2lip.checkpoint={generator_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
