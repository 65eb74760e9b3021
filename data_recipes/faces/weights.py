"""Weight files of the face backends (see `bench.weights` for lookup and verification)."""

from __future__ import annotations

from bench.weights import WeightSpec

# The MediaPipe Face Landmarker bundle (BlazeFace detector + 478-point mesh + 52 blendshapes) is
# Apache-2.0 and small, so it ships with the package; a user's copy in the weights folder wins.
FACE_LANDMARKER = WeightSpec(
    name="mediapipe-face-landmarker",
    filename="face_landmarker.task",
    description="MediaPipe Face Landmarker bundle (478-point face mesh, blendshapes, head pose)",
    source="Google MediaPipe (copy taken from yerfor/GeneFacePlusPlus @ 6c35651 "
           "data_gen/utils/mp_feature_extractors/face_landmarker.task)",
    licence="Apache-2.0",
    sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    bundled="data_recipes:assets/face_landmarker/face_landmarker.task",
)

# face-alignment's 2D FAN (4 stacked hourglasses, 68 points), distributed as a TorchScript archive.
# The hex suffix of its name is not documented as a sha256 prefix (face-alignment downloads without a
# hash check), so no hash is enforced; the file's sha256 is still recorded wherever it is used.
FAN_2D = WeightSpec(
    name="fan-2d",
    filename="2DFAN4-cd938726ad.zip",
    description="face-alignment 2D-FAN-4 landmark network (TorchScript, 68 points)",
    source="https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip "
           "(face-alignment 1.4 downloads it on first use; place it in the weights folder)",
    licence="BSD-3-Clause (face-alignment)",
)

WEIGHTS = (FACE_LANDMARKER, FAN_2D)
