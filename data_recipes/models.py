"""`ModelPool`: the models a run's stages and metrics load once and reuse across clips and samples.

One pool per `Recipe` (so per run, or per `bench prepare`); stages reach it as `StageContext.models`
and metrics through the recipe of the clip they score. No module-level caches: when the recipe goes,
its models go with it, and two recipes (two tests, two devices) never share one by accident.

Two ways to hold a model:
- `shared(key, build)`: one instance for every worker thread, for models that do not change while
  they run (a torch module in eval mode under `inference_mode`: HuBERT);
- `lease(key, build)`: an instance for one caller at a time, for models with state between calls
  (MediaPipe's VIDEO-mode landmarker tracks the face from frame to frame). A caller takes an idle
  instance or builds one, and gives it back when done, so a pool never builds more instances than
  there are concurrent callers (prepare workers).

`constructions` counts the builds per kind (the first item of the key), for tests and the manifest.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import Counter
from typing import Any, Callable, Hashable, Iterator, TypeVar

T = TypeVar("T")


class ModelPool:
    """Models built once per pool and reused (see the module docstring). Thread-safe."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.constructions: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._shared: dict[Hashable, Any] = {}
        self._build_locks: dict[Hashable, threading.Lock] = {}
        self._idle: dict[Hashable, list[Any]] = {}
        self._closers: list[tuple[Any, Callable[[Any], None]]] = []
        # native models are released when the pool is collected or, at the latest, at interpreter
        # exit while their modules still exist (MediaPipe's own __del__ fails during shutdown)
        weakref.finalize(self, _close_all, self._closers)

    def shared(self, key: tuple, build: Callable[[], T]) -> T:
        """The one instance for `key` (its first item names the kind, e.g. "hubert"), built on first use.

        Concurrent first calls build it once: the others wait for that build instead of loading the
        same weights twice.
        """
        with self._lock:
            if key in self._shared:
                return self._shared[key]
            build_lock = self._build_locks.setdefault(key, threading.Lock())
        with build_lock:
            with self._lock:
                if key in self._shared:
                    return self._shared[key]
            value = build()
            with self._lock:
                self._shared[key] = value
                self.constructions[str(key[0])] += 1
        return value

    @contextlib.contextmanager
    def lease(self, key: tuple, build: Callable[[], T],
              close: Callable[[T], None] | None = None) -> Iterator[T]:
        """An instance for `key` that only this caller uses until the block ends.

        `close` releases an instance when the pool closes. An instance whose block raised is closed
        and dropped rather than lent again (its state may be half-way through a clip).
        """
        with self._lock:
            idle = self._idle.setdefault(key, [])
            item = idle.pop() if idle else None
        if item is None:
            item = build()
            with self._lock:
                self.constructions[str(key[0])] += 1
                if close is not None:
                    self._closers.append((item, close))
        try:
            yield item
        except BaseException:
            self._discard(item)
            raise
        with self._lock:
            self._idle[key].append(item)

    def _discard(self, item: Any) -> None:
        with self._lock:
            mine = [c for c in self._closers if c[0] is item]
            self._closers[:] = [c for c in self._closers if c[0] is not item]
        with contextlib.suppress(Exception):  # already failing: the original error matters
            _close_all(mine)

    def close(self) -> None:
        """Release every model (native resources of landmarkers); the pool can be used again after."""
        with self._lock:
            closers = list(self._closers)
            self._closers.clear()
            self._shared.clear()
            self._idle.clear()
            self._build_locks.clear()
        _close_all(closers)

    def __enter__(self) -> "ModelPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_all(closers: list[tuple[Any, Callable[[Any], None]]]) -> None:
    items = list(closers)
    closers.clear()
    for obj, close in items:
        close(obj)
