"""Cached fits and generated videos are keyed by nerf_head's MethodSpec.version and its config, and
the config names a renderer preset, not its contents: a preset edited without a version bump would
silently reuse renderers trained under the old preset. This test pins the presets' contents to the
version; when it fails, bump `version` in methods/nerf_head/method.py and record the new digest."""

from __future__ import annotations

from bench.cache import content_key
from bench.config import to_jsonable
from methods.nerf_head.method import NerfHeadMethod
from methods.nerf_head.renderer.config import PRESETS

# version -> digest of every renderer preset's contents at that version
PINNED = {"2": "b19192380b74a532"}


def presets_digest() -> str:
    return content_key("nerf_head presets", {name: to_jsonable(make()) for name, make in sorted(PRESETS.items())})[:16]


def test_presets_changes_come_with_a_version_bump():
    version = NerfHeadMethod.spec.version
    assert version in PINNED, f"record PINNED[{version!r}] = {presets_digest()!r}"
    assert PINNED[version] == presets_digest(), (
        f"the renderer presets changed under version {version}: bump MethodSpec.version in "
        f"methods/nerf_head/method.py and add PINNED[<new version>] = {presets_digest()!r}")
