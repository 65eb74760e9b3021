"""Landmark-based 3D morphable model fit (GeneFace++-style): global identity, per-frame expression,
rotation and translation under a fixed perspective camera.

Models: an open default built from MediaPipe's canonical face (`open_model`, shipped, not BFM) and the
Basel Face Model 2009 in the Deep3DFaceRecon layout for users who have it (`bfm`). The recipe stage
is `data_recipes.threedmm.stage:threedmm_stage`; docs in docs/audio_features_3dmm.md.
"""
