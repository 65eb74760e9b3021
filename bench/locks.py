"""Inter-process locks on lock files (`fcntl.flock`), for run folders, fit work folders and cache writes.

Why flock: the kernel releases it when the holder's process dies (SIGKILL, OOM, a lost node's
processes on a local disk), so a lock can never go stale and nothing has to guess from a pid or an
age. Linux NFS clients (v4, and v3 with lockd) turn flock into a POSIX byte-range lock that the server
arbitrates, so the same holds for a cache shared by several machines on NFS; where the filesystem
refuses locks (some Lustre or FUSE mounts) `FileLock` works unlocked and says so once per path
(`LockUnsupported` is never raised to the caller).

A lock file holds one JSON line about its holder (pid, host, since, what) so that a process that
waits or is refused can say who holds it. The file is removed by its holder on release; a waiter
that then wins the lock on the removed file notices (the path no longer names the file it locked)
and tries again, so removing lock files is safe and no lock file outlives its holder except after
a crash, when the next holder reuses it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator


class LockBusy(RuntimeError):
    """The lock is held by another process and the caller asked not to wait (or waited too long)."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path = Path(path)
        self.holder = holder
        super().__init__(f"{path} is locked by {describe_holder(holder)}")


def describe_holder(holder: dict[str, Any]) -> str:
    """"pid 123 on host node7 since 2026-01-02T10:00:00Z (bench run ...)" or "another process"."""
    if not holder:
        return "another process"
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host"):
        parts.append(f"on host {holder['host']}")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    text = " ".join(parts)
    return f"{text} ({holder['what']})" if holder.get("what") else text


def read_holder(path: Path) -> dict[str, Any]:
    """What the lock file says about its holder ({} when absent, empty or unreadable)."""
    try:
        data = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder(what: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": what}


_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@dataclass
class FileLock:
    """An exclusive lock on `path` (created as needed). Use as a context manager or `acquire`/`release`.

    wait=False: raise `LockBusy` at once when another process holds it. wait=True: block until it is
    free (timeout: seconds, then `LockBusy`); `on_wait(holder)` is called once before blocking, so the
    caller can log who it waits for. `what` is written into the file for the others to read.
    """

    path: Path
    what: str = ""
    wait: bool = True
    timeout: float | None = None
    on_wait: Callable[[dict[str, Any]], None] | None = None
    poll: float = 0.2
    warn: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._fd: int | None = None
        self.locked = False       # False also when the filesystem has no locks (see module docstring)

    def acquire(self) -> "FileLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        told = False
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in _UNSUPPORTED:
                    os.close(fd)
                    if self.warn is not None:
                        self.warn(f"warning: file locks are not supported where {self.path} lives ({e.strerror}); "
                                  "concurrent runs on it are not protected")
                    self._fd, self.locked = None, False
                    return self
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = read_holder(self.path)
                if not self.wait or (deadline is not None and time.monotonic() >= deadline):
                    os.close(fd)
                    raise LockBusy(self.path, holder) from None
                if not told and self.on_wait is not None:
                    self.on_wait(holder)
                    told = True
                os.close(fd)
                time.sleep(self.poll)   # poll, not a blocking flock: a timeout and a signal stay possible
                continue
            # Won the lock; the file must still be the one at `path` (its holder may have removed it).
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(_holder(self.what)) + "\n").encode())
            self._fd, self.locked = fd, True
            return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            os.unlink(self.path)     # while still held: a waiter re-checks the path after it wins
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd, self.locked = None, False

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """True when some process holds the lock on `path` now (probes without taking it for long)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def held(path: Path, what: str = "", **kw: Any) -> Iterator[FileLock]:
    """`with held(path, "fit wav2lip"): ...`: FileLock(path, what, **kw) as a context manager."""
    lock = FileLock(path, what, **kw)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
