"""Official checkpoint files: strict loading, clear refusals, saving readable by the official loaders."""

from __future__ import annotations

import pytest
import torch

from methods.wav2lip.checkpoint import (CheckpointError, checkpoint_name, latest_checkpoint, load_into,
                                        read_checkpoint, save_checkpoint, strip_module_prefix)
from methods.wav2lip.models import SyncNet_color, Wav2Lip, Wav2Lip_disc_qual


def _official_file(path, model, prefix="module.", optimizer=None, step=3000, epoch=7):
    """A checkpoint written the way the official training scripts (under DataParallel) write one."""
    torch.save({"state_dict": {prefix + k: v for k, v in model.state_dict().items()},
                "optimizer": optimizer, "global_step": step, "global_epoch": epoch}, path)
    return path


def test_official_format_with_module_prefix_loads_and_runs(tmp_path):
    torch.manual_seed(0)
    src = Wav2Lip().eval()
    path = _official_file(tmp_path / "wav2lip_gan.pth", src)
    ckpt = read_checkpoint(path)
    assert (ckpt.global_step, ckpt.global_epoch) == (3000, 7)
    assert not any(k.startswith("module.") for k in ckpt.state_dict)
    dst = Wav2Lip()
    load_into(dst, ckpt)
    dst.eval()
    mel, faces = torch.rand(1, 1, 80, 16), torch.rand(1, 6, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(dst(mel, faces), src(mel, faces), atol=0, rtol=0)


def test_keys_without_prefix_load_too(tmp_path):
    path = _official_file(tmp_path / "lipsync_expert.pth", SyncNet_color(), prefix="")
    load_into(SyncNet_color(), read_checkpoint(path))


def test_strip_only_a_leading_prefix():
    assert strip_module_prefix({"module.a.module.b": 1, "c": 2}) == {"a.module.b": 1, "c": 2}


def test_wrong_model_is_named_in_the_error(tmp_path):
    path = _official_file(tmp_path / "lipsync_expert.pth", SyncNet_color())
    with pytest.raises(CheckpointError, match="expected a Wav2Lip generator checkpoint but its keys look like "
                                              "SyncNet_color expert"):
        load_into(Wav2Lip(), read_checkpoint(path))
    disc = _official_file(tmp_path / "visual_quality_disc.pth", Wav2Lip_disc_qual())
    with pytest.raises(CheckpointError, match="look like Wav2Lip_disc_qual"):
        load_into(Wav2Lip(), read_checkpoint(disc))


def test_modified_architecture_is_refused_with_shapes(tmp_path):
    sd = Wav2Lip().state_dict()
    sd["face_encoder_blocks.0.0.conv_block.0.weight"] = torch.zeros(32, 6, 7, 7)
    path = tmp_path / "fork.pth"
    torch.save({"state_dict": sd, "optimizer": None, "global_step": 0, "global_epoch": 0}, path)
    with pytest.raises(CheckpointError, match=r"wrong shape.*\(32, 6, 7, 7\) vs \(16, 6, 7, 7\)"):
        load_into(Wav2Lip(), read_checkpoint(path))


def test_bare_state_dict_gets_a_hint(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(Wav2Lip_disc_qual().state_dict(), path)
    with pytest.raises(CheckpointError, match="no 'state_dict' key.*bare state_dict"):
        read_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused_by_weights_only(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "optimizer": _Evil(), "global_step": 0, "global_epoch": 0}, path)
    with pytest.raises(CheckpointError, match=r"holds a Python object \((builtins\.)?print\).*never unpickled"):
        read_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable PyTorch Wav2Lip checkpoint"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")


def test_saved_file_is_the_official_format_and_official_loaders_read_it(tmp_path):
    torch.manual_seed(1)
    model = SyncNet_color()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    a, v = model(torch.rand(2, 1, 80, 16), torch.rand(2, 15, 48, 96))
    (a * v).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path, model, opt, step=12, epoch=3)
    assert path.name == "checkpoint_step000000012.pth" == checkpoint_name(12)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert list(raw) == ["state_dict", "optimizer", "global_step", "global_epoch"]
    assert raw["global_step"] == 12 and raw["global_epoch"] == 3
    # color_syncnet_train.py's loader: load_state_dict on the raw keys (no prefix stripping)
    fresh = SyncNet_color()
    fresh.load_state_dict(raw["state_dict"])
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-4)
    fresh_opt.load_state_dict(raw["optimizer"])
    assert fresh_opt.state_dict()["state"][0]["step"] == 1


def test_latest_checkpoint_by_step_and_prefix(tmp_path):
    for name in ("checkpoint_step000000009.pth", "checkpoint_step000000100.pth",
                 "disc_checkpoint_step000000200.pth", "checkpoint_step12.pth", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "checkpoint_step000000100.pth"
    assert latest_checkpoint(tmp_path, "disc_").name == "disc_checkpoint_step000000200.pth"
    assert latest_checkpoint(tmp_path / "nope") is None


def test_weight_specs_missing_message(isolated_dirs):
    from bench import weights as W
    from methods.wav2lip.weights import LIPSYNC_EXPERT, WAV2LIP, WAV2LIP_GAN

    for spec in (WAV2LIP, WAV2LIP_GAN, LIPSYNC_EXPERT):
        a = W.availability(spec)
        assert not a.ok and spec.filename in a.reason and "TALKBENCH_WEIGHTS" in a.reason
        with pytest.raises(W.WeightsMissing):
            W.locate(spec)


def test_official_gan_hash_is_checked(isolated_dirs):
    """A file named wav2lip_gan.pth that is not the official one is refused by its known sha256."""
    from bench import weights as W
    from methods.wav2lip.weights import WAV2LIP_GAN

    folder = isolated_dirs / "weights"
    folder.mkdir(parents=True)
    _official_file(folder / "wav2lip_gan.pth", Wav2Lip_disc_qual())
    with pytest.raises(W.WeightsMismatch, match="expected ca9ab7b7"):
        W.locate(WAV2LIP_GAN)
