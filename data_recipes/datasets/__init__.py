"""Dataset loaders, registered lazily by name. `--dataset name[:argument]`, e.g. `cmlr:/data/CMLR`."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Callable

from bench.availability import Availability
from data_recipes.clip import Dataset, DatasetError


@dataclass(frozen=True)
class DatasetOptions:
    """Options every loader understands.

    limit: keep at most this many test clips (and proportionally few training clips), in list order;
    subjects: keep only these subjects (e.g. CMLR speakers "s1", "s4"); empty keeps all;
    test_seconds: for `video:` datasets, the length of the val and test segments (None: the 10:1 auto
    split, see data_recipes/datasets/video.py);
    pairs: path of a cross-driving pair list (LRS2: Wav2Lip's evaluation/test_filelists/lrs2.txt),
    for datasets whose official list cannot be shipped.
    """

    limit: int | None = None
    subjects: tuple[str, ...] = field(default=())
    test_seconds: float | None = None
    pairs: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    entry: str                 # "module:function(argument: str | None, options) -> Dataset"
    argument: str = ""         # what follows the colon, e.g. "<root>"; empty if none
    check: str | None = None   # "module:function(argument) -> Availability"


DATASETS: dict[str, DatasetSpec] = {
    "demo": DatasetSpec(
        "demo", "embedded 20 s Obama clip split in time (train / val / test) with one cross-driven pair",
        "data_recipes.datasets.demo:load",
    ),
    "video": DatasetSpec(
        "video", "your own talking-head clip (mp4 with audio) split in time: train / val / test (10:1 auto split or --test-seconds)",
        "data_recipes.datasets.video:load", argument="<path>", check="data_recipes.datasets.video:check",
    ),
    "cmlr": DatasetSpec(
        "cmlr", "CMLR Mandarin news sentences (11 speakers); official video/ audio/ text/ and split csv layout",
        "data_recipes.datasets.cmlr:load", argument="<root>", check="data_recipes.datasets.cmlr:check",
    ),
    "lrs2": DatasetSpec(
        "lrs2", "LRS2-BBC face-crop utterances (mvlrs_v1/main), LRS sync protocol, Wav2Lip cross pairs if provided",
        "data_recipes.datasets.lrs2:load", argument="<root>", check="data_recipes.datasets.lrs2:check",
    ),
}


def _resolve(entry: str) -> Callable:
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def parse(text: str) -> tuple[DatasetSpec, str | None]:
    name, sep, arg = text.partition(":")
    if name not in DATASETS:
        hint = difflib.get_close_matches(name, list(DATASETS), n=1)
        raise DatasetError(
            f"unknown dataset {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (known: {', '.join(sorted(DATASETS))})"
        )
    spec = DATASETS[name]
    if spec.argument and not arg:
        raise DatasetError(f"dataset {name!r} needs an argument: --dataset {name}:{spec.argument}")
    return spec, (arg if sep else None)


def availability(spec: DatasetSpec, argument: str | None) -> Availability:
    if spec.argument and not argument:
        return Availability.no(f"needs an argument: --dataset {spec.name}:{spec.argument}")
    if spec.check:
        return _resolve(spec.check)(argument)
    return Availability.yes()


def load(text: str, options: DatasetOptions | None = None) -> Dataset:
    spec, arg = parse(text)
    return _resolve(spec.entry)(arg, options or DatasetOptions())
