"""MediaPipe 478-point mesh -> iBUG 300-W 68-point convention (the one FAN and dlib use).

The index table is the one GeneFace++ uses to turn MediaPipe meshes into FAN-style 68 points for its
3DMM fit (yerfor/GeneFacePlusPlus @ 6c35651, data_gen/utils/mp_feature_extractors/face_landmarker.py,
`index_lm68_from_lm478`). Group by group (68-point numbering, image-left first as in 300-W):

- 0-16 jaw, from the image-left ear along the jawline to the image-right ear. MediaPipe's face oval
  has no points exactly at FAN's jaw positions, so the upper jaw points (0-2, 14-16) sit a little
  higher (nearer the temples) than FAN's; the lower ones coincide closely;
- 17-21 / 22-26 brows (upper brow contour), 27-30 nose bridge to tip, 31-35 nostril base;
- 36-41 / 42-47 eyes (corners and two points on each lid), 48-59 outer lip, 60-67 inner lip.

Left/right: MediaPipe point 33 is the subject's right eye outer corner, seen on the image left, which
is where 300-W puts point 36; the table keeps that image-side convention throughout.
"""

from __future__ import annotations

import numpy as np

LM68_FROM_LM478: tuple[int, ...] = (
    # jaw 0-16
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    # brows 17-21, 22-26
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30, nostrils 31-35
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # eyes 36-41, 42-47
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lip 48-59
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lip 60-67
    78, 81, 13, 311, 308, 402, 14, 178,
)

# 68-point groups (300-W numbering).
JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))
EYES = tuple(range(36, 48))
MOUTH = tuple(range(48, 68))

# MediaPipe face oval (FACEMESH_FACE_OVAL ring, clockwise from the forehead top, point 10).
FACE_OVAL_478: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
# Upper and lower brow contours of both brows.
BROWS_478: tuple[int, ...] = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46,
                              300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
# Lips: outer and inner contours.
OUTER_LIP_478: tuple[int, ...] = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409,
                                  291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
INNER_LIP_478: tuple[int, ...] = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415,
                                  308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
# Eye contours (16 points each) used by hybrid tracking.
EYES_478: tuple[int, ...] = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
                             263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
CHIN_478 = 152
UPPER_INNER_LIP_478 = 13
LOWER_INNER_LIP_478 = 14


def lm68_from_lm478(landmarks478: np.ndarray) -> np.ndarray:
    """(..., 478, C) -> (..., 68, 2): the 68-point subset, x and y only (same units as the input)."""
    lm = np.asarray(landmarks478)
    if lm.shape[-2] != 478:
        raise ValueError(f"expected 478 landmarks on axis -2, got shape {lm.shape}")
    return lm[..., list(LM68_FROM_LM478), :2]
