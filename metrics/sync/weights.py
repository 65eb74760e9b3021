"""The published SyncNet weights the LSE metric needs (see `bench.weights` for lookup/verification)."""

from __future__ import annotations

from bench.weights import WeightSpec

# The official file could not be downloaded where the suite was written. Its sha256 is the one
# several independent projects record for it (with its size, 54,573,114 bytes); a file with another
# digest is refused as "a different model". Its structure is also verified on load (every key and
# shape must match the architecture), and its sha256 is recorded in the run manifest.
SYNCNET_V2 = WeightSpec(
    name="syncnet_v2",
    filename="syncnet_v2.model",
    description="SyncNet lip-sync network (syncnet_python, needed for the published LSE-D / LSE-C)",
    source="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model "
           "(the download script of joonson/syncnet_python)",
    licence="MIT (joonson/syncnet_python)",
    sha256="961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442",
)

WEIGHTS = (SYNCNET_V2,)
