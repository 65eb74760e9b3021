"""The published SyncNet weights the LSE metric needs (see `bench.weights` for lookup/verification)."""

from __future__ import annotations

from bench.weights import WeightSpec

# No sha256 is pinned: the file is not reachable from where the suite was written, and a guessed
# hash would reject the real file. Its structure is verified instead (every key and shape must match
# the architecture on load), and its sha256 is recorded in the run manifest.
SYNCNET_V2 = WeightSpec(
    name="syncnet_v2",
    filename="syncnet_v2.model",
    description="SyncNet lip-sync network (syncnet_python, needed for the published LSE-D / LSE-C)",
    source="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model "
           "(the download script of joonson/syncnet_python)",
    licence="MIT (joonson/syncnet_python)",
)

WEIGHTS = (SYNCNET_V2,)
