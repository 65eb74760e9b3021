"""The quick budget: BatchNorm statistics recomputed for the final weights, quick-only deviations, and
(slow) the acceptance check that the quick preset's generator draws a face MediaPipe finds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.method import Budget
from methods.wav2lip.data import ClipData


def _random_clip(n: int = 40, seed: int = 0) -> ClipData:
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    mel = rng.standard_normal((1 + n * 640 // 200, 80)).astype(np.float32)
    return ClipData("rand", crops, np.ones(n, bool), mel)


def test_recompute_batchnorm_sets_the_batch_statistics_and_keeps_the_weights():
    from methods.wav2lip.batchnorm import RNG_STAGE, recompute_batchnorm
    from methods.wav2lip.data import batch, generator_sample
    from methods.wav2lip.models import Wav2Lip

    torch.manual_seed(0)
    model = Wav2Lip()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    first = norms[0]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "tracked" not in k}
    clip = _random_clip()
    # the first BatchNorm of the face encoder sees conv(x) of the first batch: its statistics by hand
    x = torch.from_numpy(batch(generator_sample, [clip], np.random.default_rng([7, RNG_STAGE, 0]), 2)[0])
    faces = torch.cat([x[:, :, i] for i in range(x.size(2))], dim=0)
    with torch.no_grad():
        conv_out = model.face_encoder_blocks[0][0].conv_block[0](faces)
    want_mean = conv_out.mean(dim=(0, 2, 3))
    want_var = conv_out.var(dim=(0, 2, 3), unbiased=True)

    out = recompute_batchnorm(model, [clip], batches=1, batch_size=2, seed=7)
    assert out is model and not model.training
    assert first is model.face_encoder_blocks[0][0].conv_block[1]
    torch.testing.assert_close(first.running_mean, want_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, want_var, rtol=1e-4, atol=1e-5)
    assert all(m.momentum == 0.1 for m in norms)          # restored: the module is as built
    assert all(int(m.num_batches_tracked) == 1 for m in norms)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())   # no learned weight changed


def test_recomputed_checkpoint_is_official_format_and_replaces_older_ones(tmp_path):
    from methods.wav2lip.batchnorm import recomputed_checkpoint
    from methods.wav2lip.checkpoint import load_into, read_checkpoint, save_checkpoint
    from methods.wav2lip.models import Wav2Lip

    torch.manual_seed(1)
    src = save_checkpoint(tmp_path, Wav2Lip(), None, 5, 2)
    stale = tmp_path / "bnstats_checkpoint_step000000003.pth"
    stale.write_bytes(b"old")
    out = recomputed_checkpoint(src, [_random_clip()], batches=1, batch_size=2, seed=0)
    assert out.name == "bnstats_checkpoint_step000000005.pth" and not stale.exists()
    ck = read_checkpoint(out)
    assert (ck.global_step, ck.global_epoch) == (5, 2)
    model = Wav2Lip()
    load_into(model, ck)
    base = read_checkpoint(src).state_dict
    changed = [k for k in base if not torch.equal(base[k], ck.state_dict[k])]
    assert changed and all(("running_" in k or "num_batches_tracked" in k) for k in changed)
    again = recomputed_checkpoint(src, [_random_clip()], batches=1, batch_size=2, seed=0)
    assert all(torch.equal(read_checkpoint(again).state_dict[k], v) for k, v in ck.state_dict.items())  # seeded


def test_quick_only_deviations():
    from methods.wav2lip.method import SCHEDULES, Wav2LipConfig, stage_settings

    _, quick = stage_settings(Wav2LipConfig(), Budget.parse("quick"))
    assert quick.lr == SCHEDULES["quick"].generator_lr and SCHEDULES["quick"].bn_recompute_batches > 0
    for preset in ("standard", "full"):
        _, gen = stage_settings(Wav2LipConfig(), Budget.parse(preset))
        assert gen.lr == 1e-4 and SCHEDULES[preset].bn_recompute_batches == 0   # the official recipe


@pytest.mark.slow
def test_quick_budget_draws_a_face_in_most_demo_frames(isolated_dirs, tmp_path):
    """Acceptance (issue 10): the quick preset, trained in fp32 on the demo's train clip, draws a face
    that the suite's face tracker finds in at least 90 % of the demo test frames (the running
    averages alone give a flat grey box: 0 %)."""
    from bench.cache import Cache
    from bench.method import GenerateRequest, MethodContext
    from bench.progress import Progress
    from data_recipes.datasets.demo import load
    from data_recipes.faces import detect
    from data_recipes.recipe import Recipe
    from methods.wav2lip.method import Wav2LipConfig, Wav2LipMethod

    recipe = Recipe(Cache(isolated_dirs / "cache"))
    clips = {c.split: recipe.prepare(c) for c in load(None, None).clips}
    ctx = MethodContext(work_dir=tmp_path / "work", cache=recipe.cache, progress=Progress.off(), device="cpu",
                        seed=0, precision="fp32")
    method = Wav2LipMethod(Wav2LipConfig(), ctx)
    report = method.fit([clips["train"], clips["val"]], Budget.parse("quick"))
    assert "not a lip-sync model" in report.notes
    assert "BatchNorm statistics recomputed" in report.weights[0].note
    test = clips["test"]
    res = method.generate(GenerateRequest("obama/test", "self", test, test))
    track = detect(res.frames, recipe.config("faces"), models=recipe.models)
    found = np.asarray(track.present) & ~np.asarray(track.interpolated)
    assert found.mean() >= 0.9, f"face found in {found.sum()} of {len(found)} frames"
