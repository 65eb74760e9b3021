"""Wav2Lip training: the official samplers, loss decrease on real crops, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from methods.wav2lip.data import (ClipData, batch, expert_sample, generator_sample, split_train_eval,
                                  training_crop, usable)

FACE_BOX_XYXY = (110, 120, 350, 360)


# ---------------------------------------------------------------------------- samplers (facts)


def _index_clip(n: int = 40, invalid: tuple[int, ...] = ()) -> ClipData:
    """Crops whose pixels hold their frame index, mel rows holding their row index: every sampled
    array then says exactly which frames / mel frames the sampler used."""
    crops = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], 96, 1).repeat(96, 2).repeat(3, 3)
    valid = np.ones(n, bool)
    valid[list(invalid)] = False
    mel = np.repeat(np.arange(1 + n * 640 // 200, dtype=np.float32)[:, None], 80, 1)  # (M, 80)
    return ClipData("idx", crops, valid, mel)


def _frame_of(channel_plane: np.ndarray) -> int:
    return int(round(float(channel_plane.mean()) * 255))


def test_expert_sample_follows_color_syncnet_train():
    clip = _index_clip()
    rng = np.random.default_rng(0)
    labels = []
    for _ in range(60):
        x, mel, y = expert_sample([clip], rng)
        assert x.shape == (15, 48, 96) and mel.shape == (1, 80, 16) and y.shape == (1,)
        frames = [_frame_of(x[3 * k:3 * k + 3]) for k in range(5)]
        assert frames == list(range(frames[0], frames[0] + 5))       # 5 consecutive frames, BGR per frame
        start = int(mel[0, 0, 0])
        assert (mel[0, :, :] == np.arange(start, start + 16)[None, :]).all()
        if y[0] == 1:  # in sync: the audio of the same frame, with the original's +1 ("0 -> 1 indexing")
            assert start == int(80 * (frames[0] + 1) / 25)
        labels.append(int(y[0]))
    assert 15 < sum(labels) < 45  # both labels, about equally often


def test_generator_sample_follows_wav2lip_train():
    clip = _index_clip()
    rng = np.random.default_rng(1)
    for _ in range(30):
        x, indiv, mel, gt = generator_sample([clip], rng)
        assert x.shape == (6, 5, 96, 96) and indiv.shape == (5, 1, 80, 16) and gt.shape == (3, 5, 96, 96)
        img = _frame_of(gt[:, 0])
        assert [_frame_of(gt[:, t]) for t in range(5)] == list(range(img, img + 5))
        assert not x[:3, :, 48:].any() and np.allclose(x[:3, :, :48], gt[:, :, :48])  # masked target
        wrong = _frame_of(x[3:, 0])
        assert wrong != img and [_frame_of(x[3:, t]) for t in range(5)] == list(range(wrong, wrong + 5))
        assert int(mel[0, 0, 0]) == int(80 * img / 25)                 # sync-loss window: no +1 here
        for k in range(5):                                             # per-frame windows: (img + k - 1)
            assert int(indiv[k, 0, 0, 0]) == int(80 * (img + k - 1) / 25)
        assert img >= 1                                                # img + 1 - 2 < 0 is rejected


def test_samplers_never_use_frames_without_a_face():
    clip = _index_clip(invalid=(10, 11, 25))
    rng = np.random.default_rng(2)
    for _ in range(40):
        x, _, _ = expert_sample([clip], rng)
        assert not {_frame_of(x[3 * k:3 * k + 3]) for k in range(5)} & {10, 11, 25}
        x, _, _, gt = generator_sample([clip], rng)
        used = {_frame_of(gt[:, t]) for t in range(5)} | {_frame_of(x[3:, t]) for t in range(5)}
        assert not used & {10, 11, 25}


def test_short_clips_are_skipped_and_held_out_split():
    short = _index_clip(15)
    assert usable([short]) == []
    train, ev, note = split_train_eval([_index_clip(50)], [])
    assert note.startswith("no val clips") and train[0].valid[:40].all() and not train[0].valid[40:].any()
    assert ev[0].valid[40:].all() and not ev[0].valid[:40].any()
    t2, e2, note2 = split_train_eval([_index_clip(50)], [_index_clip(30)])
    assert note2 == "evaluated on the dataset's val clips" and len(e2) == 1 and t2[0].valid.all()


# ---------------------------------------------------------------------------- real crops


@pytest.fixture(scope="module")
def demo_clip_data(demo_video):
    """60 real frames of the demo clip cut with a fixed face box (JPEG round trip as preprocess.py)."""
    from data_recipes.audio.mel import wav2lip_mel
    from data_recipes.media import read_audio
    from tests.conftest import first_frames

    frames = first_frames(demo_video, 60)
    crops = np.stack([training_crop(f, FACE_BOX_XYXY) for f in frames])
    wav = read_audio(demo_video)[: 60 * 640]
    return ClipData("demo", crops, np.ones(60, bool), wav2lip_mel(wav).T)


def test_training_crop_is_bgr_and_jpeg_round_tripped(demo_clip_data, demo_video):
    import cv2

    from tests.conftest import first_frames

    frame = first_frames(demo_video, 1)[0]
    x1, y1, x2, y2 = FACE_BOX_XYXY
    exact = cv2.resize(np.ascontiguousarray(frame[y1:y2, x1:x2, ::-1]), (96, 96))
    assert np.array_equal(training_crop(frame, FACE_BOX_XYXY, jpeg=False), exact)
    diff = np.abs(demo_clip_data.crops[0].astype(int) - exact.astype(int))
    assert 0 < diff.mean() < 3  # JPEG q95 noise, not a different picture


def test_expert_loss_decreases_on_real_crops(demo_clip_data):
    from methods.wav2lip.models import SyncNet_color, cosine_bce

    x, mel, y = (torch.from_numpy(a) for a in batch(expert_sample, [demo_clip_data], np.random.default_rng(0), 4))
    torch.manual_seed(0)
    model = SyncNet_color()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        a, v = model(mel, x)
        loss = cosine_bce(a, v, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.slow
def test_generator_l1_decreases_on_real_crops(demo_clip_data):
    import torch.nn.functional as F

    from methods.wav2lip.models import Wav2Lip

    x, indiv, _, gt = (torch.from_numpy(a) for a in batch(generator_sample, [demo_clip_data],
                                                          np.random.default_rng(0), 1))
    torch.manual_seed(0)
    model = Wav2Lip()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = F.l1_loss(model(indiv, x), gt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------------- trainers


def test_expert_trainer_checkpoints_and_resumes(demo_clip_data, tmp_path):
    from bench.trainer import CHECKPOINT, CURVES
    from methods.wav2lip.checkpoint import read_checkpoint
    from methods.wav2lip.train import StageSettings, train_expert

    settings = StageSettings(steps=2, batch_size=2, checkpoint_interval=1, eval_interval=2, eval_batches=1, keep=1)
    folder = tmp_path / "expert"
    r1 = train_expert([demo_clip_data], [demo_clip_data], settings, folder, precision="bf16")
    assert r1.step == 2 and r1.checkpoint.name == "checkpoint_step000000002.pth" and r1.precision == "bf16"
    assert sorted(p.name for p in folder.glob("*.pth")) == ["checkpoint_step000000002.pth"]  # keep=1
    assert [row["step"] for row in r1.curve] == [1.0, 2.0] and len(r1.eval_curve) == 1
    # the trainer's state: complete, weights-only loadable, curves beside it
    state = torch.load(folder / CHECKPOINT, weights_only=True)
    assert state["step"] == 2 and set(state["task"]) == {"model", "optimizer", "scaler"}
    assert json.loads((folder / CURVES).read_text())["train"] == r1.curve
    # a rerun with a larger budget continues from step 2 instead of starting again
    r2 = train_expert([demo_clip_data], [demo_clip_data], dataclasses.replace(settings, steps=3),
                      folder, precision="bf16")
    assert r2.step == 3 and r2.resumed_from == 2 and [row["step"] for row in r2.curve] == [1.0, 2.0, 3.0]
    assert read_checkpoint(r2.checkpoint).global_step == 3
    assert sorted(p.name for p in folder.glob("*.pth")) == ["checkpoint_step000000003.pth"]
    # and a rerun with nothing left to do only reports
    r3 = train_expert([demo_clip_data], [demo_clip_data], dataclasses.replace(settings, steps=3), folder)
    assert r3.stopped == "done-before" and r3.step == 3 and r3.checkpoint == r2.checkpoint


def _contiguous(arrays):
    """Tensors in C order: np.stack keeps the samplers' transposed layout, and a convolution over a
    differently laid out copy of the same numbers may take another kernel (float noise ~1e-5)."""
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def _expert_reference(clip, steps: int, batch_size: int, seed: int = 0):
    """color_syncnet_train.py's loop written out plainly: seeded init, Adam(1e-4), one seeded batch per
    step (the suite's (seed, 1, step) sampler), BCE on the cosine similarity."""
    from methods.wav2lip.models import SyncNet_color, cosine_bce

    torch.manual_seed(seed)
    model = SyncNet_color()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))
    losses = []
    for step in range(steps):
        model.train()
        x, mel, y = _contiguous(batch(expert_sample, [clip], np.random.default_rng([seed, 1, step]), batch_size))
        opt.zero_grad()
        a, v = model(mel, x)
        loss = cosine_bce(a, v, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.state_dict(), losses


def _state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_expert_on_the_shared_trainer_equals_a_plain_loop_and_continues_exactly(demo_clip_data, tmp_path):
    """The move onto bench.trainer keeps the results: a straight 4-step run equals the plain loop
    above, and a run of 2 steps continued to 4 equals the straight run (evaluations in between)."""
    from methods.wav2lip.train import StageSettings, train_expert

    four = StageSettings(steps=4, batch_size=2, checkpoint_interval=3, eval_interval=2, eval_batches=1, keep=1)
    straight = train_expert([demo_clip_data], [demo_clip_data], four, tmp_path / "straight")
    ref, ref_losses = _expert_reference(demo_clip_data, 4, 2)
    got = _state(straight.checkpoint)
    for k, v in ref.items():
        assert torch.equal(got[k], v), k
    assert [row["loss"] for row in straight.curve] == pytest.approx(ref_losses, rel=0, abs=0)
    train_expert([demo_clip_data], [demo_clip_data], dataclasses.replace(four, steps=2), tmp_path / "cont")
    cont = train_expert([demo_clip_data], [demo_clip_data], four, tmp_path / "cont")
    assert cont.resumed_from == 2 and cont.step == 4
    resumed = _state(cont.checkpoint)
    for k, v in got.items():
        assert torch.equal(resumed[k], v), k
    assert [row["loss"] for row in cont.curve] == [row["loss"] for row in straight.curve]


@pytest.mark.slow
@pytest.mark.parametrize("gan", [True, False])
def test_generator_trainer_with_switch_and_resume(demo_clip_data, tmp_path, gan):
    from methods.wav2lip.checkpoint import read_checkpoint, save_checkpoint
    from methods.wav2lip.models import SyncNet_color
    from methods.wav2lip.train import official_generator_settings, train_generator

    torch.manual_seed(0)
    expert = save_checkpoint(tmp_path, SyncNet_color(), None, 0, 0, prefix="expert_")
    settings = official_generator_settings(1, gan, batch_size=2, checkpoint_interval=1, eval_interval=1,
                                           eval_batches=1, keep=1)
    folder = tmp_path / "gen"
    r1 = train_generator([demo_clip_data], [demo_clip_data], expert, settings, folder)
    assert r1.step == 1 and (folder / "checkpoint_step000000001.pth").is_file()
    assert (folder / "disc_checkpoint_step000000001.pth").is_file() == gan
    ev = r1.eval_curve[-1]
    # the official switch: syncnet_wt becomes 0.03 (hq) / 0.01 (plain) once the eval sync loss < 0.75
    assert r1.syncnet_wt == ((0.03 if gan else 0.01) if ev["eval_sync"] < 0.75 else 0.0)
    assert ("eval_disc_real" in ev) == gan and r1.curve[0]["syncnet_wt"] == 0.0
    r2 = train_generator([demo_clip_data], [demo_clip_data], expert,
                         official_generator_settings(2, gan, batch_size=2, checkpoint_interval=1, eval_interval=5,
                                                     eval_batches=1, keep=1), folder)
    assert r2.step == 2 and len(r2.curve) == 2 and r2.curve[1]["syncnet_wt"] == r1.syncnet_wt
    assert read_checkpoint(r2.checkpoint).global_step == 2
    assert not (folder / "checkpoint_step000000001.pth").exists()


def _generator_reference(clip, expert_path, settings, seed: int = 0):
    """hq_wav2lip_train.py's loop written out plainly (one seeded batch per step; evaluation after each
    eval_interval steps, switching syncnet_wt once the eval sync loss is below 0.75)."""
    import torch.nn.functional as F

    from methods.wav2lip.models import Wav2Lip, Wav2Lip_disc_qual, bce
    from methods.wav2lip.train import evaluate_generator, load_expert, sync_loss

    torch.manual_seed(seed + 1)
    model, disc = Wav2Lip(), Wav2Lip_disc_qual()
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, betas=settings.betas)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=settings.disc_lr, betas=settings.disc_betas)
    expert = load_expert(expert_path).train()
    wt, losses = 0.0, []
    for step in range(settings.steps):
        model.train()
        disc.train()
        x, indiv, mel, gt = _contiguous(batch(generator_sample, [clip], np.random.default_rng([seed, 2, step]),
                                              settings.batch_size))
        opt.zero_grad()
        disc_opt.zero_grad()
        g = model(indiv, x)
        s = sync_loss(expert, mel, g) if wt > 0 else torch.zeros(())
        loss = wt * s + settings.disc_wt * disc.perceptual_loss(g) + (1 - wt - settings.disc_wt) * F.l1_loss(g, gt)
        loss.backward()
        opt.step()
        disc_opt.zero_grad()
        bce(disc(gt), torch.ones(gt.size(0) * gt.size(2), 1)).backward()
        bce(disc(g.detach()), torch.zeros(g.size(0) * g.size(2), 1)).backward()
        disc_opt.step()
        losses.append(loss.item())
        if (step + 1) % settings.eval_interval == 0:
            ev = evaluate_generator(model, disc, expert, [clip], settings, "cpu", "fp32", seed, wt)
            if ev["eval_sync"] < 0.75:
                wt = settings.sync_wt_after_switch
    return model.state_dict(), disc.state_dict(), losses, wt


@pytest.mark.slow
def test_generator_on_the_shared_trainer_equals_a_plain_loop_and_continues_exactly(demo_clip_data, tmp_path):
    """Generator + discriminator with an evaluation (and the syncnet_wt switch) after step 1: the
    straight 3-step run equals the plain loop, and 1 step continued to 3 equals the straight run."""
    from methods.wav2lip.checkpoint import save_checkpoint
    from methods.wav2lip.models import SyncNet_color
    from methods.wav2lip.train import official_generator_settings, train_generator

    torch.manual_seed(0)
    expert = save_checkpoint(tmp_path, SyncNet_color(), None, 0, 0, prefix="expert_")
    three = official_generator_settings(3, True, batch_size=2, checkpoint_interval=2, eval_interval=1,
                                        eval_batches=1, keep=1)
    straight = train_generator([demo_clip_data], [demo_clip_data], expert, three, tmp_path / "straight")
    gen, disc, losses, wt = _generator_reference(demo_clip_data, expert, three)
    got = _state(straight.checkpoint)
    got_disc = _state(straight.checkpoint.with_name("disc_" + straight.checkpoint.name))
    for k, v in gen.items():
        assert torch.equal(got[k], v), k
    for k, v in disc.items():
        assert torch.equal(got_disc[k], v), k
    assert [row["loss"] for row in straight.curve] == losses and straight.syncnet_wt == wt
    train_generator([demo_clip_data], [demo_clip_data], expert, dataclasses.replace(three, steps=1),
                    tmp_path / "cont")
    cont = train_generator([demo_clip_data], [demo_clip_data], expert, three, tmp_path / "cont")
    assert cont.resumed_from == 1 and cont.step == 3 and cont.syncnet_wt == straight.syncnet_wt
    resumed = _state(cont.checkpoint)
    for k, v in got.items():
        assert torch.equal(resumed[k], v), k
