"""Content-addressed cache for recipe outputs, fitted models and generated videos.

A key is the sha256 of a canonical JSON of everything the output depends on: input content hashes,
the stage's typed config, and the stage's code version. An entry is a directory written under a
temporary name and renamed into place, so a crash never leaves a half-written entry that looks done.

Several processes may share one cache (shards of a run, two runs, a cluster's shared disk):
- an entry's temporary folder `.tmp-<key>-<random>` holds a writer lock (`.writer.lock`, bench.locks)
  for as long as its writer lives; `sweep` removes the ones whose writer is gone (a kill during a
  stage), never a live writer's;
- `lock(namespace, key)` is a per-entry inter-process lock (fit work folders: one trains, the others
  wait and reuse what it wrote);
- `usage` and `prune` are what `bench cache` shows and removes (entries no run refers to).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

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


def atomic_write_with(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(file)` into a temporary file in the same folder, fsync, rename: readers (or a crash
    mid-write) never see partial data, and the previous file stays until the new one is whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see partial data."""
    atomic_write_with(path, lambda f: f.write(data))


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
        from bench.locks import FileLock

        final = self.entry(namespace, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=final.parent))
        # Held while this process writes: `sweep` leaves the folder alone; released (and its file
        # removed, which also refreshes the folder's mtime) just before the rename.
        writer = FileLock(tmp / WRITER_LOCK, f"writing {namespace}/{key[:12]}").acquire()
        try:
            yield tmp
        except BaseException:
            writer.release()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        writer.release()
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

    def lock(self, namespace: str, key: str, what: str = "", wait: bool = True,
             on_wait: Callable[[dict[str, Any]], None] | None = None, timeout: float | None = None):
        """An inter-process lock for one entry or work folder (`bench.locks.FileLock`, not yet acquired:
        use `with cache.lock(...)`). Its file sits beside the entry and is gone when nobody holds it."""
        from bench.locks import FileLock

        return FileLock(self.root / namespace / key[:2] / f"{key}.lock", what, wait=wait, timeout=timeout,
                        on_wait=on_wait)

    # ------------------------------------------------------------------------- hashing, housekeeping

    def hash_files(self, paths: Iterable[Path], workers: int = 4, progress: Any = None) -> dict[Path, str]:
        """sha256 of every file (memoised as `file_sha256` does), several at once, with a progress bar.

        Threads: hashlib and file reads release the GIL, and the memo writes wait on the disk, so a
        dataset of 100k small files hashes several times faster than one after another."""
        from concurrent.futures import ThreadPoolExecutor

        todo = list(dict.fromkeys(Path(p) for p in paths))
        out: dict[Path, str] = {}
        if not todo:
            return out
        bar = progress.task(f"hashing {len(todo)} media files", len(todo)) if progress is not None else None
        try:
            with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hash") as pool:
                for path, digest in zip(todo, pool.map(file_sha256, todo, chunksize=64)):
                    out[path] = digest
                    if bar is not None:
                        bar.advance()
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        return out

    def sweep(self, min_age_s: float = 600.0, throttle_s: float = 0.0) -> "SweepResult":
        """Remove what a killed process left: `.tmp-*` entry folders whose writer is gone (its writer
        lock is free), atomic-write temporaries (`.*.tmp`) and free lock files, each older than
        `min_age_s`. throttle_s > 0: do nothing when the last sweep is more recent than that (a run
        calls it at start; `bench cache` forces it)."""
        marker = self.root / ".last-sweep"
        if throttle_s > 0:
            try:
                if time.time() - marker.stat().st_mtime < throttle_s:
                    return SweepResult(skipped=True)
            except OSError:
                pass
        result = SweepResult()
        now = time.time()
        for shard in _shard_dirs(self.root):
            for child in _scandir(shard):
                name = child.name
                try:
                    age = now - child.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                if age < min_age_s:
                    continue
                if name.startswith(".tmp-") and child.is_dir(follow_symlinks=False):
                    if not _writer_alive(Path(child.path)):
                        result.bytes += _size(Path(child.path))
                        shutil.rmtree(child.path, ignore_errors=True)
                        result.removed.append(Path(child.path))
                elif name.startswith(".") and name.endswith(".tmp") and child.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        result.bytes += child.stat().st_size
                        os.unlink(child.path)
                        result.removed.append(Path(child.path))
                elif name.endswith(".lock") and child.is_file(follow_symlinks=False):
                    from bench.locks import is_locked

                    if not is_locked(Path(child.path)):
                        with contextlib.suppress(OSError):
                            os.unlink(child.path)
                            result.removed.append(Path(child.path))
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
            marker.touch()
        return result

    def entries(self) -> Iterator["CacheEntry"]:
        """Every finished entry and fit work folder: (namespace, key, path), in no particular order."""
        for shard in _shard_dirs(self.root):
            namespace = shard.parent.relative_to(self.root).as_posix()
            for child in _scandir(shard):
                m = ENTRY_NAME.match(child.name)
                if m and m.group(1)[:2] == shard.name:
                    yield CacheEntry(namespace, m.group(1), Path(child.path), work=bool(m.group(2)))

    def usage(self, progress: Any = None) -> dict[str, "NamespaceUsage"]:
        """{namespace: entries, bytes, newest} over the whole cache (walks every file: slow on big caches)."""
        out: dict[str, NamespaceUsage] = {}
        for e in _tracked(self.entries(), progress, "measuring the cache"):
            u = out.setdefault(e.namespace, NamespaceUsage(e.namespace))
            u.entries += 1
            u.bytes += _size(e.path)
        return dict(sorted(out.items()))

    def prune(self, keep: Mapping[str, set[str]], min_age_s: float = 3600.0, dry_run: bool = False,
              namespaces: Callable[[str], bool] = lambda ns: ns != FILE_HASHES,
              progress: Any = None) -> "PruneResult":
        """Remove every entry of a pruned namespace whose key is not in `keep[namespace]`, unless it
        is younger than `min_age_s` (a run still working may not have written its references yet) or
        its lock is held. `file-hashes` (tiny memos of media hashes) is never pruned by default."""
        from bench.locks import is_locked

        result = PruneResult(dry_run=dry_run)
        now = time.time()
        for e in _tracked(list(self.entries()), progress, "pruning the cache"):
            if not namespaces(e.namespace) or e.key in keep.get(e.namespace, ()):
                continue
            try:
                if now - e.path.stat().st_mtime < min_age_s:
                    result.young += 1
                    continue
            except OSError:
                continue
            if is_locked(e.path.parent / f"{e.key}.lock"):
                result.busy += 1
                continue
            size = _size(e.path)
            if not dry_run:
                if e.path.is_dir():
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)
            result.removed.setdefault(e.namespace, [0, 0])
            result.removed[e.namespace][0] += 1
            result.removed[e.namespace][1] += size
        return result


WRITER_LOCK = ".writer.lock"
FILE_HASHES = "file-hashes"
ENTRY_NAME = re.compile(r"^([0-9a-f]{64})(\.work)?$")
_SHARD = re.compile(r"^[0-9a-f]{2}$")


@dataclass(frozen=True)
class CacheEntry:
    namespace: str
    key: str
    path: Path
    work: bool = False     # a fit work folder (`scratch`), not a content-final entry


@dataclass
class NamespaceUsage:
    namespace: str
    entries: int = 0
    bytes: int = 0


@dataclass
class SweepResult:
    removed: list[Path] = field(default_factory=list)
    bytes: int = 0
    skipped: bool = False


@dataclass
class PruneResult:
    removed: dict[str, list[int]] = field(default_factory=dict)   # namespace -> [entries, bytes]
    young: int = 0
    busy: int = 0
    dry_run: bool = False


def _scandir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _shard_dirs(root: Path) -> Iterator[Path]:
    """The `<namespace>/<key[:2]>` folders under root. A folder is one when it holds entries whose
    names start with its own name (a stage called "f0" is a namespace, not a shard)."""
    def is_shard(d: os.DirEntry) -> bool:
        if not _SHARD.match(d.name):
            return False
        for c in _scandir(Path(d.path)):
            n = c.name
            if (ENTRY_NAME.match(n) or n.endswith(".lock")) and n[:2] == d.name:
                return True
            if n.startswith(".tmp-") or (n.startswith(".") and n.endswith(".tmp")):
                return True
        return False

    stack = [Path(root)]
    while stack:
        d = stack.pop()
        for c in _scandir(d):
            if not c.is_dir(follow_symlinks=False):
                continue
            if is_shard(c):
                yield Path(c.path)
            elif not ENTRY_NAME.match(c.name) and not c.name.startswith("."):
                stack.append(Path(c.path))


def _writer_alive(tmp: Path) -> bool:
    from bench.locks import is_locked

    return is_locked(tmp / WRITER_LOCK)


def _size(path: Path) -> int:
    try:
        if path.is_file():
            return path.stat().st_size
    except OSError:
        return 0
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _tracked(items: Iterable[Any], progress: Any, label: str) -> Iterable[Any]:
    return items if progress is None else progress.track(items, label)


def read_refs(path: Path) -> dict[str, set[str]]:
    """A run's cache references by namespace. The file (`cache-refs.gz`) is a series of gzip members
    of "namespace<TAB>key" lines, one member appended per flush; a member cut short by a kill is
    ignored (its references are written again by the next invocation)."""
    import gzip
    import zlib

    out: dict[str, set[str]] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                ns, _, key = line.rstrip("\n").partition("\t")
                if key and ENTRY_NAME.match(key):
                    out.setdefault(ns, set()).add(key)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        pass
    return out


def append_refs(path: Path, refs: Mapping[str, Iterable[str]]) -> None:
    """Append references (one gzip member; readers see whole members only). Cheap enough to call
    after every phase: only the new references are compressed."""
    import gzip

    text = "".join(f"{ns}\t{k}\n" for ns in sorted(refs) for k in sorted(refs[ns]))
    if not text:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0))
        f.flush()
        os.fsync(f.fileno())
