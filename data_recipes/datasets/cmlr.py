"""`cmlr:<root>`: the CMLR Mandarin sentence corpus (11 news speakers, s1..s11).

Official layout (see REFERENCE.md):
    <root>/video/<id>.mp4, <root>/audio/<id>.wav, <root>/text/<id>.txt,
    <root>/train.csv, <root>/val.csv, <root>/test.csv
with ids like s4/20110304/section_4_002.92_004.59 (speaker / date / section_<n>_<start>_<end>).
The exact columns of the split csv files are unverified, so both a bare id per line and a csv with
the id in any column (header allowed, ".mp4" suffix allowed) are accepted.

Only the splits that are used need a list: test.csv always; train.csv / val.csv when present.
options.subjects keeps some speakers ("s1", "s4"); options.limit keeps the first N test sentences
and cuts train / val in proportion. Cross pairs: each test sentence's video with the audio of the
sentence half the (filtered) list away. Sync protocol "tracked" (full frames, face tracked first).
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.availability import Availability
from data_recipes.clip import Clip, Dataset, DatasetError
from data_recipes.datasets.common import check_files, limit_counts, read_id_list, root_availability, rotate_pairs

# Times may be negative: the published test list has ids such as s2/20150325/section_6_-00.01_001.87.
ID = re.compile(r"(?:.*?/)?(?P<id>s(?P<spk>\d{1,2})/\d{8}/section_\d+_-?\d+(?:\.\d+)?_-?\d+(?:\.\d+)?)"
                r"(?:\.(?:mp4|wav|txt))?")
SPLITS = ("train", "val", "test")
SPEAKERS = tuple(f"s{k}" for k in range(1, 12))


def check(argument: str | None) -> Availability:
    return root_availability(argument, ("video", "audio", "test.csv"), "cmlr")


def load(argument: str | None, options) -> Dataset:
    if not argument:
        raise DatasetError("dataset 'cmlr' needs its root folder: --dataset cmlr:<root>")
    root = Path(argument).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"cmlr: root folder {root} not found")
    expected = "expected <root>/video/<id>.mp4, <root>/audio/<id>.wav and split lists <root>/{train,val,test}.csv"
    for sub in ("video", "audio"):
        if not (root / sub).is_dir():
            raise DatasetError(f"cmlr: folder {root / sub} not found ({expected})")
    if not (root / "test.csv").is_file():
        raise DatasetError(f"cmlr: split list {root / 'test.csv'} not found ({expected})")
    unknown = [s for s in options.subjects if s not in SPEAKERS]
    if unknown:
        raise DatasetError(f"cmlr: unknown speaker(s) {unknown}; CMLR speakers are s1..s11")

    ids: dict[str, list[str]] = {}
    notes = []
    for split in SPLITS:
        f = root / f"{split}.csv"
        if not f.is_file():
            notes.append(f"no {f.name}: split '{split}' is empty")
            ids[split] = []
            continue
        got = read_id_list(f, ID)
        if not got and f.stat().st_size > 0:
            raise DatasetError(f"cmlr: {f} has no line with a CMLR id such as s4/20110304/section_4_002.92_004.59")
        if options.subjects:
            got = [i for i in got if i.split("/", 1)[0] in options.subjects]
        ids[split] = got
    if not ids["test"]:
        raise DatasetError(f"cmlr: no test sentences in {root / 'test.csv'}"
                           + (f" for speakers {list(options.subjects)}" if options.subjects else ""))
    keep = limit_counts({s: len(v) for s, v in ids.items()}, options.limit)
    clips = []
    for split in SPLITS:
        for cid in ids[split][: keep[split]]:
            clips.append(Clip(cid, root / "video" / f"{cid}.mp4", subject=cid.split("/", 1)[0], split=split,
                              audio=root / "audio" / f"{cid}.wav"))
    check_files(clips, root, "cmlr")
    test = [c for c in clips if c.split == "test"]
    return Dataset(
        name="cmlr",
        description=f"CMLR sentences under {root}: " + ", ".join(f"{s} {keep[s]}" for s in SPLITS)
                    + (f"; speakers {', '.join(options.subjects)}" if options.subjects else ""),
        clips=tuple(clips),
        pairs=rotate_pairs(test),
        sync_protocol="tracked",
        source="CMLR (Zhao et al. 2019); media under the user's licence from the dataset owners",
        notes=tuple(notes) + ("cross pairs: each test sentence with the audio of the sentence half the list away",),
    )
