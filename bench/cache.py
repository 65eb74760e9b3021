"""Content-addressed cache for recipe outputs, fitted models and generated videos.

A key is the sha256 of a canonical JSON of everything the output depends on: input content hashes,
the stage's typed config, and the stage's code version. An entry is a directory written under a
temporary name and renamed into place, so a crash never leaves a half-written entry that looks done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from bench.paths import cache_dir


def canonical_json(obj: Any) -> str:
    """Stable JSON for hashing: sorted keys, dataclasses and paths turned into plain values."""

    def default(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {"__type__": type(o).__name__, **dataclasses.asdict(o)}
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(f"cannot hash {type(o).__name__} in a cache key")

    return json.dumps(obj, sort_keys=True, default=default, separators=(",", ":"))


def content_key(*parts: Any) -> str:
    """sha256 hex of the canonical JSON of `parts`."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """Content hash of a file, remembered on disk by (path, size, mtime) so datasets hash once."""
    from bench.weights import sha256_file  # the in-process memo

    path = Path(path).resolve()
    st = path.stat()
    memo_key = content_key("file-sha256", str(path), st.st_size, st.st_mtime_ns)
    memo = cache_dir() / "file-hashes" / memo_key[:2] / memo_key
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    digest = sha256_file(path)
    with contextlib.suppress(OSError):
        atomic_write_text(memo, digest)
    return digest


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see partial data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class Cache:
    """Directory-per-entry cache under `root/<namespace>/<key[:2]>/<key>`."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir()

    def entry(self, namespace: str, key: str) -> Path:
        return self.root / namespace / key[:2] / key

    def has(self, namespace: str, key: str) -> bool:
        return self.entry(namespace, key).is_dir()

    @contextlib.contextmanager
    def write(self, namespace: str, key: str) -> Iterator[Path]:
        """Yield a fresh temporary folder; on normal exit it becomes the entry atomically.

        If another process finished the same entry first, ours is discarded (same key, same content).
        On an exception the temporary folder is removed and nothing is published.
        """
        final = self.entry(namespace, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=final.parent))
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.rename(tmp, final)
        except OSError:
            if final.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise

    def scratch(self, namespace: str, key: str) -> Path:
        """A persistent work folder for resumable jobs (training checkpoints), not content-final."""
        p = self.root / namespace / key[:2] / f"{key}.work"
        p.mkdir(parents=True, exist_ok=True)
        return p
