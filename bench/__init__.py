"""talkbench harness: CLI, registries, runner, results schema, manifests and caching.

Nothing here does work at import time; heavy modules (torch, media, models) are imported lazily by
the code paths that need them.
"""

__version__ = "0.1.0"
