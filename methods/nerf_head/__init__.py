"""nerf_head: GeneFace++-style audio -> expression -> landmarks -> NeRF head; see method.py and docs/nerf_head.md."""
