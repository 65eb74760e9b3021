"""Typed configs: the run config, and `--set method.key=value` overrides converted by field type.

Values are parsed by the dataclass field's declared type (int, float, bool, str, Path, tuples of
those, Optional of those); nothing is ever `eval`-ed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Fields marked `identity=False` do not change the results
    (where files go, how progress looks) and are left out of the run id."""

    dataset: str = "demo"
    methods: tuple[str, ...] = ("all",)
    metrics: tuple[str, ...] = ("all",)
    split: str = "test"
    budget: str = "quick"
    seed: int = 0
    limit: int | None = None
    subjects: tuple[str, ...] = ()
    test_seconds: float | None = None                # video: datasets, held-out segment length (None: auto)
    pairs: str | None = None                         # lrs2: the cross-driving pair list file
    cross: bool = True
    device: str = "auto"
    precision: str = "auto"                          # bench.precision: auto | fp32 | bf16 | amp
    overrides: tuple[tuple[str, str], ...] = ()      # (("wav2lip.checkpoint", "/w/wav2lip.pth"), ...)
    strip_frames: int = field(default=4, metadata={"identity": False})
    preview_videos: bool = field(default=True, metadata={"identity": False})
    # requests whose strips / previews are written (bench.layout.sampled_requests); None: all
    samples: int | None = field(default=4, metadata={"identity": False})
    # "i/N": this process runs shard i of N (bench.shard); same run id, own folder, merged later
    shard: str | None = field(default=None, metadata={"identity": False})
    runs_dir: Path = field(default=Path("runs"), metadata={"identity": False})
    run_id: str | None = field(default=None, metadata={"identity": False})
    workers: int = field(default=2, metadata={"identity": False})
    report: bool = field(default=True, metadata={"identity": False})

    def identity(self) -> dict[str, Any]:
        """What the run id and the resume check hash: the configuration only. Code versions (git
        commit, method / metric / stage versions and settings) are not in it on purpose, so a resume
        after a pull finds its folder: they are stamped on every result row and part instead, and
        the runner recomputes each part made under other versions (bench.manifest.part_versions)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("identity", True)}


class ConfigError(ValueError):
    pass


def _convert(text: str, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", "") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(text, a, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: cannot read {text!r} as {tp}")
    if origin is tuple:
        items = [t for t in text.split(",") if t != ""]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(t, args[0], name) for t in items)
        if len(items) != len(args):
            raise ConfigError(f"{name}: expected {len(args)} comma-separated values, got {text!r}")
        return tuple(_convert(t, a, name) for t, a in zip(items, args))
    if origin is typing.Literal:
        if text not in [str(a) for a in args]:
            raise ConfigError(f"{name}: {text!r} is not one of {list(args)}")
        return next(a for a in args if str(a) == text)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: {text!r} is not a boolean")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError as e:
            words = {int: "an integer", float: "a number", str: "a string"}
            raise ConfigError(f"{name}: {text!r} is not {words[tp]}") from e
    if tp is Path:
        return Path(text).expanduser()
    raise ConfigError(f"{name}: fields of type {tp} cannot be set from the command line")


def apply_overrides(config: Any, overrides: Mapping[str, str], owner: str) -> Any:
    """A copy of dataclass `config` with fields replaced by parsed text values."""
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    known = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, text in overrides.items():
        if key not in known:
            import difflib

            hint = difflib.get_close_matches(key, sorted(known), n=1)
            raise ConfigError(f"{owner} has no option {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                              + f" (options: {', '.join(sorted(known))})")
        changes[key] = _convert(text, hints[key], f"{owner}.{key}")
    return dataclasses.replace(config, **changes)


def split_overrides(pairs: tuple[tuple[str, str], ...]) -> dict[str, dict[str, str]]:
    """(("wav2lip.batch_size", "64"),) -> {"wav2lip": {"batch_size": "64"}}."""
    out: dict[str, dict[str, str]] = {}
    for dotted, value in pairs:
        owner, sep, key = dotted.partition(".")
        if not sep or not key:
            raise ConfigError(f"--set expects <method or metric>.<option>=<value>, got {dotted!r}")
        out.setdefault(owner, {})[key] = value
    return out


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
