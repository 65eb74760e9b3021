"""LSE from files, as syncnet_python reads them: `bench score` against a transcription of the original.

`official_evaluate` below transcribes SyncNetInstance.evaluate of Wav2Lip's evaluation/scores_LSE
(joonson/syncnet_python @ 6efbb1c plus the resize to 224) step by step on a file, with nothing from
metrics.sync except the network class and the chosen ffmpeg binary: `ffmpeg -y -i <file> -threads 1
-f image2 %06d.jpg`, sorted glob, cv2.imread, cv2.resize 224, (1, 3, T, 224, 224) floats; `ffmpeg -y
-i <file> -async 1 -ac 1 -vn -acodec pcm_s16le -ar 16000 audio.wav`, scipy wavfile, MFCC of the raw
int16, min_length, lastframe = min_length - 5, windows of 5 frames / 20 MFCC frames at 4v in batches
of 20, calc_pdist with torch's pairwise_distance row by row (vshift 15), mean, min, median.

The clips: the shared Obama clip's first 5 s (cut by stream copy at test time) and a Wav2Lip output
mp4 (a seeded generator in the official format, fixed box, written by `bench generate`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from metrics.sync import inputs


def seeded_informative_syncnet(seed: int = 0):
    """A seeded SyncNet (published architecture) with BatchNorm statistics drawn from `seed + 1`, so
    its distance curves are far from flat and the minimum is not at the edge."""
    from tests.metrics.sync_common import seeded_syncnet

    model = seeded_syncnet(seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
    return model.eval()


# ------------------------------------------------------------------------ the original's steps


def official_evaluate(model, videofile: Path, tmp_dir: Path, ffmpeg: str, batch_size: int = 20,
                      vshift: int = 15) -> dict[str, float]:
    import cv2
    import python_speech_features
    from scipy.io import wavfile

    ref = tmp_dir / "demo"
    ref.mkdir(parents=True)
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(videofile), "-threads", "1", "-f", "image2",
                    str(ref / "%06d.jpg")], check=True)
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(videofile), "-async", "1", "-ac", "1", "-vn",
                    "-acodec", "pcm_s16le", "-ar", "16000", str(ref / "audio.wav")], check=True)
    images = []
    flist = glob.glob(os.path.join(str(ref), "*.jpg"))
    flist.sort()
    for fname in flist:
        images.append(cv2.resize(cv2.imread(fname), (224, 224)))
    im = np.stack(images, axis=3)
    im = np.expand_dims(im, axis=0)
    im = np.transpose(im, (0, 3, 4, 1, 2))
    imtv = torch.from_numpy(im.astype(float)).float()

    sample_rate, audio = wavfile.read(str(ref / "audio.wav"))
    mfcc = zip(*python_speech_features.mfcc(audio, sample_rate))
    mfcc = np.stack([np.array(i) for i in mfcc])
    cc = np.expand_dims(np.expand_dims(mfcc, axis=0), axis=0)
    cct = torch.from_numpy(cc.astype(float)).float()

    min_length = min(len(images), math.floor(len(audio) / 640))
    lastframe = min_length - 5
    im_feat, cc_feat = [], []
    with torch.no_grad():
        for i in range(0, lastframe, batch_size):
            im_batch = [imtv[:, :, vframe:vframe + 5, :, :] for vframe in range(i, min(lastframe, i + batch_size))]
            im_feat.append(model.forward_lip(torch.cat(im_batch, 0)).data.cpu())
            cc_batch = [cct[:, :, :, vframe * 4:vframe * 4 + 20] for vframe in range(i, min(lastframe, i + batch_size))]
            cc_feat.append(model.forward_aud(torch.cat(cc_batch, 0)).data.cpu())
    im_feat = torch.cat(im_feat, 0)
    cc_feat = torch.cat(cc_feat, 0)

    win_size = vshift * 2 + 1
    feat2p = torch.nn.functional.pad(cc_feat, (0, 0, vshift, vshift))
    dists = [torch.nn.functional.pairwise_distance(im_feat[[i], :].repeat(win_size, 1), feat2p[i:i + win_size, :])
             for i in range(len(im_feat))]
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    offset = vshift - minidx
    conf = torch.median(mdist) - minval
    return {"offset": int(offset), "lse_d": float(minval), "lse_c": float(conf), "frames": len(images),
            "samples": len(audio), "windows": lastframe}


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from tests.metrics.sync_common import save_like_original

    return save_like_original(seeded_informative_syncnet(0), tmp_path_factory.mktemp("sn") / "syncnet_test.model")


@pytest.fixture(scope="module")
def obama5(shared_data, tmp_path_factory) -> Path:
    """The first 5 s of the shared Obama clip, cut by stream copy (its own h264 and AAC packets)."""
    out = tmp_path_factory.mktemp("obama") / "obama_5s.mp4"
    inputs.run_ffmpeg(["-y", "-i", str(shared_data / "clips/obama_20s.mp4"), "-t", "5", "-c", "copy", str(out)])
    return out


@pytest.fixture(scope="module")
def wav2lip_mp4(shared_data, tmp_path_factory) -> Path:
    """A Wav2Lip output mp4: `bench generate` with a seeded official-format generator and a fixed box,
    2 s of the English speech over the Obama clip."""
    from bench.cli import main
    from tests.methods.test_wav2lip_parity import seeded_generator_state

    folder = tmp_path_factory.mktemp("w2l")
    ckpt = folder / "checkpoint_step000000001.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in seeded_generator_state().items()},
                "optimizer": None, "global_step": 1, "global_epoch": 0}, ckpt)
    face = folder / "face.mp4"
    inputs.run_ffmpeg(["-y", "-i", str(shared_data / "clips/obama_20s.mp4"), "-t", "2", "-c", "copy", str(face)])
    speech = folder / "speech.wav"
    inputs.run_ffmpeg(["-y", "-i", str(shared_data / "audio/english_60s.wav"), "-t", "2", str(speech)])
    out = folder / "result.mp4"
    assert main(["generate", "--method", "wav2lip", "--face", str(face), "--audio", str(speech), "--out", str(out),
                 "--set", f"wav2lip.checkpoint={ckpt}", "--set", "wav2lip.box=90,360,110,350",
                 "--device", "cpu", "--progress", "off"]) == 0
    return out


def bench_score_json(video: Path, checkpoint: Path, capsys) -> dict:
    from bench.cli import main

    capsys.readouterr()
    assert main(["score", str(video), "--metrics", "lse", "--set", f"lse.checkpoint={checkpoint}", "--json",
                 "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def _names(checkpoint: Path) -> tuple[str, str, str]:
    import hashlib

    tag = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:8]
    return tuple(f"{n} (SyncNet {tag})" for n in ("LSE-D", "LSE-C", "AV-offset"))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("clip", ["obama5", "wav2lip_mp4"])
def test_bench_score_equals_the_original_steps_on_the_file(clip, checkpoint, capsys, request, tmp_path):
    video = request.getfixturevalue(clip)
    got = bench_score_json(video, checkpoint, capsys)
    d, c, o = _names(checkpoint)
    assert set(got) == {d, c, o}, got                      # never the published names for this file
    want = official_evaluate(seeded_informative_syncnet(0), video, tmp_path, inputs.ffmpeg_exe())
    assert want["windows"] > 20
    assert got[o] == want["offset"]
    assert abs(got[d] - want["lse_d"]) <= 1e-3
    assert abs(got[c] - want["lse_c"]) <= 1e-3
    assert want["lse_c"] > 1e-2  # the curve is not flat: the offset is a real minimum, not a tie


def test_inputs_are_the_original_files_and_the_old_paths_differ(obama5, tmp_path):
    """Each input step equals the original's exactly; the shortcuts it replaced do not (so a drift in
    any step shows up): frames piped as RGB, audio resampled by soxr."""
    import cv2
    from scipy.io import wavfile

    from data_recipes.media import read_audio, read_video_frames

    got = inputs.official_inputs(obama5, tmp_path / "suite")
    ref = tmp_path / "ref"
    ref.mkdir()
    ff = inputs.ffmpeg_exe()
    subprocess.run([ff, "-loglevel", "error", "-y", "-i", str(obama5), "-threads", "1", "-f", "image2",
                    str(ref / "%06d.jpg")], check=True)
    subprocess.run([ff, "-loglevel", "error", "-y", "-i", str(obama5), "-async", "1", "-ac", "1", "-vn",
                    "-acodec", "pcm_s16le", "-ar", "16000", str(ref / "audio.wav")], check=True)
    want_jpgs = sorted(glob.glob(str(ref / "*.jpg")))
    assert len(got.jpegs) == len(want_jpgs) >= 125   # a stream copy keeps a few frames past 5 s
    for a, b in zip(got.jpegs[::31], want_jpgs[::31]):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    _, want_pcm = wavfile.read(str(ref / "audio.wav"))
    np.testing.assert_array_equal(got.pcm, want_pcm)

    # the replaced shortcuts: RGB frames piped back into ffmpeg, and soxr-resampled float audio
    frames = read_video_frames(obama5)[:20]
    piped = inputs.write_jpegs(frames, tmp_path / "piped")
    diff = [np.abs(cv2.imread(str(p)).astype(int) - cv2.imread(str(q)).astype(int)).mean()
            for p, q in zip(piped, want_jpgs[:20])]
    assert min(diff) > 0.05
    soxr = inputs.pcm16(read_audio(obama5)[:len(want_pcm)])
    assert np.abs(soxr[:len(want_pcm)].astype(int) - want_pcm[:len(soxr)]).max() > 10


def test_published_file_keeps_the_published_names(checkpoint, monkeypatch):
    """A checkpoint whose sha256 is the pinned one reports as LSE-D / LSE-C; any other under its hash."""
    import hashlib

    import metrics.sync.metric as sync_metric
    from metrics.sync.metric import LSEConfig, LSEMetric

    other = LSEMetric.spec_for(LSEConfig(checkpoint=checkpoint))
    assert [v.name for v in other.values] == list(_names(checkpoint)) and other.published is False
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    monkeypatch.setattr(sync_metric, "SYNCNET_V2", sync_metric.SYNCNET_V2.__class__(
        **{**sync_metric.SYNCNET_V2.__dict__, "sha256": digest}))
    same = LSEMetric.spec_for(LSEConfig(checkpoint=checkpoint))
    assert [v.name for v in same.values] == ["LSE-D", "LSE-C", "AV-offset"] and same.published is True


def test_ffmpeg_is_chosen_by_the_environment(tmp_path, monkeypatch):
    bundled = inputs.ffmpeg_info()
    assert bundled["source"].startswith("bundled") and bundled["version"] != "unknown"
    monkeypatch.setenv(inputs.FFMPEG_ENV, str(tmp_path / "nope"))
    with pytest.raises(inputs.FFmpegError, match="TALKBENCH_FFMPEG"):
        inputs.ffmpeg_exe()
    link = tmp_path / "ffmpeg"
    link.symlink_to(bundled["path"])
    monkeypatch.setenv(inputs.FFMPEG_ENV, str(link))
    chosen = inputs.ffmpeg_info()
    assert chosen["path"] == str(link) and chosen["source"] == "$TALKBENCH_FFMPEG"
    assert chosen["version"] == bundled["version"]


def test_segment_copy_scores_like_the_source_file(obama5, isolated_dirs):
    """The lossless segment copy (libx264 qp 0 in the coded pixel format + ALAC) gives the original's
    steps the same JPEG files and the same int16 audio as the source file itself."""
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe
    from metrics.sync import delivery

    prepared = Recipe(Cache()).prepare(Clip("obama5", obama5, "obama", "test", end=4.0))
    assert not delivery.is_whole_file(prepared) and prepared.num_frames == 100
    info = delivery.write_segment(isolated_dirs / "real.mp4", prepared)
    assert info["pix_fmt"] == "yuv420p"
    src = inputs.official_inputs(obama5, isolated_dirs / "src")
    copy = inputs.official_inputs(isolated_dirs / "real.mp4", isolated_dirs / "copy")
    assert len(copy.jpegs) == prepared.num_frames and len(copy.pcm) == prepared.num_frames * 640
    for a, b in zip(src.jpegs, copy.jpegs):   # the pixels cv2 reads (headers may differ: JFIF vs comment)
        np.testing.assert_array_equal(inputs.read_bgr(a), inputs.read_bgr(b), err_msg=a.name)
    np.testing.assert_array_equal(copy.pcm, src.pcm[:len(copy.pcm)])
