"""Progress for every long loop: rich bars on a terminal, plain throttled log lines otherwise.

One `Progress` object owns one live display and is passed down to whatever runs long (runner ->
recipe stages -> method fit/generate), so nested loops share a display instead of fighting over it.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Iterable, Iterator, TypeVar

T = TypeVar("T")


class TaskHandle:
    """One bar. `advance(n, loss=0.1)` moves it and shows the latest fields (losses, fps, ...)."""

    def __init__(self, owner: "Progress", description: str, total: int | None):
        self._owner = owner
        self.description = description
        self.total = total
        self.completed = 0
        self.fields: dict[str, Any] = {}
        self._started = time.monotonic()
        self._last_log = 0.0
        self._rich_id = None
        # How the bar ends: "done", or what the owner says ("interrupted", "stopped at the deadline");
        # an exception leaving the `with` block sets it too, so a Ctrl-C never reads as "done".
        self.status = "done"

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.completed += n
        self.fields.update(fields)
        self._owner._update(self)

    def set_total(self, total: int) -> None:
        self.total = total
        self._owner._update(self)

    def __enter__(self) -> "TaskHandle":
        return self

    def __exit__(self, exc_type: Any = None, *exc: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.status = "interrupted"
        elif exc_type is not None and issubclass(exc_type, Exception):
            self.status = "failed"
        self._owner._finish(self)

    def _summary(self) -> str:
        elapsed = time.monotonic() - self._started
        rate = self.completed / elapsed if elapsed > 0 else 0.0
        frac = f"{self.completed}/{self.total}" if self.total else f"{self.completed}"
        pct = f" ({100.0 * self.completed / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.completed < self.total:
            eta = f" eta {(self.total - self.completed) / rate:.0f}s"
        extra = " ".join(f"{k}={_fmt(v)}" for k, v in self.fields.items())
        return f"{self.description}: {frac}{pct} {rate:.2f}/s{eta} {extra}".rstrip()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Progress:
    """Context manager. `mode`: "auto" (rich when `stream` is a terminal), "rich", "log" or "off"."""

    def __init__(self, mode: str = "auto", stream: IO[str] | None = None, log_every_s: float = 10.0):
        if mode not in ("auto", "rich", "log", "off"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "log"
        self.mode = mode
        self.log_every_s = log_every_s
        self._rich = None
        self._depth = 0

    @classmethod
    def off(cls) -> "Progress":
        return cls(mode="off")

    def __enter__(self) -> "Progress":
        self._depth += 1
        if self.mode == "rich" and self._rich is None:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream), transient=False,
            )
            self._rich.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0 and self._rich is not None:
            self._rich.stop()
            self._rich = None

    def log(self, message: str) -> None:
        """A line of text that does not disturb the bars."""
        if self.mode == "off":
            return
        if self._rich is not None:
            self._rich.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def task(self, description: str, total: int | None = None) -> TaskHandle:
        handle = TaskHandle(self, description, total)
        if self._rich is not None:
            handle._rich_id = self._rich.add_task(description, total=total, info="")
        elif self.mode == "log":
            self.log(f"{description}: start" + (f" ({total})" if total else ""))
            handle._last_log = time.monotonic()
        return handle

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        with self.task(description, total) as handle:
            for item in items:
                yield item
                handle.advance()

    def _update(self, h: TaskHandle) -> None:
        if self._rich is not None and h._rich_id is not None:
            info = " ".join(f"{k}={_fmt(v)}" for k, v in h.fields.items())
            self._rich.update(h._rich_id, completed=h.completed, total=h.total, info=info)
        elif self.mode == "log":
            now = time.monotonic()
            if now - h._last_log >= self.log_every_s:
                h._last_log = now
                self.log(h._summary())

    def _finish(self, h: TaskHandle) -> None:
        if self._rich is not None and h._rich_id is not None:
            self._rich.remove_task(h._rich_id)
            colour = "green" if h.status == "done" else "yellow"
            self._rich.console.print(f"[{colour}]{h.status}[/{colour}] {h._summary()}", highlight=False)
        elif self.mode == "log":
            self.log(f"{h.status} {h._summary()}")
