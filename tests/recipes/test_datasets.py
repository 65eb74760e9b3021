"""Dataset loaders on miniature trees with the official naming, and their error messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from data_recipes.clip import DatasetError
from data_recipes.datasets import DATASETS, DatasetOptions, availability, load, parse

CMLR_IDS = {
    "train": ["s1/20090720/section_1_000.10_001.50", "s2/20100101/section_2_003.00_004.20",
              "s4/20110304/section_3_010.00_012.50", "s1/20090721/section_2_001.00_002.40"],
    "val": ["s2/20100102/section_1_000.50_002.00", "s4/20110305/section_1_002.00_003.60"],
    "test": ["s4/20110304/section_4_002.92_004.59", "s2/20140731/section_3_000.42_002.61",
             "s2/20131019/section_1_010.46_012.70", "s1/20170123/section_3_004.88_007.20"],
}
LRS2_IDS = {
    "train": ["5535415699068794046/00001", "5535415699068794046/00002"],
    "val": ["5536038039829982468/00001"],
    "test": ["6330311066473698535/00011", "6330311066473698535/00018", "6331559613336179781/00020",
             "6339758276407584924/00098"],
}


@pytest.fixture(scope="module")
def tiny_media(tmp_path_factory) -> dict[str, Path]:
    """A 0.4 s 32x32 mp4 with audio and a 0.4 s wav, copied into every fake tree."""
    import soundfile as sf

    from data_recipes.media import write_video

    d = tmp_path_factory.mktemp("media")
    frames = np.full((10, 32, 32, 3), 120, np.uint8)
    audio = (0.1 * np.sin(np.arange(6400) / 5)).astype(np.float32)
    mp4 = write_video(d / "tiny.mp4", frames, fps=25, audio=audio)
    silent = write_video(d / "silent.mp4", frames, fps=25)
    sf.write(d / "tiny.wav", audio, 16000)
    return {"mp4": mp4, "silent": silent, "wav": d / "tiny.wav"}


def _cmlr_tree(root: Path, media, csv_style: str = "bare") -> Path:
    for split, ids in CMLR_IDS.items():
        for cid in ids:
            for sub, ext, src in (("video", "mp4", media["silent"]), ("audio", "wav", media["wav"])):
                p = root / sub / f"{cid}.{ext}"
                p.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, p)
            t = root / "text" / f"{cid}.txt"
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_text("把点子变成现实\n", encoding="utf-8")
        if csv_style == "bare":
            text = "".join(f"{cid}\n" for cid in ids)
        else:  # a csv with a header and the id (with extension) in the second column
            text = "index,path,text\n" + "".join(f"{k},{cid}.mp4,句子\n" for k, cid in enumerate(ids))
        (root / f"{split}.csv").write_text(text, encoding="utf-8")
    return root


def _lrs2_tree(root: Path, media, with_pairs: bool = True) -> Path:
    for split, ids in LRS2_IDS.items():
        for uid in ids:
            p = root / "mvlrs_v1" / "main" / f"{uid}.mp4"
            p.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(media["mp4"], p)
            p.with_suffix(".txt").write_text("Text:  HELLO THERE\n")
        (root / f"{split}.txt").write_text("".join(f"{uid}{' NF' if split == 'test' else ''}\n" for uid in ids))
    if with_pairs:
        t = LRS2_IDS["test"]
        (root / "lrs2.txt").write_text(f"{t[3]} {t[0]}\n{t[2]} {t[1]}\n{t[0]} {t[2]}\n{t[1]} {t[3]}\n")
    return root


# ------------------------------------------------------------------------------------------- video


def test_video_dataset_splits_in_time(demo_video):
    ds = load(f"video:{demo_video}", DatasetOptions(test_seconds=4.0))
    by_id = {c.id: c for c in ds.clips}
    assert set(by_id) == {"obama_20s/train", "obama_20s/val", "obama_20s/test"}
    assert (by_id["obama_20s/train"].start, by_id["obama_20s/train"].end) == (0.0, 12.0)
    assert (by_id["obama_20s/val"].start, by_id["obama_20s/val"].end) == (12.0, 16.0)
    assert (by_id["obama_20s/test"].start, by_id["obama_20s/test"].end) == (16.0, 20.0)
    assert [(p.video_clip, p.audio_clip) for p in ds.pairs] == [("obama_20s/test", "obama_20s/val")]
    assert ds.sync_protocol == "tracked" and availability(DATASETS["video"], str(demo_video)).ok


@pytest.mark.parametrize("frames, expected", [
    (200, (150, 25)),      # 8 s: 1/11 is 18 frames, raised to the 1 s floor
    (500, (410, 45)),      # 20 s: 1/11 of the clip
    (1500, (1300, 100)),   # 60 s: capped at 4 s
])
def test_video_auto_split_is_whole_frames(frames, expected):
    from data_recipes.datasets.video import split_frames

    train, k, note = split_frames(frames, None, "clip.mp4")
    assert (train, k) == expected and train + 2 * k == frames and "auto split" in note


def test_video_explicit_split_rounds_to_frames():
    from data_recipes.datasets.video import split_frames

    train, k, note = split_frames(500, 1.01, "clip.mp4")     # 25.25 frames -> 25
    assert (train, k) == (450, 25) and "rounded to whole 25 fps frames" in note
    assert split_frames(500, 2.0, "clip.mp4")[:2] == (400, 50)


def test_video_auto_split_of_a_real_clip(demo_video):
    ds = load(f"video:{demo_video}")                                   # 20 s, auto: 45 frames held out
    by_id = {c.id: c for c in ds.clips}
    assert (by_id["obama_20s/train"].start, by_id["obama_20s/train"].end) == (0.0, 16.4)
    assert (by_id["obama_20s/val"].start, by_id["obama_20s/val"].end) == (16.4, 18.2)
    assert (by_id["obama_20s/test"].start, by_id["obama_20s/test"].end) == (18.2, 20.0)
    assert any("auto split: 45 frames" in n for n in ds.notes)


def test_video_dataset_normalised_lengths(demo_video, isolated_dirs):
    from bench.cache import Cache
    from data_recipes.recipe import Recipe

    ds = load(f"video:{demo_video}", DatasetOptions(test_seconds=4.0))
    r = Recipe(Cache(isolated_dirs / "cache"))
    n = {c.split: r.prepare(c).num_frames for c in ds.clips}
    assert n == {"train": 300, "val": 100, "test": 100}
    ds = load(f"video:{demo_video}", DatasetOptions(test_seconds=1.5))      # 37.5 frames -> 38, no frame lost
    n = {c.split: r.prepare(c).num_frames for c in ds.clips}
    assert n == {"train": 424, "val": 38, "test": 38}


def test_video_dataset_errors(tmp_path, tiny_media, demo_video):
    with pytest.raises(DatasetError, match="needs an argument"):
        load("video")
    with pytest.raises(DatasetError, match=r"nope\.mp4 not found"):
        load(f"video:{tmp_path / 'nope.mp4'}")
    with pytest.raises(DatasetError, match="has no audio track"):
        load(f"video:{tiny_media['silent']}")
    with pytest.raises(DatasetError, match=r"lasts 0\.40 s .*needs at least 4 s"):
        load(f"video:{tiny_media['mp4']}")
    with pytest.raises(DatasetError, match=r"needs at least 10 s"):
        load(f"video:{tiny_media['mp4']}", DatasetOptions(test_seconds=4.0))
    with pytest.raises(DatasetError, match=r"gives 1 frames per held-out segment; at least 13"):
        load(f"video:{demo_video}", DatasetOptions(test_seconds=0.04))
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    with pytest.raises(DatasetError, match="cannot be used"):
        load(f"video:{tmp_path / 'bad.mp4'}")
    assert not availability(DATASETS["video"], str(tmp_path / "nope.mp4")).ok


# -------------------------------------------------------------------------------------------- cmlr


@pytest.mark.parametrize("style", ["bare", "csv"])
def test_cmlr_tree_loads(tmp_path, tiny_media, style):
    root = _cmlr_tree(tmp_path / "CMLR", tiny_media, style)
    ds = load(f"cmlr:{root}")
    assert [c.id for c in ds.split("test")] == CMLR_IDS["test"]
    assert len(ds.split("train")) == 4 and len(ds.split("val")) == 2
    c = ds.clip("s4/20110304/section_4_002.92_004.59")
    assert c.video == root / "video/s4/20110304/section_4_002.92_004.59.mp4"
    assert c.audio == root / "audio/s4/20110304/section_4_002.92_004.59.wav"
    assert c.subject == "s4" and c.split == "test"
    assert len(ds.pairs) == 4 and all(p.video_clip != p.audio_clip for p in ds.pairs)
    assert ds.sync_protocol == "tracked" and availability(DATASETS["cmlr"], str(root)).ok


def test_cmlr_subjects_and_limit(tmp_path, tiny_media):
    root = _cmlr_tree(tmp_path / "CMLR", tiny_media)
    ds = load(f"cmlr:{root}", DatasetOptions(subjects=("s2",)))
    assert {c.subject for c in ds.clips} == {"s2"} and len(ds.split("test")) == 2
    ds = load(f"cmlr:{root}", DatasetOptions(limit=2))
    assert [c.id for c in ds.split("test")] == CMLR_IDS["test"][:2]
    assert len(ds.split("train")) == 2 and len(ds.split("val")) == 1      # cut in proportion
    with pytest.raises(DatasetError, match=r"unknown speaker\(s\) \['s12'\]; CMLR speakers are s1..s11"):
        load(f"cmlr:{root}", DatasetOptions(subjects=("s12",)))


def test_cmlr_clip_normalises_with_separate_wav(tmp_path, tiny_media, isolated_dirs):
    from bench.cache import Cache
    from data_recipes.recipe import Recipe

    root = _cmlr_tree(tmp_path / "CMLR", tiny_media)
    clip = load(f"cmlr:{root}").split("test")[0]
    p = Recipe(Cache(isolated_dirs / "cache")).prepare(clip)
    assert p.num_frames == 10 and len(p.audio()) == 6400


def test_cmlr_errors_name_what_is_missing(tmp_path, tiny_media):
    with pytest.raises(DatasetError, match=r"root folder .*nowhere not found"):
        load(f"cmlr:{tmp_path / 'nowhere'}")
    root = _cmlr_tree(tmp_path / "CMLR", tiny_media)
    shutil.rmtree(root / "audio")
    with pytest.raises(DatasetError, match=r"folder .*CMLR/audio not found \(expected <root>/video/<id>\.mp4"):
        load(f"cmlr:{root}")
    root = _cmlr_tree(tmp_path / "CMLR2", tiny_media)
    (root / "test.csv").unlink()
    with pytest.raises(DatasetError, match=r"split list .*test\.csv not found"):
        load(f"cmlr:{root}")
    assert "test.csv" in availability(DATASETS["cmlr"], str(root)).reason
    root = _cmlr_tree(tmp_path / "CMLR3", tiny_media)
    (root / "video/s2/20140731/section_3_000.42_002.61.mp4").unlink()
    (root / "audio/s1/20170123/section_3_004.88_007.20.wav").unlink()
    with pytest.raises(DatasetError, match=r"1 video files missing under .*CMLR3: "
                                           r"video/s2/20140731/section_3_000\.42_002\.61\.mp4; "
                                           r"1 audio files missing .*section_3_004\.88_007\.20\.wav"):
        load(f"cmlr:{root}")
    root = _cmlr_tree(tmp_path / "CMLR4", tiny_media)
    (root / "test.csv").write_text("hello\nworld\n")
    with pytest.raises(DatasetError, match="has no line with a CMLR id"):
        load(f"cmlr:{root}")


def test_cmlr_real_test_list_parses(shared_data):
    """The published test list (id + transcript per line) is read as 20,418 ids."""
    from data_recipes.datasets.cmlr import ID
    from data_recipes.datasets.common import read_id_list

    ids = read_id_list(shared_data / "filelists/cmlr_test_transcripts.ref", ID)
    assert len(ids) == 20418 and ids[0] == "s4/20110304/section_4_002.92_004.59"
    assert {i.split("/")[0] for i in ids} <= {f"s{k}" for k in range(1, 12)}


# -------------------------------------------------------------------------------------------- lrs2


def test_lrs2_tree_with_pairs(tmp_path, tiny_media):
    root = _lrs2_tree(tmp_path / "LRS2", tiny_media)
    ds = load(f"lrs2:{root}")
    assert [c.id for c in ds.split("test")] == LRS2_IDS["test"]
    assert ds.sync_protocol == "lrs"
    c = ds.clip("6330311066473698535/00011")
    assert c.video == root / "mvlrs_v1/main/6330311066473698535/00011.mp4" and c.audio is None
    assert c.subject == "6330311066473698535"
    t = LRS2_IDS["test"]
    # "<audio source> <video>": first line pairs video t[0] with the audio of t[3]
    assert (ds.pairs[0].video_clip, ds.pairs[0].audio_clip) == (t[0], t[3])
    assert len(ds.pairs) == 4 and availability(DATASETS["lrs2"], str(root)).ok


def test_lrs2_limit_keeps_whole_pairs(tmp_path, tiny_media):
    root = _lrs2_tree(tmp_path / "LRS2", tiny_media)
    ds = load(f"lrs2:{root}", DatasetOptions(limit=2))
    t = LRS2_IDS["test"]
    assert sorted(c.id for c in ds.split("test")) == sorted([t[0], t[3]])
    assert [(p.video_clip, p.audio_clip) for p in ds.pairs] == [(t[0], t[3])]


def test_lrs2_without_pair_list_says_where_to_put_it(tmp_path, tiny_media):
    root = _lrs2_tree(tmp_path / "LRS2", tiny_media, with_pairs=False)
    ds = load(f"lrs2:{root}")
    assert ds.pairs == () and any("lrs2.txt" in n and "not shipped" in n for n in ds.notes)
    with pytest.raises(DatasetError, match=r"pair list .*missing\.txt \(options\.pairs\) not found"):
        load(f"lrs2:{root}", DatasetOptions(pairs=str(tmp_path / "missing.txt")))
    (tmp_path / "my_pairs.txt").write_text(f"{LRS2_IDS['test'][1]} {LRS2_IDS['test'][2]}\n")
    ds = load(f"lrs2:{root}", DatasetOptions(pairs=str(tmp_path / "my_pairs.txt")))
    assert [(p.video_clip, p.audio_clip) for p in ds.pairs] == [(LRS2_IDS["test"][2], LRS2_IDS["test"][1])]


def test_lrs2_errors_name_what_is_missing(tmp_path, tiny_media):
    root = tmp_path / "LRS2"
    root.mkdir()
    with pytest.raises(DatasetError, match=r"folder .*LRS2/mvlrs_v1/main not found \(expected <root>/mvlrs_v1/main/<19-digit"):
        load(f"lrs2:{root}")
    root = _lrs2_tree(tmp_path / "LRS2b", tiny_media)
    (root / "test.txt").unlink()
    with pytest.raises(DatasetError, match=r"split list .*LRS2b/test\.txt not found"):
        load(f"lrs2:{root}")
    root = _lrs2_tree(tmp_path / "LRS2c", tiny_media)
    (root / "mvlrs_v1/main/6331559613336179781/00020.mp4").unlink()
    with pytest.raises(DatasetError, match=r"1 video files missing under .*LRS2c: mvlrs_v1/main/6331559613336179781/00020\.mp4"):
        load(f"lrs2:{root}")
    root = _lrs2_tree(tmp_path / "LRS2d", tiny_media)
    (root / "lrs2.txt").write_text("6330311066473698535/00011\n")
    with pytest.raises(DatasetError, match=r"lrs2\.txt line 1 is not '<audio source id> <video id>'"):
        load(f"lrs2:{root}")


def test_lrs2_real_lists_parse(shared_data):
    from data_recipes.datasets.common import read_id_list
    from data_recipes.datasets.lrs2 import ID, read_pairs

    test = read_id_list(shared_data / "filelists/lrs2_test.txt", ID)
    assert len(test) == 1243
    pairs = read_pairs(shared_data / "filelists/lrs2_eval_pairs.txt")
    assert len(pairs) == 14239
    assert {x for p in pairs for x in p} <= set(test)


def test_registry_names_and_unknown():
    for name in ("video", "cmlr", "lrs2"):
        spec, _ = parse(f"{name}:/x")
        assert spec.check and spec.argument
    with pytest.raises(DatasetError, match="did you mean 'cmlr'"):
        parse("cmrl:/x")
