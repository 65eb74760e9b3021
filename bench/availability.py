"""Whether a method, metric, dataset, stage or weight file can be used here, and if not, why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Availability:
    """`ok` is True when usable; otherwise `reason` says exactly what is missing and how to fix it."""

    ok: bool
    reason: str = ""

    @staticmethod
    def yes() -> "Availability":
        return Availability(True, "")

    @staticmethod
    def no(reason: str) -> "Availability":
        if not reason:
            raise ValueError("an unavailable thing must say why")
        return Availability(False, reason)

    def __bool__(self) -> bool:
        return self.ok

    def describe(self) -> str:
        return "available" if self.ok else f"unavailable: {self.reason}"


def all_of(*items: Availability) -> Availability:
    """Available only when every item is; reasons of the missing ones are joined."""
    reasons = [a.reason for a in items if not a.ok]
    return Availability.yes() if not reasons else Availability.no("; ".join(reasons))


def module_available(module: str, install_hint: str) -> Availability:
    """Check an optional import without importing it (no work, no side effects)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return Availability.yes() if found else Availability.no(
        f"python package '{module}' is not installed ({install_hint})"
    )
