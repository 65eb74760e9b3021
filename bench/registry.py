"""Lazy registries of methods and metrics: built-ins by "module:attr" plus package entry points.

Nothing is imported until a name is resolved, so a method whose heavy dependency is missing only
matters when it is chosen (and `bench list` reports the import error as the reason it is unavailable).
Third-party packages add entries through the entry-point groups `talkbench.methods` and
`talkbench.metrics` in their own pyproject:

    [project.entry-points."talkbench.methods"]
    my_method = "my_package.method:MyMethod"
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Mapping

METHODS_GROUP = "talkbench.methods"
METRICS_GROUP = "talkbench.metrics"


class UnknownName(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    target: str     # "module:attr"
    origin: str     # "built-in" or the distribution that declared the entry point


class Registry:
    """Names -> lazily imported objects. Built-ins win over entry points of the same name."""

    def __init__(self, kind: str, builtins: Mapping[str, str], group: str | None):
        self.kind = kind
        self._builtins = dict(builtins)
        self._group = group

    def entries(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        if self._group:
            for ep in entry_points(group=self._group):
                dist = getattr(getattr(ep, "dist", None), "name", None) or "entry point"
                out[ep.name] = Entry(ep.name, ep.value, dist)
        for name, target in self._builtins.items():
            out[name] = Entry(name, target, "built-in")
        return dict(sorted(out.items()))

    def names(self) -> list[str]:
        return list(self.entries())

    def entry(self, name: str) -> Entry:
        entries = self.entries()
        if name not in entries:
            hint = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.5)
            raise UnknownName(
                f"unknown {self.kind} {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" (known: {', '.join(entries)})"
            )
        return entries[name]

    def load(self, name: str) -> Any:
        """Import and return the registered object; ImportError propagates with its own message."""
        module, _, attr = self.entry(name).target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


def method_registry() -> Registry:
    from methods import BUILTIN_METHODS

    return Registry("method", BUILTIN_METHODS, METHODS_GROUP)


def metric_registry() -> Registry:
    from metrics import BUILTIN_METRICS

    return Registry("metric", BUILTIN_METRICS, METRICS_GROUP)
