"""`lrs2:<root>`: LRS2-BBC face-crop utterances, scored with the LRS sync protocol.

Layout: <root>/mvlrs_v1/main/<19-digit video id>/<5-digit utterance>.mp4 (+ .txt), split lists
<root>/{train,val,test}.txt with lines "<video id>/<utt>" optionally followed by a token such as
"NF" or "MV". test.txt is required; train / val lists are used when present.

Cross-driving pairs: Wav2Lip's LSE table uses 14,239 pairs "<audio source> <video>"
(Rudrabha/Wav2Lip evaluation/test_filelists/lrs2.txt). That list is under a non-commercial research
licence, so the suite does not ship it: it is read from `options.pairs` when given, else from the
first of PAIR_FILES found under the root. Without it the dataset loads without cross pairs and a
note says where to put the list.

options.limit keeps the first N test utterances; with a pair list it keeps the pairs in list order
whose clips fit in N test clips. The subject of an utterance is its video id (a BBC programme).
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.availability import Availability
from data_recipes.clip import Clip, CrossPair, Dataset, DatasetError
from data_recipes.datasets.common import check_files, limit_counts, read_id_list, root_availability

ID = re.compile(r"(?:.*?/)?(?P<id>\d{19}/\d{5})(?:\.(?:mp4|txt))?")
SPLITS = ("train", "val", "test")
PAIR_FILES = ("lrs2.txt", "lrs2_eval_pairs.txt", "test_filelists/lrs2.txt", "evaluation/test_filelists/lrs2.txt")


def check(argument: str | None) -> Availability:
    return root_availability(argument, ("mvlrs_v1/main", "test.txt"), "lrs2")


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(audio source, video) id pairs from a Wav2Lip-style list, in file order."""
    pairs = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        toks = line.split()
        if not toks:
            continue
        ms = [ID.fullmatch(t) for t in toks[:2]]
        if len(toks) < 2 or not all(ms):
            raise DatasetError(f"lrs2: {path} line {lineno} is not '<audio source id> <video id>' "
                               f"(ids like 6330311066473698535/00011): {line.strip()!r}")
        pairs.append((ms[0].group("id"), ms[1].group("id")))
    return pairs


def _pair_file(root: Path, option: str | None) -> Path | None:
    if option:
        p = Path(option).expanduser()
        if not p.is_file():
            raise DatasetError(f"lrs2: pair list {p} (options.pairs) not found")
        return p
    return next((root / n for n in PAIR_FILES if (root / n).is_file()), None)


def _select_with_pairs(test_ids: list[str], pairs: list[tuple[str, str]], limit: int | None
                       ) -> tuple[list[str], list[tuple[str, str]]]:
    """Keep pairs in order whose clips are test clips, adding their clips until `limit` is reached."""
    known = set(test_ids)
    chosen: list[str] = []
    chosen_set: set[str] = set()
    kept = []
    for audio, video in pairs:
        if audio not in known or video not in known:
            continue
        new = [c for c in dict.fromkeys((video, audio)) if c not in chosen_set]
        if limit is not None and len(chosen) + len(new) > limit:
            if not new:
                kept.append((audio, video))
            continue
        chosen.extend(new)
        chosen_set.update(new)
        kept.append((audio, video))
    if limit is None:  # every test clip, paired or not, in list order
        return test_ids, kept
    return chosen, kept


def load(argument: str | None, options) -> Dataset:
    if not argument:
        raise DatasetError("dataset 'lrs2' needs its root folder: --dataset lrs2:<root>")
    root = Path(argument).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"lrs2: root folder {root} not found")
    main = root / "mvlrs_v1" / "main"
    expected = ("expected <root>/mvlrs_v1/main/<19-digit video id>/<5-digit utt>.mp4 and split lists "
                "<root>/{train,val,test}.txt")
    if not main.is_dir():
        raise DatasetError(f"lrs2: folder {main} not found ({expected})")
    if not (root / "test.txt").is_file():
        raise DatasetError(f"lrs2: split list {root / 'test.txt'} not found ({expected})")
    ids: dict[str, list[str]] = {}
    notes = []
    for split in SPLITS:
        f = root / f"{split}.txt"
        ids[split] = read_id_list(f, ID) if f.is_file() else []
        if not f.is_file():
            notes.append(f"no {f.name}: split '{split}' is empty")
    if options.subjects:
        ids = {s: [i for i in v if i.split("/")[0] in options.subjects] for s, v in ids.items()}
    if not ids["test"]:
        raise DatasetError(f"lrs2: no test utterances in {root / 'test.txt'} (lines like '6330311066473698535/00011 NF')")
    pair_path = _pair_file(root, getattr(options, "pairs", None))
    if pair_path is not None:
        test_ids, pair_ids = _select_with_pairs(ids["test"], read_pairs(pair_path), options.limit)
        notes.append(f"cross pairs from {pair_path} ({len(pair_ids)} kept)")
    else:
        test_ids = ids["test"][: options.limit] if options.limit else ids["test"]
        pair_ids = []
        notes.append("no cross-driving pair list: put Wav2Lip's evaluation/test_filelists/lrs2.txt at "
                     f"{root / PAIR_FILES[0]} (or pass options.pairs); it is not shipped (non-commercial licence)")
    keep = limit_counts({s: len(v) for s, v in ids.items()}, options.limit)
    selected = {"train": ids["train"][: keep["train"]], "val": ids["val"][: keep["val"]], "test": test_ids}
    clips = [Clip(cid, main / f"{cid}.mp4", subject=cid.split("/")[0], split=split)
             for split in SPLITS for cid in selected[split]]
    check_files(clips, root, "lrs2")
    return Dataset(
        name="lrs2",
        description=f"LRS2 face crops under {root}: " + ", ".join(f"{s} {len(selected[s])}" for s in SPLITS),
        clips=tuple(clips),
        pairs=tuple(CrossPair(video_clip=v, audio_clip=a) for a, v in pair_ids),
        sync_protocol="lrs",
        source="LRS2-BBC (Afouras et al.); media under the BBC research licence from the dataset owners",
        notes=tuple(notes),
    )
