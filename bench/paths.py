"""Where the suite keeps weights and caches. Overridable by environment variables, never inside the package."""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV = "TALKBENCH_WEIGHTS"
CACHE_ENV = "TALKBENCH_CACHE"


def _base() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "talkbench"


def weights_dir() -> Path:
    """Folder where users place pretrained weights ($TALKBENCH_WEIGHTS, default ~/.cache/talkbench/weights)."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else _base() / "weights"


def cache_dir() -> Path:
    """Content-addressed cache of recipe outputs, fitted models and generated videos ($TALKBENCH_CACHE)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else _base() / "cache"
