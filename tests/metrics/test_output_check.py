"""output_check: the per-video verdict that lets reports flag degenerate outputs (the acceptance test on
real frames is tests/reports/test_merge_rules.py; these pin the rule's arithmetic)."""

from __future__ import annotations

import math

import numpy as np

from metrics.output_check import OutputCheckConfig, region_std, verdict


def test_region_std_is_zero_on_a_flat_face_box_and_nan_without_a_box():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    frames[1, 10:30, 10:30] = 128                      # a grey rectangle exactly over the box
    boxes = np.array([[10, 10, 30, 30], [10, 10, 30, 30], [np.nan] * 4], dtype=float)
    stds = region_std(frames, boxes)
    assert stds[0] > 20 and stds[1] == 0.0 and math.isnan(stds[2])
    # the 15% inset keeps the box edge (background the box touches) out of the measure
    frames[1, 10:30, 10] = 255
    assert region_std(frames, boxes)[1] == 0.0
    assert region_std(frames, boxes, inset=0.0)[1] > 0.0


def test_verdict_names_each_reason_with_its_numbers():
    cfg = OutputCheckConfig(min_face_share=0.5, min_face_std=2.0)
    assert verdict(0.9, 25.0, cfg, 100) == []
    assert verdict(0.5, 25.0, cfg, 100) == []          # half the frames with a face is not "most without"
    no_face, = verdict(0.03, 25.0, cfg, 100)
    assert no_face == "no face detected in 97 of 100 frames (face in 3%, needs 50%)"
    flat, = verdict(1.0, 0.4, cfg, 100)
    assert flat == "face region is flat (pixel std 0.40 < 2 grey levels)"
    assert len(verdict(0.0, 0.0, cfg, 10)) == 2 and verdict(1.0, math.nan, cfg, 10) == []
