"""One registry of known weight files: name, expected sha256, where users get it, licence.

Weights are never downloaded. A missing file makes the metric or method that needs it unavailable,
with a message that says exactly which file to put where. A present file is verified against its
known sha256 (or the hash prefix that torchvision-style file names carry) before it is used, and its
full sha256 is recorded in the run manifest.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bench.availability import Availability
from bench.paths import WEIGHTS_ENV, weights_dir


class WeightsMissing(FileNotFoundError):
    """Raised when a weight file is absent; the message says what to put where."""


class WeightsMismatch(ValueError):
    """Raised when a weight file is present but its sha256 is not the expected one."""


@dataclass(frozen=True)
class WeightSpec:
    """A pretrained file the suite knows about.

    `filename` is looked up in the weights folder. `sha256` is the full expected hash when known;
    `sha256_prefix` is a prefix known from the official file name (torchvision names files
    `<name>-<first 8 hex of sha256>.pth`). `bundled` names a package resource ("package:relative/path")
    shipped with the suite, used when the user has not placed their own copy.
    """

    name: str
    filename: str
    description: str
    source: str
    licence: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    bundled: str | None = None
    extra_names: tuple[str, ...] = field(default=())

    def candidates(self, folder: Path | None = None) -> list[Path]:
        folder = weights_dir() if folder is None else folder
        return [folder / n for n in (self.filename, *self.extra_names)]

    def missing_message(self, folder: Path | None = None) -> str:
        folder = weights_dir() if folder is None else folder
        return (
            f"{self.description}: file '{self.filename}' not found in {folder} "
            f"(set {WEIGHTS_ENV} to use another folder); get it from {self.source} ({self.licence})"
        )


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so manifests do not re-hash large weights."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _bundled_path(spec: WeightSpec) -> Path | None:
    if not spec.bundled:
        return None
    package, _, rel = spec.bundled.partition(":")
    try:
        p = Path(str(resources.files(package).joinpath(rel)))
    except ModuleNotFoundError:
        return None
    return p if p.is_file() else None


def find(spec: WeightSpec, folder: Path | None = None) -> Path | None:
    """The file to use: the user's copy in the weights folder first, then a bundled copy."""
    for p in spec.candidates(folder):
        if p.is_file():
            return p
    return _bundled_path(spec)


def verify(spec: WeightSpec, path: Path) -> str:
    """Return the file's sha256, raising WeightsMismatch when it contradicts what the spec expects.

    The digest is remembered on disk by (path, size, mtime), so a large file is hashed once per machine.
    """
    from bench.cache import file_sha256

    digest = file_sha256(path)
    if spec.sha256 and digest != spec.sha256.lower():
        raise WeightsMismatch(
            f"{path} has sha256 {digest}, expected {spec.sha256} for {spec.description}; "
            "the file is corrupt or a different model"
        )
    if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix.lower()):
        raise WeightsMismatch(
            f"{path} has sha256 {digest}, which does not start with {spec.sha256_prefix} as the official "
            f"file name says; the file is corrupt or a different model ({spec.description})"
        )
    return digest


def locate(spec: WeightSpec, folder: Path | None = None) -> Path:
    """Path of a verified weight file, or WeightsMissing / WeightsMismatch with an exact message."""
    path = find(spec, folder)
    if path is None:
        raise WeightsMissing(spec.missing_message(folder))
    verify(spec, path)
    return path


def availability(spec: WeightSpec, folder: Path | None = None) -> Availability:
    """Present and, where a hash is known, verified: a corrupt or different file is unavailable too."""
    path = find(spec, folder)
    if path is None:
        return Availability.no(spec.missing_message(folder))
    if spec.sha256 or spec.sha256_prefix:
        try:
            verify(spec, path)
        except WeightsMismatch as e:
            return Availability.no(str(e))
    return Availability.yes()
